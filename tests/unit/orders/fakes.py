"""In-memory fakes of orders' repositories, of pricing, and of the transactions the use cases open
(recording the correlation id their events carry), for use-case tests without PostgreSQL or
Kafka."""

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel

from libs.events.common import Money
from libs.events.envelope import CloudEvent, new_event
from libs.events.orders import CreditNote, Invoice
from libs.kit.auth import Principal
from libs.kit.errors import DomainError, Invalid, Unavailable
from libs.kit.uow import Clock, Tx
from services.orders import service
from services.orders.adapters import Quote, QuoteLine
from services.orders.domain import (
    DocumentNumber,
    DocumentRef,
    HistoryEntry,
    InvoiceSource,
    LockedOrder,
    Order,
    OrderDocuments,
    OrderStatus,
    OrderView,
    PendingOrder,
    StoredKey,
)
from services.orders.service import Claimed, OrderRequest, Placed, Store
from tests.support.fakes import FakeTx, MutableClock, RecordingEvents

E = TypeVar("E", bound=BaseModel)


@dataclass
class _Stored:
    """One order as the fake database holds it."""

    placed: PendingOrder
    state: Order
    created_at: datetime
    updated_at: datetime
    tracking: dict[str, Any] | None = None
    refunded: int = 0


class FakeOrders:
    """Orders in a dict. `held` are ids another transaction has locked: the overdue claim skips
    them as SKIP LOCKED would."""

    def __init__(self, history: "FakeHistory", keys: "FakeKeys", clock: Clock) -> None:
        self.rows: dict[str, _Stored] = {}
        self.history = history
        self.keys = keys
        self.clock = clock
        self.held: set[str] = set()

    async def add(self, order: PendingOrder, key: str, request_hash: str) -> OrderView | None:
        """The key claim decides, as the one statement's first part does: a taken key writes
        nothing."""
        if (order.customer_id, key) in self.keys.keys:
            return None
        if order.id in self.rows:
            raise AssertionError(f"order {order.id} written twice")
        self.keys.keys[order.customer_id, key] = StoredKey(request_hash, order.id)
        now = self.clock()
        state = Order(status=OrderStatus.PENDING, reservation_deadline=order.reservation_deadline)
        self.rows[order.id] = _Stored(order, state, now, now)
        self.history.append(order.id, OrderStatus.PENDING, None)
        return self._view(order.id)

    async def lock(self, order_id: str) -> LockedOrder | None:
        return self._locked(order_id) if order_id in self.rows else None

    async def claim_overdue(self, now: datetime) -> LockedOrder | None:
        overdue = [
            s
            for s in self.rows.values()
            if s.state.status is OrderStatus.PENDING
            and s.state.reservation_deadline < now
            and s.placed.id not in self.held
        ]
        if not overdue:
            return None
        first = min(overdue, key=lambda s: s.state.reservation_deadline)
        return self._locked(first.placed.id)

    async def save(
        self, order_id: str, state: Order, tracking: dict[str, Any] | None = None
    ) -> None:
        stored = self.rows[order_id]
        stored.state = state
        stored.updated_at = self.clock()
        if tracking is not None:
            stored.tracking = tracking

    async def add_refunded(self, order_id: str, amount: int) -> bool:
        if order_id not in self.rows:
            return False
        self.rows[order_id].refunded += amount
        return True

    async def save_status_change(
        self, order_id: str, state: Order, tracking: dict[str, Any] | None = None
    ) -> None:
        if state.status is self.rows[order_id].state.status:
            raise AssertionError(f"order {order_id}: {state.status} is not a new status")
        await self.save(order_id, state, tracking)
        self.history.append(order_id, state.status, state.reason)

    async def view(self, order_id: str) -> OrderView | None:
        return self._view(order_id) if order_id in self.rows else None

    async def newest(
        self,
        *,
        customer_id: str | None,
        status: OrderStatus | None,
        before: tuple[datetime, str] | None,
        limit: int,
    ) -> list[OrderView]:
        found = [
            s
            for s in self.rows.values()
            if (customer_id is None or s.placed.customer_id == customer_id)
            and (status is None or s.state.status is status)
            and (before is None or (s.created_at, s.placed.id) < before)
        ]
        found.sort(key=lambda s: (s.created_at, s.placed.id), reverse=True)
        return [self._view(s.placed.id) for s in found[:limit]]

    def _locked(self, order_id: str) -> LockedOrder:
        s = self.rows[order_id]
        p = s.placed
        return LockedOrder(
            p.id, p.customer_id, p.email, p.lines, p.total, p.correlation_id, s.state
        )

    def _view(self, order_id: str) -> OrderView:
        s = self.rows[order_id]
        p = s.placed
        return OrderView(
            id=p.id,
            customer_id=p.customer_id,
            status=s.state.status,
            reason=s.state.reason,
            lines=p.lines,
            subtotal=p.subtotal,
            discount=p.discount,
            tax=p.tax,
            total=p.total,
            region=p.region,
            shipping_address=p.shipping_address,
            email=p.email,
            tracking=s.tracking,
            refunded=Money(amount=s.refunded, currency=p.total.currency) if s.refunded else None,
            reservation_deadline=s.state.reservation_deadline,
            cancellation_requested=s.state.cancellation_requested,
            quote_id=p.quote_id,
            created_at=s.created_at,
            updated_at=s.updated_at,
            history=tuple(self.history.entries.get(order_id, [])),
        )


class FakeHistory:
    """Each order's history entries; the orders fake appends them as the statements that write
    an order's status do."""

    def __init__(self, clock: Clock) -> None:
        self.entries: dict[str, list[HistoryEntry]] = {}
        self.clock = clock

    def append(self, order_id: str, status: OrderStatus, reason: str | None) -> HistoryEntry:
        entry = HistoryEntry(status, reason, self.clock())
        self.entries.setdefault(order_id, []).append(entry)
        return entry


class FakeKeys:
    def __init__(self) -> None:
        self.keys: dict[tuple[str, str], StoredKey] = {}

    async def find(self, customer_id: str, key: str) -> StoredKey | None:
        return self.keys.get((customer_id, key))


class FakeStore:
    """The three repositories over shared dicts; `clock` stands in for the database's now()."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or MutableClock()
        self.history = FakeHistory(self.clock)
        self.keys = FakeKeys()
        self.orders = FakeOrders(self.history, self.keys, self.clock)
        self.invoices = FakeInvoices(self.orders, self.clock)


@dataclass
class CorrelatedEvents(RecordingEvents):
    """Records events with the correlation id of the transaction that emitted them."""

    correlation_id: str | None = None

    async def emit(self, data: BaseModel, *, subject: str, topic: str | None = None) -> CloudEvent:
        event = new_event(
            service=self.service, data=data, subject=subject, correlation_id=self.correlation_id
        )
        self.emitted.append(data)
        self.envelopes.append(event)
        return event


@dataclass
class RecordingUnitOfWork:
    """A UnitOfWork over one FakeStore. It counts the transactions opened and knows whether one
    is open right now (`open`), and its events keep the correlation id each was opened with."""

    store: FakeStore
    events: RecordingEvents = field(default_factory=RecordingEvents)
    opened: int = 0
    open: int = 0

    def __call__(
        self, correlation_id: str | None = None, causation_id: str | None = None
    ) -> AbstractAsyncContextManager[Tx[Store]]:
        return self._begin(correlation_id)

    @asynccontextmanager
    async def _begin(self, correlation_id: str | None) -> AsyncIterator[Tx[Store]]:
        self.opened += 1
        self.open += 1
        try:
            tx = FakeTx(self.store, self._sink(correlation_id))
            yield tx
            tx.commit()
        finally:
            self.open -= 1

    def _sink(self, correlation_id: str | None) -> CorrelatedEvents:
        return CorrelatedEvents(
            service="orders",
            emitted=self.events.emitted,
            envelopes=self.events.envelopes,
            correlation_id=correlation_id,
        )


@dataclass
class FakeOverdueClaims:
    """`OverdueClaims` over a FakeStore: each claim is a transaction holding the first overdue
    order, its events correlated with that order's checkout."""

    store: FakeStore
    events: RecordingEvents = field(default_factory=RecordingEvents)
    claimed: int = 0

    def __call__(self, now: datetime) -> AbstractAsyncContextManager[Claimed | None]:
        return self._claim(now)

    @asynccontextmanager
    async def _claim(self, now: datetime) -> AsyncIterator[Claimed | None]:
        order = await self.store.orders.claim_overdue(now)
        if order is None:
            yield None
            return
        self.claimed += 1
        sink = CorrelatedEvents(
            service="orders",
            emitted=self.events.emitted,
            envelopes=self.events.envelopes,
            correlation_id=order.correlation_id,
        )
        tx = FakeTx(self.store, sink)
        yield Claimed(tx, order)
        tx.commit()


def eur(amount: int) -> Money:
    return Money(amount=amount, currency="EUR")


@dataclass
class FakePricing:
    """Pricing with a price list: unknown skus are refused naming the line, as pricing does;
    `failure` makes every quote raise it instead. `asked` keeps each call's lines and the
    caller's authorization; `during_call` runs inside each call (to look at the world then)."""

    prices: dict[str, int] = field(default_factory=lambda: {"MUG-1": 1250, "TEA-9": 499})
    tax_bps: int = 2000
    failure: DomainError | None = None
    asked: list[tuple[list[tuple[str, int]], str | None]] = field(default_factory=list)
    during_call: Callable[[], Awaitable[None]] | None = None

    async def quote(
        self,
        lines: Sequence[tuple[str, int]],
        region: str,
        *,
        authorization: str | None,
        request_id: str,
    ) -> Quote:
        self.asked.append((list(lines), authorization))
        if self.during_call is not None:
            await self.during_call()
        if self.failure is not None:
            raise self.failure
        for index, (sku, _) in enumerate(lines):
            if sku not in self.prices:
                raise Invalid.field(f"lines[{index}].sku", "unknown sku")
        priced = []
        for sku, quantity in lines:
            net = self.prices[sku] * quantity
            tax = (net * self.tax_bps + 5000) // 10000
            priced.append(
                QuoteLine(
                    sku=sku,
                    quantity=quantity,
                    unit_price=eur(self.prices[sku]),
                    discount=eur(0),
                    tax=eur(tax),
                    total=eur(net + tax),
                )
            )
        subtotal = sum(self.prices[sku] * q for sku, q in lines)
        tax = sum(ln.tax.amount for ln in priced if ln.tax is not None)
        return Quote(
            id=f"q-{len(self.asked)}",
            lines=priced,
            subtotal=eur(subtotal),
            discount=eur(0),
            tax=eur(tax),
            total=eur(subtotal + tax),
        )


def unavailable() -> Unavailable:
    return Unavailable("pricing is unavailable, try again later")


ALICE = Principal(sub="alice", roles=frozenset({"customer"}), email="alice@example.com")
BOB = Principal(sub="bob", roles=frozenset({"customer"}), email="bob@example.com")
OPERATOR = Principal(sub="ops", roles=frozenset({"admin"}))
SHIPPING = {"name": "Ada Lovelace", "city": "Paris"}
TTL_S = 900


def order_request(
    who: Principal = ALICE,
    key: str = "key-1",
    lines: Sequence[tuple[str, int]] = (("MUG-1", 2), ("TEA-9", 1)),
    token: str = "tok_visa",
) -> OrderRequest:
    """A validated POST /orders; its hash stands for the body (lines and token)."""
    return OrderRequest(
        customer_id=who.sub,
        idempotency_key=key,
        request_hash=f"{sorted(lines)}/{token}",
        lines=list(lines),
        region="FR",
        shipping_address=SHIPPING,
        email=who.email,
        payment_token=token,
    )


@dataclass
class World:
    """What orders' use cases run against in a unit test: one clock for the service and the fake
    database, the fake store, a unit of work over it, pricing, and every event emitted."""

    clock: MutableClock = field(default_factory=MutableClock)
    pricing: FakePricing = field(default_factory=FakePricing)

    def __post_init__(self) -> None:
        self.store = FakeStore(self.clock)
        self.uow = RecordingUnitOfWork(self.store)
        self.events = self.uow.events
        self.claims = FakeOverdueClaims(self.store, self.events)

    def tx(self) -> FakeTx[FakeStore]:
        """One transaction, as a route or an event handler gets it."""
        return FakeTx(self.store, self.events)

    async def place(self, request: OrderRequest | None = None, request_id: str = "req-1") -> Placed:
        return await service.place_order(
            self.uow,
            self.pricing,
            request or order_request(),
            clock=self.clock,
            reservation_ttl_s=TTL_S,
            request_id=request_id,
            authorization="Bearer alice-token",
        )

    async def placed(self, who: Principal = ALICE, key: str | None = None) -> str:
        """A new pending order's id (each call a new key unless one is given)."""
        self.clock.advance(1)  # orders placed one after the other, as created_at tells
        key = key or f"key-{len(self.store.orders.rows) + 1}"
        return (await self.place(order_request(who, key))).order.id

    async def confirmed(self, who: Principal = ALICE) -> str:
        order_id = await self.placed(who)
        await service.stock_reserved(self.tx(), order_id)
        await service.payment_captured(self.tx(), order_id, self.clock)
        return order_id

    async def shipped(self) -> str:
        order_id = await self.confirmed()
        await service.ship(
            self.tx(), OPERATOR, order_id, carrier="UPS", tracking_number="1Z", clock=self.clock
        )
        return order_id

    async def view(self, order_id: str) -> OrderView:
        return await service.get_order(self.tx(), OPERATOR, order_id)

    def emitted(self, model: type[E]) -> list[E]:
        return [e for e in self.events.emitted if isinstance(e, model)]

    def history(self, order_id: str) -> list[tuple[OrderStatus, str | None]]:
        return [(h.status, h.reason) for h in self.store.history.entries.get(order_id, [])]


# --- invoices and credit notes (issue 12) ---


class FakeInvoices:
    """Invoices, credit notes and their counters in dicts. `shipping` (net, tax) per order id
    stands for the shipping columns another change adds to orders."""

    def __init__(self, orders: FakeOrders, clock: Clock) -> None:
        self.orders = orders
        self.clock = clock
        self.counters: dict[tuple[str, str, int], int] = {}
        self.invoices: dict[str, Invoice] = {}
        self.notes: dict[str, CreditNote] = {}
        self.shipping: dict[str, tuple[int, int]] = {}

    async def allocate(self, store: str, kind: str) -> DocumentNumber:
        now = self.clock()
        key = (store, kind, now.year)
        self.counters[key] = self.counters.get(key, 0) + 1
        return DocumentNumber(kind, now.year, self.counters[key], now)

    async def source(self, order_id: str) -> InvoiceSource | None:
        if order_id not in self.orders.rows:
            return None
        p = self.orders.rows[order_id].placed
        shipping = self.shipping.get(order_id)
        currency = p.total.currency
        return InvoiceSource(
            order_id=p.id,
            customer_id=p.customer_id,
            email=p.email,
            shipping_address=p.shipping_address,
            lines=p.lines,
            subtotal=p.subtotal,
            discount=p.discount,
            tax=p.tax,
            total=p.total,
            shipping=Money(amount=shipping[0], currency=currency) if shipping else None,
            shipping_tax=Money(amount=shipping[1], currency=currency) if shipping else None,
        )

    async def add_invoice(self, invoice: Invoice) -> None:
        if invoice.order_id in self.invoices:
            raise AssertionError(f"order {invoice.order_id} invoiced twice")
        self.invoices[invoice.order_id] = invoice

    async def invoice(self, order_id: str) -> Invoice | None:
        return self.invoices.get(order_id)

    async def add_credit_note(self, note: CreditNote) -> None:
        if await self.credit_note_for_refund(note.order_id, note.refund_id):
            raise AssertionError(f"refund {note.refund_id} credited twice")
        self.notes[note.number] = note

    async def credit_note_for_refund(self, order_id: str, refund_id: str) -> CreditNote | None:
        notes = self.notes.values()
        return next((n for n in notes if (n.order_id, n.refund_id) == (order_id, refund_id)), None)

    async def credit_note(self, order_id: str, number: str) -> CreditNote | None:
        note = self.notes.get(number)
        return note if note is not None and note.order_id == order_id else None

    async def credited(self, order_id: str) -> int:
        return sum(n.amount.amount for n in self.notes.values() if n.order_id == order_id)

    async def documents(self, order_ids: list[str]) -> dict[str, OrderDocuments]:
        found = {}
        for order_id in order_ids:
            invoice = self.invoices.get(order_id)
            notes = tuple(
                DocumentRef(n.number, n.issued_at, n.amount)
                for n in self.notes.values()
                if n.order_id == order_id
            )
            if invoice is not None or notes:
                ref = DocumentRef(invoice.number, invoice.issued_at) if invoice else None
                found[order_id] = OrderDocuments(ref, notes)
        return found
