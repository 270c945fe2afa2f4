"""Inbound triggers: order events from Kafka, and the clock that expires forgotten reservations."""

import asyncio
import logging
from functools import partial

from libs.events.orders import (
    OrderCancellationRequested,
    OrderConfirmed,
    OrderPlaced,
    OrderRejected,
)
from libs.kit.db import Database
from libs.kit.inbox import EventContext, EventProcessor
from services.inventory import service
from services.inventory.settings import InventorySettings

log = logging.getLogger(__name__)


async def on_order_placed(
    order: OrderPlaced, ctx: EventContext, settings: InventorySettings
) -> None:
    await service.reserve_for_order(
        ctx.session, ctx.emitter, order, now=settings.now(), grace_s=settings.reservation_grace_s
    )


async def on_order_confirmed(event: OrderConfirmed, ctx: EventContext) -> None:
    await service.commit_order(ctx.session, ctx.emitter, event.order_id)


async def on_order_rejected(event: OrderRejected, ctx: EventContext) -> None:
    await service.release_order(ctx.session, ctx.emitter, event.order_id, event.reason)


async def on_order_cancellation_requested(
    event: OrderCancellationRequested, ctx: EventContext
) -> None:
    await service.cancel_order(ctx.session, ctx.emitter, event.order_id)


def register(processor: EventProcessor, settings: InventorySettings) -> None:
    processor.on(OrderPlaced)(partial(on_order_placed, settings=settings))
    processor.on(OrderConfirmed)(on_order_confirmed)
    processor.on(OrderRejected)(on_order_rejected)
    processor.on(OrderCancellationRequested)(on_order_cancellation_requested)


async def sweep_expired_reservations(
    db: Database, settings: InventorySettings, limit: int | None = None
) -> list[str]:
    """Release every reservation overdue on `settings.now()`, each in its own transaction (with
    its outbox events), so one sweep never holds stock rows of several orders at once."""
    now = settings.now()
    released: list[str] = []
    while len(released) < (limit or settings.expiry_sweep_batch):
        async with db.transaction() as session:
            order_id = await service.release_one_expired(session, settings.service_name, now)
        if order_id is None:
            break
        released.append(order_id)
    return released


async def run_expiry_sweeper(db: Database, settings: InventorySettings) -> None:
    """Background task: sweep every `expiry_sweep_interval_s`; errors are logged, never fatal."""
    while True:
        try:
            await sweep_expired_reservations(db, settings)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("reservation expiry sweep failed; retrying next interval")
        await asyncio.sleep(settings.expiry_sweep_interval_s)
