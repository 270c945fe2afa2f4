"""Inventory rules: availability and when it is announced, the low-stock crossing, and the
reservation life cycle."""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

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
    lines: Lines, levels: Mapping[str, StockLevel], policies: Mapping[str, BackorderPolicy]
) -> BackorderSplit | None:
    """When a plain reservation is refused: reserve what the shelf has of each line and
    backorder the rest, if every short line's sku allows backorders and its incoming stock not
    yet promised covers the rest; None when any line cannot be served either way (the order
    fails as before). An unknown sku is never backordered."""
    reserve: list[tuple[str, int]] = []
    backorder: list[tuple[str, int]] = []
    for sku, quantity in lines:
        level = levels.get(sku)
        if level is None or quantity > MAX_QUANTITY:
            return None
        take = min(max(level.available, 0), quantity)
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
