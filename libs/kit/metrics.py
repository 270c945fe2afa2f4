"""Pipeline metrics that need a look at state (issue 14 part 3): consumer lag per partition,
outbox depth and oldest row age, and whatever a service adds (overdue orders, expired
reservations), each read by a probe that a poller runs on a timer, never on the hot path; and
observers of emitted events (payments' captures and refunds), run after the commit.

Every metric name of the system starts with `backroom_`; deploy/prometheus/rules and
deploy/grafana/dashboards name only metrics defined in code (tests/unit/deploy checks)."""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import TopicPartition
from prometheus_client import Counter, Gauge
from pydantic import BaseModel

log = logging.getLogger(__name__)

CONSUMER_LAG = Gauge(
    "backroom_consumer_lag",
    "Records on a partition not yet committed by the consumer group (end offset - committed)",
    ["group", "topic", "partition"],
)
OUTBOX_DEPTH = Gauge("backroom_outbox_depth", "Outbox rows not yet published")
OUTBOX_OLDEST_AGE = Gauge(
    "backroom_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox row (0 if none)"
)
DLQ_PUBLISHED = Counter(
    "backroom_dlq_published_total",
    "Records parked on a dead-letter topic, by the consumer group that gave up and source topic",
    ["group", "topic"],
)
# Defined here for the reconciliation jobs (issue 14 part 6): open findings of each kind.
RECONCILIATION_FINDINGS = Gauge(
    "backroom_reconciliation_findings",
    "Inconsistencies the last reconciliation run found, by kind",
    ["kind"],
)
PROBE_FAILURES = Counter(
    "backroom_metrics_probe_failures_total", "Metric probes that raised", ["probe"]
)

Probe = Callable[[], Awaitable[None]]


# --- consumer lag ----------------------------------------------------------------------------


class LagConsumer(Protocol):
    """What the lag probe asks of an aiokafka consumer."""

    def assignment(self) -> Any: ...

    async def end_offsets(
        self, partitions: list[TopicPartition]
    ) -> Mapping[TopicPartition, int]: ...

    async def beginning_offsets(
        self, partitions: list[TopicPartition]
    ) -> Mapping[TopicPartition, int]: ...

    async def committed(self, partition: TopicPartition) -> int | None: ...


async def partition_lag(
    consumer: LagConsumer, known_committed: Mapping[TopicPartition, int]
) -> dict[TopicPartition, int]:
    """Lag of each partition assigned to `consumer`: its end offset minus the group's committed
    offset. `known_committed` is what this process committed itself (no broker round trip); a
    partition missing from it is asked of the broker once per pass, and one the group never
    committed counts from its first retained offset (the group reads from the earliest)."""
    assigned = sorted(consumer.assignment() or (), key=lambda tp: (tp.topic, tp.partition))
    if not assigned:
        return {}
    ends = await consumer.end_offsets(assigned)
    committed: dict[TopicPartition, int | None] = {}
    for tp in assigned:
        committed[tp] = known_committed.get(tp)
        if committed[tp] is None:
            committed[tp] = await consumer.committed(tp)
    never = [tp for tp, offset in committed.items() if offset is None]
    if never:
        committed.update(await consumer.beginning_offsets(never))
    return {tp: max(0, ends.get(tp, 0) - (committed[tp] or 0)) for tp in assigned}


@dataclass
class LagSource:
    """One consumer group of this process: its group id, how to get its consumer (None before
    it started), and the offsets it committed (OffsetCommitter.committed)."""

    group: str
    consumer: Callable[[], LagConsumer | None]
    committed: Mapping[TopicPartition, int]


def lag_probe(sources: Callable[[], Iterable[LagSource]]) -> Probe:
    """A probe setting backroom_consumer_lag for every partition this process's groups hold;
    partitions it no longer holds are dropped (their new owner reports them)."""
    reported: set[tuple[str, str, str]] = set()

    async def probe() -> None:
        now: set[tuple[str, str, str]] = set()
        for source in sources():
            consumer = source.consumer()
            if consumer is None:
                continue
            for tp, lag in (await partition_lag(consumer, source.committed)).items():
                labels = (source.group, tp.topic, str(tp.partition))
                CONSUMER_LAG.labels(*labels).set(lag)
                now.add(labels)
        for labels in reported - now:
            with contextlib.suppress(KeyError):
                CONSUMER_LAG.remove(*labels)
        reported.clear()
        reported.update(now)

    return probe


# --- outbox ----------------------------------------------------------------------------------


def outbox_probe(stats: Callable[[], Awaitable[tuple[int, float]]]) -> Probe:
    """A probe setting outbox depth and oldest row age from `stats` (one query: Database's
    outbox_stats)."""

    async def probe() -> None:
        depth, oldest_s = await stats()
        OUTBOX_DEPTH.set(depth)
        OUTBOX_OLDEST_AGE.set(oldest_s)

    return probe


def gauge_probe(gauge: Gauge, read: Callable[[], Awaitable[float]]) -> Probe:
    """A probe setting an unlabelled gauge to what `read` returns (a service's count query)."""

    async def probe() -> None:
        gauge.set(await read())

    return probe


# --- the poller ------------------------------------------------------------------------------


class MetricsPoller:
    """Runs every probe once per `interval_s`, one after the other; a failing probe is logged
    and counted, and the others still run."""

    def __init__(self, interval_s: float = 15.0) -> None:
        self.interval_s = interval_s
        self.probes: dict[str, Probe] = {}

    def add(self, name: str, probe: Probe) -> None:
        self.probes[name] = probe

    async def poll_once(self) -> None:
        for name, probe in list(self.probes.items()):
            try:
                await probe()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                PROBE_FAILURES.labels(name).inc()
                log.warning("metrics probe %s failed: %r", name, exc)

    async def run(self) -> None:
        while True:
            await self.poll_once()
            await asyncio.sleep(self.interval_s)


# --- observers of emitted events ---------------------------------------------------------------

EmitObserver = Callable[[Any], None]
EMIT_OBSERVERS: dict[type[BaseModel], list[EmitObserver]] = {}


def observe_emitted(model: type[BaseModel], observer: EmitObserver) -> None:
    """Call `observer(data)` for every event of type `model` this process emits, once the
    transaction that wrote it has committed (never for a rolled-back one). One dict lookup per
    emit for the others."""
    EMIT_OBSERVERS.setdefault(model, []).append(observer)


def emitted_callback(data: BaseModel) -> Callable[[], None] | None:
    """The after-commit callback for `data`'s observers, or None when it has none."""
    observers = EMIT_OBSERVERS.get(type(data))
    if not observers:
        return None

    def notify() -> None:
        for observer in observers:
            try:
                observer(data)
            except Exception as exc:  # a metric never breaks the use case
                log.warning("emit observer failed: %r", exc)

    return notify
