"""Inventory's reconciliation rules: which tallies disagree, and which reservations are held too
long past their expiry."""

from datetime import UTC, datetime, timedelta

from services.inventory import domain
from services.inventory.domain import StockTally

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def tally(**overrides: int) -> StockTally:
    counts = {
        "on_hand": 10,
        "reserved": 3,
        "location_on_hand": 10,
        "location_reserved": 3,
        "moved_on_hand": 10,
        "moved_reserved": 3,
        "allocated": 3,
    }
    counts.update(overrides)
    return StockTally(sku="s-1", updated_at=NOW, **counts)


def kinds(t: StockTally) -> list[str]:
    return [f.kind for f in domain.stock_findings([t])]


def test_consistent_counts_are_no_finding() -> None:
    assert kinds(tally()) == []


def test_each_disagreement_is_its_own_kind() -> None:
    assert kinds(tally(location_on_hand=9)) == [domain.STOCK_LOCATION_MISMATCH]
    assert kinds(tally(location_reserved=2)) == [domain.STOCK_LOCATION_MISMATCH]
    assert kinds(tally(moved_on_hand=12)) == [domain.MOVEMENTS_MISMATCH]
    assert kinds(tally(allocated=1)) == [domain.RESERVED_MISMATCH]
    [finding] = domain.stock_findings([tally(allocated=1)])
    assert finding.ids == {"sku": "s-1"} and "reserved 3" in finding.detail


def test_a_reservation_is_held_too_long_only_past_expiry_and_grace() -> None:
    grace = timedelta(seconds=60)
    held = [("o-late", NOW - timedelta(seconds=61)), ("o-grace", NOW - timedelta(seconds=59))]
    [finding] = domain.expired_held_findings(held, NOW, grace)
    assert (finding.kind, finding.ids) == (domain.RESERVATION_EXPIRED_HELD, {"order_id": "o-late"})
    assert set(domain.RECONCILIATION_KINDS) >= {finding.kind, *domain.STOCK_KINDS}
