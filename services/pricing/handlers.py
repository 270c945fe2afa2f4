"""Kafka in: pricing learns which skus exist, their category, status and weight from catalog facts."""

from libs.events.catalog import ProductCreated, ProductUpdated
from libs.kit.inbox import EventContext, EventProcessor
from services.pricing import service
from services.pricing.db import Store
from services.pricing.domain import ProductFacts, weight_in_grams


async def on_product_created(event: ProductCreated, ctx: EventContext) -> None:
    facts = ProductFacts(
        sku=event.sku,
        category=event.category,
        status=event.status,
        weight_g=weight_in_grams(event.attributes),
    )
    await service.record_product(ctx.tx(Store), facts, ctx.event.time)


async def on_product_updated(event: ProductUpdated, ctx: EventContext) -> None:
    # ProductUpdated carries the whole product, so it is applied exactly like a creation.
    facts = ProductFacts(
        sku=event.sku,
        category=event.category,
        status=event.status,
        weight_g=weight_in_grams(event.attributes),
    )
    await service.record_product(ctx.tx(Store), facts, ctx.event.time)


def register(processor: EventProcessor) -> None:
    processor.on(ProductCreated)(on_product_created)
    processor.on(ProductUpdated)(on_product_updated)
