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
