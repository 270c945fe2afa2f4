"""Payments' knobs: the provider, how hard a capture is retried, and the sandbox's slow token."""

from typing import Literal

from pydantic import Field

from libs.kit.settings import ServiceSettings


class PaymentsSettings(ServiceSettings):
    service_name: str = "payments"
    http_port: int = 8105

    payment_provider: Literal["sandbox"] = "sandbox"
    # Provider calls per handler attempt when the provider answers with a transient error
    # (same idempotency key each time); then the kit retries the message or dead-letters it.
    capture_attempts: int = Field(default=4, ge=1)
    capture_backoff_initial_s: float = 0.2
    capture_backoff_max_s: float = 2.0
    # How long the sandbox takes to answer `tok_slowAuthorization`.
    sandbox_slow_s: float = 10.0
