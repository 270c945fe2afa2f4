"""Kafka in: payment instructions, stock reservations and terminal order events drive the charge."""

from functools import partial

from pydantic import ValidationError

from libs.events import topics
from libs.events.inventory import StockReserved
from libs.events.orders import OrderCancellationRequested, OrderRejected, PaymentInstructionIssued
from libs.kit.inbox import EventContext, EventProcessor
from services.payments import service
from services.payments.service import Charging

SUBSCRIBES_TO = (topics.PAYMENT_INSTRUCTIONS, topics.INVENTORY, topics.ORDERS)


class InvalidInstruction(ValueError):
    """A payment instruction that does not parse; names the bad fields, never their values."""


async def on_payment_instruction_issued(ctx: EventContext, charging: Charging) -> None:
    try:
        instruction = PaymentInstructionIssued.model_validate(ctx.event.data)
    except ValidationError as exc:
        # pydantic quotes the input (the token among it); the kit logs and dead-letters this
        # error's text, so only the field names may go in it.
        fields = sorted({".".join(map(str, e["loc"])) for e in exc.errors()})
        raise InvalidInstruction(f"invalid PaymentInstructionIssued fields: {fields}") from None
    await service.record_instruction(
        ctx.session,
        ctx.emitter,
        charging,
        order_id=instruction.order_id,
        customer_id=instruction.customer_id,
        amount=instruction.amount,
        token=instruction.token,
    )


async def on_stock_reserved(ctx: EventContext, charging: Charging) -> None:
    event = StockReserved.model_validate(ctx.event.data)
    await service.record_stock_reserved(ctx.session, ctx.emitter, charging, event.order_id)


async def on_order_rejected(ctx: EventContext, charging: Charging) -> None:
    event = OrderRejected.model_validate(ctx.event.data)
    await service.close_order(
        ctx.session,
        ctx.emitter,
        charging,
        order_id=event.order_id,
        customer_id=event.customer_id,
        reason=event.reason,
        cancellation=False,
    )


async def on_order_cancellation_requested(ctx: EventContext, charging: Charging) -> None:
    event = OrderCancellationRequested.model_validate(ctx.event.data)
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
    processor.on("PaymentInstructionIssued")(
        partial(on_payment_instruction_issued, charging=charging)
    )
    processor.on("StockReserved")(partial(on_stock_reserved, charging=charging))
    processor.on("OrderRejected")(partial(on_order_rejected, charging=charging))
    processor.on("OrderCancellationRequested")(
        partial(on_order_cancellation_requested, charging=charging)
    )
