"""Composition root of the catalog service."""

from datetime import datetime

from fastapi import FastAPI

from libs.kit.app import create_service_app
from libs.kit.runtime import Runtime
from libs.kit.transactions import DatabaseUnitOfWork
from libs.kit.uow import Clock, utc_now
from libs.kit.worker import Worker, full_batches
from services.catalog import api, handlers, service
from services.catalog.adapters import KafkaListingTopics
from services.catalog.db import Store
from services.catalog.settings import CatalogSettings


class ListingSyncWorker:
    """Publishes coalesced ListingChanged events on an injectable clock, polling every
    `listing_sync_poll_s` (a change is due only `listing_sync_delay_s` after it, so there is
    nothing to wake it for at commit time)."""

    def __init__(
        self, uow: DatabaseUnitOfWork[Store], settings: CatalogSettings, clock: Clock
    ) -> None:
        self.uow = uow
        self.clock = clock
        self.delay_s = settings.listing_sync_delay_s
        self.batch_size = settings.listing_sync_batch_size
        self.worker = Worker(
            "listing-sync",
            full_batches(self.run_once, self.batch_size),
            settings.listing_sync_poll_s,
        )

    async def run_once(self, now: datetime | None = None) -> int:
        """One pass at `now` (default: the clock); returns how many (channel, sku) it took."""
        return await service.sync_listings(
            self.uow, now or self.clock(), self.delay_s, self.batch_size
        )


def create_app(settings: CatalogSettings | None = None, clock: Clock = utc_now) -> FastAPI:
    settings = settings or CatalogSettings()
    runtime = Runtime(settings)
    handlers.register(runtime.processor)
    uow = DatabaseUnitOfWork(runtime.db, runtime.service, Store)
    listing_topics = KafkaListingTopics(
        runtime.kafka, settings.topic_partitions, settings.topic_replication
    )
    sync = ListingSyncWorker(uow, settings, clock)

    async def start_background(runtime: Runtime) -> None:
        async with uow() as tx:
            codes = [c.code for c in await service.list_channels(tx)]
        await listing_topics.ensure(codes)
        runtime.start_worker(sync.worker)

    app = create_service_app(
        runtime, routers=[api.router], title="Backroom catalog", on_startup=start_background
    )
    app.state.listing_topics = listing_topics
    app.state.listing_sync = sync
    app.state.catalog_uow = uow
    app.state.export_page_size = settings.export_page_size
    return app
