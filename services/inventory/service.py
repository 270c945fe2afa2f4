"""Inventory use cases: set and adjust stock; reserve, commit, release and restock for orders;
release forgotten reservations. Over the repositories (`Store`), the event sink and the clock."""

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Protocol

from libs.events.common import Line
from libs.events.inventory import (
    ShortLine,
    StockCommitted,
    StockLevelChanged,
    StockLow,
    StockReleased,
    StockReservationFailed,
    StockReserved,
    StockReturned,
)
from libs.events.orders import OrderPlaced, ReturnReceived
from libs.kit.errors import Conflict, NotFound
from libs.kit.uow import Clock, EventSink, Tx
from services.inventory import domain
from services.inventory.domain import (
    Lines,
    Movement,
    OrderOutcome,
    Refused,
    Reservation,
    ReservationStatus,
    StockDelta,
    StockItem,
    StockLevel,
    StockMove,
    StockRuleViolation,
)

log = logging.getLogger(__name__)


# --- what the use cases need of the database (db.py has the real ones) ---------------------


class StockItems(Protocol):
    async def get(self, sku: str) -> StockItem | None: ...

    async def lock(self, sku: str) -> StockItem | None: ...

    async def create(self, sku: str, on_hand: int, reorder_point: int) -> StockItem | None:
        """A new item; None when the sku exists already."""
        ...

    async def write(
        self, sku: str, on_hand: int, reorder_point: int | None = None
    ) -> StockItem: ...

    async def lock_for(self, skus: Sequence[str]) -> dict[str, StockItem]:
        """Lock the existing items of these skus, in sku order (no deadlocks between orders)."""
        ...

    async def move_and_record(
        self, deltas: Sequence[StockDelta], reason: str, order_id: str | None
    ) -> list[StockItem]:
        """Apply every delta at once and audit each moved line as `Movement.of` its level after
        the move, with `reason` and `order_id` (in `deltas`' order); the items after it, in
        `deltas`' order."""
        ...

    async def mark_low(self, sku: str, low: bool) -> None: ...


class Reservations(Protocol):
    async def get(self, order_id: str) -> Reservation | None: ...

    async def create(
        self, order_id: str, lines: Lines, expires_at: datetime, correlation_id: str | None
    ) -> bool:
        """A live reservation for the order; False when the order has a row already."""
        ...

    async def lock(self, order_id: str) -> Reservation | None: ...

    async def close_unseen(self, order_id: str, reason: str | None) -> None:
        """A released row with no lines, unless the order has a row already."""
        ...

    async def set_status(
        self, order_id: str, status: ReservationStatus, reason: str | None
    ) -> None: ...

    async def claim_expired(self, now: datetime) -> Reservation | None:
        """Lock the live reservation overdue longest on `now` that nobody else holds."""
        ...


class Movements(Protocol):
    async def record(
        self, movements: Sequence[Movement], reason: str, order_id: str | None
    ) -> None: ...


class Store(Protocol):
    @property
    def items(self) -> StockItems: ...

    @property
    def reservations(self) -> Reservations: ...

    @property
    def movements(self) -> Movements: ...

    @property
    def returns(self) -> "StockReturns": ...


class ExpiryTx(Tx[Store], Protocol):
    """A transaction of the expiry sweep: it acts for an order it finds only once it has
    claimed it, so its events take that order's correlation id from `events_of`."""

    def events_of(self, correlation_id: str | None) -> EventSink: ...


OpenExpiryTx = Callable[[], AbstractAsyncContextManager[ExpiryTx]]


# --- stock items (operators) ---------------------------------------------------------------


async def get_item(tx: Tx[Store], sku: str) -> StockItem:
    item = await tx.store.items.get(sku)
    if item is None:
        raise NotFound(f"stock item {sku}")
    return item


async def set_stock(
    tx: Tx[Store], sku: str, on_hand: int, reorder_point: int | None
) -> tuple[StockItem, bool]:
    """Set the counted stock (creating the item if new); returns the item and whether it was new."""
    created = await tx.store.items.create(sku, on_hand, reorder_point or 0)
    if created is not None:
        await _record_change(tx, None, created, on_hand, "set")
        return created, True
    current = await _lock_item(tx.store, sku)
    try:
        wanted = current.level.set_on_hand(on_hand, reorder_point)
    except StockRuleViolation as exc:
        raise Conflict(str(exc)) from exc
    if (wanted.on_hand, wanted.reorder_point) == (
        current.level.on_hand,
        current.level.reorder_point,
    ):
        return current, False
    item = await tx.store.items.write(sku, wanted.on_hand, wanted.reorder_point)
    await _record_change(tx, current.level, item, item.level.on_hand - current.level.on_hand, "set")
    return item, False


async def adjust_stock(tx: Tx[Store], sku: str, delta: int, reason: str) -> StockItem:
    """A relative change (restock, damage, count correction) that never takes reserved units."""
    current = await _lock_item(tx.store, sku)
    try:
        wanted = current.level.adjust(delta)
    except StockRuleViolation as exc:
        raise Conflict(str(exc)) from exc
    item = await tx.store.items.write(sku, wanted.on_hand)
    await _record_change(tx, current.level, item, delta, reason)
    return item


async def get_reservation(tx: Tx[Store], order_id: str) -> Reservation:
    reservation = await tx.store.reservations.get(order_id)
    if reservation is None:
        raise NotFound(f"reservation for order {order_id}")
    return reservation


# --- reservations (the saga) ---------------------------------------------------------------


async def reserve_for_order(
    tx: Tx[Store],
    order: OrderPlaced,
    *,
    correlation_id: str | None,
    clock: Clock,
    grace_s: float,
) -> ReservationStatus | None:
    """Reserve every line of the order or none; None when the order was seen before.
    `correlation_id` is the order's, kept so the expiry sweep's events stay in its story."""
    store, events = tx.store, tx.events
    lines = domain.merge_lines((line.sku, line.quantity) for line in order.lines)
    expires_at = domain.reservation_expiry(order.reservation_deadline, clock(), grace_s)
    # Claim the order first: the primary key turns a duplicate (or concurrent) OrderPlaced into
    # a no-op, and a terminal order event seen earlier has left a row there too.
    if not await store.reservations.create(order.order_id, lines, expires_at, correlation_id):
        log.info("order %s already has a reservation; OrderPlaced ignored", order.order_id)
        return None
    moved = await _move(store, lines, StockMove.RESERVE, order.order_id)
    if isinstance(moved, Refused):
        await store.reservations.set_status(
            order.order_id, ReservationStatus.FAILED, domain.OUT_OF_STOCK
        )
        await events.emit(
            StockReservationFailed(
                order_id=order.order_id,
                reason=domain.OUT_OF_STOCK,
                short_lines=[
                    ShortLine(sku=s.sku, requested=s.requested, available=s.available)
                    for s in moved.short
                ],
            ),
            subject=order.order_id,
        )
        return ReservationStatus.FAILED
    await events.emit(
        StockReserved(order_id=order.order_id, lines=_event_lines(lines), expires_at=expires_at),
        subject=order.order_id,
    )
    await _announce_moves(store, events, moved, StockMove.RESERVE)
    return ReservationStatus.RESERVED


async def commit_order(tx: Tx[Store], order_id: str) -> None:
    """OrderConfirmed: the reserved units leave the warehouse."""
    lines = await _settle(tx.store, tx.events, order_id, OrderOutcome.CONFIRMED, None)
    if lines is not None:
        await tx.events.emit(
            StockCommitted(order_id=order_id, lines=_event_lines(lines)), subject=order_id
        )


async def release_order(tx: Tx[Store], order_id: str, reason: str) -> None:
    """OrderRejected: a live reservation gives its units back."""
    reservation = await _lock_reservation(tx.store, order_id, OrderOutcome.REJECTED, reason)
    if reservation is not None:
        await _release(tx.store, tx.events, reservation, reason)


async def cancel_order(tx: Tx[Store], order_id: str) -> None:
    """OrderCancellationRequested: release or restock, and always answer so orders can settle."""
    lines = await _settle(tx.store, tx.events, order_id, OrderOutcome.CANCELLED, domain.CANCELLED)
    await tx.events.emit(
        StockReleased(order_id=order_id, lines=_event_lines(lines or []), reason=domain.CANCELLED),
        subject=order_id,
    )


async def release_one_expired(tx: ExpiryTx, now: datetime) -> str | None:
    """Claim one reservation overdue on `now` (skipping those another sweeper holds) and release
    it, as OrderRejected would; returns its order id, or None when nothing is overdue (or what
    is could not be released: the sweep stops there instead of claiming it over and over)."""
    reservation = await tx.store.reservations.claim_expired(now)
    if reservation is None:
        return None
    events = tx.events_of(reservation.correlation_id)
    if not await _release(tx.store, events, reservation, domain.EXPIRED):
        return None
    log.warning("reservation of order %s expired and was released", reservation.order_id)
    return reservation.order_id


async def sweep_expired(open_tx: OpenExpiryTx, clock: Clock, limit: int) -> list[str]:
    """Release up to `limit` reservations overdue now, each in its own transaction (with its
    events), so a sweep never holds the stock rows of several orders at once."""
    now = clock()
    released: list[str] = []
    while len(released) < limit:
        async with open_tx() as tx:
            order_id = await release_one_expired(tx, now)
        if order_id is None:
            break
        released.append(order_id)
    return released


async def _release(store: Store, events: EventSink, reservation: Reservation, reason: str) -> bool:
    """Give a reservation's units back and say so; False when it had nothing to release."""
    lines = await _step(store, events, reservation, OrderOutcome.REJECTED, reason)
    if lines is None:
        return False
    await events.emit(
        StockReleased(order_id=reservation.order_id, lines=_event_lines(lines), reason=reason),
        subject=reservation.order_id,
    )
    return True


async def _settle(
    store: Store, events: EventSink, order_id: str, outcome: OrderOutcome, reason: str | None
) -> Lines | None:
    """Move a reservation on per the domain's transitions; returns the lines whose stock moved,
    or None when the event changes nothing (late, duplicated, or the order never reserved)."""
    reservation = await _lock_reservation(store, order_id, outcome, reason)
    if reservation is None:
        return None
    return await _step(store, events, reservation, outcome, reason)


async def _lock_reservation(
    store: Store, order_id: str, outcome: OrderOutcome, reason: str | None
) -> Reservation | None:
    reservation = await store.reservations.lock(order_id)
    if reservation is None:
        if outcome is not OrderOutcome.CONFIRMED:
            # The order closed before we saw it placed (its OrderPlaced is lost or parked on the
            # DLQ): leave a closed row so a late or replayed OrderPlaced reserves nothing.
            await store.reservations.close_unseen(order_id, reason)
        else:
            log.warning("order %s confirmed but it has no reservation here", order_id)
    return reservation


async def _step(
    store: Store,
    events: EventSink,
    reservation: Reservation,
    outcome: OrderOutcome,
    reason: str | None,
) -> Lines | None:
    """`_settle` for a reservation this transaction holds locked."""
    order_id = reservation.order_id
    step = domain.next_step(reservation.status, reservation.reason, outcome)
    if step is None:
        log.info("order %s: %s ignored, reservation is %s", order_id, outcome, reservation.status)
        return None
    lines = reservation.lines
    moved = await _move(store, lines, step.move, order_id)
    if isinstance(moved, Refused) and step.move is StockMove.RETAKE:
        # Orders confirmed (and charged) the order after our safety net had already given its
        # stock to others, and not enough is left. Orders is the authority and the saga has no
        # event for "confirmed but unfulfillable", so nobody on the bus could act on one: this is
        # an oversell for an operator (restock or refund by hand). The reservation stays
        # `released`, which records that the units never left.
        log.error(
            "order %s was confirmed after its reservation expired and %s is short: oversold",
            order_id,
            moved.sku,
        )
        return None
    if isinstance(moved, Refused):
        # Any other move only needs the rows to exist, and nothing deletes stock rows.
        log.error("order %s: %s refused, %s has no stock row", order_id, step.move, moved.sku)
        return None
    await store.reservations.set_status(order_id, step.status, domain.settled_reason(step, reason))
    await _announce_moves(store, events, moved, step.move)
    return lines


# --- stock rows ------------------------------------------------------------------------------

# Per line: its level before the move, its item after it, and the delta between them.
_Moved = list[tuple[StockLevel, StockItem, StockDelta]]


async def _move(store: Store, lines: Lines, move: StockMove, order_id: str) -> _Moved | Refused:
    """Apply `move` to every line of the order or to none: the rows are locked first (one
    statement, in sku order), the domain decides on the locked levels, and one statement moves
    every line and audits it (reason `move.reason`, the order's id)."""
    locked = await store.items.lock_for([sku for sku, _ in lines])
    before = {sku: item.level for sku, item in locked.items()}
    plan = domain.plan_move(lines, before, move)
    if isinstance(plan, Refused):
        return plan
    moved = await store.items.move_and_record(plan, move.reason, order_id)
    return [(before[d.sku], item, d) for item, d in zip(moved, plan, strict=True)]


async def _announce_moves(store: Store, events: EventSink, moved: _Moved, move: StockMove) -> None:
    """Announce each moved (and already audited) line's level."""
    for before, item, _ in moved:
        await _announce(store, events, before, item, move.reason)


async def _record_change(
    tx: Tx[Store], before: StockLevel | None, item: StockItem, delta_on_hand: int, reason: str
) -> None:
    """After an operator's change of one item (`before` None: it is new): audit it and announce
    the new level."""
    await tx.store.movements.record(
        [Movement.of(item.level, item.sku, delta_on_hand, 0)], reason, None
    )
    await _announce(tx.store, tx.events, before, item, reason)


async def _announce(
    store: Store, events: EventSink, before: StockLevel | None, item: StockItem, reason: str
) -> None:
    """StockLevelChanged when the domain says the change is one to announce, and StockLow on a
    crossing, decided on every change whatever it announces (the row is locked by the change
    that led here, so the crossing is decided once)."""
    level = item.level
    signal = domain.low_stock_signal(level.available, level.reorder_point, level.low_reported)
    if signal.low != level.low_reported:
        await store.items.mark_low(item.sku, signal.low)
    if domain.announces_level(before, level):
        await events.emit(
            StockLevelChanged(
                sku=item.sku,
                on_hand=level.on_hand,
                reserved=level.reserved,
                available=level.available,
                reason=reason,
            ),
            subject=item.sku,
        )
    if signal.emit:
        await events.emit(
            StockLow(sku=item.sku, available=level.available, reorder_point=level.reorder_point),
            subject=item.sku,
        )


async def _lock_item(store: Store, sku: str) -> StockItem:
    item = await store.items.lock(sku)
    if item is None:
        raise NotFound(f"stock item {sku}")
    return item


def _event_lines(lines: Lines) -> list[Line]:
    return [Line(sku=sku, quantity=quantity) for sku, quantity in lines]


# --- returns (issue 12) ---


class StockReturns(Protocol):
    async def claim(
        self, return_id: str, order_id: str, restocked: Lines, written_off: Lines
    ) -> bool:
        """Record that a return's units were taken back; False when it was before."""
        ...


async def take_back_return(tx: Tx[Store], event: ReturnReceived) -> bool:
    """ReturnReceived: restock its resellable units (on_hand up, StockLevelChanged), write off its
    damaged ones (a movement, no count changes), and say so (StockReturned, keyed by the order).
    Once per return (its id claims a row first); a sku with no stock row here is logged and left
    out of both lists. False when the return was taken back already."""
    split = domain.split_return((ln.sku, ln.quantity, ln.condition) for ln in event.lines)
    store = tx.store
    locked = await store.items.lock_for(sorted({sku for sku, _ in split.restock + split.write_off}))
    for sku, _ in split.restock + split.write_off:
        if sku not in locked:
            log.error(
                "return %s: %s has no stock row; its units are left out", event.return_id, sku
            )
    restock = [(sku, q) for sku, q in split.restock if sku in locked]
    write_off = [(sku, q) for sku, q in split.write_off if sku in locked]
    if not await store.returns.claim(event.return_id, event.order_id, restock, write_off):
        log.info("return %s was taken back already; ReturnReceived ignored", event.return_id)
        return False
    deltas = [StockDelta(sku, quantity, 0) for sku, quantity in restock]
    moved = await store.items.move_and_record(deltas, domain.RETURN_RESTOCK, event.order_id)
    # A write-off records the counts as they stand after the restock of the same return.
    now = {sku: item.level for sku, item in locked.items()} | {m.sku: m.level for m in moved}
    await store.movements.record(
        [Movement.of(now[sku], sku, 0, 0) for sku, _ in write_off],
        domain.RETURN_WRITE_OFF,
        event.order_id,
    )
    await tx.events.emit(
        StockReturned(
            order_id=event.order_id,
            return_id=event.return_id,
            restocked=_event_lines(restock),
            written_off=_event_lines(write_off),
        ),
        subject=event.order_id,
    )
    for item in moved:
        await _announce(store, tx.events, locked[item.sku].level, item, domain.RETURN_RESTOCK)
    return True
