"""Kafka in: catalog keeps its price and availability projection from pricing and inventory facts."""

from libs.events.inventory import StockLevelChanged
from libs.events.pricing import PriceChanged
from libs.kit.inbox import EventContext, EventProcessor
from services.catalog import service
from services.catalog.db import Store


async def on_price_changed(event: PriceChanged, ctx: EventContext) -> None:
    if event.channel is not None:
        # Issue 13: a channel's price list is not the base price this projection shows.
        # TODO(issue 13 merge): catalog's per-channel projection takes these.
        return
    await service.record_price(ctx.tx(Store), event.sku, event.price)


async def on_stock_level_changed(event: StockLevelChanged, ctx: EventContext) -> None:
    await service.record_stock(ctx.tx(Store), event.sku, event.available)


def register(processor: EventProcessor) -> None:
    processor.on(PriceChanged)(on_price_changed)
    processor.on(StockLevelChanged)(on_stock_level_changed)
