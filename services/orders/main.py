"""Composition root of the orders service."""

from fastapi import FastAPI

from libs.kit.app import create_service_app
from libs.kit.runtime import Runtime
from libs.kit.transactions import DatabaseUnitOfWork
from libs.kit.uow import Clock, utc_now
from libs.kit.worker import Worker
from services.orders import api, handlers
from services.orders.adapters import HttpPricing, PdfDocuments
from services.orders.db import Store
from services.orders.settings import OrdersSettings


def create_app(settings: OrdersSettings | None = None, clock: Clock = utc_now) -> FastAPI:
    """`clock` decides what "now" is for deadlines, so tests can move it instead of sleeping."""
    settings = settings or OrdersSettings()
    runtime = Runtime(settings)
    handlers.register(runtime.processor, clock, settings.invoicing())
    pricing = HttpPricing(settings.pricing_url, settings.pricing_timeout_s)
    claims = handlers.DatabaseOverdueClaims(runtime.db, settings.service_name)
    sweep = Worker(
        "orders-deadline-sweep",
        handlers.deadline_sweep(claims, clock, settings.deadline_sweep_batch),
        settings.deadline_sweep_interval_s,
    )

    async def start_background(runtime: Runtime) -> None:
        await pricing.open()
        runtime.start_worker(sweep)

    async def close_pricing(_: Runtime) -> None:
        await pricing.close()

    app = create_service_app(
        runtime,
        routers=[api.router],
        title="Backroom orders",
        on_startup=start_background,
        on_shutdown=close_pricing,
    )
    app.state.settings = settings
    app.state.pricing = pricing
    app.state.documents = PdfDocuments()
    app.state.clock = clock
    app.state.unit_of_work = DatabaseUnitOfWork(runtime.db, settings.service_name, Store)
    return app
