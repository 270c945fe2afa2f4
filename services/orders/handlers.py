"""Events and the clock in: stock and payment facts decide pending orders and finish cancellations;
the deadline sweep rejects orders whose reservation ran out; the cart sweep reports abandoned carts."""

import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from typing import Any

from libs.events.catalog import ChannelChanged
from libs.events.inventory import (
    BackorderFilled,
    StockReleased,
    StockReservationFailed,
    StockReserved,
    StockReturned,
)
from libs.events.payments import (
    PaymentAuthorized,
    PaymentCaptured,
    PaymentFailed,
    PaymentRefunded,
    PaymentVoided,
)
from libs.kit.db import Database
from libs.kit.inbox import EventContext, EventHandler, EventProcessor
from libs.kit.outbox import Emitter, OutboxBuffer
from libs.kit.transactions import SessionTx
from libs.kit.uow import Clock, UnitOfWork
from libs.kit.worker import full_batches
from services.orders import service
from services.orders.db import Store
from services.orders.domain import Channel, Invoicing
from services.orders.service import Claimed, LabelHandOver

log = logging.getLogger(__name__)

# payments' decline code for a hold that lapsed before the order shipped.
AUTHORIZATION_EXPIRED = "authorization_expired"


def on_stock_reserved(
    wake_labels: Callable[[], None] | None = None,
    invoicing: Invoicing | None = None,
    labels: LabelHandOver | None = None,
) -> EventHandler[StockReserved]:
    async def handle(event: StockReserved, ctx: EventContext) -> None:
        tx = ctx.tx(Store)
        await service.record_backorders(tx, event.order_id, event.backordered)  # issue 13
        # A payment applied first confirms the order now, its backordered lines known.
        await service.stock_reserved(
            tx, event.order_id, invoicing, on_confirmed=wake_labels, labels=labels
        )

    return handle


async def on_stock_reservation_failed(event: StockReservationFailed, ctx: EventContext) -> None:
    await service.stock_reservation_failed(ctx.tx(Store), event.order_id)


async def on_stock_released(event: StockReleased, ctx: EventContext) -> None:
    await service.stock_released(ctx.tx(Store), event.order_id, event.reason)


def on_payment_captured(
    clock: Clock,
    wake_labels: Callable[[], None] | None = None,
    invoicing: Invoicing | None = None,
    labels: LabelHandOver | None = None,
) -> EventHandler[PaymentCaptured | PaymentAuthorized]:
    async def handle(event: PaymentCaptured | PaymentAuthorized, ctx: EventContext) -> None:
        # A confirmation records the order's shipment: the label worker buys it after commit.
        await service.payment_captured(
            ctx.tx(Store), event.order_id, clock, invoicing, on_confirmed=wake_labels, labels=labels
        )

    return handle


async def on_payment_failed(event: PaymentFailed, ctx: EventContext) -> None:
    if event.decline_code == AUTHORIZATION_EXPIRED:
        # A held payment lapsed before the order shipped (capture policy on_shipment).
        await service.payment_hold_lapsed(ctx.tx(Store), event.order_id)
    await service.payment_failed(ctx.tx(Store), event.order_id)


def on_payment_refunded(
    clock: Clock, invoicing: Invoicing | None = None
) -> EventHandler[PaymentRefunded]:
    async def handle(event: PaymentRefunded, ctx: EventContext) -> None:
        await service.payment_refunded(
            ctx.tx(Store),
            event.order_id,
            event.amount.amount,
            fully=event.fully_refunded,
            # The credit note's key: the refund's own id (older events: the event's id, which
            # the inbox dedupes anyway).
            refund_id=event.refund_id or ctx.event.id,
            reason=event.reason,
            invoicing=invoicing,
        )
        if event.return_id is not None:  # issue 12: the refund half of a return
            await service.return_refunded(
                ctx.tx(Store), event.order_id, event.return_id, clock=clock
            )

    return handle


async def on_payment_voided(event: PaymentVoided, ctx: EventContext) -> None:
    await service.payment_returned(ctx.tx(Store), event.order_id)


def register(
    processor: EventProcessor,
    clock: Clock,
    wake_labels: Callable[[], None] | None = None,
    invoicing: Invoicing | None = None,
    labels: LabelHandOver | None = None,
) -> None:
    """`wake_labels`: the label worker's wake; `labels`: this process's label worker, handed
    the shipments confirmations record, claimed already (issue 10)."""
    processor.on(StockReserved)(on_stock_reserved(wake_labels, invoicing, labels))
    processor.on(StockReservationFailed)(on_stock_reservation_failed)
    processor.on(StockReleased)(on_stock_released)
    processor.on(PaymentCaptured)(on_payment_captured(clock, wake_labels, invoicing, labels))
    # Capture policy on_shipment: the authorization confirms the order (its capture later
    # changes nothing here).
    processor.on(PaymentAuthorized)(on_payment_captured(clock, wake_labels, invoicing, labels))
    processor.on(PaymentFailed)(on_payment_failed)
    processor.on(PaymentRefunded)(on_payment_refunded(clock, invoicing))
    processor.on(PaymentVoided)(on_payment_voided)
    register_returns(processor, clock)
    register_channels(processor)

    processor.on(BackorderFilled)(on_backorder_filled(wake_labels))  # issue 13
    journal_consumed(processor)  # issue 14: the timeline's consumed events


# --- the reservation deadline -------------------------------------------------------------------


class DatabaseOverdueClaims:
    """`service.OverdueClaims` on the orders database: each claim is a new transaction holding
    one overdue order (FOR UPDATE SKIP LOCKED), its events written to the outbox with the
    correlation id of the checkout that placed the order."""

    def __init__(self, db: Database, service_name: str = "orders") -> None:
        self.db = db
        self.service_name = service_name

    def __call__(self, now: datetime) -> AbstractAsyncContextManager[Claimed | None]:
        return self._claim(now)

    @asynccontextmanager
    async def _claim(self, now: datetime) -> AsyncIterator[Claimed | None]:
        async with self.db.transaction() as session:
            store = Store(session)
            order = await store.orders.claim_overdue(now)
            if order is None:
                yield None
                return
            buffer = OutboxBuffer()
            emitter = Emitter(session, self.service_name, order.correlation_id, buffer=buffer)
            yield Claimed(SessionTx(session, store, emitter), order)
            await buffer.flush(session)


async def sweep_overdue(
    db: Database, now: datetime, *, service_name: str = "orders", limit: int = 500
) -> int:
    """Reject pending orders whose deadline is before `now`; returns how many (tests call this
    with a future `now`). Several sweepers share the work through SKIP LOCKED."""
    return await service.expire_overdue(DatabaseOverdueClaims(db, service_name), now, limit)


def deadline_sweep(
    claims: service.OverdueClaims, clock: Clock, limit: int
) -> Callable[[], Awaitable[int]]:
    """One pass of the background sweep, as a `Worker` step: a full batch may have left more
    behind, so it reports work (and runs again at once) only then; otherwise the worker waits
    for its next poll."""

    async def step() -> int:
        swept = await service.expire_overdue(claims, clock(), limit)
        if swept:
            log.info("rejected %d order(s) past their reservation deadline", swept)
        return swept if swept >= limit else 0

    return step


# --- carts (issue 12) ---------------------------------------------------------------------------


def cart_abandonment_sweep(
    uow: UnitOfWork[service.Store], clock: Clock, *, idle_after_s: int, batch: int
) -> Callable[[], Awaitable[int]]:
    """One pass of the abandonment sweep, as a `Worker` step (again at once after a full
    batch): carts idle past `idle_after_s` are reported with CartAbandoned."""

    async def step() -> int:
        found = await service.abandon_idle_carts(
            uow, clock(), idle_after_s=idle_after_s, limit=batch
        )
        if found:
            log.info("reported %d abandoned cart(s)", found)
        return found

    return full_batches(step, batch)


# --- returns (issue 12) ---


def on_stock_returned(clock: Clock) -> EventHandler[StockReturned]:
    async def handle(event: StockReturned, ctx: EventContext) -> None:
        await service.return_stock_returned(
            ctx.tx(Store), event.order_id, event.return_id, clock=clock
        )

    return handle


def register_returns(processor: EventProcessor, clock: Clock) -> None:
    processor.on(StockReturned)(on_stock_returned(clock))


# --- channels (issue 13) ---


async def on_channel_changed(event: ChannelChanged, ctx: EventContext) -> None:
    channel = Channel(code=event.code, name=event.name, kind=event.kind, active=event.active)
    await service.record_channel(ctx.tx(Store), channel, ctx.event.time)


def register_channels(processor: EventProcessor) -> None:
    processor.on(ChannelChanged)(on_channel_changed)


# --- backorders (issue 13) ---


def on_backorder_filled(
    wake_labels: Callable[[], None] | None = None,
) -> EventHandler[BackorderFilled]:
    async def handle(event: BackorderFilled, ctx: EventContext) -> None:
        tx = ctx.tx(Store)
        if await service.backorder_filled(tx, event.order_id) and wake_labels:
            tx.on_commit(wake_labels)

    return handle


# --- timeline (issue 14) ---


def journaled(handler: EventHandler[Any]) -> EventHandler[Any]:
    """`handler`, which first journals the consumed event about its order in the event's own
    transaction (one fixed-shape INSERT; a duplicate never gets here: the inbox stops it)."""

    async def handle(event: Any, ctx: EventContext) -> None:
        await service.journal_consumed(
            ctx.tx(Store), event.order_id, ctx.event, ctx.topic, ctx.raw.decode()
        )
        await handler(event, ctx)

    return handle


def journal_consumed(processor: EventProcessor) -> None:
    """Wrap every registered handler of an event about an order (its data has `order_id`)."""
    for name, route in list(processor.routes.items()):
        if "order_id" in route.model.model_fields:
            processor.routes[name] = dataclasses.replace(route, handler=journaled(route.handler))
