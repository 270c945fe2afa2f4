"""Composition root of the payments service."""

from fastapi import FastAPI

from libs.kit.app import create_service_app
from libs.kit.runtime import Runtime
from services.payments import api, handlers
from services.payments.domain import PaymentProvider
from services.payments.service import Charging, PgSandboxLedger, SandboxProvider
from services.payments.settings import PaymentsSettings


def create_app(
    settings: PaymentsSettings | None = None, provider: PaymentProvider | None = None
) -> FastAPI:
    """`provider` replaces the configured one (a real PSP adapter, or a fake in tests)."""
    settings = settings or PaymentsSettings()
    runtime = Runtime(settings)
    if provider is None:
        # Only the sandbox exists so far (settings.payment_provider == "sandbox"); its ledger
        # shares our database but never our transactions.
        provider = SandboxProvider(PgSandboxLedger(runtime.db), slow_s=settings.sandbox_slow_s)
    charging = Charging(
        provider,
        attempts=settings.capture_attempts,
        backoff_initial_s=settings.capture_backoff_initial_s,
        backoff_max_s=settings.capture_backoff_max_s,
    )
    handlers.register(runtime.processor, charging)
    return create_service_app(runtime, routers=[api.router], title="Backroom payments")
