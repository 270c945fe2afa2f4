"""Payments' knobs: the provider, how hard a call is retried, the charger, the sandbox's slow token."""

from typing import Literal

from pydantic import Field, SecretStr

from libs.kit.settings import ServiceSettings


class PaymentsSettings(ServiceSettings):
    service_name: str = "payments"
    http_port: int = 8105

    payment_provider: Literal["sandbox"] = "sandbox"
    # Provider calls per claim when the provider answers with a transient error (same
    # idempotency key each time); then the call stays owed until its lease ends.
    capture_attempts: int = Field(default=4, ge=1)
    capture_backoff_initial_s: float = 0.2
    capture_backoff_max_s: float = 2.0
    # How long a claim holds an owed provider call: longer than a call with its retries takes
    # (the slow sandbox token included), or another claim repeats it (harmless: same key). It is
    # also how long a call whose claimer died waits before it is claimed again.
    intent_lease_s: float = Field(default=30.0, gt=0)
    # The charger's safety-net poll (a commit that makes a call owed wakes it at once).
    intent_poll_interval_s: float = Field(default=1.0, gt=0)
    # Provider calls in flight at once per process.
    provider_concurrency: int = Field(default=16, ge=1)
    # How long the sandbox takes to answer `tok_slowAuthorization`.
    sandbox_slow_s: float = 10.0
    # What the sandbox signs its webhooks with (3-D Secure verdicts). Unset: a random one per
    # process, so only the replica that simulated a verdict accepts its webhook; set it (the
    # same on every replica) where more than one runs.
    sandbox_webhook_secret: SecretStr | None = None
    # Inbound provider webhooks older (or newer) than this are refused (replays).
    webhook_tolerance_s: int = Field(default=300, gt=0)
