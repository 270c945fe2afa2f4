"""The pipeline metrics an operator reads: consumer lag per partition, outbox depth and age, the
poller that refreshes them, and business counters fed by emitted events after the commit."""

from collections.abc import Mapping
from typing import Any

from aiokafka import TopicPartition
from prometheus_client import REGISTRY

from libs.events.common import Money
from libs.events.payments import PaymentCaptured, PaymentFailed, PaymentRefunded
from libs.kit import metrics
from libs.kit.db import _AFTER_COMMIT
from libs.kit.metrics import LagSource, MetricsPoller, lag_probe, outbox_probe, partition_lag
from libs.kit.outbox import Emitter, OutboxBuffer
from services.payments import metrics as payments_metrics


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class FakeConsumer:
    """Offsets as a broker would answer them; counts the committed-offset round trips."""

    def __init__(
        self,
        ends: dict[TopicPartition, int],
        committed: dict[TopicPartition, int | None],
        beginnings: dict[TopicPartition, int] | None = None,
    ) -> None:
        self.ends = ends
        self.broker_committed = committed
        self.beginnings = beginnings or {}
        self.committed_calls = 0

    def assignment(self) -> set[TopicPartition]:
        return set(self.ends)

    async def end_offsets(self, partitions: list[TopicPartition]) -> Mapping[TopicPartition, int]:
        return {tp: self.ends[tp] for tp in partitions}

    async def beginning_offsets(
        self, partitions: list[TopicPartition]
    ) -> Mapping[TopicPartition, int]:
        return {tp: self.beginnings.get(tp, 0) for tp in partitions}

    async def committed(self, partition: TopicPartition) -> int | None:
        self.committed_calls += 1
        return self.broker_committed.get(partition)


A0, A1, B0 = TopicPartition("orders", 0), TopicPartition("orders", 1), TopicPartition("pay", 0)


async def test_lag_is_end_minus_committed_using_what_this_process_committed_first() -> None:
    consumer = FakeConsumer({A0: 120, A1: 50, B0: 10}, {A1: 45, B0: None}, {B0: 4})
    lag = await partition_lag(consumer, {A0: 100})
    assert lag == {A0: 20, A1: 5, B0: 6}  # B0 never committed: counted from its first offset
    assert consumer.committed_calls == 2  # A0 came from the committer, not the broker


async def test_a_consumer_without_partitions_has_no_lag() -> None:
    assert await partition_lag(FakeConsumer({}, {}), {}) == {}


async def test_the_lag_probe_reports_held_partitions_and_drops_revoked_ones() -> None:
    consumer = FakeConsumer({A0: 30, A1: 7}, {A0: 10, A1: 7})
    committed: dict[TopicPartition, int] = {}
    probe = lag_probe(lambda: [LagSource("g-test", lambda: consumer, committed)])
    await probe()
    assert sample("backroom_consumer_lag", group="g-test", topic="orders", partition="0") == 20
    assert sample("backroom_consumer_lag", group="g-test", topic="orders", partition="1") == 0
    consumer.ends = {A1: 9}  # A0 went to another replica in a rebalance
    await probe()
    assert (
        REGISTRY.get_sample_value(
            "backroom_consumer_lag", {"group": "g-test", "topic": "orders", "partition": "0"}
        )
        is None
    )
    assert sample("backroom_consumer_lag", group="g-test", topic="orders", partition="1") == 2


async def test_a_group_whose_consumer_has_not_started_is_skipped() -> None:
    probe = lag_probe(lambda: [LagSource("g-idle", lambda: None, {})])
    await probe()
    assert not [
        s
        for m in REGISTRY.collect()
        for s in m.samples
        if s.name == "backroom_consumer_lag" and s.labels.get("group") == "g-idle"
    ]


async def test_the_outbox_probe_sets_depth_and_oldest_age() -> None:
    async def stats() -> tuple[int, float]:
        return 42, 17.5

    await outbox_probe(stats)()
    assert sample("backroom_outbox_depth") == 42
    assert sample("backroom_outbox_oldest_age_seconds") == 17.5


async def test_a_failing_probe_is_counted_and_the_others_still_run() -> None:
    ran: list[str] = []

    async def broken() -> None:
        raise RuntimeError("database away")

    async def fine() -> None:
        ran.append("fine")

    poller = MetricsPoller(interval_s=60)
    poller.add("t-broken", broken)
    poller.add("t-fine", fine)
    before = sample("backroom_metrics_probe_failures_total", probe="t-broken")
    await poller.poll_once()
    assert ran == ["fine"]
    assert sample("backroom_metrics_probe_failures_total", probe="t-broken") == before + 1


class FakeSession:
    def __init__(self) -> None:
        self.info: dict[str, Any] = {}

    def commit(self) -> None:
        for callback in self.info.pop(_AFTER_COMMIT, []):
            callback()


def eur(cents: int) -> Money:
    return Money(amount=cents, currency="EUR")


async def test_payments_count_captures_refunds_and_amounts_only_once_committed() -> None:
    payments_metrics.install()
    payments_metrics.install()  # a second app in the same process: still counted once
    session = FakeSession()
    emitter = Emitter(session, "payments", "c-1", buffer=OutboxBuffer())  # type: ignore[arg-type]
    captured = sample("backroom_payments_captured_total", currency="EUR")
    captured_minor = sample("backroom_payments_captured_minor_total", currency="EUR")
    refunded = sample("backroom_payments_refunded_total", currency="EUR")
    refunded_minor = sample("backroom_payments_refunded_minor_total", currency="EUR")
    failed = sample("backroom_payments_failed_total", reason="payment_declined")

    await emitter.emit(
        PaymentCaptured(order_id="o", payment_id="p1", amount=eur(3599), provider_ref="r"),
        subject="o",
    )
    await emitter.emit(
        PaymentCaptured(order_id="o2", payment_id="p2", amount=eur(1000), provider_ref="r"),
        subject="o2",
    )
    await emitter.emit(
        PaymentRefunded(
            order_id="o", payment_id="p1", amount=eur(599), provider_ref="r", reason="x"
        ),
        subject="o",
    )
    await emitter.emit(
        PaymentFailed(order_id="o3", payment_id="p3", reason="payment_declined"), subject="o3"
    )
    assert sample("backroom_payments_captured_total", currency="EUR") == captured  # not yet
    session.commit()
    assert sample("backroom_payments_captured_total", currency="EUR") == captured + 2
    assert sample("backroom_payments_captured_minor_total", currency="EUR") == captured_minor + 4599
    assert sample("backroom_payments_refunded_total", currency="EUR") == refunded + 1
    assert sample("backroom_payments_refunded_minor_total", currency="EUR") == refunded_minor + 599
    assert sample("backroom_payments_failed_total", reason="payment_declined") == failed + 1


async def test_a_rolled_back_capture_is_not_counted() -> None:
    payments_metrics.install()
    session = FakeSession()
    emitter = Emitter(session, "payments", "c-1", buffer=OutboxBuffer())  # type: ignore[arg-type]
    before = sample("backroom_payments_captured_total", currency="USD")
    await emitter.emit(
        PaymentCaptured(
            order_id="o", payment_id="p", amount=Money(amount=5, currency="USD"), provider_ref="r"
        ),
        subject="o",
    )
    session.info.clear()  # rolled back: after-commit callbacks never run
    assert sample("backroom_payments_captured_total", currency="USD") == before


def test_the_reconciliation_findings_gauge_exists_for_the_jobs_to_come() -> None:
    metrics.RECONCILIATION_FINDINGS.labels("test_kind").set(0)
    assert sample("backroom_reconciliation_findings", kind="test_kind") == 0


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send_and_wait(self, topic: str, **_: Any) -> None:
        self.sent.append(topic)


async def test_a_dead_letter_is_counted_for_its_group_and_source_topic() -> None:
    from types import SimpleNamespace

    from libs.kit.inbox import EventProcessor

    producer = FakeProducer()
    processor = EventProcessor("g-dlq", None, producer)  # type: ignore[arg-type]
    record = SimpleNamespace(
        topic="backroom.test", partition=0, offset=7, key=b"k", value=b"{}", headers=[]
    )
    before = sample("backroom_dlq_published_total", group="g-dlq", topic="backroom.test")
    await processor.dead_letter(record, ValueError("bad"), attempts=5)
    assert producer.sent == ["backroom.test.dlq"]
    assert (
        sample("backroom_dlq_published_total", group="g-dlq", topic="backroom.test") == before + 1
    )
