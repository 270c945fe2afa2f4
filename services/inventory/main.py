"""Composition root of the inventory service."""

import asyncio

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
        runtime.extra_tasks.append(
            asyncio.create_task(
                handlers.run_expiry_sweeper(runtime.db, settings), name="reservation-expiry"
            )
        )

    return create_service_app(
        runtime, routers=[api.router], title="Backroom inventory", on_startup=start_expiry_sweeper
    )
