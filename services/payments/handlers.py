"""Kafka in: payment instructions, stock reservations and terminal order events drive the charge."""

from collections.abc import Callable
from functools import partial

from libs.events.inventory import StockReserved
from libs.events.orders import (
    OrderCancellationRequested,
    OrderRejected,
    OrderShipped,
    PaymentInstructionIssued,
    ReturnReceived,
)
from libs.kit.db import DbSession
from libs.kit.inbox import EventContext, EventProcessor
from services.payments import service
from services.payments.db import Store
from services.payments.domain import Trace
from services.payments.service import HandOver, Wake

MakeStore = Callable[[DbSession], Store]


def _trace(ctx: EventContext) -> Trace:
    """The provider call this event makes owed, and its outcome, stay in the event's story."""
    return Trace(ctx.event.correlationid, ctx.event.id)


async def on_payment_instruction_issued(
    instruction: PaymentInstructionIssued,
    ctx: EventContext,
    wake: Wake,
    make_store: MakeStore,
    charger: HandOver | None = None,
) -> None:
    # An instruction that does not parse is dead-lettered by the kit, its error text naming the
    # bad fields only (never the token).
    await service.record_instruction(
        ctx.tx(make_store),
        order_id=instruction.order_id,
        customer_id=instruction.customer_id,
        amount=instruction.amount,
        token=instruction.token,
        trace=_trace(ctx),
        wake=wake,
        charger=charger,
    )


async def on_stock_reserved(
    event: StockReserved,
    ctx: EventContext,
    wake: Wake,
    make_store: MakeStore,
    charger: HandOver | None = None,
) -> None:
    await service.record_stock_reserved(
        ctx.tx(make_store), event.order_id, trace=_trace(ctx), wake=wake, charger=charger
    )


async def on_order_rejected(
    event: OrderRejected, ctx: EventContext, wake: Wake, make_store: MakeStore
) -> None:
    await service.close_order(
        ctx.tx(make_store),
        order_id=event.order_id,
        customer_id=event.customer_id,
        reason=event.reason,
        cancellation=False,
        trace=_trace(ctx),
        wake=wake,
    )


async def on_order_cancellation_requested(
    event: OrderCancellationRequested, ctx: EventContext, wake: Wake, make_store: MakeStore
) -> None:
    await service.close_order(
        ctx.tx(make_store),
        order_id=event.order_id,
        customer_id=event.customer_id,
        reason=event.reason,
        cancellation=True,
        trace=_trace(ctx),
        wake=wake,
    )


async def on_order_shipped(
    event: OrderShipped, ctx: EventContext, wake: Wake, make_store: MakeStore
) -> None:
    await service.record_shipped(ctx.tx(make_store), event.order_id, trace=_trace(ctx), wake=wake)


async def on_return_received(
    event: ReturnReceived, ctx: EventContext, wake: Wake, make_store: MakeStore
) -> None:
    """Issue 12: refund a received return's share of the order's capture."""
    await service.refund_return(
        ctx.tx(make_store),
        event.order_id,
        event.return_id,
        event.refund,
        trace=_trace(ctx),
        wake=wake,
    )


def register(
    processor: EventProcessor,
    wake: Wake,
    make_store: Callable[[DbSession], Store] = Store,
    charger: HandOver | None = None,
) -> None:
    """`wake`: the charger's worker, woken after a commit that made a provider call owed;
    `make_store`: the repositories (naming the configured provider on what they record);
    `charger`: this process's, handed the captures the events make owed, claimed already."""
    processor.on(PaymentInstructionIssued)(
        partial(on_payment_instruction_issued, wake=wake, make_store=make_store, charger=charger)
    )
    processor.on(StockReserved)(
        partial(on_stock_reserved, wake=wake, make_store=make_store, charger=charger)
    )
    for event_type, handler in (
        (OrderRejected, on_order_rejected),
        (OrderCancellationRequested, on_order_cancellation_requested),
        (OrderShipped, on_order_shipped),
        (ReturnReceived, on_return_received),  # issue 12
    ):
        processor.on(event_type)(partial(handler, wake=wake, make_store=make_store))
