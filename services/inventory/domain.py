"""Inventory rules: availability, the low-stock crossing, and the reservation life cycle."""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
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
class LowStockSignal:
    emit: bool  # announce StockLow now
    low: bool  # the new value of `low_reported`


def low_stock_signal(available: int, reorder_point: int, low_reported: bool) -> LowStockSignal:
    """StockLow once per crossing: when available is at/below the reorder point and that state
    was not announced yet; going back above the reorder point re-arms it."""
    low = available <= reorder_point
    return LowStockSignal(emit=low and not low_reported, low=low)


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


def short_lines(
    lines: list[tuple[str, int]], available: Mapping[str, int], failed_sku: str
) -> list[ShortLine]:
    """The lines that cannot be served from `available` (an unknown sku has 0 available).
    The line whose reservation failed is always reported, even if stock came back since."""
    short = [
        ShortLine(sku, quantity, max(available.get(sku, 0), 0))
        for sku, quantity in lines
        if quantity > available.get(sku, 0) or sku == failed_sku
    ]
    return short


def reservation_expiry(deadline: datetime, now: datetime, grace_s: float) -> datetime:
    """Inventory's safety net runs out later than the order's own deadline, so orders (which
    owns the deadline) always decides first and our release only catches forgotten orders."""
    return max(deadline, now) + timedelta(seconds=grace_s)
