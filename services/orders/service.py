"""Orders use cases: place (priced, idempotent), read, cancel, ship, deliver, expire overdue
orders, and apply stock and payment facts. Every change locks the order and lets domain.py decide;
a new status gets its history entry and its event in the same transaction."""

import logging
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pydantic import BaseModel

from libs.events.common import Money, PricedLine
from libs.events.orders import (
    CreditNote,
    CreditNoteIssued,
    Invoice,
    OrderCancellationRequested,
    OrderCancelled,
    OrderConfirmed,
    OrderDelivered,
    OrderPlaced,
    OrderRejected,
    OrderShipped,
    PaymentInstructionIssued,
)
from libs.kit.auth import Principal
from libs.kit.errors import Conflict, NotFound
from libs.kit.uow import Clock, Tx, UnitOfWork
from services.orders import domain
from services.orders.adapters import DocumentRenderer, PricingClient, Quote
from services.orders.domain import (
    DocumentNumber,
    IllegalTransition,
    InvoiceSource,
    LockedOrder,
    Order,
    OrderDocuments,
    OrderStatus,
    OrderView,
    PendingOrder,
    StoredKey,
)

log = logging.getLogger(__name__)

# StockReleased also answers rejections and reservation expiry; only this reason settles a
# cancellation.
RELEASED_FOR_CANCELLATION = "cancelled"


# --- what the use cases need of the database (db.py has the real ones, tests fakes) -------------


class OrderRepository(Protocol):
    async def add(self, order: PendingOrder, key: str, request_hash: str) -> OrderView | None:
        """Claim the customer's idempotency key for the order, write it pending with its first
        history entry, and return it so (with that entry); None, with nothing written, when the
        key is taken (after waiting for a concurrent claimer's commit)."""
        ...

    async def lock(self, order_id: str) -> LockedOrder | None: ...

    async def claim_overdue(self, now: datetime) -> LockedOrder | None: ...

    async def save(
        self, order_id: str, state: Order, tracking: dict[str, Any] | None = None
    ) -> None:
        """Write a state with the order's current status (and its tracking, when given)."""
        ...

    async def add_refunded(self, order_id: str, amount: int) -> bool: ...

    async def save_status_change(
        self, order_id: str, state: Order, tracking: dict[str, Any] | None = None
    ) -> None:
        """`save` for a state with a new status, and that status (with its reason) appended to
        the order's history (`at`: now)."""
        ...

    async def view(self, order_id: str) -> OrderView | None: ...

    async def newest(
        self,
        *,
        customer_id: str | None,
        status: OrderStatus | None,
        before: tuple[datetime, str] | None,
        limit: int,
    ) -> list[OrderView]: ...


class KeyRepository(Protocol):
    async def find(self, customer_id: str, key: str) -> StoredKey | None: ...


class Store(Protocol):
    @property
    def orders(self) -> OrderRepository: ...

    @property
    def keys(self) -> KeyRepository: ...

    @property
    def invoices(self) -> "InvoiceRepository": ...  # invoices and credit notes (issue 12)


@dataclass(frozen=True)
class Claimed:
    """An overdue order and the transaction that holds it."""

    tx: Tx[Store]
    order: LockedOrder


class OverdueClaims(Protocol):
    """Each call opens a new transaction holding the pending order whose deadline passed first
    before `now` (None when there is none; orders another sweeper holds are skipped). Its events
    carry that order's correlation id: a rejection belongs to the checkout that placed the order,
    which a `UnitOfWork` (ids fixed when it opens) cannot know before the claim."""

    def __call__(self, now: datetime) -> AbstractAsyncContextManager[Claimed | None]: ...


# --- placing ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderRequest:
    """A validated POST /orders: who, under which key, what (the token only passes through)."""

    customer_id: str
    idempotency_key: str
    request_hash: str
    lines: list[tuple[str, int]]
    region: str
    shipping_address: dict[str, str]
    email: str | None
    payment_token: str


@dataclass(frozen=True)
class Placed:
    order: OrderView
    # An earlier request with the same key and body placed it: nothing new was written.
    replayed: bool


async def place_order(
    uow: UnitOfWork[Store],
    pricing: PricingClient,
    request: OrderRequest,
    *,
    clock: Clock,
    reservation_ttl_s: int,
    request_id: str,
    authorization: str | None,
) -> Placed:
    """Answer a replay from the database alone; otherwise price the lines (outside any
    transaction: a slow pricing holds no connection), then write the key, the pending order, its
    history and its two events in one transaction. Pricing's refusals (Invalid) and outages
    (Unavailable) pass through and spend no key. The events carry the request id."""
    async with uow(request_id) as tx:
        replayed = await _replay(tx.store, request)
    if replayed is not None:
        return Placed(replayed, replayed=True)

    quote = await pricing.quote(
        request.lines, request.region, authorization=authorization, request_id=request_id
    )
    order = _pending(request, quote, clock() + timedelta(seconds=reservation_ttl_s), request_id)
    async with uow(request_id) as tx:
        store = tx.store
        view = await store.orders.add(order, request.idempotency_key, request.request_hash)
        if view is None:
            # A concurrent request with this key won the key's primary key; we waited for its
            # commit and answer with its order.
            replayed = await _replay(store, request)
            if replayed is None:  # the winner rolled back between our insert and read
                raise Conflict("a request with this Idempotency-Key is in flight; retry")
            return Placed(replayed, replayed=True)
        await tx.events.emit(
            OrderPlaced(
                order_id=order.id,
                customer_id=order.customer_id,
                email=order.email,
                lines=list(order.lines),
                region=order.region,
                subtotal=order.subtotal,
                discount=order.discount,
                tax=order.tax,
                total=order.total,
                quote_id=order.quote_id,
                reservation_deadline=order.reservation_deadline,
            ),
            subject=order.id,
        )
        # The token leaves only here, on the restricted internal topic; it is never stored.
        await tx.events.emit(
            PaymentInstructionIssued(
                order_id=order.id,
                customer_id=order.customer_id,
                amount=order.total,
                token=request.payment_token,
            ),
            subject=order.id,
        )
    return Placed(view, replayed=False)


async def _replay(store: Store, request: OrderRequest) -> OrderView | None:
    """The order an earlier request with this key placed, or None; Conflict if that request
    had another body."""
    stored = await store.keys.find(request.customer_id, request.idempotency_key)
    if stored is None:
        return None
    if not domain.is_replay(stored.request_hash, request.request_hash):
        raise Conflict("this Idempotency-Key was already used with a different request body")
    view = await store.orders.view(stored.order_id)
    if view is None:  # the key's foreign key makes this impossible once committed
        raise NotFound(f"order {stored.order_id}")
    return view


def _pending(
    request: OrderRequest, quote: Quote, deadline: datetime, correlation_id: str
) -> PendingOrder:
    zero = Money(amount=0, currency=quote.total.currency)
    return PendingOrder(
        id=str(uuid.uuid4()),
        customer_id=request.customer_id,
        region=request.region,
        shipping_address=request.shipping_address,
        email=request.email,
        lines=tuple(
            PricedLine(
                sku=ln.sku,
                quantity=ln.quantity,
                unit_price=ln.unit_price,
                discount=ln.discount,
                tax=ln.tax or zero,
                total=ln.total,
            )
            for ln in quote.lines
        ),
        subtotal=quote.subtotal,
        discount=quote.discount,
        tax=quote.tax,
        total=quote.total,
        quote_id=quote.id,
        reservation_deadline=deadline,
        correlation_id=correlation_id,
    )


# --- reading ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderPage:
    orders: list[OrderView]
    # Another page follows the last of these orders.
    more: bool


async def get_order(tx: Tx[Store], caller: Principal, order_id: str) -> OrderView:
    """The order with its history and documents; another customer's order is NotFound, like a
    missing one."""
    view = _visible(await tx.store.orders.view(order_id), caller, order_id)
    return (await _with_documents(tx, [view]))[0]


async def list_orders(
    tx: Tx[Store],
    caller: Principal,
    *,
    customer_id: str | None,
    status: OrderStatus | None,
    before: tuple[datetime, str] | None,
    limit: int,
) -> OrderPage:
    """Newest first, after the (created_at, id) position `before`. Customers always see their
    own orders only (their `customer_id` is ignored); admins see all, or one customer's."""
    owner = customer_id if caller.is_admin else caller.sub
    # One more than asked tells whether there is another page.
    found = await tx.store.orders.newest(
        customer_id=owner, status=status, before=before, limit=limit + 1
    )
    return OrderPage(await _with_documents(tx, found[:limit]), more=len(found) > limit)


def _visible(view: OrderView | None, caller: Principal, order_id: str) -> OrderView:
    # Another customer's order is reported as missing, not forbidden: ids are not confirmed.
    if view is None or not caller.can_see(view.customer_id):
        raise NotFound(f"order {order_id}")
    return view


# --- the customer's and the operator's actions ---------------------------------------------------


async def request_cancellation(
    tx: Tx[Store], caller: Principal, order_id: str, reason: str
) -> OrderView:
    """Record the request and ask inventory and payments to undo their part (Conflict once the
    order shipped or ended); a repeated request changes nothing. Returns the order after."""
    order = await tx.store.orders.lock(order_id)
    if order is None or not caller.can_see(order.customer_id):
        raise NotFound(f"order {order_id}")
    await _request_cancellation(
        tx, order, _legal(lambda: domain.request_cancellation(order.state, reason))
    )
    return await get_order(tx, caller, order_id)


async def _request_cancellation(tx: Tx[Store], order: LockedOrder, after: Order) -> bool:
    """Record a cancellation request `after` holds (nothing if it was recorded already) and
    ask inventory and payments to undo their part."""
    before = order.state
    if after == before:
        return False
    await _move(tx, order, after)
    await tx.events.emit(
        OrderCancellationRequested(
            order_id=order.id,
            customer_id=order.customer_id,
            reason=after.cancellation_reason or domain.DEFAULT_CANCEL_REASON,
            previous_status=before.status.value,
        ),
        subject=order.id,
    )
    return True


async def payment_hold_lapsed(tx: Tx[Store], order_id: str) -> bool:
    """Capture policy on_shipment: the authorization lapsed before the order shipped (payments'
    PaymentFailed `authorization_expired`). A confirmed order is cancelled, reason
    `payment_issue`, the way a customer's cancellation goes (stock back, the hold released);
    False if the order is not one that can be (unknown, shipped, ended, already cancelling)."""
    order = await tx.store.orders.lock(order_id)
    if order is None or order.state.status is not OrderStatus.CONFIRMED:
        return False  # a pending order is rejected by the PaymentFailed itself
    after = domain.request_cancellation(order.state, domain.HOLD_LAPSED_REASON)
    return await _request_cancellation(tx, order, after)


async def ship(
    tx: Tx[Store],
    caller: Principal,
    order_id: str,
    *,
    carrier: str,
    tracking_number: str,
    clock: Clock,
) -> OrderView:
    """A confirmed order leaves the warehouse (Conflict otherwise, also during a cancellation)."""
    order = await _locked(tx, order_id)
    after = _legal(lambda: domain.ship(order.state))
    tracking = {
        "carrier": carrier,
        "tracking_number": tracking_number,
        "shipped_at": clock().isoformat(),
    }
    await _move(tx, order, after, tracking)
    return await get_order(tx, caller, order_id)


async def deliver(tx: Tx[Store], caller: Principal, order_id: str) -> OrderView:
    """A shipped order arrived (Conflict otherwise)."""
    order = await _locked(tx, order_id)
    await _move(tx, order, _legal(lambda: domain.deliver(order.state)))
    return await get_order(tx, caller, order_id)


async def _locked(tx: Tx[Store], order_id: str) -> LockedOrder:
    order = await tx.store.orders.lock(order_id)
    if order is None:
        raise NotFound(f"order {order_id}")
    return order


def _legal(decide: Callable[[], Order]) -> Order:
    try:
        return decide()
    except IllegalTransition as exc:
        raise Conflict(str(exc)) from exc


# --- facts other services report ----------------------------------------------------------------
# Each returns whether it changed the order: an unknown order, or a late, duplicated or
# out-of-order fact, changes nothing.


async def stock_reserved(tx: Tx[Store], order_id: str) -> bool:
    return await _apply_fact(tx, order_id, domain.note_stock_reserved)


async def stock_reservation_failed(tx: Tx[Store], order_id: str) -> bool:
    return await _apply_fact(tx, order_id, lambda o: domain.reject(o, "out_of_stock"))


async def stock_released(tx: Tx[Store], order_id: str, reason: str) -> bool:
    """Inventory gave stock back; only a release for a cancellation settles its stock half."""
    if reason != RELEASED_FOR_CANCELLATION:
        return False
    return await _apply_fact(tx, order_id, domain.cancellation_stock_returned)


async def payment_captured(
    tx: Tx[Store], order_id: str, clock: Clock, invoicing: domain.Invoicing | None = None
) -> bool:
    """Confirms a pending order in time (with its invoice), rejects it after its deadline
    (payments then refunds)."""
    now = clock()
    return await _apply_fact(
        tx, order_id, lambda o: domain.payment_captured(o, now), invoicing=invoicing
    )


async def payment_failed(tx: Tx[Store], order_id: str) -> bool:
    return await _apply_fact(tx, order_id, lambda o: domain.reject(o, "payment_declined"))


async def payment_returned(tx: Tx[Store], order_id: str) -> bool:
    """Payments refunded or voided the charge: the payment half of a cancellation."""
    return await _apply_fact(tx, order_id, domain.cancellation_payment_returned)


async def payment_refunded(
    tx: Tx[Store],
    order_id: str,
    amount: int,
    *,
    fully: bool,
    refund_id: str | None = None,
    reason: str = "",
    invoicing: domain.Invoicing | None = None,
) -> None:
    """Payments gave back `amount` of the charge (the order shows the total), credited by a
    credit note when the order was invoiced (once per `refund_id`). Only a refund that leaves
    nothing captured answers a cancellation: an operator's partial refund does not."""
    credited = refund_id is not None and (
        await tx.store.invoices.credit_note_for_refund(order_id, refund_id) is not None
    )
    if credited:
        # Reported again under another event id: credited and counted once already.
        log.info("refund %s of order %s was credited already", refund_id, order_id)
    elif amount > 0 and not await tx.store.orders.add_refunded(order_id, amount):
        log.info("refund of unknown order %s ignored", order_id)
        return
    if refund_id is not None and not credited:
        await issue_credit_note(
            tx,
            order_id,
            refund_id=refund_id,
            amount=amount,
            reason=reason,
            invoicing=invoicing or DEFAULT_INVOICING,
        )
    if fully:
        await payment_returned(tx, order_id)


async def _apply_fact(
    tx: Tx[Store],
    order_id: str,
    decide: Callable[[Order], Order | None],
    *,
    invoicing: domain.Invoicing | None = None,
) -> bool:
    order = await tx.store.orders.lock(order_id)
    if order is None:
        log.info("fact about unknown order %s ignored", order_id)
        return False
    after = decide(order.state)
    if after is None or after == order.state:
        return False
    await _move(tx, order, after, invoicing=invoicing)
    return True


# --- the reservation deadline -------------------------------------------------------------------


async def expire_overdue(claims: OverdueClaims, now: datetime, limit: int) -> int:
    """Reject pending orders whose deadline is before `now`, each in its own transaction with its
    OrderRejected, at most `limit`; returns how many."""
    swept = 0
    while swept < limit:
        async with claims(now) as claimed:
            if claimed is None:
                break
            after = domain.expire(claimed.order.state, now)
            if after is None:
                break
            await _move(claimed.tx, claimed.order, after)
        swept += 1
    return swept


# --- writing a change ---------------------------------------------------------------------------


async def _move(
    tx: Tx[Store],
    order: LockedOrder,
    after: Order,
    tracking: dict[str, Any] | None = None,
    *,
    invoicing: domain.Invoicing | None = None,
) -> None:
    """Write the new state; a new status also gets its history entry (in the same statement) and
    its event. A confirmation issues the order's invoice, which its OrderConfirmed carries."""
    if after.status is order.state.status:
        await tx.store.orders.save(order.id, after, tracking)
        return
    await tx.store.orders.save_status_change(order.id, after, tracking)
    event = _status_event(order, after, tracking)
    if isinstance(event, OrderConfirmed):  # invoices (issue 12)
        invoice = await issue_invoice(tx, order.id, invoicing or DEFAULT_INVOICING)
        event = event.model_copy(update={"invoice": invoice})
    await tx.events.emit(event, subject=order.id)


def _status_event(order: LockedOrder, after: Order, tracking: dict[str, Any] | None) -> BaseModel:
    who = {"order_id": order.id, "customer_id": order.customer_id}
    match after.status:
        case OrderStatus.CONFIRMED:
            return OrderConfirmed(
                **who, email=order.email, lines=list(order.lines), total=order.total
            )
        case OrderStatus.REJECTED:
            return OrderRejected(**who, email=order.email, reason=after.reason or "invalid")
        case OrderStatus.CANCELLED:
            return OrderCancelled(**who, email=order.email, reason=after.reason or "")
        case OrderStatus.SHIPPED:
            return OrderShipped(**who, email=order.email, tracking=tracking or {})
        case OrderStatus.DELIVERED:
            return OrderDelivered(**who)
    raise AssertionError(f"no event for a move to {after.status}")


# --- invoices and credit notes (issue 12) ---


class InvoiceRepository(Protocol):
    async def allocate(self, store: str, kind: str) -> DocumentNumber:
        """The next number of the (store, kind, current year) sequence, and now (the issue
        time); the counter stays locked until the transaction ends, a rollback gives it back."""
        ...

    async def source(self, order_id: str) -> InvoiceSource | None: ...

    async def add_invoice(self, invoice: Invoice) -> None: ...

    async def invoice(self, order_id: str) -> Invoice | None: ...

    async def add_credit_note(self, note: CreditNote) -> None: ...

    async def credit_note_for_refund(self, order_id: str, refund_id: str) -> CreditNote | None:
        """The order's credit note of that refund, if it has one."""
        ...

    async def credit_note(self, order_id: str, number: str) -> CreditNote | None: ...

    async def credited(self, order_id: str) -> int: ...

    async def documents(self, order_ids: list[str]) -> dict[str, OrderDocuments]: ...


DEFAULT_INVOICING = domain.Invoicing()
# Built and checked before a number is taken, so a document that would not add up takes none.
_UNNUMBERED = "UNNUMBERED"
_DRAFT_ISSUED_AT = datetime(1970, 1, 1, tzinfo=UTC)  # replaced by the allocation's time


async def issue_invoice(
    tx: Tx[Store], order_id: str, invoicing: domain.Invoicing
) -> Invoice | None:
    """The invoice of an order being confirmed, numbered and stored in the confirming
    transaction. None (logged as an error, the order is still confirmed) when it would not add
    up to the order: a wrong invoice is worse than a late one, and no number is spent on it."""
    source = await tx.store.invoices.source(order_id)
    if source is None:
        return None
    try:
        draft = domain.build_invoice(_UNNUMBERED, _DRAFT_ISSUED_AT, invoicing, source)
    except domain.InvoiceMismatch as exc:
        log.error("no invoice for order %s: %s", order_id, exc)
        return None
    allocated = await tx.store.invoices.allocate(invoicing.store, domain.INVOICE)
    number = domain.document_number(
        invoicing.prefix(domain.INVOICE), allocated.year, allocated.sequence
    )
    invoice = draft.model_copy(update={"number": number, "issued_at": allocated.issued_at})
    await tx.store.invoices.add_invoice(invoice)
    return invoice


async def issue_credit_note(
    tx: Tx[Store],
    order_id: str,
    *,
    refund_id: str,
    amount: int,
    reason: str,
    invoicing: domain.Invoicing,
) -> CreditNote | None:
    """The credit note of a refund of an invoiced order, numbered, stored and announced
    (CreditNoteIssued) in the refund's transaction. Nothing for a refund credited already (the
    same refund id), of an order without an invoice (refunded before it was confirmed), or once
    the whole invoice is credited. The order is locked by the caller (its `refunded` update),
    so what was credited before is read consistently."""
    store = tx.store.invoices
    if amount <= 0 or await store.credit_note_for_refund(order_id, refund_id) is not None:
        return None
    invoice = await store.invoice(order_id)
    if invoice is None:
        log.info("refund %s of order %s: no invoice, no credit note", refund_id, order_id)
        return None
    before = await store.credited(order_id)
    if before >= invoice.total.amount:
        log.warning("refund %s of order %s: its invoice is fully credited", refund_id, order_id)
        return None

    allocated = await store.allocate(invoicing.store, domain.CREDIT_NOTE)
    number = domain.document_number(
        invoicing.prefix(domain.CREDIT_NOTE), allocated.year, allocated.sequence
    )
    note = domain.build_credit_note(
        number,
        allocated.issued_at,
        invoice,
        refund_id=refund_id,
        amount=amount,
        credited_before=before,
        reason=reason or "refund",
    )
    await store.add_credit_note(note)
    await tx.events.emit(
        CreditNoteIssued(
            order_id=order_id,
            number=note.number,
            invoice_number=note.invoice_number,
            amount=note.amount,
            tax=note.tax,
            reason=note.reason,
            issued_at=note.issued_at,
            refund_id=refund_id,
            credit_note=note,
        ),
        subject=order_id,
    )
    return note


@dataclass(frozen=True)
class Document:
    """A rendered document as a route answers it."""

    filename: str
    content: bytes


async def invoice_pdf(
    tx: Tx[Store], caller: Principal, order_id: str, renderer: DocumentRenderer
) -> Document:
    """The order's invoice as a PDF (owner or admin). NotFound for another customer's order, and
    for an order without an invoice (not confirmed yet, or rejected: nothing was sold)."""
    await _owned(tx, caller, order_id)
    invoice = await tx.store.invoices.invoice(order_id)
    if invoice is None:
        raise NotFound(f"invoice of order {order_id} (an order is invoiced once confirmed)")
    return Document(f"{invoice.number}.pdf", renderer.invoice(invoice))


async def credit_note_pdf(
    tx: Tx[Store], caller: Principal, order_id: str, number: str, renderer: DocumentRenderer
) -> Document:
    """One of the order's credit notes as a PDF (owner or admin); NotFound otherwise."""
    await _owned(tx, caller, order_id)
    note = await tx.store.invoices.credit_note(order_id, number)
    if note is None:
        raise NotFound(f"credit note {number} of order {order_id}")
    return Document(f"{note.number}.pdf", renderer.credit_note(note))


async def _owned(tx: Tx[Store], caller: Principal, order_id: str) -> None:
    _visible(await tx.store.orders.view(order_id), caller, order_id)


async def _with_documents(tx: Tx[Store], views: list[OrderView]) -> list[OrderView]:
    """The views with their invoice and credit notes (two queries for any number of orders)."""
    found = await tx.store.invoices.documents([v.id for v in views])
    # An order without any keeps `documents` None, as a view read without them has it.
    return [replace(v, documents=found[v.id]) if v.id in found else v for v in views]
