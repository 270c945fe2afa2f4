"""Composition root of the pricing service."""

from fastapi import FastAPI

from libs.kit.app import create_service_app
from libs.kit.runtime import Runtime
from services.pricing import api, db, handlers
from services.pricing.settings import PricingSettings


def create_app(settings: PricingSettings | None = None) -> FastAPI:
    settings = settings or PricingSettings()
    runtime = Runtime(settings)
    handlers.register(runtime.processor)
    runtime.retention.add(*db.PRUNE)  # issue 14: what pricing prunes
    return create_service_app(runtime, routers=[api.router], title="Backroom pricing")
