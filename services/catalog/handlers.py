"""Kafka in: catalog keeps its price and availability projection from pricing and inventory facts."""

from libs.events.inventory import StockLevelChanged
from libs.events.pricing import PriceChanged
from libs.kit.inbox import EventContext, EventProcessor
from services.catalog import service
from services.catalog.db import Store


async def on_price_changed(event: PriceChanged, ctx: EventContext) -> None:
    await service.record_price(ctx.tx(Store), event.sku, event.price, event.channel)


async def on_stock_level_changed(event: StockLevelChanged, ctx: EventContext) -> None:
    capped = {c.channel: c.available for c in event.channels}
    await service.record_stock(ctx.tx(Store), event.sku, event.available, capped)


def register(processor: EventProcessor) -> None:
    processor.on(PriceChanged)(on_price_changed)
    processor.on(StockLevelChanged)(on_stock_level_changed)
