"""Events and the clock in: stock and payment facts decide pending orders and finish cancellations;
the deadline sweep rejects orders whose reservation ran out."""

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from libs.events.inventory import StockReleased, StockReservationFailed, StockReserved
from libs.events.payments import PaymentCaptured, PaymentFailed, PaymentRefunded, PaymentVoided
from libs.kit.db import Database
from libs.kit.inbox import EventContext, EventHandler, EventProcessor
from libs.kit.outbox import Emitter
from services.orders import domain, service

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
# StockReleased also answers rejections and reservation expiry; only this reason settles a
# cancellation.
CANCELLED = "cancelled"


async def on_stock_reserved(event: StockReserved, ctx: EventContext) -> None:
    await service.apply_fact(ctx.session, ctx.emitter, event.order_id, domain.note_stock_reserved)


async def on_stock_reservation_failed(event: StockReservationFailed, ctx: EventContext) -> None:
    await service.apply_fact(
        ctx.session, ctx.emitter, event.order_id, lambda o: domain.reject(o, "out_of_stock")
    )


async def on_stock_released(event: StockReleased, ctx: EventContext) -> None:
    if event.reason != CANCELLED:
        return
    await service.apply_fact(
        ctx.session, ctx.emitter, event.order_id, domain.cancellation_stock_returned
    )


def on_payment_captured(clock: Clock) -> EventHandler[PaymentCaptured]:
    async def handle(event: PaymentCaptured, ctx: EventContext) -> None:
        now = clock()
        await service.apply_fact(
            ctx.session, ctx.emitter, event.order_id, lambda o: domain.payment_captured(o, now)
        )

    return handle


async def on_payment_failed(event: PaymentFailed, ctx: EventContext) -> None:
    await service.apply_fact(
        ctx.session, ctx.emitter, event.order_id, lambda o: domain.reject(o, "payment_declined")
    )


async def on_payment_refunded(event: PaymentRefunded, ctx: EventContext) -> None:
    await service.apply_fact(
        ctx.session, ctx.emitter, event.order_id, domain.cancellation_payment_returned
    )


async def on_payment_voided(event: PaymentVoided, ctx: EventContext) -> None:
    await service.apply_fact(
        ctx.session, ctx.emitter, event.order_id, domain.cancellation_payment_returned
    )


def register(processor: EventProcessor, clock: Clock) -> None:
    processor.on(StockReserved)(on_stock_reserved)
    processor.on(StockReservationFailed)(on_stock_reservation_failed)
    processor.on(StockReleased)(on_stock_released)
    processor.on(PaymentCaptured)(on_payment_captured(clock))
    processor.on(PaymentFailed)(on_payment_failed)
    processor.on(PaymentRefunded)(on_payment_refunded)
    processor.on(PaymentVoided)(on_payment_voided)


async def sweep_overdue(
    db: Database, now: datetime, *, service_name: str = "orders", limit: int = 500
) -> int:
    """Reject pending orders whose deadline is before `now`, each in its own transaction with its
    OrderRejected; returns how many. Several sweepers share the work through SKIP LOCKED."""
    swept = 0
    while swept < limit:
        async with db.transaction() as session:
            row = await service.claim_overdue(session, now)
            if row is None:
                break
            # The rejection belongs to the checkout that placed the order: same correlation id.
            emitter = Emitter(session, service_name, row.correlation_id)
            if not await service.expire(session, emitter, row, now):
                break
        swept += 1
    return swept


async def sweep_forever(
    db: Database, clock: Clock, interval_s: float, limit: int, service_name: str = "orders"
) -> None:
    """The background deadline sweep; a failed pass is logged and tried again next interval."""
    while True:
        try:
            swept = await sweep_overdue(db, clock(), service_name=service_name, limit=limit)
            if swept:
                log.info("rejected %d order(s) past their reservation deadline", swept)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("deadline sweep failed")
        await asyncio.sleep(interval_s)
