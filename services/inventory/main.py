"""Composition root of the inventory service."""

from functools import partial

from fastapi import FastAPI

from libs.kit.app import create_service_app
from libs.kit.metrics import gauge_probe
from libs.kit.runtime import Runtime
from services.inventory import api, db, domain, handlers, metrics, service
from services.inventory.settings import InventorySettings


def create_app(settings: InventorySettings | None = None) -> FastAPI:
    settings = settings or InventorySettings()
    runtime = Runtime(settings)
    handlers.register(runtime.processor, settings)
    add_reconciliation(runtime, settings)  # issue 14 part 6
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


# --- reconciliation (issue 14) ---


def add_reconciliation(runtime: Runtime, settings: InventorySettings) -> None:
    reads = db.ReconcileReads(runtime.db)
    limits = service.ReconcileLimits(
        settings.reconcile_stock_window_s,
        settings.reconcile_scan_skus,
        settings.reconcile_expiry_grace_s,
        settings.reconcile_limit,
    )
    runtime.reconciler.add(
        "stock", partial(service.reconcile_stock, reads, limits), domain.STOCK_KINDS
    )
    runtime.reconciler.add(
        "reservations",
        partial(service.reconcile_reservations, reads, limits),
        [domain.RESERVATION_EXPIRED_HELD],
    )
