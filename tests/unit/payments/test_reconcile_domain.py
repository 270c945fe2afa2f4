"""Payments' reconciliation rules: a closed order's capture owed back after the grace period,
and refunds above the capture."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from services.payments import domain
from services.payments.domain import CaptureTally

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
CAPTURE = CaptureTally("p-1", "o-1", "captured", 1000, "EUR", None, None, 0)


def kinds(t: CaptureTally) -> list[str]:
    return [f.kind for f in domain.capture_findings([t], NOW, 600)]


def closed(ago_s: int, status: str = "captured") -> CaptureTally:
    return replace(
        CAPTURE, closed_reason="rejected", closed_at=NOW - timedelta(seconds=ago_s), status=status
    )


def test_an_open_capture_is_no_finding() -> None:
    assert kinds(CAPTURE) == []
    assert kinds(replace(CAPTURE, refunded=1000, status="refunded")) == []


def test_a_closed_orders_capture_is_owed_back_after_the_grace_period() -> None:
    assert kinds(closed(601)) == [domain.CAPTURE_NOT_REFUNDED]
    assert kinds(closed(601, "partially_refunded")) == [domain.CAPTURE_NOT_REFUNDED]
    assert kinds(closed(599)) == []
    assert kinds(closed(3600, "refunded")) == []
    [finding] = domain.capture_findings([closed(601)], NOW, 600)
    assert finding.ids == {"payment_id": "p-1", "order_id": "o-1"}


def test_refunds_above_the_capture_are_a_finding() -> None:
    assert kinds(replace(CAPTURE, refunded=1001)) == [domain.REFUNDS_EXCEED_CAPTURE]
    assert kinds(replace(CAPTURE, refunded=1000)) == []
