"""Payments' knobs: the provider, how hard a call is retried, the charger, the sandbox's slow token."""

from typing import Any, Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator

from libs.kit.settings import ServiceSettings


class PaymentsSettings(ServiceSettings):
    service_name: str = "payments"
    http_port: int = 8105

    # The PSP: the sandbox (deterministic test tokens, no account needed) or Stripe.
    payment_provider: Literal["sandbox", "stripe"] = "sandbox"
    # Stripe (payment_provider = "stripe"): a secret key (sk_live_/sk_test_, or a restricted
    # rk_ key allowed PaymentIntents, PaymentMethods and Refunds) and the signing secret (whsec_)
    # of the webhook endpoint; both from the environment or a secret, never logged.
    stripe_api_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    stripe_api_base: str = "https://api.stripe.com"
    # One HTTP request to Stripe; its own retries stay off (0): RetryPolicy retries with the
    # same idempotency key, and a lease ends a claim that hangs.
    stripe_timeout_s: float = Field(default=20.0, gt=0)
    stripe_max_network_retries: int = Field(default=0, ge=0)
    # When the money is taken: `immediate` (captured once the stock is reserved, the default) or
    # `on_shipment` (authorized then, the order confirmed on the authorization, captured when it
    # ships, the hold released if it closes first).
    capture_policy: Literal["immediate", "on_shipment"] = "immediate"
    # A hold older than this whose order has not shipped is given up (PaymentFailed
    # authorization_expired: orders cancels the order); card authorizations last about 7 days.
    hold_lifetime_s: float = Field(default=6 * 24 * 3600.0, gt=0)
    hold_sweep_interval_s: float = Field(default=60.0, gt=0)
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
    # Fault injection for `make faults`: the share of capture keys whose first answers the
    # sandbox loses after taking the money (0: none, the default).
    sandbox_lost_answer_share: float = Field(default=0.0, ge=0.0, le=1.0)
    # Inbound provider webhooks (Stripe's, the sandbox's) whose signed timestamp is older (or
    # newer) than this are refused: a captured delivery cannot be replayed later.
    webhook_tolerance_s: int = Field(default=300, gt=0)

    @field_validator("stripe_api_key", "stripe_webhook_secret", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        """An empty variable (a compose `${VAR:-}`, an empty Secret key) means not configured."""
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _stripe_configured(self) -> Self:
        """Stripe without its key or webhook secret refuses to start (no usable default)."""
        if self.payment_provider == "stripe":
            for name in ("stripe_api_key", "stripe_webhook_secret"):
                if getattr(self, name) is None:
                    raise ValueError(
                        f"BACKROOM_{name.upper()} is required with BACKROOM_PAYMENT_PROVIDER=stripe"
                    )
        return self

    # --- reconciliation (issue 14) ---
    # Captures made within this window are reconciled; a capture of an order closed (rejected,
    # cancelled) this long ago and still not refunded is a finding.
    reconcile_capture_window_s: float = 7 * 86400.0
    reconcile_refund_grace_s: float = 600.0
