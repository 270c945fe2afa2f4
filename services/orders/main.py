"""Composition root of the orders service."""

import secrets
from functools import partial

from fastapi import FastAPI

from libs.kit.app import create_service_app
from libs.kit.auth import mint_dev_token
from libs.kit.metrics import gauge_probe
from libs.kit.retry import RetryPolicy
from libs.kit.runtime import Runtime
from libs.kit.transactions import DatabaseUnitOfWork
from libs.kit.uow import Clock, utc_now
from libs.kit.worker import Worker
from services.orders import api, db, domain, handlers, metrics, service
from services.orders.adapters import (
    Carrier,
    EasyPostCarrier,
    HttpCatalog,
    HttpPricing,
    HttpServiceRecords,
    KafkaDeadLetters,
    PdfDocuments,
    SandboxCarrier,
)
from services.orders.db import Store
from services.orders.settings import OrdersSettings


def create_app(
    settings: OrdersSettings | None = None,
    clock: Clock = utc_now,
    carrier: Carrier | None = None,
) -> FastAPI:
    """`clock` decides what "now" is for deadlines, so tests can move it instead of sleeping;
    `carrier` replaces the configured one (a fake in tests)."""
    settings = settings or OrdersSettings()
    runtime = Runtime(settings)
    carrier = carrier or configured_carrier(settings)
    uow = DatabaseUnitOfWork(runtime.db, settings.service_name, Store)
    labels = service.LabelWorker(
        uow,
        carrier,
        RetryPolicy(
            attempts=settings.label_attempts,
            initial_s=settings.label_backoff_initial_s,
            max_s=settings.label_backoff_max_s,
        ),
        lease_s=settings.label_lease_s,
        batch=settings.label_batch,
        item_weight_g=settings.item_weight_g,
        clock=clock,
    )
    label_worker = Worker("orders-label-worker", labels.step, settings.label_poll_interval_s)
    labels.wake = label_worker.wake
    handlers.register(runtime.processor, clock, label_worker.wake, settings.invoicing(), labels)
    add_reconciliation(runtime, settings)  # issue 14 part 6

    runtime.retention.add(*db.PRUNE)  # issue 14: what orders prunes
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
        runtime.start_worker(label_worker)

    async def close_pricing(_: Runtime) -> None:
        await pricing.close()
        await catalog.close()

    runtime.metrics.add(  # issue 14
        "orders_pending_overdue",
        gauge_probe(metrics.PENDING_OVERDUE, lambda: db.count_pending_overdue(runtime.db)),
    )
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
    app.state.documents = PdfDocuments()
    app.state.clock = clock
    app.state.unit_of_work = uow
    app.state.carrier = carrier
    app.state.label_worker = label_worker
    app.state.labels = labels
    app.state.timeline_records = timeline_records(settings)  # issue 14
    app.state.dead_letters = KafkaDeadLetters(runtime.kafka)
    return app


# --- shipments (issue 12) ---


def configured_carrier(settings: OrdersSettings) -> Carrier:
    """The carrier `settings.carrier` names."""
    if settings.carrier == "easypost":
        # The settings refuse to load without both secrets.
        assert settings.easypost_api_key and settings.easypost_webhook_secret
        return EasyPostCarrier(
            settings.easypost_api_key.get_secret_value(),
            settings.easypost_webhook_secret.get_secret_value(),
            settings.ship_from(),
            api_base=settings.easypost_api_base,
            timeout_s=settings.easypost_timeout_s,
            service=settings.easypost_service,
            carriers=settings.easypost_carriers,
        )
    secret = settings.sandbox_carrier_webhook_secret
    return SandboxCarrier(
        secret.get_secret_value() if secret else secrets.token_hex(32),
        webhook_tolerance_s=settings.carrier_webhook_tolerance_s,
        tracking_url=settings.sandbox_tracking_url or None,
    )


# --- reconciliation (issue 14) ---


def add_reconciliation(runtime: Runtime, settings: OrdersSettings) -> None:
    check = partial(
        service.reconcile_orders,
        db.ReconcileReads(runtime.db),
        settings.reconcile_order_grace_s,
        settings.reconcile_limit,
    )
    runtime.reconciler.add("orders", check, domain.RECONCILIATION_KINDS)


# --- timeline (issue 14) ---


def timeline_records(settings: OrdersSettings) -> HttpServiceRecords:
    """The other services' admin reads, with the configured service token (or, in development,
    a dev admin token minted per read)."""

    def bearer() -> str | None:
        if settings.service_token is not None:
            return settings.service_token.get_secret_value()
        if settings.is_dev:
            return mint_dev_token(settings, "service:orders", ["admin"], ttl_s=300)
        raise RuntimeError("BACKROOM_SERVICE_TOKEN is not set")

    return HttpServiceRecords(
        settings.inventory_url,
        settings.payments_url,
        settings.notifications_url,
        bearer,
        timeout_s=settings.timeline_timeout_s,
    )
