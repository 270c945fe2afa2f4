"""Composition root of the catalog service."""

from fastapi import FastAPI

from libs.kit.app import create_service_app
from libs.kit.runtime import Runtime
from services.catalog import api, handlers
from services.catalog.settings import CatalogSettings


def create_app(settings: CatalogSettings | None = None) -> FastAPI:
    settings = settings or CatalogSettings()
    runtime = Runtime(settings)
    handlers.register(runtime.processor)
    return create_service_app(runtime, routers=[api.router], title="Backroom catalog")
