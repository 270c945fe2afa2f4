"""In-memory fakes of orders' repositories, of pricing, and of the transactions the use cases open
(recording the correlation id their events carry), for use-case tests without PostgreSQL or
Kafka."""

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel

from libs.events.common import BackorderedLine, Money
from libs.events.envelope import CloudEvent, new_event
from libs.events.orders import CreditNote, Invoice
from libs.kit.auth import Principal
from libs.kit.errors import DomainError, Invalid, Unavailable
from libs.kit.uow import Clock, Tx
from services.orders import service
from services.orders.adapters import PurchasedLabel, Quote, QuoteLine, ShipmentRequest
from services.orders.domain import (
    Cart,
    CartLine,
    CartStatus,
    CatalogProduct,
    Channel,
    DocumentNumber,
    DocumentRef,
    HistoryEntry,
    InvoiceSource,
    JournalEntry,
    LockedOrder,
    Order,
    OrderDocuments,
    OrderReturn,
    OrderStatus,
    OrderView,
    PendingOrder,
    ShipmentIntent,
    ShipmentStatus,
    ShipmentView,
    StoredKey,
    TrackedShipment,
    TrackingEvent,
    WebhookRejected,
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
        self.shipments: FakeShipments | None = None
        self.returns: FakeReturns | None = None  # issue 12: views show them

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
        channel: str | None = None,
    ) -> list[OrderView]:
        found = [
            s
            for s in self.rows.values()
            if (customer_id is None or s.placed.customer_id == customer_id)
            and (channel is None or s.placed.channel == channel)
            and (status is None or s.state.status is status)
            and (before is None or (s.created_at, s.placed.id) < before)
        ]
        found.sort(key=lambda s: (s.created_at, s.placed.id), reverse=True)
        return [self._view(s.placed.id) for s in found[:limit]]

    def _locked(self, order_id: str) -> LockedOrder:
        s = self.rows[order_id]
        p = s.placed
        return LockedOrder(
            p.id,
            p.customer_id,
            p.email,
            p.lines,
            p.total,
            p.correlation_id,
            s.state,
            p.channel,
            shipping_address=dict(p.shipping_address),
            weight_g=p.weight_g,
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
            shipments=self.shipments.of_order(order_id) if self.shipments else (),
            shipping=p.shipping or Money(amount=0, currency=p.total.currency),
            shipping_method=p.shipping_method,
            returns=tuple(self.returns.rows_of(order_id)) if self.returns else (),
            channel=p.channel,
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


class FakeReturns:
    """Returns of orders in a dict, with the unique (order id, key) of the real table; the
    delivery time is the order's `delivered` history entry (issue 12)."""

    def __init__(self, history: FakeHistory) -> None:
        self.history = history
        self.rows: dict[str, OrderReturn] = {}
        self.keys: dict[tuple[str, str], tuple[str, str | None]] = {}

    async def add(
        self,
        order_return: OrderReturn,
        currency: str,
        idempotency_key: str | None,
        request_hash: str | None,
    ) -> None:
        if idempotency_key is not None:
            key = (order_return.order_id, idempotency_key)
            assert key not in self.keys, "unique (order_id, idempotency_key) violated"
            self.keys[key] = (order_return.id, request_hash)
        self.rows[order_return.id] = order_return

    async def by_key(self, order_id: str, idempotency_key: str) -> tuple[OrderReturn, str] | None:
        known = self.keys.get((order_id, idempotency_key))
        return None if known is None else (self.rows[known[0]], known[1] or "")

    def rows_of(self, order_id: str) -> list[OrderReturn]:
        return [r for r in self.rows.values() if r.order_id == order_id]

    async def of_order(self, order_id: str) -> tuple[OrderReturn, ...]:
        return tuple(self.rows_of(order_id))

    async def save(self, order_return: OrderReturn) -> None:
        assert order_return.id in self.rows
        self.rows[order_return.id] = order_return

    async def delivered_at(self, order_id: str) -> datetime | None:
        entries = self.history.entries.get(order_id, [])
        return max((e.at for e in entries if e.status is OrderStatus.DELIVERED), default=None)


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
        self.carts = FakeCarts()
        self.shipments = FakeShipments(self.orders, self.clock)
        self.carrier_deliveries = FakeCarrierDeliveries()
        self.orders.shipments = self.shipments
        self.returns = FakeReturns(self.history)
        self.orders.returns = self.returns
        self.invoices = FakeInvoices(self.orders, self.clock)
        self.channels = FakeChannels()  # issue 13

        self.backorders = FakeBackorders(self.shipments)  # issue 13
        self.journal = FakeJournal()  # issue 14


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
    # Shipping methods (issue 12): code -> net price; the region's default is `default_shipping`
    # (None: the region has no methods, the quote has no shipping). `shipping_asked` keeps each
    # call's shipping_method.
    shipping_rates: dict[str, int] = field(default_factory=dict)
    default_shipping: str | None = None
    shipping_asked: list[str | None] = field(default_factory=list)
    # Grams per unit of each sku (what pricing learnt from catalog); unknown skus weigh 0.
    weights: dict[str, int] = field(default_factory=dict)
    # Issue 13: (channel, sku) -> the channel's own unit price; `channel_asked` keeps each
    # call's channel.
    channel_prices: dict[tuple[str, str], int] = field(default_factory=dict)
    channel_asked: list[str] = field(default_factory=list)

    async def quote(
        self,
        lines: Sequence[tuple[str, int]],
        region: str,
        *,
        authorization: str | None,
        request_id: str,
        shipping_method: str | None = None,
        channel: str = "web",
    ) -> Quote:
        self.asked.append((list(lines), authorization))
        self.shipping_asked.append(shipping_method)
        self.channel_asked.append(channel)
        prices = self.prices | {
            sku: amount
            for (listed, sku), amount in self.channel_prices.items()
            if listed == channel
        }
        if self.during_call is not None:
            await self.during_call()
        if self.failure is not None:
            raise self.failure
        for index, (sku, _) in enumerate(lines):
            if sku not in prices:
                raise Invalid.field(f"lines[{index}].sku", "unknown sku")
        priced = []
        for sku, quantity in lines:
            net = prices[sku] * quantity
            tax = (net * self.tax_bps + 5000) // 10000
            priced.append(
                QuoteLine(
                    sku=sku,
                    quantity=quantity,
                    unit_price=eur(prices[sku]),
                    discount=eur(0),
                    tax=eur(tax),
                    total=eur(net + tax),
                )
            )
        subtotal = sum(prices[sku] * q for sku, q in lines)
        tax = sum(ln.tax.amount for ln in priced if ln.tax is not None)
        method = shipping_method or self.default_shipping
        if method is not None and method not in self.shipping_rates:
            raise Invalid.field("shipping_method", f"unknown shipping method {method}")
        shipping = self.shipping_rates[method] if method is not None else 0
        shipping_tax = (shipping * self.tax_bps + 5000) // 10000
        return Quote(
            id=f"q-{len(self.asked)}",
            lines=priced,
            subtotal=eur(subtotal),
            discount=eur(0),
            tax=eur(tax + shipping_tax),
            total=eur(subtotal + tax + shipping + shipping_tax),
            shipping=eur(shipping),
            shipping_tax=eur(shipping_tax),
            shipping_method=method,
            weight_g=sum(self.weights.get(sku, 0) * quantity for sku, quantity in lines),
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


# --- carts (issue 12) ---------------------------------------------------------------------------


class FakeCarts:
    """Carts in a dict, lines in insertion order. `held` are cart ids another transaction has
    locked: the abandonment sweep skips them as SKIP LOCKED would."""

    def __init__(self) -> None:
        self.rows: dict[str, Cart] = {}
        self.held: set[str] = set()

    async def add(self, cart: Cart) -> None:
        if cart.id in self.rows:
            raise AssertionError(f"cart {cart.id} written twice")
        self.rows[cart.id] = cart

    async def get(self, cart_id: str) -> Cart | None:
        return self.rows.get(cart_id)

    async def lock(self, cart_id: str) -> Cart | None:
        return self.rows.get(cart_id)

    async def set_line(self, cart_id: str, line: CartLine) -> None:
        cart = self.rows[cart_id]
        lines = list(cart.lines)
        for index, old in enumerate(lines):
            if old.sku == line.sku:
                lines[index] = line
                break
        else:
            lines.append(line)
        self.rows[cart_id] = replace(cart, lines=tuple(lines))

    async def remove_line(self, cart_id: str, sku: str) -> bool:
        cart = self.rows[cart_id]
        kept = tuple(ln for ln in cart.lines if ln.sku != sku)
        self.rows[cart_id] = replace(cart, lines=kept)
        return len(kept) < len(cart.lines)

    async def touch(self, cart_id: str, now: datetime, email: str | None) -> None:
        cart = self.rows[cart_id]
        self.rows[cart_id] = replace(
            cart,
            revision=cart.revision + 1,
            updated_at=now,
            abandoned_at=None,
            email=email if email is not None else cart.email,
        )

    async def close(self, cart_id: str, order_id: str, revision: int, now: datetime) -> bool:
        cart = self.rows.get(cart_id)
        if cart is None or cart.status is not CartStatus.OPEN or cart.revision != revision:
            return False
        self.rows[cart_id] = replace(
            cart,
            status=CartStatus.CHECKED_OUT,
            order_id=order_id,
            revision=revision + 1,
            updated_at=now,
        )
        return True

    async def mark_abandoned(self, idle_before: datetime, now: datetime, limit: int) -> list[Cart]:
        due = sorted(
            (
                c
                for c in self.rows.values()
                if c.status is CartStatus.OPEN
                and c.abandoned_at is None
                and c.lines
                and c.updated_at < idle_before
                and c.id not in self.held
            ),
            key=lambda c: (c.updated_at, c.id),
        )[:limit]
        for cart in due:
            self.rows[cart.id] = replace(cart, abandoned_at=now)
        return [self.rows[c.id] for c in due]


def product(
    sku: str, price: int | None = 1250, available: int = 10, active: bool = True
) -> CatalogProduct:
    return CatalogProduct(
        sku=sku,
        active=active,
        price=eur(price) if price is not None else None,
        available=available,
        in_stock=available > 0,
    )


@dataclass
class FakeCatalog:
    """Catalog's product read over a dict (a missing sku is unknown); `failure` makes every
    call raise it. `asked` keeps each sku asked; `during_call` runs inside each call."""

    products: dict[str, CatalogProduct] = field(
        default_factory=lambda: {
            "MUG-1": product("MUG-1", 1250, available=5),
            "TEA-9": product("TEA-9", 499, available=0),
            "OLD-1": product("OLD-1", 999, active=False),
        }
    )
    failure: DomainError | None = None
    asked: list[str] = field(default_factory=list)
    during_call: Callable[[], Awaitable[None]] | None = None

    async def product(self, sku: str, *, request_id: str) -> CatalogProduct | None:
        self.asked.append(sku)
        if self.during_call is not None:
            await self.during_call()
        if self.failure is not None:
            raise self.failure
        return self.products.get(sku)


# --- shipments (issue 12) ---


@dataclass
class _StoredShipment:
    id: str
    order_id: str
    automatic: bool
    created_at: datetime
    status: ShipmentStatus = ShipmentStatus.PENDING
    carrier: str | None = None
    attempts: int = 0
    leased: bool = False
    tracking_number: str | None = None
    carrier_ref: str | None = None
    label_pdf: bytes | None = None
    label_url: str | None = None
    tracking_url: str | None = None
    failure_reason: str | None = None


class FakeShipments:
    """Shipments in a dict, as the shipments table holds them. A claim takes pending shipments
    not leased (`expire_leases` ends every lease, as time passing would); `held` are ids another
    transaction holds (SKIP LOCKED skips them)."""

    def __init__(self, orders: FakeOrders, clock: Clock) -> None:
        self.rows: dict[str, _StoredShipment] = {}
        self.orders = orders
        self.clock = clock
        self.held: set[str] = set()

    async def add_intent(
        self,
        shipment_id: str,
        order_id: str,
        *,
        automatic: bool,
        carrier: str | None = None,
        lease_s: float | None = None,
    ) -> bool:
        if automatic and any(r.automatic and r.order_id == order_id for r in self.rows.values()):
            return False
        row = _StoredShipment(shipment_id, order_id, automatic, self.clock())
        if lease_s is not None:  # claimed by the adding transaction (its label worker's)
            row.attempts, row.leased, row.carrier = 1, True, carrier
        self.rows[shipment_id] = row
        return True

    async def claim_due(self, carrier: str, limit: int, lease_s: float) -> list[ShipmentIntent]:
        due = [
            r
            for r in self.rows.values()
            if r.status is ShipmentStatus.PENDING and not r.leased and r.id not in self.held
        ][:limit]
        intents = []
        for r in due:
            r.attempts += 1
            r.leased = True
            r.carrier = r.carrier or carrier
            order = self.orders.rows[r.order_id]
            intents.append(
                ShipmentIntent(
                    id=r.id,
                    order_id=r.order_id,
                    carrier=r.carrier,
                    attempts=r.attempts,
                    order_status=order.state.status,
                    cancellation_requested=order.state.cancellation_requested,
                    shipping_address=dict(order.placed.shipping_address),
                    lines=order.placed.lines,
                    correlation_id=order.placed.correlation_id,
                    weight_g=order.placed.weight_g,
                )
            )
        return intents

    def expire_leases(self) -> None:
        for r in self.rows.values():
            r.leased = False

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
    ) -> ShipmentView | None:
        r = self._settleable(shipment_id, attempts)
        if r is None:
            return None
        r.status = ShipmentStatus.LABEL_CREATED
        r.tracking_number, r.carrier_ref, r.label_pdf = tracking_number, carrier_ref, label_pdf
        r.label_url, r.tracking_url = label_url, tracking_url
        return self._view(r)

    async def record_not_bought(
        self, shipment_id: str, attempts: int, status: ShipmentStatus, reason: str
    ) -> ShipmentView | None:
        r = self._settleable(shipment_id, attempts)
        if r is None:
            return None
        r.status, r.failure_reason = status, reason
        return self._view(r)

    def _settleable(self, shipment_id: str, attempts: int) -> _StoredShipment | None:
        r = self.rows.get(shipment_id)
        if r is None or r.status is not ShipmentStatus.PENDING or r.attempts != attempts:
            return None
        r.leased = False
        return r

    async def lock_by_tracking(self, carrier: str, tracking_number: str) -> TrackedShipment | None:
        for r in self.rows.values():
            if r.carrier == carrier and r.tracking_number == tracking_number:
                return TrackedShipment(
                    r.id, r.order_id, carrier, tracking_number, r.tracking_url, r.status
                )
        return None

    async def set_status(self, shipment_id: str, status: ShipmentStatus) -> None:
        self.rows[shipment_id].status = status

    async def label(self, order_id: str, shipment_id: str) -> bytes | None:
        r = self.rows.get(shipment_id)
        return r.label_pdf if r is not None and r.order_id == order_id else None

    def of_order(self, order_id: str) -> tuple[ShipmentView, ...]:
        return tuple(self._view(r) for r in self.rows.values() if r.order_id == order_id)

    def _view(self, r: _StoredShipment) -> ShipmentView:
        return ShipmentView(
            id=r.id,
            order_id=r.order_id,
            carrier=r.carrier,
            status=r.status,
            tracking_number=r.tracking_number,
            label_url=r.label_url,
            tracking_url=r.tracking_url,
            created_at=r.created_at,
            failure_reason=r.failure_reason,
        )


class FakeCarrierDeliveries:
    def __init__(self) -> None:
        self.claimed: set[tuple[str, str]] = set()

    async def claim(self, carrier: str, event_id: str, event_type: str) -> bool:
        if (carrier, event_id) in self.claimed:
            return False
        self.claimed.add((carrier, event_id))
        return True


@dataclass
class FakeCarrier:
    """A carrier whose answers a test scripts: each call takes the next of `answers` (an
    exception is raised, a label returned); once they run out every call sells a label whose
    tracking number derives from the key. `calls` keeps each request."""

    name: str = "fake"
    answers: list[PurchasedLabel | Exception] = field(default_factory=list)
    calls: list[ShipmentRequest] = field(default_factory=list)
    events: dict[bytes, TrackingEvent] = field(default_factory=dict)

    async def create_shipment(self, request: ShipmentRequest) -> PurchasedLabel:
        self.calls.append(request)
        if self.answers:
            answer = self.answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer
        return PurchasedLabel(
            tracking_number=f"FAKE{request.idempotency_key[:8].upper()}",
            carrier_ref=f"ref-{request.idempotency_key}",
            label_pdf=b"%PDF-fake",
            tracking_url=f"https://track.example/{request.idempotency_key[:8]}",
        )

    def parse_webhook(self, headers: dict[str, str], body: bytes) -> TrackingEvent | None:
        if headers.get("signature") != "good":
            raise WebhookRejected("signature does not match")
        return self.events.get(body)


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

    async def allocate(self, store: str, kind: str) -> DocumentNumber:
        now = self.clock()
        key = (store, kind, now.year)
        self.counters[key] = self.counters.get(key, 0) + 1
        return DocumentNumber(kind, now.year, self.counters[key], now)

    async def source(self, order_id: str) -> InvoiceSource | None:
        if order_id not in self.orders.rows:
            return None
        p = self.orders.rows[order_id].placed
        # As the database reads it: shipping net on the order, its tax what the lines' lack.
        shipping = p.shipping if p.shipping is not None and p.shipping.amount else None
        shipping_tax = p.tax.amount - sum(ln.tax.amount for ln in p.lines)
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
            shipping=shipping,
            shipping_tax=Money(amount=shipping_tax, currency=currency) if shipping else None,
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


# --- channels (issue 13) ---


class FakeChannels:
    """Catalog's channels as orders projects them; an older event never overwrites a newer."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[Channel, datetime]] = {}

    async def get(self, code: str) -> Channel | None:
        found = self.rows.get(code)
        return found[0] if found else None

    async def record(self, channel: Channel, event_time: datetime) -> None:
        found = self.rows.get(channel.code)
        if found is None or found[1] <= event_time:
            self.rows[channel.code] = (channel, event_time)


# --- backorders (issue 13) ---


@dataclass
class FakeBackorders:
    """order_backorders in a dict, and the shipments a backorder holds (in FakeShipments)."""

    shipments: "FakeShipments"
    rows: dict[str, tuple[tuple[BackorderedLine, ...], bool]] = field(default_factory=dict)

    async def record(self, order_id: str, lines: Sequence[BackorderedLine]) -> None:
        before = self.rows.get(order_id)
        if before is None or not before[0]:
            self.rows[order_id] = (tuple(lines), before[1] if before else False)

    async def fill(self, order_id: str) -> bool:
        lines, filled = self.rows.get(order_id, ((), False))
        self.rows[order_id] = (lines, True)
        return not filled

    async def get(self, order_id: str) -> tuple[tuple[BackorderedLine, ...], bool] | None:
        return self.rows.get(order_id)

    async def add_held_shipment(self, shipment_id: str, order_id: str) -> bool:
        if not await self.shipments.add_intent(shipment_id, order_id, automatic=True):
            return False
        self.shipments.rows[shipment_id].status = ShipmentStatus.AWAITING_STOCK
        return True

    async def release_held(self, order_id: str) -> bool:
        held = [
            r
            for r in self.shipments.rows.values()
            if r.order_id == order_id and r.status is ShipmentStatus.AWAITING_STOCK
        ]
        for r in held:
            r.status = ShipmentStatus.PENDING
        return bool(held)


# --- timeline (issue 14) ---


class FakeJournal:
    """The order events journal: consumed events as handlers record them, and entries a test
    adds directly (what the outbox trigger journals in the database)."""

    def __init__(self) -> None:
        self.entries: dict[str, list[JournalEntry]] = {}
        self.consumed: list[tuple[str, str, str, str, str]] = []

    def add(self, order_id: str, entry: JournalEntry) -> None:
        self.entries.setdefault(order_id, []).append(entry)

    async def record_consumed(
        self, order_id: str, event_id: str, event_type: str, topic: str, payload: str
    ) -> None:
        self.consumed.append((order_id, event_id, event_type, topic, payload))

    async def of_order(self, order_id: str) -> list[JournalEntry]:
        return list(self.entries.get(order_id, []))
