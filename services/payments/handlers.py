"""Kafka in: payment instructions, stock reservations and terminal order events drive the charge."""

from functools import partial

from libs.events.inventory import StockReserved
from libs.events.orders import OrderCancellationRequested, OrderRejected, PaymentInstructionIssued
from libs.kit.inbox import EventContext, EventProcessor
from services.payments import service
from services.payments.service import Charging


async def on_payment_instruction_issued(
    instruction: PaymentInstructionIssued, ctx: EventContext, charging: Charging
) -> None:
    # An instruction that does not parse is dead-lettered by the kit, its error text naming the
    # bad fields only (never the token).
    await service.record_instruction(
        ctx.session,
        ctx.emitter,
        charging,
        order_id=instruction.order_id,
        customer_id=instruction.customer_id,
        amount=instruction.amount,
        token=instruction.token,
    )


async def on_stock_reserved(event: StockReserved, ctx: EventContext, charging: Charging) -> None:
    await service.record_stock_reserved(ctx.session, ctx.emitter, charging, event.order_id)


async def on_order_rejected(event: OrderRejected, ctx: EventContext, charging: Charging) -> None:
    await service.close_order(
        ctx.session,
        ctx.emitter,
        charging,
        order_id=event.order_id,
        customer_id=event.customer_id,
        reason=event.reason,
        cancellation=False,
    )


async def on_order_cancellation_requested(
    event: OrderCancellationRequested, ctx: EventContext, charging: Charging
) -> None:
    await service.close_order(
        ctx.session,
        ctx.emitter,
        charging,
        order_id=event.order_id,
        customer_id=event.customer_id,
        reason=event.reason,
        cancellation=True,
    )


def register(processor: EventProcessor, charging: Charging) -> None:
    processor.on(PaymentInstructionIssued)(
        partial(on_payment_instruction_issued, charging=charging)
    )
    processor.on(StockReserved)(partial(on_stock_reserved, charging=charging))
    processor.on(OrderRejected)(partial(on_order_rejected, charging=charging))
    processor.on(OrderCancellationRequested)(
        partial(on_order_cancellation_requested, charging=charging)
    )
