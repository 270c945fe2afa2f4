"""Inventory rules: availability and when it is announced, the low-stock crossing, and the
reservation life cycle."""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from libs.kit.findings import Finding

SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
# (sku, quantity) pairs: an order's lines, one per sku, in sku order once merged.
Lines = Sequence[tuple[str, int]]
# Bigger than any real shelf; keeps every quantity well inside a BIGINT and out of overflow errors.
MAX_QUANTITY = 1_000_000_000


class StockRuleViolation(Exception):
    """A stock change that would break `0 <= reserved <= on_hand` (a 409 for operators)."""


@dataclass(frozen=True)
class StockLevel:
    """One sku's counts; `low_reported` says the current low state was already announced."""

    on_hand: int
    reserved: int
    reorder_point: int
    low_reported: bool = False

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved

    def set_on_hand(self, on_hand: int, reorder_point: int | None = None) -> "StockLevel":
        """An absolute count from the shelf; it may not drop below what is promised to orders."""
        if on_hand < 0:
            raise StockRuleViolation("on_hand cannot be negative")
        if on_hand < self.reserved:
            raise StockRuleViolation(
                f"on_hand {on_hand} is below the {self.reserved} unit(s) reserved for orders"
            )
        return replace(
            self,
            on_hand=on_hand,
            reorder_point=self.reorder_point if reorder_point is None else reorder_point,
        )

    def adjust(self, delta: int) -> "StockLevel":
        """A relative change (restock, damage, count correction); available may not go negative."""
        if self.available + delta < 0:
            raise StockRuleViolation(
                f"delta {delta} would leave available at {self.available + delta} "
                f"(on_hand {self.on_hand}, reserved {self.reserved})"
            )
        return replace(self, on_hand=self.on_hand + delta)


@dataclass(frozen=True)
class StockItem:
    """One sku as stored: its counts and when they last changed."""

    sku: str
    level: StockLevel
    updated_at: datetime
    # Issue 13: the sku at each location, and its capped sales channels (empty: not loaded).
    locations: tuple["Shelf", ...] = ()
    channels: tuple["ChannelCap", ...] = ()
    # Units on sent purchase orders (StockLevelChanged.on_order), read with the locations so an
    # announcement needs no statement of its own; None: not loaded.
    on_order: int | None = None


@dataclass(frozen=True)
class LowStockSignal:
    emit: bool  # announce StockLow now
    low: bool  # the new value of `low_reported`


def low_stock_signal(available: int, reorder_point: int, low_reported: bool) -> LowStockSignal:
    """StockLow once per crossing: when available is at/below the reorder point and that state
    was not announced yet; going back above the reorder point re-arms it."""
    low = available <= reorder_point
    return LowStockSignal(emit=low and not low_reported, low=low)


def announces_level(before: StockLevel | None, after: StockLevel) -> bool:
    """Whether a change is published as StockLevelChanged: only when `available` (what storefronts,
    catalog and marketplaces sell from) moves, or a new sku gets its first level (`before` None).
    A commit moves units from reserved to shipped with available unchanged: StockCommitted says
    so, with the lines. ADR 0008."""
    return before is None or after.available != before.available


class ReservationStatus(StrEnum):
    RESERVED = "reserved"
    COMMITTED = "committed"
    RELEASED = "released"
    FAILED = "failed"


class StockMove(StrEnum):
    """What a reservation step does to each line's stock row."""

    RESERVE = "reserve"  # reserved += q, only if available >= q
    COMMIT = "commit"  # on_hand -= q, reserved -= q (the units leave the warehouse)
    UNRESERVE = "unreserve"  # reserved -= q
    RESTOCK = "restock"  # on_hand += q (a committed order was cancelled)
    RETAKE = "retake"  # on_hand -= q, only if available >= q (commit after our expiry)

    def deltas(self, quantity: int) -> tuple[int, int]:
        """(delta on_hand, delta reserved) for `quantity` units."""
        return {
            StockMove.RESERVE: (0, quantity),
            StockMove.COMMIT: (-quantity, -quantity),
            StockMove.UNRESERVE: (0, -quantity),
            StockMove.RESTOCK: (quantity, 0),
            StockMove.RETAKE: (-quantity, 0),
        }[self]

    @property
    def needs_available(self) -> bool:
        """Moves that consume available stock and so may be refused."""
        return self in (StockMove.RESERVE, StockMove.RETAKE)

    @property
    def reason(self) -> str:
        """The `reason` of StockLevelChanged (and of the audit row) for this kind of move."""
        return _MOVE_REASONS[self]


_MOVE_REASONS = {
    StockMove.RESERVE: "reserved",
    StockMove.COMMIT: "committed",
    StockMove.UNRESERVE: "released",
    StockMove.RESTOCK: "restocked",
    StockMove.RETAKE: "committed",
}


class OrderOutcome(StrEnum):
    """What an order event asks of its reservation."""

    CONFIRMED = "confirmed"
    REJECTED = "rejected"  # also the expiry safety net
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Step:
    status: ReservationStatus
    move: StockMove


EXPIRED = "expired"
CANCELLED = "cancelled"
OUT_OF_STOCK = "out_of_stock"
# A confirmation that took back stock our expiry had released.
COMMITTED_AFTER_EXPIRY = "committed_after_expiry"


@dataclass(frozen=True)
class Reservation:
    """One order's reservation, whatever became of it (a row per order makes events idempotent).
    `correlation_id` is the order's, so events of the expiry sweep stay in the order's story."""

    order_id: str
    status: ReservationStatus
    reason: str | None
    lines: tuple[tuple[str, int], ...]
    expires_at: datetime | None
    correlation_id: str | None
    created_at: datetime
    updated_at: datetime
    # Issue 13: where the units were taken from (empty before locations: the default one), and
    # the order's sales channel.
    allocations: tuple["Allocation", ...] = ()
    channel: str | None = None


def next_step(status: ReservationStatus, reason: str | None, outcome: OrderOutcome) -> Step | None:
    """The allowed transitions; None means the event is late, duplicated or moot: do nothing."""
    if status is ReservationStatus.RESERVED:
        if outcome is OrderOutcome.CONFIRMED:
            return Step(ReservationStatus.COMMITTED, StockMove.COMMIT)
        return Step(ReservationStatus.RELEASED, StockMove.UNRESERVE)
    if status is ReservationStatus.COMMITTED and outcome is OrderOutcome.CANCELLED:
        return Step(ReservationStatus.RELEASED, StockMove.RESTOCK)
    if (
        status is ReservationStatus.RELEASED
        and reason == EXPIRED
        and outcome is OrderOutcome.CONFIRMED
    ):
        # Orders confirmed after our safety net gave the stock back: take it again if we can.
        return Step(ReservationStatus.COMMITTED, StockMove.RETAKE)
    return None


def settled_reason(step: Step, reason: str | None) -> str | None:
    """The reason a reservation keeps after `step`: why it was released, or that a commit had
    to take the stock back after our expiry; a plain commit has none."""
    if step.move is StockMove.RETAKE:
        return COMMITTED_AFTER_EXPIRY
    return reason if step.status is ReservationStatus.RELEASED else None


def merge_lines(lines: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    """One (sku, quantity) per sku, sorted by sku: the lock order that keeps reservations
    from deadlocking each other."""
    merged: dict[str, int] = {}
    for sku, quantity in lines:
        merged[sku] = merged.get(sku, 0) + quantity
    return sorted(merged.items())


@dataclass(frozen=True)
class ShortLine:
    sku: str
    requested: int
    available: int


def short_lines(lines: Lines, available: Mapping[str, int], failed_sku: str) -> list[ShortLine]:
    """The lines that cannot be served from `available` (an unknown sku has 0 available).
    The line whose reservation failed is always reported, even if stock came back since."""
    short = [
        ShortLine(sku, quantity, max(available.get(sku, 0), 0))
        for sku, quantity in lines
        if quantity > available.get(sku, 0) or sku == failed_sku
    ]
    return short


@dataclass(frozen=True)
class StockDelta:
    """What a move does to one sku's row."""

    sku: str
    on_hand: int
    reserved: int


@dataclass(frozen=True)
class Refused:
    """A move of an order's lines that cannot happen: `sku` is the first line that cannot move,
    `short` every line that cannot be served (what StockReservationFailed reports)."""

    sku: str
    short: list[ShortLine]


def plan_move(
    lines: Lines, levels: Mapping[str, StockLevel], move: StockMove
) -> list[StockDelta] | Refused:
    """All or nothing: the deltas of every line (in `lines`' order), or the refusal when any line
    cannot move: its sku is unknown (no level), its quantity is beyond any shelf, or the move
    consumes stock and the (locked) level has less available than the line asks."""
    for sku, quantity in lines:
        level = levels.get(sku)
        if (
            level is None
            or quantity > MAX_QUANTITY
            or (move.needs_available and level.available < quantity)
        ):
            available = {known: held.available for known, held in levels.items()}
            return Refused(sku, short_lines(lines, available, sku))
    return [StockDelta(sku, *move.deltas(quantity)) for sku, quantity in lines]


@dataclass(frozen=True)
class Movement:
    """One audited stock change: the deltas, and the counts they led to."""

    sku: str
    delta_on_hand: int
    delta_reserved: int
    on_hand: int
    reserved: int
    # Issue 13: where it happened (the counts are then that location's).
    location: str = "main"

    @classmethod
    def of(cls, after: StockLevel, sku: str, delta_on_hand: int, delta_reserved: int) -> "Movement":
        return cls(sku, delta_on_hand, delta_reserved, after.on_hand, after.reserved)


def reservation_expiry(deadline: datetime, now: datetime, grace_s: float) -> datetime:
    """Inventory's safety net runs out later than the order's own deadline, so orders (which
    owns the deadline) always decides first and our release only catches forgotten orders."""
    return max(deadline, now) + timedelta(seconds=grace_s)


# --- returns (issue 12) ---
# A received return's units come back: resellable ones go on the shelf again (on_hand up), damaged
# ones are written off. Those left the warehouse when the order was committed (on_hand fell
# then), so a write-off changes no count: it is a movement that records why they never return.
RETURN_RESTOCK = "return_restock"
RETURN_WRITE_OFF = "return_write_off"
RESELLABLE = "resellable"


@dataclass(frozen=True)
class ReturnSplit:
    """A return's units per sku (in sku order): those to restock and those to write off."""

    restock: list[tuple[str, int]]
    write_off: list[tuple[str, int]]


def split_return(lines: Iterable[tuple[str, int, str]]) -> ReturnSplit:
    """(sku, quantity, condition) lines: resellable ones are restocked, any other condition
    (damaged) written off."""
    lines = list(lines)
    return ReturnSplit(
        restock=merge_lines((sku, q) for sku, q, condition in lines if condition == RESELLABLE),
        write_off=merge_lines((sku, q) for sku, q, condition in lines if condition != RESELLABLE),
    )


# --- purchasing (issue 13) ---
# Suppliers, purchase orders and backorders. A purchase order is drafted when a sku crosses its
# reorder point (once per crossing: the StockLow signal), sent by an admin, and received in one
# or more receipts; units on sent purchase orders are "on order", and a sku may accept
# backorders against them: the part of a line beyond what is on the shelf is promised from
# incoming stock, and filled (whole lines, first come first served) when a receipt lands.


class PurchaseOrderStatus(StrEnum):
    DRAFT = "draft"
    SENT = "sent"
    PARTIALLY_RECEIVED = "partially_received"
    RECEIVED = "received"
    CANCELLED = "cancelled"

    @property
    def is_open(self) -> bool:
        """Still expecting goods (or about to): it holds its skus against another draft."""
        return self in OPEN_PO_STATUSES

    @property
    def counts_on_order(self) -> bool:
        """Its remaining units are on their way (the supplier has it)."""
        return self in (PurchaseOrderStatus.SENT, PurchaseOrderStatus.PARTIALLY_RECEIVED)


OPEN_PO_STATUSES = (
    PurchaseOrderStatus.DRAFT,
    PurchaseOrderStatus.SENT,
    PurchaseOrderStatus.PARTIALLY_RECEIVED,
)
REORDER_POINT = "reorder_point"
MANUAL = "manual"
PO_RECEIPT = "po_receipt"


class PurchaseRuleViolation(Exception):
    """A purchase order transition the status does not allow (a 409)."""


class ReceiptRejected(Exception):
    """A receipt line that does not fit the purchase order: `index` is the receipt line's
    position, `field` its field (`sku` or `quantity`)."""

    def __init__(self, index: int, field: str, message: str) -> None:
        super().__init__(message)
        self.index = index
        self.field = field
        self.message = message


@dataclass(frozen=True)
class SupplierItem:
    sku: str
    reorder_quantity: int
    lead_time_days: int | None = None
    unit_cost_amount: int | None = None
    unit_cost_currency: str | None = None


@dataclass(frozen=True)
class Supplier:
    id: str
    name: str
    email: str | None
    lead_time_days: int
    location: str
    items: tuple[SupplierItem, ...]
    created_at: datetime
    updated_at: datetime

    def lead_time_of(self, sku: str) -> int:
        """The sku's own lead time, else the supplier's."""
        for item in self.items:
            if item.sku == sku and item.lead_time_days is not None:
                return item.lead_time_days
        return self.lead_time_days


@dataclass(frozen=True)
class POLine:
    sku: str
    quantity: int
    received: int = 0

    @property
    def remaining(self) -> int:
        return self.quantity - self.received


@dataclass(frozen=True)
class PurchaseOrder:
    id: str
    supplier_id: str
    location: str
    status: PurchaseOrderStatus
    lines: tuple[POLine, ...]
    expected_at: datetime | None
    reason: str
    created_at: datetime
    sent_at: datetime | None
    updated_at: datetime

    @property
    def received_any(self) -> bool:
        return any(line.received for line in self.lines)


def expected_at(now: datetime, lead_time_days: int) -> datetime:
    return now + timedelta(days=lead_time_days)


def should_draft(crossed: bool, reorder_quantity: int | None, has_open_po: bool) -> bool:
    """Draft on a reorder-point crossing (StockLow's once-per-crossing signal) of a sku with a
    supplier item, unless an open purchase order holds the sku already."""
    return crossed and reorder_quantity is not None and reorder_quantity > 0 and not has_open_po


def send_po(status: PurchaseOrderStatus) -> PurchaseOrderStatus:
    if status is not PurchaseOrderStatus.DRAFT:
        raise PurchaseRuleViolation(f"purchase order is {status}: only a draft can be sent")
    return PurchaseOrderStatus.SENT


def cancel_po(po: PurchaseOrder) -> PurchaseOrderStatus:
    if po.status not in (PurchaseOrderStatus.DRAFT, PurchaseOrderStatus.SENT) or po.received_any:
        raise PurchaseRuleViolation(
            f"purchase order is {po.status}: only one with nothing received can be cancelled"
        )
    return PurchaseOrderStatus.CANCELLED


def receive_po(
    po: PurchaseOrder, receipt: Sequence[tuple[str, int]]
) -> tuple[tuple[POLine, ...], PurchaseOrderStatus]:
    """The purchase order's lines and status after a receipt of (sku, quantity) lines: a draft
    was never sent (PurchaseRuleViolation), nor can a closed one receive; a sku not on the order
    or more than its remaining units is refused (ReceiptRejected naming the receipt line)."""
    if po.status is PurchaseOrderStatus.DRAFT:
        raise PurchaseRuleViolation("purchase order is draft: send it before receiving goods")
    if not po.status.counts_on_order:
        raise PurchaseRuleViolation(f"purchase order is {po.status}: it receives nothing more")
    lines = {line.sku: line for line in po.lines}
    for index, (sku, quantity) in enumerate(receipt):
        line = lines.get(sku)
        if line is None:
            raise ReceiptRejected(index, "sku", f"{sku} is not on purchase order {po.id}")
        if quantity > line.remaining:
            raise ReceiptRejected(
                index,
                "quantity",
                f"{quantity} exceeds the {line.remaining} unit(s) of {sku} still expected",
            )
        lines[sku] = replace(line, received=line.received + quantity)
    after = tuple(lines[line.sku] for line in po.lines)
    done = all(line.remaining == 0 for line in after)
    return after, PurchaseOrderStatus.RECEIVED if done else PurchaseOrderStatus.PARTIALLY_RECEIVED


@dataclass(frozen=True)
class BackorderPolicy:
    """A sku's backorder setting and what is promised against its incoming stock."""

    allowed: bool = False
    expected_at: datetime | None = None
    on_order: int = 0
    waiting: int = 0

    @property
    def promisable(self) -> int:
        return max(self.on_order - self.waiting, 0) if self.allowed else 0


@dataclass(frozen=True)
class BackorderSplit:
    """An order's lines split into what is reserved from the shelf now and what is backordered."""

    reserve: list[tuple[str, int]]
    backorder: list[tuple[str, int]]


def split_backorders(
    lines: Lines, available: Mapping[str, int], policies: Mapping[str, BackorderPolicy]
) -> BackorderSplit | None:
    """When a plain reservation is refused: reserve what the shelf has of each line and
    backorder the rest, if every short line's sku allows backorders and its incoming stock not
    yet promised covers the rest; None when any line cannot be served either way (the order
    fails as before). `available`: what the strategy (and the order's channel cap) can take
    now per sku; an unknown sku (absent) is never backordered."""
    reserve: list[tuple[str, int]] = []
    backorder: list[tuple[str, int]] = []
    for sku, quantity in lines:
        sellable = available.get(sku)
        if sellable is None or quantity > MAX_QUANTITY:
            return None
        take = min(max(sellable, 0), quantity)
        rest = quantity - take
        if rest > policies.get(sku, BackorderPolicy()).promisable:
            return None
        if take:
            reserve.append((sku, take))
        if rest:
            backorder.append((sku, rest))
    return BackorderSplit(reserve, backorder)


class BackorderStatus(StrEnum):
    WAITING = "waiting"
    FILLED = "filled"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Backorder:
    id: int
    order_id: str
    sku: str
    quantity: int
    expected_at: datetime | None
    status: BackorderStatus
    created_at: datetime


def fill_fifo(waiting: Sequence[Backorder], available: int) -> list[Backorder]:
    """The waiting backorders (oldest first) that `available` units fill, whole lines only, in
    order: the first line that does not fit stops the filling (no later order jumps ahead)."""
    filled: list[Backorder] = []
    for backorder in waiting:
        if backorder.quantity > available:
            break
        filled.append(backorder)
        available -= backorder.quantity
    return filled


def add_lines(lines: Lines, more: Lines) -> tuple[tuple[str, int], ...]:
    """A reservation's lines with `more` units added (one line per sku, in sku order)."""
    return tuple(merge_lines([*lines, *more]))


@dataclass(frozen=True)
class Receipt:
    """Goods received against a purchase order, into a location."""

    id: str
    purchase_order_id: str
    location: str
    lines: tuple[tuple[str, int], ...]
    at: datetime


# --- locations, allocation, transfers, channel caps (issue 13) ---
# Stock lives at locations (warehouses, stores); `stock_items` stays the per-sku sum and lock row.
# A reservation takes each line from one or more locations by the configured strategy, and a
# capped sales channel may hold at most `cap` units of a sku in live and committed reservations.
DEFAULT_LOCATION = "main"
LOCATION_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"
CHANNEL_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"
LOCATION_KINDS = ("warehouse", "store")
DEFAULT_LOCATION_PRIORITY = 100
TRANSFER_OUT = "transfer_out"
TRANSFER_IN = "transfer_in"
CAP_CHANGED = "channel_cap"
LOCATION_CHANGED = "location"


class Strategy(StrEnum):
    PRIORITY = "priority"  # by priority, then code
    REGION = "region"  # locations serving the order's region first (by priority), then the rest


@dataclass(frozen=True)
class AllocationPolicy:
    strategy: Strategy = Strategy.PRIORITY
    split: bool = True  # a line may come from several locations
    # Where v1 writes (PUT item, adjustments), returns and pre-location reservations act.
    default_location: str = DEFAULT_LOCATION


@dataclass(frozen=True)
class Location:
    code: str
    name: str
    kind: str
    priority: int
    regions: tuple[str, ...]
    active: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Shelf:
    """One sku at one location, with what allocation needs to know of the location."""

    location: str
    on_hand: int
    reserved: int
    safety_stock: int = 0
    priority: int = 0
    regions: tuple[str, ...] = ()
    active: bool = True

    @property
    def allocatable(self) -> int:
        """What orders may still take here: never the safety stock, nothing if inactive."""
        if not self.active:
            return 0
        return max(0, self.on_hand - self.reserved - self.safety_stock)


@dataclass(frozen=True)
class Stocking:
    """What is read of a locked sku besides its counts: its shelves, its channel caps and the
    units on order for it."""

    shelves: tuple[Shelf, ...] = ()
    caps: tuple["ChannelCap", ...] = ()
    on_order: int = 0

    def of(self, item: StockItem) -> StockItem:
        """`item` with what was read of it."""
        return replace(item, locations=self.shelves, channels=self.caps, on_order=self.on_order)


@dataclass(frozen=True)
class ChannelCap:
    """A capped channel's hold on one sku: at most `cap` units live or committed (`used`)."""

    channel: str
    cap: int
    used: int

    @property
    def room(self) -> int:
        return max(0, self.cap - self.used)


@dataclass(frozen=True)
class ChannelView:
    channel: str
    cap: int
    used: int
    available: int


@dataclass(frozen=True)
class Availability:
    """What a sku can sell now: the pool (`available`) and each capped channel's share."""

    available: int
    channels: tuple[ChannelView, ...] = ()


def pool_available(shelves: Sequence[Shelf], split: bool) -> int:
    """What the strategy can actually allocate of a sku: the sum over locations when a line may
    be split, the largest single location when not."""
    allocatable = [s.allocatable for s in shelves]
    if not allocatable:
        return 0
    return sum(allocatable) if split else max(allocatable)


def availability(shelves: Sequence[Shelf], caps: Sequence[ChannelCap], split: bool) -> Availability:
    pool = pool_available(shelves, split)
    return Availability(
        pool,
        tuple(
            ChannelView(c.channel, c.cap, c.used, min(c.room, pool))
            for c in sorted(caps, key=lambda c: c.channel)
        ),
    )


def item_availability(item: StockItem, split: bool) -> Availability:
    """An item's availability; an item loaded without its locations (v1 shape) is all at one."""
    if not item.locations:
        return Availability(max(0, item.level.available), ())
    return availability(item.locations, item.channels, split)


def announces(before: Availability | None, after: Availability) -> bool:
    """StockLevelChanged when the pool or any capped channel's available moved (or a new sku)."""
    if before is None:
        return True
    return (before.available, [(c.channel, c.available) for c in before.channels]) != (
        after.available,
        [(c.channel, c.available) for c in after.channels],
    )


@dataclass(frozen=True)
class Allocation:
    """Units of one sku taken from one location; `capped`: counted against the order's channel
    cap (so a release gives them back to it)."""

    sku: str
    location: str
    quantity: int
    capped: bool = False


@dataclass(frozen=True)
class LocationDelta:
    sku: str
    location: str
    on_hand: int
    reserved: int


def ranked(shelves: Sequence[Shelf], policy: AllocationPolicy, region: str | None) -> list[Shelf]:
    """The order a sku's locations are allocated from."""
    if policy.strategy == Strategy.REGION:
        return sorted(
            shelves,
            key=lambda s: (region is None or region not in s.regions, s.priority, s.location),
        )
    return sorted(shelves, key=lambda s: (s.priority, s.location))


def allocate(
    lines: Lines,
    shelves: Mapping[str, Sequence[Shelf]],
    policy: AllocationPolicy,
    region: str | None,
    room: Mapping[str, int] | None = None,
) -> list[Allocation] | Refused:
    """All or nothing: every line's allocations (in line order, then location order), or the
    refusal naming every line that cannot be served. `room` is what a capped channel may still
    take of each capped sku (a sku not in it is uncapped). Without split a line comes from one
    location, and one location serves the whole order when one can."""
    room = room or {}
    short: list[ShortLine] = []
    for sku, quantity in lines:
        pool = pool_available(shelves.get(sku, ()), policy.split)
        sellable = min(pool, room[sku]) if sku in room else pool
        if sku not in shelves or quantity > MAX_QUANTITY or quantity > sellable:
            short.append(ShortLine(sku, quantity, max(sellable, 0)))
    if short:
        return Refused(short[0].sku, short)
    if not policy.split:
        whole = _one_location_for_all(lines, shelves, policy, region)
        if whole is not None:
            return [Allocation(sku, whole, q, sku in room) for sku, q in lines]
    allocations: list[Allocation] = []
    for sku, quantity in lines:
        order = ranked(shelves[sku], policy, region)
        if not policy.split:
            shelf = next(s for s in order if s.allocatable >= quantity)
            allocations.append(Allocation(sku, shelf.location, quantity, sku in room))
            continue
        left = quantity
        for shelf in order:
            take = min(left, shelf.allocatable)
            if take > 0:
                allocations.append(Allocation(sku, shelf.location, take, sku in room))
                left -= take
            if left == 0:
                break
    return allocations


def _one_location_for_all(
    lines: Lines,
    shelves: Mapping[str, Sequence[Shelf]],
    policy: AllocationPolicy,
    region: str | None,
) -> str | None:
    """The best-ranked location (by the first line's ranking) that can serve every line."""
    if not lines:
        return None
    for first in ranked(shelves[lines[0][0]], policy, region):
        at = first.location
        if all(
            any(s.location == at and s.allocatable >= q for s in shelves[sku]) for sku, q in lines
        ):
            return at
    return None


def default_allocations(lines: Lines, location: str = DEFAULT_LOCATION) -> list[Allocation]:
    """A reservation from before locations: every line at the default location, uncapped."""
    return [Allocation(sku, location, q) for sku, q in lines]


def location_deltas(allocations: Sequence[Allocation], move: StockMove) -> list[LocationDelta]:
    return [LocationDelta(a.sku, a.location, *move.deltas(a.quantity)) for a in allocations]


_USED_SIGN = {
    StockMove.RESERVE: 1,
    StockMove.RETAKE: 1,
    StockMove.COMMIT: 0,
    StockMove.UNRESERVE: -1,
    StockMove.RESTOCK: -1,
}


def used_deltas(allocations: Sequence[Allocation], move: StockMove) -> list[tuple[str, int]]:
    """What a move does to the channel's `used` per capped sku: a reservation (or a retake) takes
    units, a commit keeps them counted, a release or restock gives them back."""
    sign = _USED_SIGN[move]
    used: dict[str, int] = {}
    for a in allocations:
        if a.capped and sign:
            used[a.sku] = used.get(a.sku, 0) + sign * a.quantity
    return sorted(used.items())


def sku_deltas(deltas: Sequence[LocationDelta]) -> list[StockDelta]:
    """The per-sku sums of location deltas, in first-appearance order."""
    sums: dict[str, tuple[int, int]] = {}
    for d in deltas:
        on_hand, reserved = sums.get(d.sku, (0, 0))
        sums[d.sku] = (on_hand + d.on_hand, reserved + d.reserved)
    return [StockDelta(sku, on_hand, reserved) for sku, (on_hand, reserved) in sums.items()]


def fits(shelves: Mapping[str, Sequence[Shelf]], deltas: Sequence[LocationDelta]) -> bool:
    """Whether every delta lands on an existing location row and keeps 0 <= reserved <= on_hand
    there (a commit, release or restock of recorded allocations only needs that)."""
    after = apply_deltas(shelves, deltas)
    for d in deltas:
        shelf = next((s for s in after.get(d.sku, ()) if s.location == d.location), None)
        if (
            shelf is None
            or shelf.on_hand < 0
            or shelf.reserved < 0
            or shelf.reserved > shelf.on_hand
        ):
            return False
    return True


def apply_deltas(
    shelves: Mapping[str, Sequence[Shelf]], deltas: Sequence[LocationDelta]
) -> dict[str, tuple[Shelf, ...]]:
    """The shelves after the deltas (a delta at a location without a row adds one)."""
    after = {sku: list(rows) for sku, rows in shelves.items()}
    for d in deltas:
        rows = after.setdefault(d.sku, [])
        at = next((i for i, s in enumerate(rows) if s.location == d.location), None)
        if at is None:
            rows.append(Shelf(d.location, d.on_hand, d.reserved))
        else:
            s = rows[at]
            rows[at] = replace(s, on_hand=s.on_hand + d.on_hand, reserved=s.reserved + d.reserved)
    return {sku: tuple(rows) for sku, rows in after.items()}


def apply_used(
    caps: Sequence[ChannelCap], channel: str, used: Mapping[str, int], sku: str
) -> tuple[ChannelCap, ...]:
    return tuple(
        replace(c, used=max(0, c.used + used.get(sku, 0))) if c.channel == channel else c
        for c in caps
    )


def shelf_at(shelves: Sequence[Shelf], location: str) -> Shelf | None:
    return next((s for s in shelves if s.location == location), None)


def set_shelf(shelf: Shelf | None, on_hand: int, safety_stock: int | None) -> Shelf:
    """An absolute count at one location; it may not drop below what is reserved there."""
    reserved = 0 if shelf is None else shelf.reserved
    if on_hand < 0:
        raise StockRuleViolation("on_hand cannot be negative")
    if on_hand < reserved:
        raise StockRuleViolation(
            f"on_hand {on_hand} is below the {reserved} unit(s) reserved for orders here"
        )
    keep = 0 if shelf is None else shelf.safety_stock
    return Shelf(
        location="" if shelf is None else shelf.location,
        on_hand=on_hand,
        reserved=reserved,
        safety_stock=keep if safety_stock is None else safety_stock,
    )


def adjust_shelf(shelf: Shelf | None, delta: int) -> int:
    """A v1 adjustment at one location: the new on_hand; never takes reserved units."""
    on_hand = 0 if shelf is None else shelf.on_hand
    reserved = 0 if shelf is None else shelf.reserved
    if on_hand - reserved + delta < 0:
        raise StockRuleViolation(
            f"delta {delta} would leave available at {on_hand - reserved + delta} "
            f"(on_hand {on_hand}, reserved {reserved})"
        )
    return on_hand + delta


def plan_transfer(
    source: Shelf | None, target: str, quantity: int, sku: str
) -> list[LocationDelta]:
    """Only allocatable units move (never reserved units or the safety stock)."""
    if source is None or source.location == target:
        raise StockRuleViolation("a transfer needs two different locations")
    if quantity > source.allocatable:
        raise StockRuleViolation(
            f"only {source.allocatable} unit(s) of {sku} can move from {source.location}"
        )
    return [
        LocationDelta(sku, source.location, -quantity, 0),
        LocationDelta(sku, target, quantity, 0),
    ]


@dataclass(frozen=True)
class Transfer:
    id: str
    sku: str
    from_location: str
    to_location: str
    quantity: int
    reason: str | None
    at: datetime | None = None


# --- reconciliation (issue 14) ---

# Inventory's reconciliation kinds (besides the kit's outbox_stuck), in one place.
STOCK_LOCATION_MISMATCH = "stock_location_mismatch"
MOVEMENTS_MISMATCH = "movements_mismatch"
RESERVED_MISMATCH = "reserved_mismatch"
RESERVATION_EXPIRED_HELD = "reservation_expired_held"
STOCK_KINDS = (STOCK_LOCATION_MISMATCH, MOVEMENTS_MISMATCH, RESERVED_MISMATCH)
RECONCILIATION_KINDS = (*STOCK_KINDS, RESERVATION_EXPIRED_HELD)


@dataclass(frozen=True)
class StockTally:
    """One sku's counts as stock_items holds them and as the other records add up: the sums of
    its location rows, of its movements' deltas (every change of location_stock is audited with
    its deltas, the item's creation included, so they add up to the counts), and of the
    allocations of its live (reserved) reservations."""

    sku: str
    on_hand: int
    reserved: int
    updated_at: datetime
    location_on_hand: int
    location_reserved: int
    moved_on_hand: int
    moved_reserved: int
    allocated: int


def stock_findings(tallies: Iterable[StockTally]) -> list[Finding]:
    findings: list[Finding] = []
    for t in tallies:
        ids = {"sku": t.sku}
        if (t.on_hand, t.reserved) != (t.location_on_hand, t.location_reserved):
            findings.append(
                Finding(
                    STOCK_LOCATION_MISMATCH,
                    ids,
                    f"on_hand/reserved {t.on_hand}/{t.reserved} but its locations add up to"
                    f" {t.location_on_hand}/{t.location_reserved}",
                    t.updated_at,
                )
            )
        if (t.on_hand, t.reserved) != (t.moved_on_hand, t.moved_reserved):
            findings.append(
                Finding(
                    MOVEMENTS_MISMATCH,
                    ids,
                    f"on_hand/reserved {t.on_hand}/{t.reserved} but its movements add up to"
                    f" {t.moved_on_hand}/{t.moved_reserved}",
                    t.updated_at,
                )
            )
        if t.reserved != t.allocated:
            findings.append(
                Finding(
                    RESERVED_MISMATCH,
                    ids,
                    f"reserved {t.reserved} but its open reservations hold {t.allocated}",
                    t.updated_at,
                )
            )
    return findings


def expired_held_findings(
    held: Iterable[tuple[str, datetime]], now: datetime, grace: timedelta
) -> list[Finding]:
    """Reservations (order id, expires_at) still reserved more than `grace` past their expiry:
    the expiry sweep (which runs every few seconds) should have released them."""
    return [
        Finding(
            RESERVATION_EXPIRED_HELD,
            {"order_id": order_id},
            f"still reserved {int((now - expires_at).total_seconds())}s after it expired",
            expires_at,
        )
        for order_id, expires_at in held
        if expires_at + grace < now
    ]
