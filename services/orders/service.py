"""Orders use cases: place (priced, idempotent), read, cancel, ship, deliver, expire overdue
orders, and apply stock and payment facts. Every change locks the order and lets domain.py decide;
a new status gets its history entry and its event in the same transaction. Carts: create, change
lines (checked against catalog), read live, check out through place_order, report abandoned."""

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pydantic import BaseModel

from libs.events.common import BackorderedLine, Line, Money, PricedLine
from libs.events.envelope import CloudEvent
from libs.events.orders import (
    CartAbandoned,
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
    ReturnCompleted,
    ReturnReceived,
    ReturnRequested,
    ShipmentCreated,
    ShipmentUpdated,
)
from libs.events.orders import ReceivedLine as ReceivedLineEvent
from libs.events.orders import ReturnLine as ReturnLineEvent
from libs.kit.auth import Principal
from libs.kit.errors import Conflict, Forbidden, Invalid, NotFound
from libs.kit.findings import Finding
from libs.kit.retry import RetryPolicy
from libs.kit.uow import Clock, Tx, UnitOfWork, utc_now
from libs.kit.worker import Handoff
from services.orders import domain, metrics
from services.orders.adapters import (
    Carrier,
    CatalogClient,
    DocumentRenderer,
    PermanentCarrierError,
    PricingClient,
    PurchasedLabel,
    Quote,
    ShipmentRequest,
    TransientCarrierError,
)
from services.orders.domain import (
    Cart,
    CartLine,
    CartStatus,
    CartView,
    CatalogProduct,
    DocumentNumber,
    IllegalTransition,
    InvoiceSource,
    LockedOrder,
    Order,
    OrderDocuments,
    OrderReturn,
    OrderStatus,
    OrderView,
    PendingOrder,
    ReceivedLine,
    ReturnLine,
    ReturnNotAllowed,
    ReturnStatus,
    ShipmentIntent,
    ShipmentStatus,
    ShipmentView,
    ShippingRefundPolicy,
    StoredKey,
    TrackedShipment,
    TrackingEvent,
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
        channel: str | None = None,
    ) -> list[OrderView]: ...


class KeyRepository(Protocol):
    async def find(self, customer_id: str, key: str) -> StoredKey | None: ...


class Store(Protocol):
    @property
    def orders(self) -> OrderRepository: ...

    @property
    def keys(self) -> KeyRepository: ...

    @property
    def carts(self) -> "CartRepository": ...

    @property
    def shipments(self) -> "ShipmentRepository": ...

    @property
    def carrier_deliveries(self) -> "CarrierDeliveries": ...

    @property
    def returns(self) -> "ReturnRepository": ...

    @property
    def invoices(self) -> "InvoiceRepository": ...  # invoices and credit notes (issue 12)

    @property
    def channels(self) -> "ChannelRepository": ...  # issue 13

    @property
    def backorders(self) -> "BackorderRepository": ...  # issue 13

    @property
    def journal(self) -> "JournalRepository": ...  # issue 14: the timeline's events


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
    shipping_method: str | None = None
    # Issue 13: the sales channel, and whether the caller may use any kind of channel (the
    # channel's own principal, or an admin) or only the customers' kinds.
    channel: str = domain.DEFAULT_CHANNEL
    channel_privileged: bool = False


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
    cart: "CartClosing | None" = None,
) -> Placed:
    """Answer a replay from the database alone; otherwise price the lines (outside any
    transaction: a slow pricing holds no connection), then write the key, the pending order, its
    history and its two events in one transaction. Pricing's refusals (Invalid) and outages
    (Unavailable) pass through and spend no key. The events carry the request id. A checkout
    names its `cart`: it is closed in that same transaction (Conflict, nothing written, when it
    was checked out or changed meanwhile)."""
    async with uow(request_id) as tx:
        replayed = await _replay(tx.store, request)
        if replayed is None:
            await check_channel(tx.store, request)
    if replayed is not None:
        return Placed(replayed, replayed=True)

    quote = await pricing.quote(
        request.lines,
        request.region,
        authorization=authorization,
        request_id=request_id,
        shipping_method=request.shipping_method,
        channel=request.channel,
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
        if cart is not None:
            await _close_cart(store, cart, order.id, clock())
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
                shipping=order.shipping,
                shipping_method=order.shipping_method,
                channel=order.channel,
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
        shipping=quote.shipping or zero,
        shipping_method=quote.shipping_method,
        weight_g=quote.weight_g or 0,
        channel=request.channel,
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
    channel: str | None = None,
) -> OrderPage:
    """Newest first, after the (created_at, id) position `before`. Customers always see their
    own orders only (their `customer_id` is ignored); admins see all, or one customer's; a
    channel principal its channel's (its `channel` is its own, whatever it asks)."""
    owner = customer_id if caller.is_admin or caller.channel else caller.sub
    # One more than asked tells whether there is another page.
    found = await tx.store.orders.newest(
        customer_id=owner,
        status=status,
        before=before,
        limit=limit + 1,
        channel=caller.channel or channel,
    )
    return OrderPage(await _with_documents(tx, found[:limit]), more=len(found) > limit)


def _visible(view: OrderView | None, caller: Principal, order_id: str) -> OrderView:
    # Another customer's order is reported as missing, not forbidden: ids are not confirmed.
    if view is None or not domain.may_read_order(
        sub=caller.sub,
        is_admin=caller.is_admin,
        bound=caller.channel,
        customer_id=view.customer_id,
        channel=view.channel,
    ):
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


async def stock_reserved(
    tx: Tx[Store],
    order_id: str,
    invoicing: domain.Invoicing | None = None,
    on_confirmed: Callable[[], None] | None = None,
    labels: "LabelHandOver | None" = None,
) -> bool:
    """Noted on a pending order; confirms (with its invoice) one whose payment came first."""
    return await _apply_fact(
        tx,
        order_id,
        domain.note_stock_reserved,
        invoicing=invoicing,
        on_confirmed=on_confirmed,
        labels=labels,
    )


async def stock_reservation_failed(tx: Tx[Store], order_id: str) -> bool:
    return await _apply_fact(tx, order_id, lambda o: domain.reject(o, "out_of_stock"))


async def stock_released(tx: Tx[Store], order_id: str, reason: str) -> bool:
    """Inventory gave stock back; only a release for a cancellation settles its stock half."""
    if reason != RELEASED_FOR_CANCELLATION:
        return False
    return await _apply_fact(tx, order_id, domain.cancellation_stock_returned)


async def payment_captured(
    tx: Tx[Store],
    order_id: str,
    clock: Clock,
    invoicing: domain.Invoicing | None = None,
    on_confirmed: Callable[[], None] | None = None,
    labels: "LabelHandOver | None" = None,
) -> bool:
    """Confirms a pending order in time (with its invoice) once its stock is reserved (until
    then notes it paid), rejects it after its deadline (payments then refunds)."""
    now = clock()
    return await _apply_fact(
        tx,
        order_id,
        lambda o: domain.payment_captured(o, now),
        invoicing=invoicing,
        on_confirmed=on_confirmed,
        labels=labels,
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
    on_confirmed: Callable[[], None] | None = None,
    labels: "LabelHandOver | None" = None,
) -> bool:
    """Lock the order, decide, write; `on_confirmed` runs after the commit of a confirmation
    (which records the order's shipment: the label worker is woken to buy it), unless the
    shipment was handed to `labels` claimed already."""
    order = await tx.store.orders.lock(order_id)
    if order is None:
        log.info("fact about unknown order %s ignored", order_id)
        return False
    after = decide(order.state)
    if after is None or after == order.state:
        return False
    handed = await _move(tx, order, after, invoicing=invoicing, labels=labels)
    if on_confirmed is not None and after.status is OrderStatus.CONFIRMED and not handed:
        tx.on_commit(on_confirmed)
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
    labels: "LabelHandOver | None" = None,
) -> bool:
    """Write the new state; a new status also gets its history entry (in the same statement) and
    its event. A confirmation issues the order's invoice, which its OrderConfirmed carries, and
    records its shipment (True if it was handed to `labels` claimed)."""
    handed = False
    if after.status is order.state.status:
        await tx.store.orders.save(order.id, after, tracking)
        return handed
    await tx.store.orders.save_status_change(order.id, after, tracking)
    if after.status.value in metrics.OUTCOMES:  # issue 14
        tx.on_commit(
            metrics.outcome_recorder(
                after.status.value, after.reason, order.channel, order.placed_at
            )
        )
    event = _status_event(order, after, tracking)
    if isinstance(event, OrderConfirmed):
        # Issue 12: the order's shipment to buy, then its invoice. The invoice number is the
        # last write: its counter row is locked from there to the commit, as briefly as can be.
        # issue 13: may be held
        event, handed = await _intend_confirmed_shipment(tx, order, after, event, labels)
        invoice = await issue_invoice(tx, order.id, invoicing or DEFAULT_INVOICING)
        event = event.model_copy(update={"invoice": invoice})
    await tx.events.emit(event, subject=order.id)
    return handed


def _status_event(order: LockedOrder, after: Order, tracking: dict[str, Any] | None) -> BaseModel:
    who = {"order_id": order.id, "customer_id": order.customer_id}
    match after.status:
        case OrderStatus.CONFIRMED:
            return OrderConfirmed(
                **who,
                email=order.email,
                lines=list(order.lines),
                total=order.total,
                channel=order.channel,
            )
        case OrderStatus.REJECTED:
            return OrderRejected(**who, email=order.email, reason=after.reason or "invalid")
        case OrderStatus.CANCELLED:
            return OrderCancelled(**who, email=order.email, reason=after.reason or "")
        case OrderStatus.SHIPPED:
            return OrderShipped(**who, email=order.email, tracking=tracking or {})
        case OrderStatus.DELIVERED:
            return OrderDelivered(**who, email=order.email)
    raise AssertionError(f"no event for a move to {after.status}")


# --- carts (issue 12) ---------------------------------------------------------------------------
# A cart is the customer's own: another customer's reads as missing. Catalog answers outside any
# transaction (one call per line, concurrently); a line is written with the cart's row locked, so
# changes and the checkout's close take turns and no line is lost.


class CartRepository(Protocol):
    async def add(self, cart: Cart) -> None: ...

    async def get(self, cart_id: str) -> Cart | None: ...

    async def lock(self, cart_id: str) -> Cart | None:
        """The cart, held until the transaction ends."""
        ...

    async def set_line(self, cart_id: str, line: CartLine) -> None:
        """Insert the line, or change the existing line of its sku in place."""
        ...

    async def remove_line(self, cart_id: str, sku: str) -> bool: ...

    async def touch(self, cart_id: str, now: datetime, email: str | None) -> None:
        """Record a change at `now`: next revision, abandonment cleared, email kept if None."""
        ...

    async def close(self, cart_id: str, order_id: str, revision: int, now: datetime) -> bool:
        """Check the cart out for the order if it is open at `revision`; False otherwise."""
        ...

    async def mark_abandoned(self, idle_before: datetime, now: datetime, limit: int) -> list[Cart]:
        """Mark (at `now`) and return up to `limit` open carts with lines, unchanged since before
        `idle_before` and not marked yet; carts another transaction holds are skipped."""
        ...


@dataclass(frozen=True)
class CartClosing:
    """The cart a checkout closes, at the revision whose lines it ordered."""

    cart_id: str
    revision: int


UNKNOWN_SKU = "unknown sku"
DISCONTINUED = "the product is discontinued"


async def create_cart(
    uow: UnitOfWork[Store],
    catalog: CatalogClient,
    caller: Principal,
    lines: list[tuple[str, int]],
    *,
    email: str | None,
    clock: Clock,
    request_id: str,
) -> CartView:
    """A new open cart for the caller, with `lines` if given (each sku must be an active
    product: Invalid naming `lines[i].sku` otherwise)."""
    products = await _products(catalog, [sku for sku, _ in lines], request_id)
    for index, (sku, _) in enumerate(lines):
        refusal = _refusal(products[sku])
        if refusal is not None:
            raise Invalid.field(f"lines[{index}].sku", refusal)
    now = clock()
    cart = Cart(
        id=str(uuid.uuid4()),
        customer_id=caller.sub,
        status=CartStatus.OPEN,
        email=email,
        lines=tuple(CartLine(sku, quantity, _price(products[sku])) for sku, quantity in lines),
        revision=0,
        order_id=None,
        created_at=now,
        updated_at=now,
    )
    async with uow(request_id) as tx:
        await tx.store.carts.add(cart)
    return domain.live_cart(cart, products)


async def get_cart(
    uow: UnitOfWork[Store], catalog: CatalogClient, caller: Principal, cart_id: str, request_id: str
) -> CartView:
    """The cart (owner or admin) with each line's price and availability as catalog has them
    now."""
    async with uow(request_id) as tx:
        cart = _visible_cart(await tx.store.carts.get(cart_id), caller, cart_id)
    return await _live(catalog, cart, {}, request_id)


async def set_cart_line(
    uow: UnitOfWork[Store],
    catalog: CatalogClient,
    caller: Principal,
    cart_id: str,
    sku: str,
    quantity: int,
    *,
    email: str | None,
    clock: Clock,
    request_id: str,
) -> CartView:
    """Set the sku's line to `quantity` (0 removes it; removing an absent line changes nothing).
    A positive quantity needs an active product (Invalid naming `sku`); a checked-out cart is a
    Conflict. Quantities beyond availability are kept, and flagged by the live view."""
    async with uow(request_id) as tx:
        # Refuse a missing or closed cart before asking catalog anything.
        _open(_owned_cart(await tx.store.carts.get(cart_id), caller, cart_id))
    product: CatalogProduct | None = None
    if quantity > 0:
        product = await catalog.product(sku, request_id=request_id)
        refusal = _refusal(product)
        if refusal is not None:
            raise Invalid.field("sku", refusal)
    async with uow(request_id) as tx:
        carts = tx.store.carts
        cart = _open(_owned_cart(await carts.lock(cart_id), caller, cart_id))
        present = any(line.sku == sku for line in cart.lines)
        if quantity == 0:
            if present:
                await carts.remove_line(cart_id, sku)
                await carts.touch(cart_id, clock(), email)
        else:
            if not present and len(cart.lines) >= domain.MAX_CART_LINES:
                raise Invalid.field("sku", f"a cart holds at most {domain.MAX_CART_LINES} lines")
            await carts.set_line(cart_id, CartLine(sku, quantity, _price(product)))
            await carts.touch(cart_id, clock(), email)
        after = await carts.get(cart_id)
    if after is None:  # the cart row is locked: it cannot vanish meanwhile
        raise NotFound(f"cart {cart_id}")
    return await _live(catalog, after, {sku: product} if product else {}, request_id)


async def checkout_cart(
    uow: UnitOfWork[Store],
    pricing: PricingClient,
    caller: Principal,
    cart_id: str,
    request: OrderRequest,
    *,
    clock: Clock,
    reservation_ttl_s: int,
    request_id: str,
    authorization: str | None,
) -> Placed:
    """Place the cart's lines as an order exactly as POST /orders does (`request` carries the
    key, where, how and who; its lines are replaced by the cart's) and close the cart in the
    order's transaction. A replay answers the order it placed; a cart already checked out is a
    Conflict; an empty one is Invalid naming `lines`."""
    async with uow(request_id) as tx:
        cart = _owned_cart(await tx.store.carts.get(cart_id), caller, cart_id)
        # The key first: a replay of this very checkout finds the cart closed, and must not fail.
        replayed = await _replay(tx.store, request)
    if replayed is not None:
        return Placed(replayed, replayed=True)
    _open(cart)
    if not cart.lines:
        raise Invalid.field("lines", "the cart is empty: add lines before checking out")
    ordered = OrderRequest(
        customer_id=request.customer_id,
        idempotency_key=request.idempotency_key,
        request_hash=request.request_hash,
        lines=[(line.sku, line.quantity) for line in cart.lines],
        region=request.region,
        shipping_address=request.shipping_address,
        email=request.email,
        payment_token=request.payment_token,
        shipping_method=request.shipping_method,
        channel=request.channel,
        channel_privileged=request.channel_privileged,
    )
    return await place_order(
        uow,
        pricing,
        ordered,
        clock=clock,
        reservation_ttl_s=reservation_ttl_s,
        request_id=request_id,
        authorization=authorization,
        cart=CartClosing(cart.id, cart.revision),
    )


async def abandon_idle_carts(
    uow: UnitOfWork[Store], now: datetime, *, idle_after_s: int, limit: int
) -> int:
    """Mark open carts with lines left unchanged for `idle_after_s` as abandoned and emit each
    one's CartAbandoned, in one transaction (at most `limit`); returns how many. A cart is
    reported once per idle period: the mark and the event commit together, and another sweeper
    skips the rows this one holds."""
    async with uow() as tx:
        found = await tx.store.carts.mark_abandoned(
            now - timedelta(seconds=idle_after_s), now, limit
        )
        for cart in found:
            await tx.events.emit(
                CartAbandoned(
                    cart_id=cart.id,
                    customer_id=cart.customer_id,
                    email=cart.email,
                    lines=[Line(sku=ln.sku, quantity=ln.quantity) for ln in cart.lines],
                    subtotal=domain.seen_subtotal(cart.lines),
                    idle_since=cart.updated_at,
                ),
                subject=cart.id,
            )
    return len(found)


async def _close_cart(store: Store, cart: CartClosing, order_id: str, now: datetime) -> None:
    if await store.carts.close(cart.cart_id, order_id, cart.revision, now):
        return
    current = await store.carts.get(cart.cart_id)
    if current is not None and current.status is CartStatus.CHECKED_OUT:
        raise Conflict("cart already checked out")
    raise Conflict("the cart changed during checkout: read it and check out again")


async def _products(
    catalog: CatalogClient, skus: list[str], request_id: str
) -> dict[str, CatalogProduct | None]:
    """Catalog's answer for each sku, asked concurrently (one call per sku)."""
    unique = list(dict.fromkeys(skus))
    found = await asyncio.gather(*(catalog.product(s, request_id=request_id) for s in unique))
    return dict(zip(unique, found, strict=True))


async def _live(
    catalog: CatalogClient,
    cart: Cart,
    known: dict[str, CatalogProduct | None],
    request_id: str,
) -> CartView:
    missing = [line.sku for line in cart.lines if line.sku not in known]
    return domain.live_cart(cart, {**await _products(catalog, missing, request_id), **known})


def _refusal(product: CatalogProduct | None) -> str | None:
    if product is None:
        return UNKNOWN_SKU
    return None if domain.is_purchasable(product) else DISCONTINUED


def _price(product: CatalogProduct | None) -> Money | None:
    return product.price if product is not None else None


def _visible_cart(cart: Cart | None, caller: Principal, cart_id: str) -> Cart:
    # As with orders: another customer's cart is reported missing, its id not confirmed.
    if cart is None or not caller.can_see(cart.customer_id):
        raise NotFound(f"cart {cart_id}")
    return cart


def _owned_cart(cart: Cart | None, caller: Principal, cart_id: str) -> Cart:
    """Only the owner changes or checks out a cart; an admin may read it, not change it."""
    visible = _visible_cart(cart, caller, cart_id)
    if visible.customer_id != caller.sub:
        raise Forbidden("only the cart's owner can change or check out a cart")
    return visible


def _open(cart: Cart) -> Cart:
    if cart.status is not CartStatus.OPEN:
        raise Conflict("cart already checked out")
    return cart


# --- shipments (issue 12) ---
# Intent, call, outcome: the order's confirmation records a pending shipment; the label worker
# claims it (SKIP LOCKED, a lease), buys the label from the carrier outside any transaction
# (the shipment id is the idempotency key) and records the label in a new transaction with its
# ShipmentCreated. Carrier webhooks then move the shipment and, through it, the order.

Wake = Callable[[], None]


class LabelHandOver(Protocol):
    """This process's label worker, taking shipments claimed by the confirmation that records
    them (issue 10: no claim transaction of its own), while it has room."""

    carrier: Carrier
    lease_s: float

    def has_room(self) -> bool: ...

    def give(self, tx: Tx["Store"], intent: ShipmentIntent) -> None:
        """Buy the label of `intent` once `tx` commits (nothing if it rolls back)."""
        ...


class ShipmentRepository(Protocol):
    async def add_intent(
        self,
        shipment_id: str,
        order_id: str,
        *,
        automatic: bool,
        carrier: str | None = None,
        lease_s: float | None = None,
    ) -> bool: ...

    async def claim_due(self, carrier: str, limit: int, lease_s: float) -> list[ShipmentIntent]: ...

    async def record_label(
        self,
        shipment_id: str,
        attempts: int,
        *,
        tracking_number: str,
        carrier_ref: str,
        label_pdf: bytes | None,
        label_url: str,
        tracking_url: str | None,
    ) -> ShipmentView | None: ...

    async def record_not_bought(
        self, shipment_id: str, attempts: int, status: ShipmentStatus, reason: str
    ) -> ShipmentView | None: ...

    async def lock_by_tracking(
        self, carrier: str, tracking_number: str
    ) -> TrackedShipment | None: ...

    async def set_status(self, shipment_id: str, status: ShipmentStatus) -> None: ...

    async def label(self, order_id: str, shipment_id: str) -> bytes | None: ...


class CarrierDeliveries(Protocol):
    async def claim(self, carrier: str, event_id: str, event_type: str) -> bool:
        """False if this carrier event was handled before (a redelivery)."""
        ...


async def _intend_shipment(tx: Tx[Store], order_id: str) -> None:
    """The confirmed order's shipment, to be bought once this commits (once per order)."""
    await tx.store.shipments.add_intent(str(uuid.uuid4()), order_id, automatic=True)


async def request_shipment(
    tx: Tx[Store], caller: Principal, order_id: str, wake: Wake
) -> OrderView:
    """An operator asks for another shipment of a confirmed or shipped order (a failed label, a
    lost parcel): a new pending one the label worker buys. Conflict for any other order."""
    order = await _locked(tx, order_id)
    if not domain.may_buy_label(order.state.status, order.state.cancellation_requested):
        raise Conflict(f"order is {order.state.status}: no shipment can be bought for it")
    await tx.store.shipments.add_intent(str(uuid.uuid4()), order_id, automatic=False)
    tx.on_commit(wake)
    return await get_order(tx, caller, order_id)


async def shipment_label(
    tx: Tx[Store], caller: Principal, order_id: str, shipment_id: str
) -> bytes:
    """The label PDF we hold (the sandbox's), for the order's owner or an admin; NotFound
    otherwise (also for a label that is at the carrier's URL)."""
    view = _visible(await tx.store.orders.view(order_id), caller, order_id)
    pdf = await tx.store.shipments.label(view.id, shipment_id)
    if pdf is None:
        raise NotFound(f"label of shipment {shipment_id}")
    return pdf


class LabelWorker:
    """Buys the labels of pending shipments: `step` (run by a kit Worker, woken when an order
    is confirmed) claims up to `batch` for `lease_s` and buys them concurrently. A transient
    carrier error past `retry` leaves the shipment pending: it is claimed again once its lease
    runs out. A permanent one marks it `failed` with the reason."""

    def __init__(
        self,
        uow: UnitOfWork[Store],
        carrier: Carrier,
        retry: RetryPolicy,
        *,
        lease_s: float = 60.0,
        batch: int = 10,
        item_weight_g: int = 500,
        clock: Clock = utc_now,
    ) -> None:
        self.clock = clock
        self.uow = uow
        self.carrier = carrier
        self.retry = retry
        self.lease_s = lease_s
        self.batch = batch
        self.item_weight_g = item_weight_g
        # Shipments claimed by the confirmations of this process (LabelHandOver); `wake`: the
        # worker's, set by whoever runs it.
        self.wake: Wake = lambda: None
        self._handed: Handoff[ShipmentIntent] = Handoff(batch, lambda: self.wake())

    def has_room(self) -> bool:
        """LabelHandOver: whether fewer than a batch wait to be bought here."""
        return self._handed.has_room()

    def give(self, tx: Tx[Store], intent: ShipmentIntent) -> None:
        """LabelHandOver: buy `intent` (claimed by `tx`) once `tx` commits."""
        self._handed.give(tx, intent)

    async def step(self) -> int:
        """Buy what was handed over, else claim a batch; returns how many if that was a full
        batch of claims (more may be due), else 0."""
        handed = self._handed.take(self.batch)
        if handed:
            await asyncio.gather(*(self.buy(intent) for intent in handed))
            return 0
        async with self.uow() as tx:
            intents = await tx.store.shipments.claim_due(
                self.carrier.name, self.batch, self.lease_s
            )
        await asyncio.gather(*(self.buy(intent) for intent in intents))
        return len(intents) if len(intents) >= self.batch else 0

    async def buy(self, intent: ShipmentIntent) -> None:
        """Carry out one claimed shipment and record its outcome (never raises but cancels)."""
        try:
            await self._buy(intent)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the shipment stays pending: claimed again after the lease
            log.warning(
                "label of shipment %s (order %s) not bought (claim %d), again after the lease: %r",
                intent.id,
                intent.order_id,
                intent.attempts,
                exc,
            )

    async def _buy(self, intent: ShipmentIntent) -> None:
        if not domain.may_buy_label(intent.order_status, intent.cancellation_requested):
            async with self.uow(intent.correlation_id) as tx:
                await tx.store.shipments.record_not_bought(
                    intent.id,
                    intent.attempts,
                    ShipmentStatus.CANCELLED,
                    f"order is {intent.order_status}"
                    + (" and being cancelled" if intent.cancellation_requested else ""),
                )
            log.info("shipment %s not bought: order %s is not leaving", intent.id, intent.order_id)
            return
        request = ShipmentRequest(
            idempotency_key=intent.id,
            order_id=intent.order_id,
            address={str(k): v for k, v in intent.shipping_address.items()},
            lines=tuple((ln.sku, ln.quantity) for ln in intent.lines),
            weight_grams=intent.weight_g
            or max(1, sum(ln.quantity for ln in intent.lines)) * self.item_weight_g,
        )
        try:
            label = await self.retry.run(
                f"label of shipment {intent.id}",
                lambda: self.carrier.create_shipment(request),
                retry_on=(TransientCarrierError,),
            )
        except PermanentCarrierError as exc:
            await self._record_failure(intent, str(exc))
            return
        await self._record_label(intent, label)

    async def _record_label(self, intent: ShipmentIntent, label: PurchasedLabel) -> None:
        label_url = label.label_url or domain.label_path(intent.order_id, intent.id)
        async with self.uow(intent.correlation_id) as tx:
            recorded = await tx.store.shipments.record_label(
                intent.id,
                intent.attempts,
                tracking_number=label.tracking_number,
                carrier_ref=label.carrier_ref,
                label_pdf=label.label_pdf,
                label_url=label_url,
                tracking_url=label.tracking_url,
            )
            if recorded is None:
                log.info("shipment %s: claim %d was overtaken", intent.id, intent.attempts)
                return
            await tx.events.emit(
                ShipmentCreated(
                    order_id=intent.order_id,
                    shipment_id=intent.id,
                    carrier=intent.carrier,
                    tracking_number=label.tracking_number,
                    label_url=label_url,
                    tracking_url=label.tracking_url,
                ),
                subject=intent.order_id,
            )
        log.info("shipment %s: label %s bought", intent.id, label.tracking_number)

    async def _record_failure(self, intent: ShipmentIntent, reason: str) -> None:
        async with self.uow(intent.correlation_id) as tx:
            failed = await tx.store.shipments.record_not_bought(
                intent.id, intent.attempts, ShipmentStatus.FAILED, reason
            )
            if failed is None:
                return
            await tx.events.emit(
                ShipmentUpdated(
                    order_id=intent.order_id,
                    shipment_id=intent.id,
                    carrier=intent.carrier,
                    status=ShipmentStatus.FAILED.value,
                    at=self.clock(),
                    detail=reason[:500],
                ),
                subject=intent.order_id,
            )
        log.warning("shipment %s: the carrier refused the label: %s", intent.id, reason)


async def apply_tracking(tx: Tx[Store], carrier: str, event: TrackingEvent) -> str:
    """A verified carrier tracking update, once (its event id in the inbox, this transaction):
    the shipment's new status with its ShipmentUpdated, and the order shipped and delivered as
    the parcel goes. Returns what it did: duplicate, ignored (unknown tracking number), stale
    (an update that changes nothing), or the shipment's new status."""
    if not await tx.store.carrier_deliveries.claim(carrier, event.event_id, event.event_type):
        return "duplicate"
    shipment = await tx.store.shipments.lock_by_tracking(carrier, event.tracking_number)
    if shipment is None:
        log.info("%s tracking update for unknown number %s ignored", carrier, event.tracking_number)
        return "ignored"
    target = domain.next_shipment_status(shipment.status, event.status)
    if target is None:
        return "stale"
    await tx.store.shipments.set_status(shipment.id, target)
    await tx.events.emit(
        ShipmentUpdated(
            order_id=shipment.order_id,
            shipment_id=shipment.id,
            carrier=carrier,
            tracking_number=shipment.tracking_number,
            status=target.value,
            at=event.at,
            detail=event.detail,
        ),
        subject=shipment.order_id,
    )
    order = await tx.store.orders.lock(shipment.order_id)
    if order is None:  # the shipment's foreign key makes this impossible
        return target.value
    for move in domain.tracking_moves(order.state, event.status):
        after = order.state.moved_to(move)
        tracking: dict[str, Any] | None = None
        if move is OrderStatus.SHIPPED:
            tracking = {
                "carrier": carrier,
                "tracking_number": shipment.tracking_number,
                "shipped_at": event.at.isoformat(),
            }
            if shipment.tracking_url:
                tracking["tracking_url"] = shipment.tracking_url
        await _move(tx, order, after, tracking)
        order = replace(order, state=after)
    return target.value


# --- returns (issue 12) ---


class ReturnRepository(Protocol):
    async def add(
        self,
        order_return: OrderReturn,
        currency: str,
        idempotency_key: str | None,
        request_hash: str | None,
    ) -> None: ...

    async def by_key(
        self, order_id: str, idempotency_key: str
    ) -> tuple[OrderReturn, str] | None: ...

    async def of_order(self, order_id: str) -> tuple[OrderReturn, ...]: ...

    async def save(self, order_return: OrderReturn) -> None: ...

    async def delivered_at(self, order_id: str) -> datetime | None: ...


@dataclass(frozen=True)
class ReturnRequest:
    """A validated POST /orders/{id}/returns (the key is optional)."""

    order_id: str
    lines: list[ReturnLine]
    idempotency_key: str | None = None
    request_hash: str | None = None


@dataclass(frozen=True)
class ReturnAnswer:
    order_return: OrderReturn
    replayed: bool  # the same key and body asked before: the return it made


async def request_return(
    tx: Tx[Store], caller: Principal, request: ReturnRequest, *, clock: Clock, window_days: int
) -> ReturnAnswer:
    """The order's customer (or an admin) asks to send units back: only for a delivered order
    within the window after its delivery (Conflict), only skus of the order and at most what is
    still returnable (Invalid naming the line). The order's row lock serialises requests, so two
    at once never return more than was ordered."""
    order = await tx.store.orders.lock(request.order_id)
    if order is None or not caller.can_see(order.customer_id):
        raise NotFound(f"order {request.order_id}")
    returns = tx.store.returns
    if request.idempotency_key is not None:
        known = await returns.by_key(order.id, request.idempotency_key)
        if known is not None:
            if known[1] != request.request_hash:
                raise Conflict(
                    "this Idempotency-Key was already used with a different request body"
                )
            return ReturnAnswer(known[0], replayed=True)
    now = clock()
    try:
        domain.check_return_window(
            order.state.status, await returns.delivered_at(order.id), now, window_days
        )
    except ReturnNotAllowed as exc:
        raise Conflict(str(exc)) from exc
    left = domain.returnable(order.lines, await returns.of_order(order.id))
    problem = domain.return_line_problem(request.lines, left)
    if problem is not None:
        raise Invalid.field(problem.field, problem.message)
    order_return = OrderReturn(
        id=str(uuid.uuid4()),
        order_id=order.id,
        status=ReturnStatus.REQUESTED,
        lines=tuple(request.lines),
        requested_at=now,
    )
    await returns.add(
        order_return, order.total.currency, request.idempotency_key, request.request_hash
    )
    await tx.events.emit(
        ReturnRequested(
            order_id=order.id,
            return_id=order_return.id,
            customer_id=order.customer_id,
            email=order.email,
            lines=[
                ReturnLineEvent(sku=ln.sku, quantity=ln.quantity, reason=ln.reason)
                for ln in order_return.lines
            ],
        ),
        subject=order.id,
    )
    return ReturnAnswer(order_return, replayed=False)


async def receive_return(
    tx: Tx[Store],
    order_id: str,
    return_id: str,
    received: list[ReceivedLine],
    *,
    clock: Clock,
    shipping_policy: ShippingRefundPolicy,
) -> OrderReturn:
    """An operator records what came back of a requested return (per sku at most what was
    requested) and in which condition; the refund is the received units' share of their lines as
    charged (plus shipping per the policy), never more than is left unrefunded of the order.
    ReturnReceived asks inventory and payments for their halves; a 0 refund is done at once."""
    order = await _locked(tx, order_id)
    returns = await tx.store.returns.of_order(order_id)
    target = next((r for r in returns if r.id == return_id), None)
    if target is None:
        raise NotFound(f"return {return_id} of order {order_id}")
    if target.status is not ReturnStatus.REQUESTED:
        raise Conflict(f"return {return_id} is {target.status}; it was received already")
    problem = domain.received_line_problem(received, target.lines)
    if problem is not None:
        raise Invalid.field(problem.field, problem.message)
    others = tuple(r for r in returns if r.id != return_id)
    before = domain.units_received(others)
    view = await tx.store.orders.view(order_id)
    shipping = _shipping_charged(view)
    # What refunds gave back of the order so far, and what received returns still wait for.
    refunded = view.refunded.amount if view is not None and view.refunded else 0
    owed = sum(r.refund.amount for r in others if r.refund is not None and not r.refund_done)
    left = order.total.amount - refunded - owed
    now_units: dict[str, int] = {}
    for got in received:
        now_units[got.sku] = now_units.get(got.sku, 0) + got.quantity
    amount = domain.refund_for_received(order.lines, before, received, left)
    amount += domain.shipping_refund(shipping_policy, shipping, order.lines, before, now_units)
    amount = max(0, min(amount, left))
    refund = Money(amount=amount, currency=order.total.currency)
    after = replace(
        target,
        status=ReturnStatus.RECEIVED,
        received=tuple(received),
        refund=refund,
        received_at=clock(),
        # Nothing to refund: payments is not asked, the return completes on its stock alone.
        refund_done=amount == 0,
    )
    await tx.store.returns.save(after)
    await tx.events.emit(
        ReturnReceived(
            order_id=order_id,
            return_id=return_id,
            customer_id=order.customer_id,
            lines=[
                ReceivedLineEvent(sku=ln.sku, quantity=ln.quantity, condition=ln.condition)
                for ln in received
            ],
            refund=refund,
        ),
        subject=order_id,
    )
    return after


def _shipping_charged(view: OrderView | None) -> int:
    """The order's shipping as charged, in minor units: its net price and the tax on it (the
    order's tax beyond its lines' taxes). The order's `total` already includes both."""
    if view is None or view.shipping is None or view.shipping.amount <= 0:
        return 0
    shipping_tax = view.tax.amount - sum(ln.tax.amount for ln in view.lines)
    return view.shipping.amount + max(0, shipping_tax)


async def return_stock_returned(
    tx: Tx[Store], order_id: str, return_id: str, *, clock: Clock
) -> bool:
    """Inventory took the return's units back (StockReturned)."""
    return await _settle_return(tx, order_id, return_id, stock=True, refund=False, clock=clock)


async def return_refunded(tx: Tx[Store], order_id: str, return_id: str, *, clock: Clock) -> bool:
    """Payments refunded the return's share (PaymentRefunded with its return id)."""
    return await _settle_return(tx, order_id, return_id, stock=False, refund=True, clock=clock)


async def _settle_return(
    tx: Tx[Store], order_id: str, return_id: str, *, stock: bool, refund: bool, clock: Clock
) -> bool:
    """One half of a received return done; once both are, it is completed (ReturnCompleted,
    once: a duplicate or late fact changes nothing)."""
    order = await tx.store.orders.lock(order_id)
    if order is None:
        log.info("return fact about unknown order %s ignored", order_id)
        return False
    target = next((r for r in await tx.store.returns.of_order(order_id) if r.id == return_id), None)
    if target is None:
        log.info("fact about unknown return %s of order %s ignored", return_id, order_id)
        return False
    after = domain.return_settled(target, stock=stock, refund=refund)
    if after is None:
        return False
    if after.status is ReturnStatus.COMPLETED:
        after = replace(after, completed_at=clock())
    await tx.store.returns.save(after)
    if after.status is ReturnStatus.COMPLETED:
        await tx.events.emit(
            ReturnCompleted(
                order_id=order_id,
                return_id=return_id,
                customer_id=order.customer_id,
                email=order.email,
                refund=after.refund or Money(amount=0, currency=order.total.currency),
            ),
            subject=order_id,
        )
    return True


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


# --- channels (issue 13) ---


class ChannelRepository(Protocol):
    async def get(self, code: str) -> domain.Channel | None:
        """The channel as catalog last announced it, or None."""
        ...

    async def record(self, channel: domain.Channel, event_time: datetime) -> None:
        """Upsert the channel unless it already reflects a newer catalog event."""
        ...


async def check_channel(store: Store, request: OrderRequest) -> None:
    """The order's channel must be known and active, and of a kind the caller may order on:
    Invalid naming `channel` (422) or Forbidden (403)."""
    code = request.channel
    channel = domain.known_channel(code, await store.channels.get(code))
    try:
        domain.check_channel_use(code, channel, privileged=request.channel_privileged)
    except domain.ChannelRefused as exc:
        raise channel_refusal(exc) from exc


def channel_refusal(refused: domain.ChannelRefused) -> Invalid | Forbidden:
    if refused.status == 403:
        return Forbidden(refused.message)
    return Invalid.field("channel", refused.message)


async def record_channel(tx: Tx[Store], channel: domain.Channel, event_time: datetime) -> None:
    """Catalog's ChannelChanged into the projection; a replayed older event changes nothing."""
    await tx.store.channels.record(channel, event_time)


# --- backorders (issue 13) ---
# StockReserved.backordered is kept with the order; a backordered order is confirmed (and
# charged) as any, its OrderConfirmed carries the backordered lines, and its automatic shipment
# is written `awaiting_stock` instead of `pending` until BackorderFilled (from inventory, on the
# order's partition after its StockReserved; it may come before the confirmation).


class BackorderRepository(Protocol):
    async def record(self, order_id: str, lines: Sequence[BackorderedLine]) -> None: ...

    async def fill(self, order_id: str) -> bool:
        """Note the fill; False when it was noted before."""
        ...

    async def get(self, order_id: str) -> tuple[tuple[BackorderedLine, ...], bool] | None: ...

    async def add_held_shipment(self, shipment_id: str, order_id: str) -> bool: ...

    async def release_held(self, order_id: str) -> bool:
        """Held shipments of the order become pending; whether there was one."""
        ...


async def record_backorders(tx: Tx[Store], order_id: str, lines: Sequence[BackorderedLine]) -> None:
    """StockReserved with backordered lines: keep them with the order."""
    if lines:
        await tx.store.backorders.record(order_id, lines)


async def backorder_filled(tx: Tx[Store], order_id: str) -> bool:
    """BackorderFilled: a confirmed order's held shipment goes to the label worker; before the
    confirmation it is noted, and the confirmation then asks for the shipment at once. True when
    a shipment was released (wake the label worker after commit)."""
    if not await tx.store.backorders.fill(order_id):
        log.info("order %s: BackorderFilled seen before", order_id)
        return False
    return await tx.store.backorders.release_held(order_id)


async def _intend_confirmed_shipment(
    tx: Tx[Store],
    order: LockedOrder,
    after: Order,
    event: OrderConfirmed,
    labels: "LabelHandOver | None",
) -> tuple[OrderConfirmed, bool]:
    """The confirmed order's shipment: held (`awaiting_stock`) while it waits for incoming
    stock, else to buy (handed to `labels` claimed while it has room: True); the OrderConfirmed
    with its backordered lines."""
    backorders = await tx.store.backorders.get(order.id)
    lines, filled = backorders if backorders is not None else ((), False)
    handed = False
    if domain.holds_shipment(bool(lines), filled):
        await tx.store.backorders.add_held_shipment(str(uuid.uuid4()), order.id)
    elif labels is not None and labels.has_room():
        shipment_id = str(uuid.uuid4())
        carrier = labels.carrier.name
        if await tx.store.shipments.add_intent(
            shipment_id, order.id, automatic=True, carrier=carrier, lease_s=labels.lease_s
        ):
            labels.give(tx, domain.shipment_claimed_in_place(shipment_id, order, after, carrier))
            handed = True
    else:
        await _intend_shipment(tx, order.id)
    event = event.model_copy(update={"backordered": list(lines)}) if lines else event
    return event, handed


# --- reconciliation (issue 14) ---


class ReconcileReads(Protocol):
    """The read-only queries orders' reconciliation runs (db.ReconcileReads)."""

    async def overdue_pending(
        self, grace_s: float, limit: int
    ) -> tuple[list[domain.OverdueOrder], datetime | None]: ...


async def reconcile_orders(reads: ReconcileReads, grace_s: float, limit: int) -> list[Finding]:
    """Pending orders past their saga deadline."""
    pending, now = await reads.overdue_pending(grace_s, limit)
    if now is None:
        return []
    return domain.overdue_findings(pending, now, timedelta(seconds=grace_s))


# --- timeline (issue 14) ---


class JournalRepository(Protocol):
    async def record_consumed(
        self, order_id: str, event_id: str, event_type: str, topic: str, payload: str
    ) -> None: ...

    async def of_order(self, order_id: str) -> list[domain.JournalEntry]: ...


class ServiceRecords(Protocol):
    """What the other services hold for an order (adapters.HttpServiceRecords)."""

    async def for_order(self, order_id: str) -> dict[str, Any]:
        """Per service name, its records of the order, or `{"error": ...}` for a service that
        did not answer (in time or at all): never raises."""
        ...


# The dead-lettered events about an order (adapters.KafkaDeadLetters.dead_letters_for).
DeadLetters = Callable[[str], Awaitable[list[dict[str, Any]]]]


@dataclass(frozen=True)
class Timeline:
    """An order's story across services, as `GET /orders/{id}/timeline` shows it."""

    order: OrderView
    events: list[domain.JournalEntry]
    services: dict[str, Any]
    dead_letters: list[dict[str, Any]] | dict[str, str]
    waiting: domain.Waiting | None


async def journal_consumed(
    tx: Tx[Store], order_id: str, event: CloudEvent, topic: str, raw: str
) -> None:
    """Keep a consumed event about an order in its journal (in the event's transaction)."""
    await tx.store.journal.record_consumed(order_id, event.id, event.type, topic, raw)


async def _letters(
    dead_letters: DeadLetters, order_id: str
) -> list[dict[str, Any]] | dict[str, str]:
    try:
        return await dead_letters(order_id)
    except Exception as exc:  # an unreachable Kafka must not hide the rest of the timeline
        log.warning("dead letters of order %s unreadable: %r", order_id, exc)
        return {"error": f"dead letters unreadable: {type(exc).__name__}"}


async def order_timeline(
    uow: UnitOfWork[Store],
    order_id: str,
    records: ServiceRecords,
    dead_letters: DeadLetters,
    clock: Clock = utc_now,
) -> Timeline:
    """The order, every event orders emitted or consumed about it in order, what each service
    holds for it, its dead letters and what it waits for. One short read, then the other
    services and Kafka outside any transaction, concurrently. NotFound for an unknown order."""
    async with uow() as tx:
        view = await tx.store.orders.view(order_id)
        if view is None:
            raise NotFound(f"order {order_id}")
        events = domain.timeline_order(await tx.store.journal.of_order(order_id))
    services, letters = await asyncio.gather(
        records.for_order(order_id), _letters(dead_letters, order_id)
    )
    waiting = domain.waiting_for(
        status=view.status,
        cancellation_requested=view.cancellation_requested,
        created_at=view.created_at,
        reservation_deadline=view.reservation_deadline,
        history=view.history,
        events=events,
        now=clock(),
    )
    return Timeline(view, events, services, letters, waiting)
