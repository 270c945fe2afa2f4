"""Inbound triggers: order events from Kafka, and the clock that expires forgotten reservations."""

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

from libs.events.orders import (
    OrderCancellationRequested,
    OrderConfirmed,
    OrderPlaced,
    OrderRejected,
    ReturnReceived,
)
from libs.kit.db import Database, DbSession
from libs.kit.inbox import EventContext, EventProcessor
from libs.kit.outbox import Emitter, OutboxBuffer
from libs.kit.transactions import SessionTx
from libs.kit.uow import EventSink
from libs.kit.worker import Worker
from services.inventory import service
from services.inventory.db import Store
from services.inventory.domain import AllocationPolicy
from services.inventory.service import ExpiryTx, OpenExpiryTx
from services.inventory.settings import InventorySettings


async def on_order_placed(
    order: OrderPlaced, ctx: EventContext, settings: InventorySettings
) -> None:
    await service.reserve_for_order(
        ctx.tx(store_of(settings)),
        order,
        correlation_id=ctx.event.correlationid,
        clock=settings.now,
        grace_s=settings.reservation_grace_s,
    )


async def on_order_confirmed(
    event: OrderConfirmed, ctx: EventContext, settings: InventorySettings
) -> None:
    await service.commit_order(ctx.tx(store_of(settings)), event.order_id)


async def on_order_rejected(
    event: OrderRejected, ctx: EventContext, settings: InventorySettings
) -> None:
    await service.release_order(ctx.tx(store_of(settings)), event.order_id, event.reason)


async def on_order_cancellation_requested(
    event: OrderCancellationRequested, ctx: EventContext, settings: InventorySettings
) -> None:
    await service.cancel_order(ctx.tx(store_of(settings)), event.order_id)


async def on_return_received(
    event: ReturnReceived, ctx: EventContext, settings: InventorySettings
) -> None:
    """Issue 12: a received return's units come back (restocked or written off)."""
    await service.take_back_return(ctx.tx(store_of(settings)), event)


def register(processor: EventProcessor, settings: InventorySettings) -> None:
    processor.on(OrderPlaced)(partial(on_order_placed, settings=settings))
    processor.on(OrderConfirmed)(partial(on_order_confirmed, settings=settings))
    processor.on(OrderRejected)(partial(on_order_rejected, settings=settings))
    processor.on(OrderCancellationRequested)(
        partial(on_order_cancellation_requested, settings=settings)
    )
    processor.on(ReturnReceived)(partial(on_return_received, settings=settings))  # issue 12


@dataclass
class _ExpirySessionTx(SessionTx[Store]):
    """`service.ExpiryTx` on a real session: every emitter of it writes to one outbox buffer."""

    service: str
    buffer: OutboxBuffer

    def events_of(self, correlation_id: str | None) -> EventSink:
        return Emitter(self.session, self.service, correlation_id, buffer=self.buffer)


def expiry_transactions(
    db: Database, service_name: str, policy: AllocationPolicy | None = None
) -> OpenExpiryTx:
    """Opens the sweep's transactions: committed when the block ends, events via the outbox."""

    @asynccontextmanager
    async def open_tx() -> AsyncIterator[ExpiryTx]:
        async with db.transaction() as session:
            buffer = OutboxBuffer()
            events = Emitter(session, service_name, None, buffer=buffer)
            store = Store(session, policy)
            yield _ExpirySessionTx(session, store, events, service_name, buffer)
            await buffer.flush(session)

    return open_tx


async def sweep_expired_reservations(
    db: Database, settings: InventorySettings, limit: int | None = None
) -> list[str]:
    """Release what is overdue on `settings.now()` (up to a batch); the released order ids."""
    return await service.sweep_expired(
        expiry_transactions(db, settings.service_name, settings.allocation_policy()),
        settings.now,
        limit or settings.expiry_sweep_batch,
    )


def expiry_sweeper(db: Database, settings: InventorySettings) -> Worker:
    """Background worker: sweeps batch after batch while there is work, then every
    `expiry_sweep_interval_s`; a failed sweep is logged and retried (the rows stay overdue)."""

    async def sweep() -> int:
        return len(await sweep_expired_reservations(db, settings))

    return Worker("reservation-expiry", sweep, settings.expiry_sweep_interval_s)


# --- locations (issue 13) ---


def store_of(settings: InventorySettings) -> Callable[[DbSession], Store]:
    """Inventory's repositories on a session, with the configured allocation policy."""
    policy = settings.allocation_policy()
    return lambda session: Store(session, policy)
