"""Kafka in: pricing learns which skus exist, their category and status from catalog facts."""

from libs.events.catalog import ProductCreated, ProductUpdated
from libs.kit.inbox import EventContext, EventProcessor
from services.pricing import service


async def on_product_created(event: ProductCreated, ctx: EventContext) -> None:
    await service.record_product(
        ctx.session,
        sku=event.sku,
        category=event.category,
        status=event.status,
        event_time=ctx.event.time,
    )


async def on_product_updated(event: ProductUpdated, ctx: EventContext) -> None:
    # ProductUpdated carries the whole product, so it is applied exactly like a creation.
    await service.record_product(
        ctx.session,
        sku=event.sku,
        category=event.category,
        status=event.status,
        event_time=ctx.event.time,
    )


def register(processor: EventProcessor) -> None:
    processor.on(ProductCreated)(on_product_created)
    processor.on(ProductUpdated)(on_product_updated)
