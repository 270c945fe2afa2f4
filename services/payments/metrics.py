"""Payments' business metrics (issue 14): captures, refunds and failures, and the money they
moved, counted in minor units per currency once the transaction that recorded them commits
(libs/kit/metrics.observe_emitted: no extra work on the payment path)."""

from prometheus_client import Counter

from libs.events.payments import PaymentCaptured, PaymentFailed, PaymentRefunded
from libs.kit.metrics import EMIT_OBSERVERS, observe_emitted

CAPTURES = Counter("backroom_payments_captured_total", "Payments captured", ["currency"])
CAPTURED_MINOR = Counter(
    "backroom_payments_captured_minor_total",
    "Money captured, in minor units (cents) of the currency",
    ["currency"],
)
# No reason label: an operator's refund gives free text.
REFUNDS = Counter("backroom_payments_refunded_total", "Refunds (full or partial)", ["currency"])
REFUNDED_MINOR = Counter(
    "backroom_payments_refunded_minor_total",
    "Money refunded, in minor units (cents) of the currency",
    ["currency"],
)
FAILURES = Counter("backroom_payments_failed_total", "Payments that failed", ["reason"])


def captured(data: PaymentCaptured) -> None:
    CAPTURES.labels(data.amount.currency).inc()
    CAPTURED_MINOR.labels(data.amount.currency).inc(data.amount.amount)


def refunded(data: PaymentRefunded) -> None:
    REFUNDS.labels(data.amount.currency).inc()
    REFUNDED_MINOR.labels(data.amount.currency).inc(data.amount.amount)


def failed(data: PaymentFailed) -> None:
    FAILURES.labels(data.reason).inc()


def install() -> None:
    """Observe this process's emitted payment events (once, however many apps are built)."""
    for model, observer in (
        (PaymentCaptured, captured),
        (PaymentRefunded, refunded),
        (PaymentFailed, failed),
    ):
        if observer not in EMIT_OBSERVERS.get(model, []):
            observe_emitted(model, observer)
