"""Orders' reconciliation rule: a pending order past its deadline and the grace period."""

from datetime import UTC, datetime, timedelta

from services.orders import domain
from services.orders.domain import OverdueOrder

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
GRACE = timedelta(seconds=60)


def test_only_orders_past_deadline_and_grace_are_overdue() -> None:
    late = OverdueOrder("o-late", NOW - timedelta(seconds=61), True)
    in_grace = OverdueOrder("o-grace", NOW - timedelta(seconds=59), False)
    [finding] = domain.overdue_findings([late, in_grace], NOW, GRACE)
    assert (finding.kind, finding.ids) == (domain.ORDER_OVERDUE, {"order_id": "o-late"})
    assert "stock reserved" in finding.detail and finding.since == late.reservation_deadline
