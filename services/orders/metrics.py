"""Orders' business metrics (issue 14): checkout outcomes and how long they took, and pending
orders past their reservation deadline. Counted after the commit that made the change."""

from collections.abc import Callable
from datetime import UTC, datetime

from prometheus_client import Counter, Gauge, Histogram

ORDERS = Counter(
    "backroom_orders_total",
    "Orders reaching an outcome: confirmed, rejected or cancelled, with the reason (none for"
    " confirmed)",
    ["outcome", "reason", "channel"],
)
ORDER_SECONDS = Histogram(
    "backroom_order_completion_seconds",
    "Time from an order being placed to its outcome (confirmed, rejected, cancelled)",
    ["outcome"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300, 900, 3600, 86400),
)
PENDING_OVERDUE = Gauge(
    "backroom_orders_pending_overdue",
    "Pending orders whose reservation deadline has passed (the deadline sweep rejects them)",
)
OUTCOMES = ("confirmed", "rejected", "cancelled")


def outcome_recorder(
    outcome: str, reason: str | None, channel: str, placed_at: datetime | None
) -> Callable[[], None]:
    """The after-commit callback counting one order's outcome (and its latency when the time it
    was placed is known)."""

    def record() -> None:
        ORDERS.labels(outcome, reason or "none", channel).inc()
        if placed_at is not None:
            seconds = (datetime.now(UTC) - placed_at).total_seconds()
            ORDER_SECONDS.labels(outcome).observe(max(0.0, seconds))

    return record
