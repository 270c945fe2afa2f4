"""Composition root of the inventory service."""

from fastapi import FastAPI

from libs.kit.app import create_service_app
from libs.kit.metrics import gauge_probe
from libs.kit.runtime import Runtime
from services.inventory import api, db, handlers, metrics
from services.inventory.settings import InventorySettings


def create_app(settings: InventorySettings | None = None) -> FastAPI:
    settings = settings or InventorySettings()
    runtime = Runtime(settings)
    handlers.register(runtime.processor, settings)
    runtime.metrics.add(  # issue 14
        "reservations_expired",
        gauge_probe(
            metrics.RESERVATIONS_EXPIRED, lambda: db.count_reservations_expired(runtime.db)
        ),
    )

    async def start_expiry_sweeper(runtime: Runtime) -> None:
        runtime.start_worker(handlers.expiry_sweeper(runtime.db, settings))

    return create_service_app(
        runtime, routers=[api.router], title="Backroom inventory", on_startup=start_expiry_sweeper
    )
