"""Inventory use cases: set and adjust stock; reserve, commit, release and restock for orders;
release forgotten reservations. Over the repositories (`Store`), the event sink and the clock."""

import itertools
import logging
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

from libs.events.common import BackorderedLine, Line
from libs.events.inventory import Allocation as AllocationOut
from libs.events.inventory import (
    BackorderFilled,
    ChannelAvailability,
    PurchaseOrderDrafted,
    PurchaseOrderLine,
    PurchaseOrderReceived,
    PurchaseOrderSent,
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
from libs.kit.errors import Conflict, Invalid, NotFound
from libs.kit.findings import Finding
from libs.kit.uow import Clock, EventSink, Tx, utc_now
from services.inventory import domain
from services.inventory.domain import (
    Allocation,
    AllocationPolicy,
    Availability,
    Lines,
    LocationDelta,
    Movement,
    OrderOutcome,
    Refused,
    Reservation,
    ReservationStatus,
    StockDelta,
    StockItem,
    StockMove,
    StockRuleViolation,
)

log = logging.getLogger(__name__)


# --- what the use cases need of the database (db.py has the real ones) ---------------------


class StockItems(Protocol):
    async def get(self, sku: str) -> StockItem | None: ...

    async def lock(self, sku: str) -> StockItem | None: ...

    async def create(
        self,
        sku: str,
        on_hand: int,
        reorder_point: int,
        location: str = domain.DEFAULT_LOCATION,
        safety_stock: int = 0,
    ) -> StockItem | None:
        """A new item, its stock at `location`; None when the sku exists already."""
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
        `deltas`' order. At the default location."""
        ...

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
        """Issue 13: the (sku, location) deltas and their per-sku sums, `channel`'s capped units
        per sku, the allocations recorded on `book_for`'s reservation, each location row
        audited (its counts after): one statement. Items after it, one per sku."""
        ...

    async def mark_low(self, sku: str, low: bool) -> None: ...


class Reservations(Protocol):
    async def get(self, order_id: str) -> Reservation | None: ...

    async def create(
        self,
        order_id: str,
        lines: Lines,
        expires_at: datetime,
        correlation_id: str | None,
        channel: str | None = None,
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
        self,
        movements: Sequence[Movement],
        reason: str,
        order_id: str | None,
        ref: str | None = None,
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

    @property
    def purchasing(self) -> "PurchasingRepo": ...  # issue 13

    # Issue 13.
    @property
    def policy(self) -> AllocationPolicy: ...

    @property
    def locations(self) -> "Locations": ...

    @property
    def shelves(self) -> "Shelves": ...

    @property
    def caps(self) -> "ChannelCaps": ...

    @property
    def transfers(self) -> "Transfers": ...


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
    return await _loaded(tx.store, item)


async def set_stock(
    tx: Tx[Store], sku: str, on_hand: int, reorder_point: int | None
) -> tuple[StockItem, bool]:
    """Set the counted stock (creating the item if new) at the default location; returns the
    item and whether it was new."""
    return await set_location_stock(
        tx, sku, tx.store.policy.default_location, on_hand, None, reorder_point
    )


async def adjust_stock(tx: Tx[Store], sku: str, delta: int, reason: str) -> StockItem:
    """A relative change (restock, damage, count correction) at the default location that never
    takes reserved units."""
    store = tx.store
    location = store.policy.default_location
    before = await _loaded(store, await _lock_item(store, sku))
    shelf = domain.shelf_at(before.locations, location)
    try:
        on_hand = domain.adjust_shelf(shelf, delta)
    except StockRuleViolation as exc:
        raise Conflict(str(exc)) from exc
    written = await store.shelves.set(sku, location, on_hand, None, delta, None)
    item = await _loaded(store, written)
    await _record_change(tx, _availability(store, before), item, location, delta, reason)
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
    if not await store.reservations.create(
        order.order_id, lines, expires_at, correlation_id, order.channel
    ):
        log.info("order %s already has a reservation; OrderPlaced ignored", order.order_id)
        return None
    moved, backordered = await _reserve_or_backorder(  # issue 13: backorders
        store, lines, order.order_id, channel=order.channel, region=order.region
    )
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
        StockReserved(
            order_id=order.order_id,
            lines=_event_lines(lines),
            expires_at=expires_at,
            allocations=_event_allocations(moved.allocations),
            backordered=backordered,
        ),
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
    moved = await _move(
        store,
        lines,
        step.move,
        order_id,
        allocations=reservation.allocations
        or tuple(domain.default_allocations(lines, store.policy.default_location)),
        channel=reservation.channel,
    )
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
    if step.status is ReservationStatus.RELEASED:
        await _cancel_backorders(store, order_id)  # issue 13
    await _announce_moves(store, events, moved, step.move)
    return lines


# --- stock rows ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Moved:
    """A move that happened: where its units went, and each sku's availability before it with
    its item after it (locations and caps as the move left them)."""

    allocations: list[Allocation]
    items: list[tuple[Availability, StockItem]]


async def _move(
    store: Store,
    lines: Lines,
    move: StockMove,
    order_id: str,
    *,
    allocations: Sequence[Allocation] = (),
    channel: str | None = None,
    region: str | None = None,
    keep: Sequence[Allocation] = (),
) -> _Moved | Refused:
    """Apply `move` to every line of the order or to none: the stock rows are locked first (one
    statement, in sku order), their locations and caps read, the domain decides (a reservation
    or retake allocates by the strategy and the channel's caps; any other move acts on the
    recorded `allocations`), and one statement moves every location row, sums and caps and
    audits it (reason `move.reason`, the order's id)."""
    locked = await store.items.lock_for([sku for sku, _ in lines])
    loaded = await store.shelves.of(sorted(locked))
    shelves = {sku: loaded[sku].shelves for sku in locked if sku in loaded}
    caps = {sku: loaded[sku].caps for sku in locked if sku in loaded}
    if move.needs_available:
        capped = {
            sku: cap.room if move is StockMove.RESERVE else domain.MAX_QUANTITY
            for sku, held in caps.items()
            for cap in held
            if cap.channel == channel
        }
        plan = domain.allocate(lines, shelves, store.policy, region, capped)
        if isinstance(plan, Refused):
            return plan
    else:
        plan = list(allocations)
        missing = [a.sku for a in plan if a.sku not in locked]
        if missing or not domain.fits(shelves, domain.location_deltas(plan, move)):
            return Refused(missing[0] if missing else plan[0].sku, [])
    deltas = domain.location_deltas(plan, move)
    used = domain.used_deltas(plan, move)
    moved = await store.items.move_at(
        deltas,
        move.reason,
        order_id,
        channel=channel,
        used=used,
        book_for=order_id if move.needs_available else None,
        # A backorder's fill adds to what the reservation holds (`keep`): booking replaces it.
        allocations=[*keep, *plan],
    )
    after = domain.apply_deltas(shelves, deltas)
    used_by_sku = dict(used)
    items = []
    for item in moved:
        before = replace(item, locations=shelves.get(item.sku, ()), channels=caps.get(item.sku, ()))
        now = replace(
            item,
            locations=after.get(item.sku, ()),
            channels=domain.apply_used(
                caps.get(item.sku, ()), channel or "", used_by_sku, item.sku
            ),
            on_order=loaded[item.sku].on_order if item.sku in loaded else None,
        )
        items.append((_availability(store, before), now))
    return _Moved(plan, items)


async def _announce_moves(store: Store, events: EventSink, moved: _Moved, move: StockMove) -> None:
    """Announce each moved (and already audited) sku's level."""
    for before, item in moved.items:
        await _announce(store, events, before, item, move.reason)


async def _record_change(
    tx: Tx[Store],
    before: Availability | None,
    item: StockItem,
    location: str,
    delta_on_hand: int,
    reason: str,
    ref: str | None = None,
) -> None:
    """After an operator's change of one item at one location (`before` None: it is new): audit
    it (that location's counts after) and announce the new level. `item` has its locations."""
    shelf = domain.shelf_at(item.locations, location)
    on_hand, reserved = (0, 0) if shelf is None else (shelf.on_hand, shelf.reserved)
    await tx.store.movements.record(
        [Movement(item.sku, delta_on_hand, 0, on_hand, reserved, location)], reason, None, ref
    )
    await _announce(tx.store, tx.events, before, item, reason)


async def _announce(
    store: Store, events: EventSink, before: Availability | None, item: StockItem, reason: str
) -> None:
    """StockLevelChanged when the sku's availability (the pool or any capped channel's share)
    moved, and StockLow on a crossing, decided on every change whatever it announces (the row is
    locked by the change that led here, so the crossing is decided once)."""
    level = item.level
    after = _availability(store, item)
    signal = domain.low_stock_signal(after.available, level.reorder_point, level.low_reported)
    if signal.low != level.low_reported:
        await store.items.mark_low(item.sku, signal.low)
    if domain.announces(before, after):
        await events.emit(
            StockLevelChanged(
                sku=item.sku,
                on_hand=level.on_hand,
                reserved=level.reserved,
                available=after.available,
                reason=reason,
                on_order=await _on_order(store, item),  # issue 13
                channels=[
                    ChannelAvailability(
                        channel=c.channel, cap=c.cap, used=c.used, available=c.available
                    )
                    for c in after.channels
                ],
            ),
            subject=item.sku,
        )
    if signal.emit:
        await events.emit(
            StockLow(sku=item.sku, available=after.available, reorder_point=level.reorder_point),
            subject=item.sku,
        )
        await _draft_on_crossing(store, events, item)  # issue 13


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
    # Issue 13: restocked units go back to the default location.
    location = store.policy.default_location
    loaded = await store.shelves.of(sorted(locked))
    shelves = {sku: loaded[sku].shelves for sku in locked if sku in loaded}
    deltas = [LocationDelta(sku, location, quantity, 0) for sku, quantity in restock]
    moved = await store.items.move_at(deltas, domain.RETURN_RESTOCK, event.order_id)
    after = domain.apply_deltas(shelves, deltas)
    # A write-off records the counts as they stand after the restock of the same return.
    await store.movements.record(
        [_write_off_movement(after.get(sku, ()), sku, location) for sku, _ in write_off],
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
        before = loaded.get(item.sku, domain.Stocking()).of(locked[item.sku])
        now = replace(before, level=item.level, locations=after.get(item.sku, ()))
        await _announce(store, tx.events, _availability(store, before), now, domain.RETURN_RESTOCK)
    return True


# --- purchasing (issue 13) ---
# Suppliers and purchase orders (drafted on a reorder-point crossing, sent, received), units on
# order, and backorders against them. Lock order, everywhere: purchase order, reservations (in
# order id order), stock rows (in sku order), then sku supply rows (in sku order); a receipt
# takes the waiting backorders it fills with SKIP LOCKED, so a release cancelling one at the
# same time is never waited for.


class PurchasingRepo(Protocol):
    async def put_supplier(
        self,
        supplier_id: str,
        name: str,
        email: str | None,
        lead_time_days: int,
        location: str,
        items: Sequence[domain.SupplierItem],
    ) -> bool: ...

    async def get_supplier(self, supplier_id: str) -> domain.Supplier | None: ...

    async def suppliers(
        self, *, ids: Sequence[str] | None = None, after: str | None = None, limit: int = 50
    ) -> list[domain.Supplier]: ...

    async def supplier_of(self, sku: str) -> domain.Supplier | None: ...

    async def has_open_po(self, sku: str) -> bool: ...

    async def add_po(
        self,
        po_id: str,
        supplier_id: str,
        location: str,
        lines: Sequence[domain.POLine],
        expected_at: datetime | None,
        reason: str,
        reorder_sku: str | None,
    ) -> domain.PurchaseOrder | None: ...

    async def get_po(self, po_id: str) -> domain.PurchaseOrder | None: ...

    async def lock_po(self, po_id: str) -> domain.PurchaseOrder | None: ...

    async def save_po(
        self,
        po_id: str,
        status: domain.PurchaseOrderStatus,
        lines: Sequence[domain.POLine],
        *,
        sent: bool,
    ) -> domain.PurchaseOrder: ...

    async def purchase_orders(
        self,
        *,
        status: str | None,
        sku: str | None,
        supplier_id: str | None,
        before: tuple[datetime, str] | None,
        limit: int,
    ) -> list[domain.PurchaseOrder]: ...

    async def earliest_expected(self, sku: str) -> datetime | None: ...

    async def receipt_by_key(self, po_id: str, key: str) -> tuple[domain.Receipt, str] | None: ...

    async def add_receipt(
        self,
        receipt_id: str,
        po_id: str,
        key: str,
        request_hash: str,
        location: str,
        lines: Lines,
    ) -> datetime | None: ...

    async def add_supply(self, deltas: Sequence[tuple[str, int, int]]) -> None: ...

    async def supply(self, skus: Sequence[str]) -> dict[str, domain.BackorderPolicy]: ...

    async def set_backorder_policy(
        self, sku: str, allowed: bool, expected_at: datetime | None
    ) -> None: ...

    async def add_backorders(
        self, order_id: str, lines: Sequence[tuple[str, int, datetime | None]]
    ) -> None: ...

    async def waiting_order_ids(self, skus: Sequence[str]) -> list[str]: ...

    async def lock_waiting(self, sku: str) -> list[domain.Backorder]: ...

    async def set_backorder_status(
        self, ids: Sequence[int], status: domain.BackorderStatus
    ) -> None: ...

    async def backorders_of(self, order_id: str) -> list[domain.Backorder]: ...

    async def cancel_waiting(self, order_id: str) -> list[domain.Backorder]: ...

    async def lock_reservations(self, order_ids: Sequence[str]) -> dict[str, Reservation]: ...

    async def set_reservation_lines(self, order_id: str, lines: Lines) -> None: ...


def _purchasing(store: Store) -> PurchasingRepo:
    return store.purchasing


def new_purchase_order_id() -> str:
    return f"po_{uuid.uuid4().hex}"


def new_receipt_id() -> str:
    return f"rcpt_{uuid.uuid4().hex}"


# suppliers


async def put_supplier(
    tx: Tx[Store],
    supplier_id: str,
    *,
    name: str,
    email: str | None,
    lead_time_days: int,
    location: str,
    items: Sequence[domain.SupplierItem],
) -> tuple[domain.Supplier, bool]:
    """Create or replace a supplier with its items; a sku another supplier listed moves to this
    one (a sku has at most one supplier item: the latest PUT that lists it wins)."""
    repo = _purchasing(tx.store)
    created = await repo.put_supplier(supplier_id, name, email, lead_time_days, location, items)
    supplier = await repo.get_supplier(supplier_id)
    assert supplier is not None  # written just now
    return supplier, created


async def get_supplier(tx: Tx[Store], supplier_id: str) -> domain.Supplier:
    supplier = await _purchasing(tx.store).get_supplier(supplier_id)
    if supplier is None:
        raise NotFound(f"supplier {supplier_id}")
    return supplier


async def list_suppliers(tx: Tx[Store], after: str | None, limit: int) -> list[domain.Supplier]:
    return await _purchasing(tx.store).suppliers(after=after, limit=limit)


# purchase orders


async def _draft_on_crossing(store: Store, events: EventSink, item: StockItem) -> None:
    """The sku just crossed its reorder point (StockLow's once-per-crossing signal, its stock row
    locked by the change that led here): draft its supplier's reorder quantity, unless an open
    purchase order holds the sku already. The partial unique index on open automatic drafts per
    sku is the belt under the row lock."""
    repo = _purchasing(store)
    supplier = await repo.supplier_of(item.sku)
    supplier_item = (
        next((i for i in supplier.items if i.sku == item.sku), None) if supplier else None
    )
    quantity = supplier_item.reorder_quantity if supplier_item else None
    if supplier is None or not domain.should_draft(
        True, quantity, await repo.has_open_po(item.sku)
    ):
        return
    assert quantity is not None
    po = await repo.add_po(
        new_purchase_order_id(),
        supplier.id,
        supplier.location,
        [domain.POLine(item.sku, quantity)],
        domain.expected_at(utc_now(), supplier.lead_time_of(item.sku)),
        domain.REORDER_POINT,
        item.sku,
    )
    if po is None:
        log.info("%s crossed its reorder point; an open purchase order holds it", item.sku)
        return
    await _emit_drafted(events, po)


async def _emit_drafted(events: EventSink, po: domain.PurchaseOrder) -> None:
    await events.emit(
        PurchaseOrderDrafted(
            purchase_order_id=po.id,
            supplier_id=po.supplier_id,
            location=po.location,
            lines=_po_event_lines(po),
            expected_at=po.expected_at,
            reason=po.reason,
        ),
        subject=po.id,
    )


def _po_event_lines(po: domain.PurchaseOrder) -> list[PurchaseOrderLine]:
    return [
        PurchaseOrderLine(sku=ln.sku, quantity=ln.quantity, received=ln.received) for ln in po.lines
    ]


async def create_purchase_order(
    tx: Tx[Store], supplier_id: str, location: str | None, lines: Lines
) -> domain.PurchaseOrder:
    """An operator's draft: the supplier's lead time (the longest of its lines' skus) sets when
    it is expected."""
    supplier = await get_supplier(tx, supplier_id)
    merged = domain.merge_lines(lines)
    lead = max(supplier.lead_time_of(sku) for sku, _ in merged)
    po = await _purchasing(tx.store).add_po(
        new_purchase_order_id(),
        supplier.id,
        location or supplier.location,
        [domain.POLine(sku, quantity) for sku, quantity in merged],
        domain.expected_at(utc_now(), lead),
        domain.MANUAL,
        None,
    )
    assert po is not None  # a manual draft claims no sku
    await _emit_drafted(tx.events, po)
    return po


async def get_purchase_order(tx: Tx[Store], po_id: str) -> domain.PurchaseOrder:
    po = await _purchasing(tx.store).get_po(po_id)
    if po is None:
        raise NotFound(f"purchase order {po_id}")
    return po


async def list_purchase_orders(
    tx: Tx[Store],
    *,
    status: str | None,
    sku: str | None,
    supplier_id: str | None,
    before: tuple[datetime, str] | None,
    limit: int,
) -> list[domain.PurchaseOrder]:
    return await _purchasing(tx.store).purchase_orders(
        status=status, sku=sku, supplier_id=supplier_id, before=before, limit=limit
    )


async def _lock_po(repo: PurchasingRepo, po_id: str) -> domain.PurchaseOrder:
    po = await repo.lock_po(po_id)
    if po is None:
        raise NotFound(f"purchase order {po_id}")
    return po


async def send_purchase_order(tx: Tx[Store], po_id: str) -> domain.PurchaseOrder:
    """A draft goes to its supplier: its units are on order from now (PurchaseOrderSent carries
    the supplier's name and email for notifications)."""
    repo = _purchasing(tx.store)
    po = await _lock_po(repo, po_id)
    try:
        status = domain.send_po(po.status)
    except domain.PurchaseRuleViolation as exc:
        raise Conflict(str(exc)) from exc
    supplier = await get_supplier(tx, po.supplier_id)
    sent = await repo.save_po(po.id, status, po.lines, sent=True)
    await repo.add_supply([(ln.sku, ln.remaining, 0) for ln in sent.lines])
    await tx.events.emit(
        PurchaseOrderSent(
            purchase_order_id=sent.id,
            supplier_id=supplier.id,
            supplier_name=supplier.name,
            supplier_email=supplier.email,
            location=sent.location,
            lines=_po_event_lines(sent),
            expected_at=sent.expected_at,
        ),
        subject=sent.id,
    )
    return sent


async def cancel_purchase_order(tx: Tx[Store], po_id: str) -> domain.PurchaseOrder:
    """Only before any receipt; a sent one's units are no longer on order."""
    repo = _purchasing(tx.store)
    po = await _lock_po(repo, po_id)
    try:
        status = domain.cancel_po(po)
    except domain.PurchaseRuleViolation as exc:
        raise Conflict(str(exc)) from exc
    if po.status.counts_on_order:
        await repo.add_supply([(ln.sku, -ln.remaining, 0) for ln in po.lines])
    return await repo.save_po(po.id, status, po.lines, sent=False)


async def receive_purchase_order(
    tx: Tx[Store],
    po_id: str,
    *,
    idempotency_key: str,
    request_hash: str,
    location: str | None,
    lines: Lines,
) -> tuple[domain.Receipt, bool]:
    """Goods arrived: the purchase order's lines and status move on, each line's units are added
    to stock at the location, and waiting backorders of those skus are filled. Returns the
    receipt and whether it was a replay (the same Idempotency-Key and body)."""
    store = tx.store
    repo = _purchasing(store)
    po = await _lock_po(repo, po_id)
    seen = await repo.receipt_by_key(po_id, idempotency_key)
    if seen is not None:
        receipt, seen_hash = seen
        if seen_hash != request_hash:
            raise Conflict("Idempotency-Key was used with another body on this purchase order")
        return receipt, True
    try:
        after, status = domain.receive_po(po, lines)
    except domain.PurchaseRuleViolation as exc:
        raise Conflict(str(exc)) from exc
    except domain.ReceiptRejected as exc:
        raise Invalid.field(f"lines[{exc.index}].{exc.field}", exc.message) from exc
    merged = domain.merge_lines(lines)
    into = location or po.location
    receipt_id = new_receipt_id()
    at = await repo.add_receipt(receipt_id, po_id, idempotency_key, request_hash, into, merged)
    assert at is not None  # the purchase order's lock serializes its receipts
    await repo.save_po(po.id, status, after, sent=False)
    # Locks in the house order: reservations of waiting backorders, stock rows, supply rows.
    skus = [sku for sku, _ in merged]
    reservations = await repo.lock_reservations(await repo.waiting_order_ids(skus))
    await store.items.lock_for(skus)
    await repo.add_supply([(sku, -quantity, 0) for sku, quantity in merged])
    for sku, quantity in merged:
        await receive_stock(tx, sku, into, quantity, domain.PO_RECEIPT, receipt_id)
    await _fill_backorders(store, tx.events, skus, into, reservations)
    await tx.events.emit(
        PurchaseOrderReceived(
            purchase_order_id=po.id,
            receipt_id=receipt_id,
            supplier_id=po.supplier_id,
            location=into,
            lines=_event_lines(merged),
            status=status.value,
        ),
        subject=po.id,
    )
    return domain.Receipt(receipt_id, po.id, into, tuple(merged), at), False


async def _fill_backorders(
    store: Store,
    events: EventSink,
    skus: Sequence[str],
    location: str,
    reservations: dict[str, Reservation],
) -> None:
    """Fill waiting backorders of the skus, oldest first and whole lines, from what is available
    now: a live reservation reserves the units, a committed one takes them at once (they leave
    with the order). An order whose every backordered line is filled gets BackorderFilled."""
    repo = _purchasing(store)
    touched: dict[str, list[domain.Backorder]] = {}
    placed: dict[str, list[Allocation]] = {}
    for sku in sorted(skus):
        waiting = await repo.lock_waiting(sku)
        # Only orders whose reservation this receipt holds (taken before the stock rows).
        held = list(itertools.takewhile(lambda b: b.order_id in reservations, waiting))
        item = (await store.items.lock_for([sku])).get(sku)
        if item is None:
            continue
        # What the allocation strategy can take now, over every location (issue 13).
        available = _availability(store, await _loaded(store, item)).available
        for backorder in domain.fill_fifo(held, available):
            reservation = reservations[backorder.order_id]
            if reservation.status is ReservationStatus.RESERVED:
                move = StockMove.RESERVE
            elif reservation.status is ReservationStatus.COMMITTED:
                move = StockMove.RETAKE
            else:
                log.warning("backorder %d: reservation is %s", backorder.id, reservation.status)
                continue
            line = [(sku, backorder.quantity)]
            # Allocated by the strategy (and the order's channel cap); the reservation keeps the
            # allocations it had and gains these, so its commit or release acts on all of them.
            moved = await _move(
                store,
                line,
                move,
                backorder.order_id,
                channel=reservation.channel,
                keep=reservation.allocations,
            )
            if isinstance(moved, Refused):  # within what is available, unless a cap is full
                break
            lines = domain.add_lines(reservation.lines, line)
            await repo.set_reservation_lines(backorder.order_id, lines)
            reservations[backorder.order_id] = replace(
                reservation,
                lines=lines,
                allocations=(*reservation.allocations, *moved.allocations),
            )
            placed.setdefault(backorder.order_id, []).extend(moved.allocations)
            await repo.set_backorder_status([backorder.id], domain.BackorderStatus.FILLED)
            await repo.add_supply([(sku, 0, -backorder.quantity)])
            await _announce_moves(store, events, moved, move)
            if move is StockMove.RETAKE:
                await events.emit(
                    StockCommitted(order_id=backorder.order_id, lines=_event_lines(line)),
                    subject=backorder.order_id,
                )
            touched.setdefault(backorder.order_id, []).append(backorder)
    for order_id in sorted(touched):
        every = await repo.backorders_of(order_id)
        if any(b.status is domain.BackorderStatus.WAITING for b in every):
            continue
        filled = [b for b in every if b.status is domain.BackorderStatus.FILLED]
        merged = domain.merge_lines((b.sku, b.quantity) for b in filled)
        await events.emit(
            BackorderFilled(
                order_id=order_id,
                lines=_event_lines(merged),
                allocations=_event_allocations(placed.get(order_id, [])),
            ),
            subject=order_id,
        )


# on order, backorders


@dataclass(frozen=True)
class ItemSupply:
    on_order: int
    backorders_allowed: bool
    expected_at: datetime | None
    waiting: int


async def item_supply(tx: Tx[Store], sku: str) -> ItemSupply:
    """What is on order for the sku and its backorder policy; `expected_at` is the policy's,
    else the earliest sent purchase order's."""
    repo = _purchasing(tx.store)
    policy = (await repo.supply([sku])).get(sku, domain.BackorderPolicy())
    expected = policy.expected_at or (
        await repo.earliest_expected(sku) if policy.on_order else None
    )
    return ItemSupply(policy.on_order, policy.allowed, expected, policy.waiting)


async def set_backorders(
    tx: Tx[Store], sku: str, allowed: bool, expected_at: datetime | None
) -> StockItem:
    item = await get_item(tx, sku)
    await _purchasing(tx.store).set_backorder_policy(sku, allowed, expected_at)
    return item


async def _on_order(store: Store, item: StockItem) -> int:
    """Units of the sku on sent purchase orders not received yet (StockLevelChanged.on_order):
    read with its locations when they were, else now."""
    if item.on_order is not None:
        return item.on_order
    policy = (await _purchasing(store).supply([item.sku])).get(item.sku)
    return policy.on_order if policy else 0


async def _reserve_or_backorder(
    store: Store, lines: Lines, order_id: str, *, channel: str | None, region: str | None
) -> tuple[_Moved | Refused, list[BackorderedLine]]:
    """Reserve every line, or (when that is refused) what the shelf has and backorder the rest
    against incoming stock where the sku allows it (domain.split_backorders); the reservation's
    lines become what was reserved, the backorders are recorded and promised on the supply."""
    moved = await _move(store, lines, StockMove.RESERVE, order_id, channel=channel, region=region)
    if not isinstance(moved, Refused):
        return moved, []
    repo = _purchasing(store)
    skus = [sku for sku, _ in lines]
    locked = await store.items.lock_for(skus)  # held already by _move: same transaction
    policies = await repo.supply(skus)
    available = {
        sku: _sellable(_availability(store, await _loaded(store, item)), channel)
        for sku, item in locked.items()
    }
    split = domain.split_backorders(lines, available, policies)
    if split is None or not split.backorder:
        return moved, []
    reserved = await _move(
        store, split.reserve, StockMove.RESERVE, order_id, channel=channel, region=region
    )
    if isinstance(reserved, Refused):  # split_backorders kept every line within available
        return reserved, []
    backordered: list[BackorderedLine] = []
    for sku, quantity in split.backorder:
        expected = policies[sku].expected_at or await repo.earliest_expected(sku)
        backordered.append(BackorderedLine(sku=sku, quantity=quantity, expected_at=expected))
    await repo.set_reservation_lines(order_id, split.reserve)
    await repo.add_backorders(order_id, [(b.sku, b.quantity, b.expected_at) for b in backordered])
    await repo.add_supply([(b.sku, 0, b.quantity) for b in backordered])
    return reserved, backordered


def _sellable(availability: Availability, channel: str | None) -> int:
    """What an order of `channel` may take now: its cap's share when the channel is capped."""
    for capped in availability.channels:
        if capped.channel == channel:
            return capped.available
    return availability.available


async def _cancel_backorders(store: Store, order_id: str) -> None:
    """The order's reservation was released: its waiting backorders are cancelled (filled ones
    are in the reservation's lines, and went back with the rest)."""
    repo = _purchasing(store)
    cancelled = await repo.cancel_waiting(order_id)
    if cancelled:
        await repo.add_supply([(b.sku, 0, -b.quantity) for b in cancelled])


def _write_off_movement(shelves: Sequence[domain.Shelf], sku: str, location: str) -> Movement:
    shelf = domain.shelf_at(shelves, location)
    on_hand, reserved = (0, 0) if shelf is None else (shelf.on_hand, shelf.reserved)
    return Movement(sku, 0, 0, on_hand, reserved, location)


# --- locations, allocation, transfers, channel caps (issue 13) ---


class Shelves(Protocol):
    async def of(self, skus: Sequence[str]) -> dict[str, domain.Stocking]:
        """Each existing sku's location rows, channel caps and units on order (read after
        locking its item)."""
        ...

    async def set(
        self,
        sku: str,
        location: str,
        on_hand: int,
        safety_stock: int | None,
        delta: int,
        reorder_point: int | None,
    ) -> StockItem:
        """An absolute count at one location (safety stock kept unless given), `delta` added to
        the item's sum, the reorder point set when given; the item after it."""
        ...

    async def skus_at(self, location: str) -> list[str]:
        """The skus with stock at a location, in sku order."""
        ...


class Locations(Protocol):
    async def get(self, code: str) -> domain.Location | None: ...

    async def lock(self, code: str) -> domain.Location | None: ...

    async def upsert(
        self,
        code: str,
        name: str,
        kind: str | None,
        priority: int | None,
        regions: Sequence[str] | None,
        active: bool | None,
    ) -> tuple[domain.Location, bool]: ...

    async def page(self, after: str | None, limit: int) -> list[domain.Location]: ...


class ChannelCaps(Protocol):
    async def set(self, sku: str, channel: str, cap: int) -> None: ...


class Transfers(Protocol):
    async def claim(
        self, transfer: domain.Transfer, idempotency_key: str, request_hash: str
    ) -> domain.Transfer | None:
        """Record it; None when the key was used already."""
        ...

    async def by_key(self, idempotency_key: str) -> tuple[domain.Transfer, str] | None: ...


def _availability(store: Store, item: StockItem) -> Availability:
    return domain.item_availability(item, store.policy.split)


def availability_of(tx: Tx[Store], item: StockItem) -> Availability:
    """What an item read shows as available (the pool, and each capped channel's share)."""
    return _availability(tx.store, item)


async def _loaded(store: Store, item: StockItem) -> StockItem:
    """The item with its locations and channel caps."""
    return (await store.shelves.of([item.sku])).get(item.sku, domain.Stocking()).of(item)


def _event_allocations(allocations: Sequence[Allocation]) -> list[AllocationOut]:
    return [AllocationOut(sku=a.sku, location=a.location, quantity=a.quantity) for a in allocations]


async def _known_location(store: Store, code: str) -> domain.Location:
    location = await store.locations.get(code)
    if location is None:
        raise NotFound(f"location {code}")
    return location


async def set_location_stock(
    tx: Tx[Store],
    sku: str,
    location: str,
    on_hand: int,
    safety_stock: int | None,
    reorder_point: int | None = None,
) -> tuple[StockItem, bool]:
    """Set the counted stock of a sku at one location (creating the sku if new; 404 for an
    unknown location); the item and whether it was created. On_hand may not drop below what is
    reserved there (409)."""
    store = tx.store
    await _known_location(store, location)
    created = await store.items.create(
        sku, on_hand, reorder_point or 0, location, safety_stock or 0
    )
    if created is not None:
        item = await _loaded(store, created)
        await _record_change(tx, None, item, location, on_hand, "set")
        return item, True
    before = await _loaded(store, await _lock_item(store, sku))
    shelf = domain.shelf_at(before.locations, location)
    try:
        wanted = domain.set_shelf(shelf, on_hand, safety_stock)
    except StockRuleViolation as exc:
        raise Conflict(str(exc)) from exc
    same_reorder = reorder_point is None or reorder_point == before.level.reorder_point
    if (
        shelf is not None
        and (shelf.on_hand, shelf.safety_stock) == (wanted.on_hand, wanted.safety_stock)
        and same_reorder
    ):
        return before, False
    delta = on_hand - (0 if shelf is None else shelf.on_hand)
    written = await store.shelves.set(sku, location, on_hand, safety_stock, delta, reorder_point)
    item = await _loaded(store, written)
    await _record_change(tx, _availability(store, before), item, location, delta, "set")
    return item, False


async def receive_stock(
    tx: Tx[Store], sku: str, location: str, quantity: int, reason: str, ref: str | None
) -> StockItem:
    """Goods arrived (a purchase order's receipt, say): `quantity` more on hand at (sku,
    location), creating the sku or its location row if missing (404 for an unknown location),
    audited with `reason` and `ref`, announced like any change."""
    store = tx.store
    await _known_location(store, location)
    created = await store.items.create(sku, quantity, 0, location, 0)
    if created is not None:
        item = await _loaded(store, created)
        await _record_change(tx, None, item, location, quantity, reason, ref)
        return item
    before = await _loaded(store, await _lock_item(store, sku))
    shelf = domain.shelf_at(before.locations, location)
    on_hand = (0 if shelf is None else shelf.on_hand) + quantity
    written = await store.shelves.set(sku, location, on_hand, None, quantity, None)
    item = await _loaded(store, written)
    await _record_change(tx, _availability(store, before), item, location, quantity, reason, ref)
    return item


TRANSFER = "transfer"


async def transfer_stock(
    tx: Tx[Store],
    sku: str,
    from_location: str,
    to_location: str,
    quantity: int,
    reason: str | None,
    idempotency_key: str,
    request_hash: str,
) -> tuple[domain.Transfer, bool]:
    """Move allocatable units between two locations (409 for anything else: reserved units, the
    safety stock, the same location); two audited movements (reason `transfer`, ref = the
    transfer's id). Once per Idempotency-Key: the same key and body replay the transfer
    (True), another body is a 409."""
    store = tx.store
    known = await store.transfers.by_key(idempotency_key)
    if known is not None:
        return _replayed(known, request_hash), True
    await _known_location(store, from_location)
    await _known_location(store, to_location)
    if from_location == to_location:
        raise Conflict("a transfer needs two different locations")
    asked = domain.Transfer(
        id=str(uuid.uuid4()),
        sku=sku,
        from_location=from_location,
        to_location=to_location,
        quantity=quantity,
        reason=reason,
    )
    claimed = await store.transfers.claim(asked, idempotency_key, request_hash)
    if claimed is None:
        again = await store.transfers.by_key(idempotency_key)
        if again is None:  # pragma: no cover - the unique key said it exists
            raise Conflict("this Idempotency-Key is in use")
        return _replayed(again, request_hash), True
    before = await _loaded(store, await _lock_item(store, sku))
    try:
        deltas = domain.plan_transfer(
            domain.shelf_at(before.locations, from_location), to_location, quantity, sku
        )
    except StockRuleViolation as exc:
        raise Conflict(str(exc)) from exc
    moved = await store.items.move_at(deltas, TRANSFER, None, ref=claimed.id)
    after = domain.apply_deltas({sku: before.locations}, deltas)
    item = replace(before, level=moved[0].level, locations=after[sku])
    await _announce(store, tx.events, _availability(store, before), item, TRANSFER)
    return claimed, False


def _replayed(known: tuple[domain.Transfer, str], request_hash: str) -> domain.Transfer:
    transfer, known_hash = known
    if known_hash != request_hash:
        raise Conflict("this Idempotency-Key was already used with a different request body")
    return transfer


async def set_channel_cap(tx: Tx[Store], sku: str, channel: str, cap: int) -> StockItem:
    """A capped channel may hold at most `cap` units of the sku in live reservations and
    committed orders; a new or changed cap is announced (the channel's available moves)."""
    store = tx.store
    before = await _loaded(store, await _lock_item(store, sku))
    await store.caps.set(sku, channel, cap)
    item = await _loaded(store, before)
    await _announce(store, tx.events, _availability(store, before), item, domain.CAP_CHANGED)
    return item


async def put_location(
    tx: Tx[Store],
    code: str,
    name: str,
    kind: str | None,
    priority: int | None,
    regions: Sequence[str] | None,
    active: bool | None,
) -> tuple[domain.Location, bool]:
    """Create or update a location (fields left out keep their values); whether it was created.
    Switching a location on or off changes what its skus can sell: each is announced."""
    store = tx.store
    before = await store.locations.lock(code)
    location, created = await store.locations.upsert(code, name, kind, priority, regions, active)
    if before is None or before.active == location.active:
        return location, created
    locked = await store.items.lock_for(await store.shelves.skus_at(code))
    loaded = await store.shelves.of(sorted(locked))
    for sku in sorted(locked):
        item = loaded.get(sku, domain.Stocking()).of(locked[sku])
        old = replace(
            item,
            locations=tuple(
                replace(s, active=before.active) if s.location == code else s
                for s in item.locations
            ),
        )
        await _announce(store, tx.events, _availability(store, old), item, domain.LOCATION_CHANGED)
    return location, created


async def get_location(tx: Tx[Store], code: str) -> domain.Location:
    return await _known_location(tx.store, code)


async def list_locations(
    tx: Tx[Store], after: str | None, limit: int
) -> tuple[list[domain.Location], bool]:
    """A page of locations by code, and whether more follow."""
    rows = await tx.store.locations.page(after, limit + 1)
    return rows[:limit], len(rows) > limit


# --- reconciliation (issue 14) ---


class ReconcileReads(Protocol):
    """The read-only queries inventory's reconciliation runs (db.ReconcileReads)."""

    async def stock_tallies(
        self, window_s: float, scan: int, limit: int
    ) -> list[domain.StockTally]: ...

    async def expired_held(
        self, grace_s: float, limit: int
    ) -> tuple[list[tuple[str, datetime]], datetime | None]: ...


@dataclass(frozen=True)
class ReconcileLimits:
    stock_window_s: float
    scan_skus: int
    expiry_grace_s: float
    limit: int


async def reconcile_stock(reads: ReconcileReads, limits: ReconcileLimits) -> list[Finding]:
    """Per sku: stock_items against its locations, its movements and its open reservations."""
    tallies = await reads.stock_tallies(limits.stock_window_s, limits.scan_skus, limits.limit)
    return domain.stock_findings(tallies)[: limits.limit]


async def reconcile_reservations(reads: ReconcileReads, limits: ReconcileLimits) -> list[Finding]:
    """Reservations the expiry sweep should have released."""
    held, now = await reads.expired_held(limits.expiry_grace_s, limits.limit)
    if now is None:
        return []
    return domain.expired_held_findings(held, now, timedelta(seconds=limits.expiry_grace_s))
