"""Composition root of the orders service."""

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

from fastapi import FastAPI

from libs.kit.app import create_service_app
from libs.kit.runtime import Runtime
from services.orders import api, handlers
from services.orders.service import Pricing
from services.orders.settings import OrdersSettings


def utc_now() -> datetime:
    return datetime.now(UTC)


def create_app(
    settings: OrdersSettings | None = None, clock: Callable[[], datetime] = utc_now
) -> FastAPI:
    """`clock` decides what "now" is for deadlines, so tests can move it instead of sleeping."""
    settings = settings or OrdersSettings()
    runtime = Runtime(settings)
    handlers.register(runtime.processor, clock)
    pricing = Pricing(settings.pricing_url, settings.pricing_timeout_s)

    async def start_background(runtime: Runtime) -> None:
        await pricing.open()
        runtime.extra_tasks.append(
            asyncio.create_task(
                handlers.sweep_forever(
                    runtime.db,
                    clock,
                    settings.deadline_sweep_interval_s,
                    settings.deadline_sweep_batch,
                    settings.service_name,
                ),
                name="orders-deadline-sweep",
            )
        )

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
    app.state.clock = clock
    return app
