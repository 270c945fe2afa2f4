"""Inventory use cases: set and adjust stock; reserve, commit, release and restock for orders."""

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, Row, String, column, func, insert, select, update, values
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from libs.events.common import Line
from libs.events.inventory import (
    ShortLine,
    StockCommitted,
    StockLevelChanged,
    StockLow,
    StockReleased,
    StockReservationFailed,
    StockReserved,
)
from libs.events.orders import OrderPlaced
from libs.kit.outbox import Emitter
from libs.kit.problems import conflict, not_found
from services.inventory import domain
from services.inventory.db import reservations, stock_items, stock_movements
from services.inventory.domain import (
    OrderOutcome,
    ReservationStatus,
    StockLevel,
    StockMove,
    StockRuleViolation,
)

log = logging.getLogger(__name__)

Lines = list[tuple[str, int]]

# The `reason` of StockLevelChanged (and of the audit row) for each kind of move.
_MOVE_REASONS = {
    StockMove.RESERVE: "reserved",
    StockMove.COMMIT: "committed",
    StockMove.UNRESERVE: "released",
    StockMove.RESTOCK: "restocked",
    StockMove.RETAKE: "committed",
}


# --- stock items (operators) ---------------------------------------------------------------


async def get_item(session: AsyncSession, sku: str) -> Row[Any]:
    row = (await session.execute(select(stock_items).where(stock_items.c.sku == sku))).first()
    if row is None:
        raise not_found(f"stock item {sku}")
    return row


async def set_stock(
    session: AsyncSession, events: Emitter, sku: str, on_hand: int, reorder_point: int | None
) -> tuple[Row[Any], bool]:
    """Set the counted stock (creating the item if new); returns the item and whether it was new."""
    created = (
        await session.execute(
            pg_insert(stock_items)
            .values(sku=sku, on_hand=on_hand, reorder_point=reorder_point or 0)
            .on_conflict_do_nothing()
            .returning(*stock_items.c)
        )
    ).first()
    if created is not None:
        await _record_change(session, events, created, on_hand, 0, "set")
        return created, True
    current = await _lock_item(session, sku)
    try:
        wanted = _level(current).set_on_hand(on_hand, reorder_point)
    except StockRuleViolation as exc:
        raise conflict(str(exc)) from exc
    if (wanted.on_hand, wanted.reorder_point) == (current.on_hand, current.reorder_point):
        return current, False
    row = await _write_item(
        session, sku, on_hand=wanted.on_hand, reorder_point=wanted.reorder_point
    )
    await _record_change(session, events, row, row.on_hand - current.on_hand, 0, "set")
    return row, False


async def adjust_stock(
    session: AsyncSession, events: Emitter, sku: str, delta: int, reason: str
) -> Row[Any]:
    current = await _lock_item(session, sku)
    try:
        wanted = _level(current).adjust(delta)
    except StockRuleViolation as exc:
        raise conflict(str(exc)) from exc
    row = await _write_item(session, sku, on_hand=wanted.on_hand)
    await _record_change(session, events, row, delta, 0, reason)
    return row


async def get_reservation(session: AsyncSession, order_id: str) -> Row[Any]:
    row = (
        await session.execute(select(reservations).where(reservations.c.order_id == order_id))
    ).first()
    if row is None:
        raise not_found(f"reservation for order {order_id}")
    return row


# --- reservations (the saga) ---------------------------------------------------------------


async def reserve_for_order(
    session: AsyncSession, events: Emitter, order: OrderPlaced, *, now: datetime, grace_s: float
) -> ReservationStatus | None:
    """Reserve every line of the order or none; None when the order was seen before."""
    lines = domain.merge_lines((line.sku, line.quantity) for line in order.lines)
    expires_at = domain.reservation_expiry(order.reservation_deadline, now, grace_s)
    # Claim the order first: the primary key turns a duplicate (or concurrent) OrderPlaced into
    # a no-op, and a terminal order event seen earlier has left a row here too.
    claimed = await session.scalar(
        pg_insert(reservations)
        .values(
            order_id=order.order_id,
            status=ReservationStatus.RESERVED,
            lines=_lines_json(lines),
            expires_at=expires_at,
            correlation_id=events.correlation_id,
        )
        .on_conflict_do_nothing()
        .returning(reservations.c.order_id)
    )
    if claimed is None:
        log.info("order %s already has a reservation; OrderPlaced ignored", order.order_id)
        return None
    moved, failed_sku = await _move_lines(session, lines, StockMove.RESERVE)
    if failed_sku is not None:
        available = await _available(session, [sku for sku, _ in lines])
        short = domain.short_lines(lines, available, failed_sku)
        await _set_status(session, order.order_id, ReservationStatus.FAILED, domain.OUT_OF_STOCK)
        await events.emit(
            StockReservationFailed(
                order_id=order.order_id,
                reason=domain.OUT_OF_STOCK,
                short_lines=[
                    ShortLine(sku=s.sku, requested=s.requested, available=s.available)
                    for s in short
                ],
            ),
            subject=order.order_id,
        )
        return ReservationStatus.FAILED
    await events.emit(
        StockReserved(order_id=order.order_id, lines=_event_lines(lines), expires_at=expires_at),
        subject=order.order_id,
    )
    await _record_moves(session, events, moved, lines, StockMove.RESERVE, order.order_id)
    return ReservationStatus.RESERVED


async def commit_order(session: AsyncSession, events: Emitter, order_id: str) -> None:
    """OrderConfirmed: the reserved units leave the warehouse."""
    lines = await _settle(session, events, order_id, OrderOutcome.CONFIRMED, None)
    if lines is not None:
        await events.emit(
            StockCommitted(order_id=order_id, lines=_event_lines(lines)), subject=order_id
        )


async def release_order(session: AsyncSession, events: Emitter, order_id: str, reason: str) -> None:
    """OrderRejected (or our expiry safety net): a live reservation gives its units back."""
    lines = await _settle(session, events, order_id, OrderOutcome.REJECTED, reason)
    if lines is not None:
        await events.emit(
            StockReleased(order_id=order_id, lines=_event_lines(lines), reason=reason),
            subject=order_id,
        )


async def cancel_order(session: AsyncSession, events: Emitter, order_id: str) -> None:
    """OrderCancellationRequested: release or restock, and always answer so orders can settle."""
    lines = await _settle(session, events, order_id, OrderOutcome.CANCELLED, domain.CANCELLED)
    await events.emit(
        StockReleased(order_id=order_id, lines=_event_lines(lines or []), reason=domain.CANCELLED),
        subject=order_id,
    )


async def release_one_expired(session: AsyncSession, service: str, now: datetime) -> str | None:
    """Claim one overdue live reservation (skipping those another worker holds) and release it;
    returns its order id, or None when nothing is overdue."""
    row = (
        await session.execute(
            select(reservations)
            .where(
                reservations.c.status == ReservationStatus.RESERVED,
                reservations.c.expires_at <= now,
            )
            .order_by(reservations.c.expires_at)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
    ).first()
    if row is None:
        return None
    events = Emitter(session, service, row.correlation_id)
    await release_order(session, events, row.order_id, domain.EXPIRED)
    log.warning("reservation of order %s expired and was released", row.order_id)
    return str(row.order_id)


async def _settle(
    session: AsyncSession,
    events: Emitter,
    order_id: str,
    outcome: OrderOutcome,
    reason: str | None,
) -> Lines | None:
    """Move a reservation on per the domain's transitions; returns the lines whose stock moved,
    or None when the event changes nothing (late, duplicated, or the order never reserved)."""
    row = (
        await session.execute(
            select(reservations).where(reservations.c.order_id == order_id).with_for_update()
        )
    ).first()
    if row is None:
        if outcome is not OrderOutcome.CONFIRMED:
            # The order closed before we saw it placed (its OrderPlaced is lost or parked on the
            # DLQ): leave a closed row so a late or replayed OrderPlaced reserves nothing.
            await session.execute(
                pg_insert(reservations)
                .values(order_id=order_id, status=ReservationStatus.RELEASED, reason=reason)
                .on_conflict_do_nothing()
            )
        else:
            log.warning("order %s confirmed but it has no reservation here", order_id)
        return None
    step = domain.next_step(ReservationStatus(row.status), row.reason, outcome)
    if step is None:
        log.info("order %s: %s ignored, reservation is %s", order_id, outcome, row.status)
        return None
    lines = [(line["sku"], int(line["quantity"])) for line in row.lines]
    moved, failed_sku = await _move_lines(session, lines, step.move)
    if failed_sku is not None:
        # Only RETAKE can fail: orders confirmed (and charged) the order after our safety net had
        # already given its stock to others, and not enough is left. Orders is the authority and
        # the saga has no event for "confirmed but unfulfillable", so nobody on the bus could act
        # on one: this is an oversell for an operator (restock or refund by hand). The
        # reservation stays `released`, which records that the units never left.
        log.error(
            "order %s was confirmed after its reservation expired and %s is short: oversold",
            order_id,
            failed_sku,
        )
        return None
    new_reason = reason if step.status is ReservationStatus.RELEASED else None
    if step.move is StockMove.RETAKE:
        new_reason = "committed_after_expiry"
    await _set_status(session, order_id, step.status, new_reason)
    await _record_moves(session, events, moved, lines, step.move, order_id)
    return lines


# --- stock rows ------------------------------------------------------------------------------


async def _move_lines(
    session: AsyncSession, lines: Lines, move: StockMove
) -> tuple[list[Row[Any]], str | None]:
    """Apply `move` to every line or to none. The rows are locked first, in sku order (so
    concurrent orders never deadlock each other), the move is checked against the locked
    levels, and then one UPDATE moves every line. Returns the moved rows (in `lines`' order),
    or the first sku that cannot move (unknown, or not enough available)."""
    quantities = dict(lines)
    locked = {
        row.sku: row
        for row in await session.execute(
            select(stock_items)
            .where(stock_items.c.sku.in_(sorted(quantities)))
            .order_by(stock_items.c.sku)
            .with_for_update()
        )
    }
    for sku, quantity in lines:
        row = locked.get(sku)
        if row is None or quantity > domain.MAX_QUANTITY:
            return [], sku
        if move.needs_available and row.on_hand - row.reserved < quantity:
            return [], sku
    deltas = values(
        column("sku", String),
        column("d_on_hand", Integer),
        column("d_reserved", Integer),
        name="deltas",
    ).data([(sku, *move.deltas(quantity)) for sku, quantity in lines])
    moved = {
        row.sku: row
        for row in await session.execute(
            update(stock_items)
            .where(stock_items.c.sku == deltas.c.sku)
            .values(
                on_hand=stock_items.c.on_hand + deltas.c.d_on_hand,
                reserved=stock_items.c.reserved + deltas.c.d_reserved,
                version=stock_items.c.version + 1,
                updated_at=func.now(),
            )
            .returning(*stock_items.c)
        )
    }
    return [moved[sku] for sku, _ in lines], None


async def _record_moves(
    session: AsyncSession,
    events: Emitter,
    rows: list[Row[Any]],
    lines: Lines,
    move: StockMove,
    order_id: str,
) -> None:
    """`_record_change` for every moved line, with one audit INSERT for all of them."""
    changes = [
        (row, *move.deltas(quantity)) for row, (_, quantity) in zip(rows, lines, strict=True)
    ]
    await _audit(session, changes, _MOVE_REASONS[move], order_id)
    for row, _, _ in changes:
        await _announce(session, events, row, _MOVE_REASONS[move])


async def _record_change(
    session: AsyncSession,
    events: Emitter,
    row: Row[Any],
    delta_on_hand: int,
    delta_reserved: int,
    reason: str,
    order_id: str | None = None,
) -> None:
    """After any change of a stock row: audit it, announce the new level, and StockLow on a
    crossing (the row is locked by the change, so the crossing is decided once)."""
    await _audit(session, [(row, delta_on_hand, delta_reserved)], reason, order_id)
    await _announce(session, events, row, reason)


async def _audit(
    session: AsyncSession,
    changes: list[tuple[Row[Any], int, int]],
    reason: str,
    order_id: str | None,
) -> None:
    await session.execute(
        insert(stock_movements).values(
            [
                {
                    "sku": row.sku,
                    "delta_on_hand": delta_on_hand,
                    "delta_reserved": delta_reserved,
                    "on_hand": row.on_hand,
                    "reserved": row.reserved,
                    "reason": reason,
                    "order_id": order_id,
                }
                for row, delta_on_hand, delta_reserved in changes
            ]
        )
    )


async def _announce(session: AsyncSession, events: Emitter, row: Row[Any], reason: str) -> None:
    level = _level(row)
    signal = domain.low_stock_signal(level.available, level.reorder_point, level.low_reported)
    if signal.low != level.low_reported:
        await session.execute(
            update(stock_items).where(stock_items.c.sku == row.sku).values(low_reported=signal.low)
        )
    await events.emit(
        StockLevelChanged(
            sku=row.sku,
            on_hand=level.on_hand,
            reserved=level.reserved,
            available=level.available,
            reason=reason,
        ),
        subject=row.sku,
    )
    if signal.emit:
        await events.emit(
            StockLow(sku=row.sku, available=level.available, reorder_point=level.reorder_point),
            subject=row.sku,
        )


async def _lock_item(session: AsyncSession, sku: str) -> Row[Any]:
    row = (
        await session.execute(select(stock_items).where(stock_items.c.sku == sku).with_for_update())
    ).first()
    if row is None:
        raise not_found(f"stock item {sku}")
    return row


async def _write_item(session: AsyncSession, sku: str, **values: int) -> Row[Any]:
    row = (
        await session.execute(
            update(stock_items)
            .where(stock_items.c.sku == sku)
            .values(**values, version=stock_items.c.version + 1, updated_at=func.now())
            .returning(*stock_items.c)
        )
    ).one()
    return row


async def _available(session: AsyncSession, skus: list[str]) -> dict[str, int]:
    rows = await session.execute(
        select(stock_items.c.sku, stock_items.c.on_hand - stock_items.c.reserved).where(
            stock_items.c.sku.in_(skus)
        )
    )
    return {sku: int(available) for sku, available in rows}


async def _set_status(
    session: AsyncSession, order_id: str, status: ReservationStatus, reason: str | None
) -> None:
    await session.execute(
        update(reservations)
        .where(reservations.c.order_id == order_id)
        .values(status=status, reason=reason, updated_at=func.now())
    )


def _level(row: Row[Any]) -> StockLevel:
    return StockLevel(
        on_hand=row.on_hand,
        reserved=row.reserved,
        reorder_point=row.reorder_point,
        low_reported=row.low_reported,
    )


def _lines_json(lines: Lines) -> list[dict[str, Any]]:
    return [{"sku": sku, "quantity": quantity} for sku, quantity in lines]


def _event_lines(lines: Lines) -> list[Line]:
    return [Line(sku=sku, quantity=quantity) for sku, quantity in lines]
