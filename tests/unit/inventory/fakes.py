"""In-memory inventory repositories (the shape of `service.Store`) and the sweep's transactions,
for use-case tests without PostgreSQL. They keep the database's guarantees that use cases rely
on: one reservation row per order, and the stock CHECK constraints (a move that would break
`0 <= reserved <= on_hand` fails as a whole, as the one UPDATE would)."""

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel

from libs.events.common import Money, PricedLine
from libs.events.envelope import CloudEvent
from libs.events.orders import OrderPlaced
from libs.kit.uow import Clock, EventSink
from services.inventory.domain import (
    DEFAULT_LOCATION,
    Allocation,
    AllocationPolicy,
    Backorder,
    BackorderPolicy,
    BackorderStatus,
    ChannelCap,
    Lines,
    Location,
    LocationDelta,
    Movement,
    POLine,
    PurchaseOrder,
    PurchaseOrderStatus,
    Receipt,
    Reservation,
    ReservationStatus,
    Shelf,
    StockDelta,
    Stocking,
    StockItem,
    StockLevel,
    Supplier,
    SupplierItem,
    Transfer,
    sku_deltas,
)
from services.inventory.service import ExpiryTx
from tests.support.fakes import FakeTx, MutableClock, RecordingEvents


class CheckViolation(Exception):
    """What PostgreSQL's CHECK constraints on stock_items would raise."""


def _checked(sku: str, level: StockLevel) -> StockLevel:
    if level.on_hand < 0 or level.reserved < 0 or level.on_hand - level.reserved < 0:
        raise CheckViolation(f"{sku}: on_hand {level.on_hand}, reserved {level.reserved}")
    return level


@dataclass
class FakeStockItems:
    clock: Clock
    # Where a move audits its lines (the one statement writes both tables).
    movements: "FakeMovements"
    rows: dict[str, StockItem] = field(default_factory=dict)
    # Issue 13: (sku, location) -> [on_hand, reserved, safety_stock]; caps (sku, channel) ->
    # [cap, used]; reservations' allocations recorded by a move.
    stock: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    caps: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    booked: dict[str, list[Allocation]] = field(default_factory=dict)

    def put(self, sku: str, on_hand: int, reserved: int = 0, reorder_point: int = 0) -> StockItem:
        """Seed an item as it would stand in the table (all of it at the default location)."""
        level = _checked(sku, StockLevel(on_hand, reserved, reorder_point))
        self.rows[sku] = StockItem(sku, level, self.clock())
        self.stock[(sku, DEFAULT_LOCATION)] = [on_hand, reserved, 0]
        return self.rows[sku]

    def put_at(
        self, sku: str, location: str, on_hand: int, reserved: int = 0, safety_stock: int = 0
    ) -> None:
        """Seed a sku's stock at one location (the item's sums follow)."""
        if sku not in self.rows:
            self.rows[sku] = StockItem(sku, StockLevel(0, 0, 0), self.clock())
        old = self.stock.get((sku, location), [0, 0, 0])
        self.stock[(sku, location)] = [on_hand, reserved, safety_stock]
        level = self.rows[sku].level
        self._store(
            sku,
            replace(
                level,
                on_hand=level.on_hand + on_hand - old[0],
                reserved=level.reserved + reserved - old[1],
            ),
        )

    def at(self, sku: str, location: str) -> tuple[int, int]:
        on_hand, reserved, _ = self.stock.get((sku, location), [0, 0, 0])
        return on_hand, reserved

    def level(self, sku: str) -> StockLevel:
        return self.rows[sku].level

    async def get(self, sku: str) -> StockItem | None:
        return self.rows.get(sku)

    async def lock(self, sku: str) -> StockItem | None:
        return self.rows.get(sku)

    async def create(
        self,
        sku: str,
        on_hand: int,
        reorder_point: int,
        location: str = DEFAULT_LOCATION,
        safety_stock: int = 0,
    ) -> StockItem | None:
        if sku in self.rows:
            return None
        self.rows[sku] = StockItem(sku, StockLevel(on_hand, 0, reorder_point), self.clock())
        self.stock[(sku, location)] = [on_hand, 0, safety_stock]
        return self.rows[sku]

    async def write(self, sku: str, on_hand: int, reorder_point: int | None = None) -> StockItem:
        level = replace(self.rows[sku].level, on_hand=on_hand)
        if reorder_point is not None:
            level = replace(level, reorder_point=reorder_point)
        return self._store(sku, level)

    async def lock_for(self, skus: Sequence[str]) -> dict[str, StockItem]:
        return {sku: self.rows[sku] for sku in sorted(skus) if sku in self.rows}

    async def move_and_record(
        self, deltas: Sequence[StockDelta], reason: str, order_id: str | None
    ) -> list[StockItem]:
        return await self.move_at(
            [LocationDelta(d.sku, DEFAULT_LOCATION, d.on_hand, d.reserved) for d in deltas],
            reason,
            order_id,
        )

    async def move_at(
        self,
        deltas: Sequence[LocationDelta],
        reason: str,
        order_id: str | None,
        *,
        ref: str | None = None,
        channel: str | None = None,
        used: Sequence[tuple[str, int]] = (),
        book_for: str | None = None,
        allocations: Sequence[Allocation] = (),
    ) -> list[StockItem]:
        """As the one statement: every location row, the sums, the caps, the booking and the
        audit, or (a CHECK broken) nothing."""
        if not deltas:
            return []
        stock = {k: list(v) for k, v in self.stock.items()}
        for d in deltas:
            row = stock.setdefault((d.sku, d.location), [0, 0, 0])
            row[0] += d.on_hand
            row[1] += d.reserved
            if row[0] < 0 or row[1] < 0 or row[1] > row[0]:
                raise CheckViolation(f"{d.sku}@{d.location}: {row}")
        moved = await self._move_items(sku_deltas(deltas))
        self.stock = stock
        for sku, q in used:
            if (sku, channel or "") in self.caps:
                cap = self.caps[(sku, channel or "")]
                cap[1] = max(0, cap[1] + q)
        if book_for is not None:
            self.booked[book_for] = list(allocations)
        self.movements.entries.extend(
            AuditEntry(
                Movement(d.sku, d.on_hand, d.reserved, *self.at(d.sku, d.location), d.location),
                reason,
                order_id,
                ref,
            )
            for d in deltas
        )
        return moved

    async def _move_items(self, deltas: Sequence[StockDelta]) -> list[StockItem]:
        after = {
            d.sku: _checked(
                d.sku,
                replace(
                    self.rows[d.sku].level,
                    on_hand=self.rows[d.sku].level.on_hand + d.on_hand,
                    reserved=self.rows[d.sku].level.reserved + d.reserved,
                ),
            )
            for d in deltas
        }
        return [self._store(sku, level) for sku, level in after.items()]

    async def mark_low(self, sku: str, low: bool) -> None:
        item = self.rows[sku]
        self.rows[sku] = replace(item, level=replace(item.level, low_reported=low))

    def _store(self, sku: str, level: StockLevel) -> StockItem:
        self.rows[sku] = StockItem(sku, _checked(sku, level), self.clock())
        return self.rows[sku]


@dataclass
class FakeReservations:
    clock: Clock
    rows: dict[str, Reservation] = field(default_factory=dict)
    # The allocations moves recorded (the stock statement writes them; issue 13).
    booked: dict[str, list[Allocation]] | None = None

    async def create(
        self,
        order_id: str,
        lines: Lines,
        expires_at: datetime,
        correlation_id: str | None,
        channel: str | None = None,
    ) -> bool:
        if order_id in self.rows:
            return False
        self._insert(order_id, ReservationStatus.RESERVED, None, lines, expires_at, correlation_id)
        self.rows[order_id] = replace(self.rows[order_id], channel=channel)
        return True

    async def get(self, order_id: str) -> Reservation | None:
        return self._booked(self.rows.get(order_id))

    async def lock(self, order_id: str) -> Reservation | None:
        return self._booked(self.rows.get(order_id))

    def _booked(self, reservation: Reservation | None) -> Reservation | None:
        """The reservation with the allocations a move recorded on it (issue 13)."""
        if reservation is None or self.booked is None:
            return reservation
        allocations = self.booked.get(reservation.order_id)
        return (
            reservation
            if allocations is None
            else replace(reservation, allocations=tuple(allocations))
        )

    async def close_unseen(self, order_id: str, reason: str | None) -> None:
        if order_id not in self.rows:
            self._insert(order_id, ReservationStatus.RELEASED, reason, (), None, None)

    async def set_status(
        self, order_id: str, status: ReservationStatus, reason: str | None
    ) -> None:
        self.rows[order_id] = replace(
            self.rows[order_id], status=status, reason=reason, updated_at=self.clock()
        )

    async def claim_expired(self, now: datetime) -> Reservation | None:
        overdue = [
            r
            for r in self.rows.values()
            if r.status is ReservationStatus.RESERVED
            and r.expires_at is not None
            and r.expires_at <= now
        ]
        return self._booked(min(overdue, key=lambda r: r.expires_at or now, default=None))

    def _insert(
        self,
        order_id: str,
        status: ReservationStatus,
        reason: str | None,
        lines: Lines,
        expires_at: datetime | None,
        correlation_id: str | None,
    ) -> None:
        now = self.clock()
        self.rows[order_id] = Reservation(
            order_id, status, reason, tuple(lines), expires_at, correlation_id, now, now
        )


@dataclass(frozen=True)
class AuditEntry:
    movement: Movement
    reason: str
    order_id: str | None
    ref: str | None = None


@dataclass
class FakeMovements:
    entries: list[AuditEntry] = field(default_factory=list)

    async def record(
        self,
        movements: Sequence[Movement],
        reason: str,
        order_id: str | None,
        ref: str | None = None,
    ) -> None:
        self.entries.extend(AuditEntry(m, reason, order_id, ref) for m in movements)

    def of(self, sku: str) -> list[AuditEntry]:
        return [e for e in self.entries if e.movement.sku == sku]


class FakeStore:
    """The three repositories over one shared in-memory state."""

    def __init__(self, clock: Clock | None = None, policy: AllocationPolicy | None = None) -> None:
        self.clock = clock or MutableClock()
        self.movements = FakeMovements()
        self.items = FakeStockItems(self.clock, self.movements)
        self.reservations = FakeReservations(self.clock, booked=self.items.booked)
        self.returns = FakeStockReturns()
        self.purchasing = FakePurchasing(self.clock, self.reservations)  # issue 13

        # Issue 13.
        self.policy = policy or AllocationPolicy()
        self.locations = FakeLocations(self.clock)
        self.shelves = FakeShelves(self.items, self.locations, self.purchasing)
        self.caps = FakeCaps(self.items)
        self.transfers = FakeTransfers(self.clock)


@dataclass
class FakeStockReturns:
    """Returns taken back, by return id (the primary key of the real table; issue 12)."""

    rows: dict[str, tuple[str, Lines, Lines]] = field(default_factory=dict)

    async def claim(
        self, return_id: str, order_id: str, restocked: Lines, written_off: Lines
    ) -> bool:
        if return_id in self.rows:
            return False
        self.rows[return_id] = (order_id, restocked, written_off)
        return True


@dataclass
class _OrderStory:
    """An EventSink whose events carry one order's correlation id (kept beside each event)."""

    correlation_id: str | None
    tx: "FakeExpiryTx"

    async def emit(self, data: BaseModel, *, subject: str, topic: str | None = None) -> CloudEvent:
        self.tx.correlated.append((self.correlation_id, data))
        return await self.tx.events.emit(data, subject=subject, topic=topic)


@dataclass
class FakeExpiryTx(FakeTx[FakeStore]):
    correlated: list[tuple[str | None, BaseModel]] = field(default_factory=list)

    def events_of(self, correlation_id: str | None) -> EventSink:
        return _OrderStory(correlation_id, self)


@dataclass
class FakeExpiryTransactions:
    """Opens the sweep's transactions over one store; all their events land in `events`, and
    `opened` keeps each transaction (to count them, and to see their events' correlation)."""

    store: FakeStore
    events: RecordingEvents = field(default_factory=RecordingEvents)
    opened: list[FakeExpiryTx] = field(default_factory=list)

    def __call__(self) -> AbstractAsyncContextManager[ExpiryTx]:
        return self._begin()

    @asynccontextmanager
    async def _begin(self) -> AsyncIterator[ExpiryTx]:
        tx = FakeExpiryTx(self.store, self.events)
        self.opened.append(tx)
        yield tx
        tx.commit()

    @property
    def correlated(self) -> list[tuple[str | None, BaseModel]]:
        return [pair for tx in self.opened for pair in tx.correlated]


def _eur(amount: int) -> Money:
    return Money(amount=amount, currency="EUR")


def order_placed(order_id: str, lines: list[tuple[str, int]], deadline: datetime) -> OrderPlaced:
    """An OrderPlaced as orders publishes it (prices are irrelevant to inventory)."""
    priced = [
        PricedLine(
            sku=sku,
            quantity=quantity,
            unit_price=_eur(100),
            discount=_eur(0),
            tax=_eur(0),
            total=_eur(100 * quantity),
        )
        for sku, quantity in lines
    ]
    total = _eur(sum(100 * q for _, q in lines))
    return OrderPlaced(
        order_id=order_id,
        customer_id="cust-unit",
        lines=priced,
        region="EU",
        subtotal=total,
        discount=_eur(0),
        tax=_eur(0),
        total=total,
        reservation_deadline=deadline,
    )


START = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
TTL = timedelta(minutes=15)


# --- purchasing (issue 13) ---


@dataclass
class FakePurchasing:
    """Suppliers, purchase orders, receipts, supply and backorders in memory, with the database's
    guarantees the use cases rely on: one supplier item per sku, one open automatic draft per
    sku, one receipt per (purchase order, key), supply counters never below zero."""

    clock: Clock
    reservations: FakeReservations
    suppliers_by_id: dict[str, Supplier] = field(default_factory=dict)
    pos: dict[str, PurchaseOrder] = field(default_factory=dict)
    auto_skus: dict[str, str] = field(default_factory=dict)  # reorder sku -> po id
    receipts: dict[tuple[str, str], tuple[Receipt, str]] = field(default_factory=dict)
    policies: dict[str, BackorderPolicy] = field(default_factory=dict)
    backorders: list[Backorder] = field(default_factory=list)

    async def put_supplier(
        self,
        supplier_id: str,
        name: str,
        email: str | None,
        lead_time_days: int,
        location: str,
        items: Sequence[SupplierItem],
    ) -> bool:
        created = supplier_id not in self.suppliers_by_id
        skus = {i.sku for i in items}
        for other in list(self.suppliers_by_id.values()):  # the latest PUT takes the skus
            if other.id != supplier_id:
                kept = tuple(i for i in other.items if i.sku not in skus)
                self.suppliers_by_id[other.id] = replace(other, items=kept)
        now = self.clock()
        before = self.suppliers_by_id.get(supplier_id)
        self.suppliers_by_id[supplier_id] = Supplier(
            supplier_id,
            name,
            email,
            lead_time_days,
            location,
            tuple(items),
            before.created_at if before else now,
            now,
        )
        return created

    async def get_supplier(self, supplier_id: str) -> Supplier | None:
        return self.suppliers_by_id.get(supplier_id)

    async def suppliers(
        self, *, ids: Sequence[str] | None = None, after: str | None = None, limit: int = 50
    ) -> list[Supplier]:
        found = sorted(self.suppliers_by_id.values(), key=lambda s: s.id)
        return [
            s for s in found if (ids is None or s.id in ids) and (after is None or s.id > after)
        ][:limit]

    async def supplier_of(self, sku: str) -> Supplier | None:
        for supplier in self.suppliers_by_id.values():
            if any(i.sku == sku for i in supplier.items):
                return supplier
        return None

    async def has_open_po(self, sku: str) -> bool:
        return any(
            po.status.is_open and any(ln.sku == sku for ln in po.lines) for po in self.pos.values()
        )

    async def add_po(
        self,
        po_id: str,
        supplier_id: str,
        location: str,
        lines: Sequence[POLine],
        expected_at: datetime | None,
        reason: str,
        reorder_sku: str | None,
    ) -> PurchaseOrder | None:
        if reorder_sku is not None:
            holder = self.auto_skus.get(reorder_sku)
            if holder is not None and self.pos[holder].status.is_open:
                return None
            self.auto_skus[reorder_sku] = po_id
        now = self.clock()
        po = PurchaseOrder(
            po_id,
            supplier_id,
            location,
            PurchaseOrderStatus.DRAFT,
            tuple(lines),
            expected_at,
            reason,
            now,
            None,
            now,
        )
        self.pos[po_id] = po
        return po

    async def get_po(self, po_id: str) -> PurchaseOrder | None:
        return self.pos.get(po_id)

    async def lock_po(self, po_id: str) -> PurchaseOrder | None:
        return self.pos.get(po_id)

    async def save_po(
        self, po_id: str, status: PurchaseOrderStatus, lines: Sequence[POLine], *, sent: bool
    ) -> PurchaseOrder:
        now = self.clock()
        po = self.pos[po_id]
        self.pos[po_id] = replace(
            po,
            status=status,
            lines=tuple(lines),
            updated_at=now,
            sent_at=now if sent else po.sent_at,
        )
        return self.pos[po_id]

    async def purchase_orders(
        self,
        *,
        status: str | None,
        sku: str | None,
        supplier_id: str | None,
        before: tuple[datetime, str] | None,
        limit: int,
    ) -> list[PurchaseOrder]:
        found = [
            po
            for po in self.pos.values()
            if (status is None or po.status == status)
            and (sku is None or any(ln.sku == sku for ln in po.lines))
            and (supplier_id is None or po.supplier_id == supplier_id)
            and (before is None or (po.created_at, po.id) < before)
        ]
        return sorted(found, key=lambda po: (po.created_at, po.id), reverse=True)[:limit]

    async def earliest_expected(self, sku: str) -> datetime | None:
        dates = [
            po.expected_at
            for po in self.pos.values()
            if po.status.counts_on_order
            and po.expected_at is not None
            and any(ln.sku == sku for ln in po.lines)
        ]
        return min(dates, default=None)

    async def receipt_by_key(self, po_id: str, key: str) -> tuple[Receipt, str] | None:
        return self.receipts.get((po_id, key))

    async def add_receipt(
        self,
        receipt_id: str,
        po_id: str,
        key: str,
        request_hash: str,
        location: str,
        lines: Lines,
    ) -> datetime | None:
        if (po_id, key) in self.receipts:
            return None
        at = self.clock()
        self.receipts[(po_id, key)] = (
            Receipt(receipt_id, po_id, location, tuple(lines), at),
            request_hash,
        )
        return at

    async def add_supply(self, deltas: Sequence[tuple[str, int, int]]) -> None:
        for sku, on_order, waiting in deltas:
            policy = self.policies.get(sku, BackorderPolicy())
            after = replace(
                policy, on_order=policy.on_order + on_order, waiting=policy.waiting + waiting
            )
            if after.on_order < 0 or after.waiting < 0:
                raise CheckViolation(f"{sku}: on_order {after.on_order}, waiting {after.waiting}")
            self.policies[sku] = after

    async def supply(self, skus: Sequence[str]) -> dict[str, BackorderPolicy]:
        return {sku: self.policies[sku] for sku in skus if sku in self.policies}

    async def set_backorder_policy(
        self, sku: str, allowed: bool, expected_at: datetime | None
    ) -> None:
        policy = self.policies.get(sku, BackorderPolicy())
        self.policies[sku] = replace(policy, allowed=allowed, expected_at=expected_at)

    async def add_backorders(
        self, order_id: str, lines: Sequence[tuple[str, int, datetime | None]]
    ) -> None:
        for sku, quantity, expected in lines:
            self.backorders.append(
                Backorder(
                    len(self.backorders) + 1,
                    order_id,
                    sku,
                    quantity,
                    expected,
                    BackorderStatus.WAITING,
                    self.clock(),
                )
            )

    async def waiting_order_ids(self, skus: Sequence[str]) -> list[str]:
        return sorted(
            {
                b.order_id
                for b in self.backorders
                if b.sku in skus and b.status is BackorderStatus.WAITING
            }
        )

    async def lock_waiting(self, sku: str) -> list[Backorder]:
        return [b for b in self.backorders if b.sku == sku and b.status is BackorderStatus.WAITING]

    async def set_backorder_status(self, ids: Sequence[int], status: BackorderStatus) -> None:
        self.backorders = [replace(b, status=status) if b.id in ids else b for b in self.backorders]

    async def backorders_of(self, order_id: str) -> list[Backorder]:
        return [b for b in self.backorders if b.order_id == order_id]

    async def cancel_waiting(self, order_id: str) -> list[Backorder]:
        cancelled = [
            b
            for b in self.backorders
            if b.order_id == order_id and b.status is BackorderStatus.WAITING
        ]
        await self.set_backorder_status([b.id for b in cancelled], BackorderStatus.CANCELLED)
        return cancelled

    async def lock_reservations(self, order_ids: Sequence[str]) -> dict[str, Reservation]:
        return {
            o: self.reservations.rows[o] for o in sorted(order_ids) if o in self.reservations.rows
        }

    async def set_reservation_lines(self, order_id: str, lines: Lines) -> None:
        self.reservations.rows[order_id] = replace(
            self.reservations.rows[order_id], lines=tuple(lines)
        )


# --- locations (issue 13) ---


@dataclass
class FakeLocations:
    clock: Clock
    rows: dict[str, Location] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.add(DEFAULT_LOCATION, priority=0)

    def add(
        self,
        code: str,
        priority: int = 100,
        regions: tuple[str, ...] = (),
        active: bool = True,
        kind: str = "warehouse",
    ) -> Location:
        now = self.clock()
        self.rows[code] = Location(code, code.title(), kind, priority, regions, active, now, now)
        return self.rows[code]

    async def get(self, code: str) -> Location | None:
        return self.rows.get(code)

    async def lock(self, code: str) -> Location | None:
        return self.rows.get(code)

    async def upsert(
        self,
        code: str,
        name: str,
        kind: str | None,
        priority: int | None,
        regions: Sequence[str] | None,
        active: bool | None,
    ) -> tuple[Location, bool]:
        old = self.rows.get(code)
        now = self.clock()
        if old is None:
            self.rows[code] = Location(
                code,
                name,
                kind or "warehouse",
                100 if priority is None else priority,
                tuple(regions or ()),
                True if active is None else active,
                now,
                now,
            )
            return self.rows[code], True
        self.rows[code] = replace(
            old,
            name=name,
            kind=kind or old.kind,
            priority=old.priority if priority is None else priority,
            regions=old.regions if regions is None else tuple(regions),
            active=old.active if active is None else active,
            updated_at=now,
        )
        return self.rows[code], False

    async def page(self, after: str | None, limit: int) -> list[Location]:
        codes = sorted(c for c in self.rows if after is None or c > after)
        return [self.rows[c] for c in codes[:limit]]


@dataclass
class FakeShelves:
    items: FakeStockItems
    locations: FakeLocations
    purchasing: "FakePurchasing"

    async def of(self, skus: Sequence[str]) -> dict[str, Stocking]:
        found = {}
        for sku in skus:
            if sku not in self.items.rows:
                continue
            shelves = tuple(
                Shelf(loc, row[0], row[1], row[2], place.priority, place.regions, place.active)
                for (s, loc), row in sorted(self.items.stock.items())
                if s == sku and (place := self.locations.rows[loc])
            )
            caps = tuple(
                ChannelCap(channel, cap, used)
                for (s, channel), (cap, used) in sorted(self.items.caps.items())
                if s == sku
            )
            policy = self.purchasing.policies.get(sku)
            found[sku] = Stocking(shelves, caps, policy.on_order if policy else 0)
        return found

    async def set(
        self,
        sku: str,
        location: str,
        on_hand: int,
        safety_stock: int | None,
        delta: int,
        reorder_point: int | None,
    ) -> StockItem:
        old = self.items.stock.get((sku, location), [0, 0, 0])
        if on_hand < old[1]:
            raise CheckViolation(f"{sku}@{location}: on_hand {on_hand} below reserved {old[1]}")
        self.items.stock[(sku, location)] = [
            on_hand,
            old[1],
            old[2] if safety_stock is None else safety_stock,
        ]
        level = self.items.rows[sku].level
        level = replace(level, on_hand=level.on_hand + delta)
        if reorder_point is not None:
            level = replace(level, reorder_point=reorder_point)
        return self.items._store(sku, level)

    async def skus_at(self, location: str) -> list[str]:
        return sorted(s for (s, loc), row in self.items.stock.items() if loc == location and row[0])


@dataclass
class FakeCaps:
    items: FakeStockItems

    async def set(self, sku: str, channel: str, cap: int) -> None:
        used = self.items.caps.get((sku, channel), [0, 0])[1]
        self.items.caps[(sku, channel)] = [cap, used]


@dataclass
class FakeTransfers:
    clock: Clock
    rows: dict[str, tuple[Transfer, str]] = field(default_factory=dict)

    async def claim(
        self, transfer: Transfer, idempotency_key: str, request_hash: str
    ) -> Transfer | None:
        if idempotency_key in self.rows:
            return None
        self.rows[idempotency_key] = (replace(transfer, at=self.clock()), request_hash)
        return self.rows[idempotency_key][0]

    async def by_key(self, idempotency_key: str) -> tuple[Transfer, str] | None:
        return self.rows.get(idempotency_key)


def order_on(
    order_id: str,
    lines: list[tuple[str, int]],
    deadline: datetime,
    *,
    channel: str = "web",
    region: str = "EU",
) -> OrderPlaced:
    """An OrderPlaced through a sales channel, shipping to a region."""
    return order_placed(order_id, lines, deadline).model_copy(
        update={"channel": channel, "region": region}
    )
