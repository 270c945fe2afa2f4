"""Composition root of the payments service."""

import secrets
from functools import partial

from fastapi import FastAPI

from libs.kit.app import create_service_app
from libs.kit.retry import RetryPolicy
from libs.kit.runtime import Runtime
from libs.kit.transactions import DatabaseUnitOfWork
from libs.kit.worker import Worker
from services.payments import api, domain, handlers, metrics, service
from services.payments.adapters import PaymentProvider, SandboxProvider, StripeProvider
from services.payments.db import PgSandboxLedger, ReconcileReads, Store
from services.payments.service import Charger
from services.payments.settings import PaymentsSettings


def configured_provider(settings: PaymentsSettings, runtime: Runtime) -> PaymentProvider:
    """The PSP `settings.payment_provider` names."""
    if settings.payment_provider == "stripe":
        # The settings refuse to load without both secrets.
        assert settings.stripe_api_key and settings.stripe_webhook_secret
        return StripeProvider(
            settings.stripe_api_key.get_secret_value(),
            settings.stripe_webhook_secret.get_secret_value(),
            api_base=settings.stripe_api_base,
            timeout_s=settings.stripe_timeout_s,
            max_network_retries=settings.stripe_max_network_retries,
            webhook_tolerance_s=settings.webhook_tolerance_s,
        )
    # The sandbox's ledger shares our database but never our transactions.
    secret = settings.sandbox_webhook_secret
    return SandboxProvider(
        PgSandboxLedger(runtime.db),
        slow_s=settings.sandbox_slow_s,
        webhook_secret=secret.get_secret_value() if secret else secrets.token_hex(32),
        webhook_tolerance_s=settings.webhook_tolerance_s,
        lost_answer_share=settings.sandbox_lost_answer_share,
        lost_answer_calls=settings.capture_attempts,
    )


def create_app(
    settings: PaymentsSettings | None = None, provider: PaymentProvider | None = None
) -> FastAPI:
    """`provider` replaces the configured one (a real PSP adapter, or a fake in tests)."""
    settings = settings or PaymentsSettings()
    runtime = Runtime(settings)
    metrics.install()  # issue 14
    if provider is None:
        provider = configured_provider(settings, runtime)
    make_store = Store.for_provider(provider.name)
    uow = DatabaseUnitOfWork(runtime.db, settings.service_name, make_store)
    charger = Charger(
        uow,
        provider,
        RetryPolicy(
            attempts=settings.capture_attempts,
            initial_s=settings.capture_backoff_initial_s,
            max_s=settings.capture_backoff_max_s,
        ),
        lease_s=settings.intent_lease_s,
        concurrency=settings.provider_concurrency,
        policy=settings.capture_policy,
    )
    worker = Worker("payments-charger", charger.step, settings.intent_poll_interval_s)
    hold_sweeper = Worker(
        "payments-hold-sweeper",
        lambda: service.lapse_holds(uow, settings.hold_lifetime_s),
        settings.hold_sweep_interval_s,
    )
    charger.wake = worker.wake
    handlers.register(runtime.processor, worker.wake, make_store, charger)
    add_reconciliation(runtime, settings)  # issue 14 part 6

    async def start_charger(runtime: Runtime) -> None:
        runtime.start_worker(worker)
        if settings.capture_policy == "on_shipment":
            runtime.start_worker(hold_sweeper)

    async def stop_charger(runtime: Runtime) -> None:
        await charger.stop()
        if isinstance(provider, StripeProvider):
            await provider.aclose()

    app = create_service_app(
        runtime,
        routers=[api.router],
        title="Backroom payments",
        on_startup=start_charger,
        on_shutdown=stop_charger,
    )
    app.state.charger = charger
    app.state.provider = provider
    app.state.payments_uow = uow
    return app


# --- reconciliation (issue 14) ---


def add_reconciliation(runtime: Runtime, settings: PaymentsSettings) -> None:
    check = partial(
        service.reconcile_captures,
        ReconcileReads(runtime.db),
        settings.reconcile_capture_window_s,
        settings.reconcile_refund_grace_s,
        settings.reconcile_limit,
    )
    runtime.reconciler.add("captures", check, domain.RECONCILIATION_KINDS)
