"""Composition root of the inventory service."""

from fastapi import FastAPI

from libs.kit.app import create_service_app
from libs.kit.runtime import Runtime
from services.inventory import api, handlers
from services.inventory.settings import InventorySettings


def create_app(settings: InventorySettings | None = None) -> FastAPI:
    settings = settings or InventorySettings()
    runtime = Runtime(settings)
    handlers.register(runtime.processor, settings)

    async def start_expiry_sweeper(runtime: Runtime) -> None:
        runtime.start_worker(handlers.expiry_sweeper(runtime.db, settings))

    return create_service_app(
        runtime, routers=[api.router], title="Backroom inventory", on_startup=start_expiry_sweeper
    )
