"""Composition root of the orders service."""

from fastapi import FastAPI

from libs.kit.app import create_service_app
from libs.kit.runtime import Runtime
from libs.kit.transactions import DatabaseUnitOfWork
from libs.kit.uow import Clock, utc_now
from libs.kit.worker import Worker
from services.orders import api, handlers
from services.orders.adapters import HttpCatalog, HttpPricing
from services.orders.db import Store
from services.orders.settings import OrdersSettings


def create_app(settings: OrdersSettings | None = None, clock: Clock = utc_now) -> FastAPI:
    """`clock` decides what "now" is for deadlines, so tests can move it instead of sleeping."""
    settings = settings or OrdersSettings()
    runtime = Runtime(settings)
    handlers.register(runtime.processor, clock)
    pricing = HttpPricing(settings.pricing_url, settings.pricing_timeout_s)
    claims = handlers.DatabaseOverdueClaims(runtime.db, settings.service_name)
    sweep = Worker(
        "orders-deadline-sweep",
        handlers.deadline_sweep(claims, clock, settings.deadline_sweep_batch),
        settings.deadline_sweep_interval_s,
    )
    catalog = HttpCatalog(settings.catalog_url, settings.catalog_timeout_s)
    cart_sweep = Worker(
        "orders-cart-abandonment-sweep",
        handlers.cart_abandonment_sweep(
            DatabaseUnitOfWork(runtime.db, settings.service_name, Store),
            clock,
            idle_after_s=settings.cart_abandon_after_s,
            batch=settings.cart_sweep_batch,
        ),
        settings.cart_sweep_interval_s,
    )

    async def start_background(runtime: Runtime) -> None:
        await pricing.open()
        await catalog.open()
        runtime.start_worker(sweep)
        runtime.start_worker(cart_sweep)

    async def close_pricing(_: Runtime) -> None:
        await pricing.close()
        await catalog.close()

    app = create_service_app(
        runtime,
        routers=[api.router, api.carts_router],
        title="Backroom orders",
        on_startup=start_background,
        on_shutdown=close_pricing,
    )
    app.state.settings = settings
    app.state.pricing = pricing
    app.state.catalog = catalog
    app.state.clock = clock
    app.state.unit_of_work = DatabaseUnitOfWork(runtime.db, settings.service_name, Store)
    return app
