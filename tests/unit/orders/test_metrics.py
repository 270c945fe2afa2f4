"""Orders by outcome and reason, and the placed-to-outcome latency, counted once the change
commits (issue 14)."""

from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY

from services.orders import metrics, service
from tests.unit.orders.fakes import ALICE, World


def count(outcome: str, reason: str, channel: str = "web") -> float:
    labels = {"outcome": outcome, "reason": reason, "channel": channel}
    return REGISTRY.get_sample_value("backroom_orders_total", labels) or 0.0


def latency_count(outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "backroom_order_completion_seconds_count", {"outcome": outcome}
    )
    return value or 0.0


async def test_a_confirmation_and_a_rejection_are_counted_after_their_commit() -> None:
    world = World()
    confirmed, rejected = count("confirmed", "none"), count("rejected", "out_of_stock")
    oid = await world.placed()
    tx = world.tx()
    assert await service.stock_reserved(tx, oid)
    tx.commit()
    tx = world.tx()
    assert await service.payment_captured(tx, oid, world.clock)
    assert count("confirmed", "none") == confirmed  # not before the commit
    tx.commit()
    assert count("confirmed", "none") == confirmed + 1

    other = await world.placed()
    tx = world.tx()
    assert await service.stock_reservation_failed(tx, other)
    tx.commit()
    assert count("rejected", "out_of_stock") == rejected + 1
    # A duplicate fact changes nothing, so counts nothing.
    tx = world.tx()
    assert not await service.stock_reservation_failed(tx, other)
    tx.commit()
    assert count("rejected", "out_of_stock") == rejected + 1


async def test_a_cancellation_is_counted_with_its_reason() -> None:
    world = World()
    oid = await world.confirmed()
    before = count("cancelled", "found_cheaper")
    await service.request_cancellation(world.tx(), ALICE, oid, "found_cheaper")
    await service.stock_released(world.tx(), oid, "cancelled")
    tx = world.tx()
    assert await service.payment_returned(tx, oid)
    tx.commit()
    assert count("cancelled", "found_cheaper") == before + 1


def test_the_latency_is_from_placing_to_the_outcome() -> None:
    before = latency_count("rejected")
    buckets = "backroom_order_completion_seconds_bucket"
    le2 = REGISTRY.get_sample_value(buckets, {"outcome": "rejected", "le": "2.0"}) or 0.0
    le3 = REGISTRY.get_sample_value(buckets, {"outcome": "rejected", "le": "3.0"}) or 0.0
    placed = datetime.now(UTC) - timedelta(seconds=2.5)
    metrics.outcome_recorder("rejected", "payment_declined", "web", placed)()
    assert latency_count("rejected") == before + 1
    assert REGISTRY.get_sample_value(buckets, {"outcome": "rejected", "le": "2.0"}) == le2
    assert REGISTRY.get_sample_value(buckets, {"outcome": "rejected", "le": "3.0"}) == le3 + 1
