"""One service process's moving parts (database, producer, consumers, outbox relay), started and
stopped together."""

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, Topic
from faststream.kafka.message import KafkaMessage
from sqlalchemy import text

from libs.kit.db import Database, outbox_stats, stuck_outbox_rows
from libs.kit.deadletters import dead_letter_hook, dlq_depth_probe
from libs.kit.inbox import EventProcessor, OffsetCommitter, gather_batch, rewind
from libs.kit.kafka import KafkaConnection, bootstrap_servers, ensure_topics, new_producer
from libs.kit.kafka_acl import writes
from libs.kit.metrics import LagConsumer, LagSource, MetricsPoller, lag_probe, outbox_probe
from libs.kit.outbox import OutboxRelay
from libs.kit.reconcile import OUTBOX_STUCK, Finding, Reconciler, outbox_findings
from libs.kit.retention import Pruner
from libs.kit.settings import ServiceSettings
from libs.kit.worker import Worker

log = logging.getLogger(__name__)


class Runtime:
    """Composition of the kit for one service process."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.service = settings.service_name
        self.db = Database.from_settings(settings)
        self.kafka = KafkaConnection.from_settings(settings)
        # aiokafka clients bind to the running loop, so the producer is made in start().
        self.producer: AIOKafkaProducer | None = None
        self.processor = EventProcessor(
            self.service,
            self.db,
            None,
            max_attempts=settings.consumer_max_attempts,
            backoff_initial_s=settings.consumer_backoff_initial_s,
            backoff_max_s=settings.consumer_backoff_max_s,
        )
        self.broker = KafkaBroker(
            bootstrap_servers(settings.kafka_bootstrap),
            client_id=self.service,
            security=self.kafka.faststream_security(),
            graceful_timeout=10.0,
            # How soon a consumer subscribed by pattern sees a new topic (issue 13).
            metadata_max_age_ms=int(settings.kafka_metadata_max_age_s * 1000),
            # Outside the `faststream` logger tree (which FastStream gives its own INFO handler),
            # so broker logs are ours (JSON, our level); its per-message "Received"/"Processed"
            # lines at DEBUG.
            logger=logging.getLogger(f"backroom.kafka.{self.service}"),
            log_level=logging.DEBUG,
            # No FastDepends: the one handler takes FastStream's message as it is (see
            # `_the_message`); resolving it as a Context dependency took a worker thread hop per
            # message.
            apply_types=False,
        )
        self.relay = OutboxRelay(
            self.db,
            None,
            settings.asyncpg_dsn(),
            poll_interval_s=settings.relay_poll_interval_s,
            batch_size=settings.relay_batch_size,
        )
        self.offsets = OffsetCommitter(settings.consumer_commit_interval_s)
        # Derived from the handlers registered on `processor` (by the service's main), at start.
        self.subscribed_topics: list[str] = []
        self.extra_tasks: list[asyncio.Task[Any]] = []
        self._offset_flusher: asyncio.Task[None] | None = None
        # When the consume handler began the batch it is in (None between batches): a handler
        # that never returns stops the service's whole consumer while the process looks fine.
        self.handling_since: float | None = None
        self._watchdog: asyncio.Task[None] | None = None
        # Issue 14: state gauges read on a timer (services add their own probes before start).
        self.metrics = MetricsPoller(settings.metrics_interval_s)
        self.metrics.add("outbox", outbox_probe(lambda: outbox_stats(self.db)))
        self.metrics.add("consumer_lag", lag_probe(lambda: lag_sources(self)))
        self.committers: dict[str, OffsetCommitter] = {self.service: self.offsets}
        self.reconciler = new_reconciler(self)  # issue 14 part 6

        self.retention = install_dead_letters_and_retention(self)

    def _subscribe(self, topics: list[str]) -> None:
        """One consumer for all the service's topics: one fetch loop, one group member, and
        records of several topics (the facts one order's next step waits for) can share a
        transaction. Order holds per partition, which is all Kafka promises anyway."""
        runtime = self
        processor = self.processor
        offsets = self.offsets
        batch_max = self.settings.consumer_batch_max
        linger_s = self.settings.consumer_linger_ms / 1000

        async def consume(msg: KafkaMessage) -> None:
            record = msg.raw_message
            assert not isinstance(record, tuple)
            # What the consumer holds, and what comes within the linger, goes along in the same
            # transaction.
            runtime.handling_since = time.monotonic()
            try:
                batch = await gather_batch(
                    msg.consumer, record, batch_max, linger_s, processor.wants
                )
                try:
                    outcomes = await processor.process_batch(batch)
                except BaseException:
                    rewind(msg.consumer, batch)  # not applied, so not skipped either: read again
                    raise
                await offsets.done(msg.consumer, batch, outcomes)
            finally:
                runtime.handling_since = None

        consume.__name__ = f"consume_{self.service}"
        self.broker.subscriber(
            *(Topic(topic, declare=False) for topic in topics),
            group_id=self.service,
            **consumer_options(self.settings),
        )(consume)

    def start_worker(self, worker: Worker) -> None:
        """Run one of the service's background workers for as long as the runtime runs."""
        self.extra_tasks.append(asyncio.create_task(worker.run(), name=worker.name))

    async def start(self) -> None:
        if not self.subscribed_topics and self.processor.topics:
            self.subscribed_topics = self.processor.topics
            self._subscribe(self.subscribed_topics)
        # The topics this service produces to (its own, its dead letters): its principal may
        # create only those (libs/kit/kafka_acl.py); the rest are its owners' or `backroom topics`'.
        await ensure_topics(
            self.kafka,
            writes(self.service) or None,
            partitions=self.settings.topic_partitions,
            replication=self.settings.topic_replication,
        )
        self.producer = new_producer(self.kafka, self.service)
        await _retry_forever("kafka producer", self.producer.start)
        self.processor.producer = self.relay.producer = self.producer
        self.relay.start()
        await self.broker.start()
        self._offset_flusher = asyncio.create_task(self.offsets.run(), name="offset-commits")
        # `kill -USR1 <pid>` logs where every task of this process is waiting: the one way to
        # see which await a stuck consumer is in, without stopping it.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump_tasks)
        self._watchdog = asyncio.create_task(self._watch_consumer(), name="consumer-watchdog")
        if self.settings.metrics_interval_s > 0:
            self.extra_tasks.append(asyncio.create_task(self.metrics.run(), name="metrics"))
        if self.settings.reconcile_interval_s > 0:
            self.extra_tasks.append(asyncio.create_task(self.reconciler.run(), name="reconcile"))

        if self.settings.retention_interval_s > 0:
            self.extra_tasks.append(asyncio.create_task(self.retention.run(), name="retention"))
        log.info("%s runtime started", self.service)

    def consumer_stuck_s(self) -> float | None:
        """Seconds the consume handler has been in its current batch, once past
        `consumer_stuck_after_s`; None while it is fine."""
        since = self.handling_since
        if since is None:
            return None
        busy = time.monotonic() - since
        return busy if busy > self.settings.consumer_stuck_after_s else None

    def consumer_failure(self) -> str | None:
        """A consumer failure that never heals by itself, or None: aiokafka's group coordination
        task ended with an error (aiokafka does not restart it, and every fetch re-raises it, so
        FastStream retries forever without consuming). Reads aiokafka internals, defensively."""
        for subscriber in getattr(self.broker, "subscribers", ()):
            consumer = getattr(subscriber, "consumer", None)
            coordinator = getattr(consumer, "_coordinator", None)
            task = getattr(coordinator, "_coordination_task", None)
            if isinstance(task, asyncio.Future) and task.done() and not task.cancelled():
                error = task.exception()
                if error is not None:
                    return f"kafka group coordination ended: {error!r}"[:300]
        return None

    async def _watch_consumer(self) -> None:
        """Log (and dump every task's stack, once per episode) when the handler stays in one
        batch too long; /health/live then fails, so an orchestrator restarts the process."""
        reported: float | None = None
        failure_reported = False
        while True:
            await asyncio.sleep(min(10.0, self.settings.consumer_stuck_after_s / 2))
            failure = self.consumer_failure()
            if failure is not None and not failure_reported:
                log.error(
                    "%s consumer cannot recover, restart the process: %s", self.service, failure
                )
            failure_reported = failure is not None
            busy = self.consumer_stuck_s()
            if busy is None:
                reported = None
            elif reported != self.handling_since:
                reported = self.handling_since
                log.error("%s consumer stuck in one batch for %.0fs; tasks:", self.service, busy)
                dump_tasks()

    async def stop(self) -> None:
        background = [*self.extra_tasks, *([self._watchdog] if self._watchdog else [])]
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        if self._offset_flusher is not None:
            self._offset_flusher.cancel()
            await asyncio.gather(self._offset_flusher, return_exceptions=True)
        with contextlib.suppress(Exception):  # best effort: unflushed records are read again
            await self.offsets.flush()
        await self.broker.stop()
        await self.relay.stop()
        if self.producer is not None:
            await self.producer.stop()
        await self.db.dispose()

    async def readiness(self) -> dict[str, str]:
        """What /health/ready reports: each dependency 'ok' or the error."""
        checks: dict[str, str] = {}
        try:
            async with self.db.engine.connect() as conn:
                await asyncio.wait_for(conn.execute(text("SELECT 1")), timeout=2)
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"error: {exc!r}"[:300]
        try:
            ok = await self.broker.ping(timeout=2.0)
            checks["kafka"] = "ok" if ok else "error: broker did not answer"
        except Exception as exc:
            checks["kafka"] = f"error: {exc!r}"[:300]
        return checks


def dump_tasks() -> None:
    """Log, for every asyncio task of this process, the chain of awaits it is suspended in
    (outermost first, then what it waits on), at WARNING so it always shows. Task.print_stack
    would show only the task's own coroutine, not the awaits below it."""
    for task in asyncio.all_tasks():
        log.warning("task %s:\n%s", task.get_name(), "\n".join(await_chain(task)))


def await_chain(task: "asyncio.Task[Any]") -> list[str]:
    lines: list[str] = []
    awaited: Any = task.get_coro()
    while awaited is not None:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is None:  # a future, or a coroutine that is running or done
            lines.append(f"  waiting on {awaited!r}"[:300])
            break
        lines.append(f"  {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return lines


async def _the_message(msg: KafkaMessage) -> KafkaMessage:
    """The subscriber's decoder: the handler gets FastStream's message itself (record and
    consumer); the record's value is parsed once, by the inbox."""
    return msg


async def _retry_forever(what: str, start: Any) -> None:
    delay = 0.5
    while True:
        try:
            await start()
            return
        except Exception as exc:
            log.warning("%s not reachable yet (%s); retrying in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


# --- channel webhooks (issue 13) ---


def consumer_options(settings: ServiceSettings) -> dict[str, Any]:
    """How every consumer of a service is set up, whatever it reads: offsets committed by the
    kit after the database commit (libs/kit/inbox.py), a new group from the start."""
    return {
        "decoder": _the_message,
        "ack_policy": AckPolicy.MANUAL,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": 10_000,
        "heartbeat_interval_ms": 1_000,
        "max_poll_interval_ms": 300_000,
        "fetch_max_wait_ms": settings.kafka_fetch_max_wait_ms,
    }


class PatternConsumer:
    """A second consumer of a runtime, subscribed by a regular expression (topics created while
    the service runs, such as each sales channel's listing topic), in a consumer group of its
    own, handled by the runtime's processor (same inbox, retries and dead letters). Its offsets
    have their own committer (a committer serves one consumer). Topics are seen on a metadata
    refresh: `metadata_max_age_ms`, the broker's (ServiceSettings.kafka_metadata_max_age_s)."""

    def __init__(self, runtime: Runtime, pattern: str, group_id: str) -> None:
        self.pattern = pattern
        self.group_id = group_id
        self.offsets = OffsetCommitter(runtime.settings.consumer_commit_interval_s)
        runtime.committers[group_id] = self.offsets  # issue 14: its lag is reported too
        processor = runtime.processor
        offsets = self.offsets
        batch_max = runtime.settings.consumer_batch_max
        linger_s = runtime.settings.consumer_linger_ms / 1000

        async def consume(msg: KafkaMessage) -> None:
            record = msg.raw_message
            assert not isinstance(record, tuple)
            batch = await gather_batch(msg.consumer, record, batch_max, linger_s, processor.wants)
            try:
                outcomes = await processor.process_batch(batch)
            except BaseException:
                rewind(msg.consumer, batch)
                raise
            await offsets.done(msg.consumer, batch, outcomes)

        consume.__name__ = f"consume_{group_id.replace('.', '_').replace('-', '_')}"
        runtime.broker.subscriber(
            pattern=pattern,
            group_id=group_id,
            **consumer_options(runtime.settings),
        )(consume)

    async def run(self) -> None:
        """Background task (one of the runtime's extra tasks): commit its offsets every
        interval, and what is left when it is cancelled (the runtime stops it before the
        broker, so the consumer is still there)."""
        try:
            await self.offsets.run()
        finally:
            with contextlib.suppress(Exception):  # best effort: unflushed records are read again
                await self.offsets.flush()


# --- metrics (issue 14) ---


def lag_sources(runtime: Runtime) -> list[LagSource]:
    """Each consumer group of this process with its consumer (None before it started) and the
    offsets its committer committed."""
    sources: list[LagSource] = []
    for subscriber in getattr(runtime.broker, "subscribers", ()):
        group = getattr(subscriber, "group_id", None)
        committer = runtime.committers.get(group or "")
        if group and committer is not None:
            sources.append(LagSource(group, _consumer_of(subscriber), committer.committed))
    return sources


def _consumer_of(subscriber: Any) -> Callable[[], LagConsumer | None]:
    """The subscriber's aiokafka consumer as it is when asked (FastStream makes it at start)."""
    return lambda: getattr(subscriber, "consumer", None)


# --- reconciliation (issue 14) ---


def new_reconciler(runtime: Runtime) -> Reconciler:
    """The runtime's reconciler with the check every service has (outbox rows the relay has not
    published for too long); services add theirs in their composition root."""
    settings = runtime.settings
    reconciler = Reconciler(
        runtime.service, settings.reconcile_interval_s, settings.reconcile_first_run_s
    )

    async def outbox_check() -> list[Finding]:
        rows, now = await stuck_outbox_rows(
            runtime.db, settings.reconcile_outbox_age_s, settings.reconcile_limit
        )
        return outbox_findings(rows, now, settings.reconcile_outbox_age_s)

    reconciler.add("outbox", outbox_check, [OUTBOX_STUCK])
    return reconciler


# --- dead letters (issue 14) ---


def install_dead_letters_and_retention(runtime: Runtime) -> Pruner:
    """The dead-letter store's hook on the processor, the DLQ depth probe, and the pruning job
    (its kit tasks; the service adds its own with `runtime.retention.add(*db.PRUNE)`)."""
    runtime.processor.on_dead_letter = dead_letter_hook(runtime.db, runtime.service)
    runtime.metrics.add("dlq_depth", dlq_depth_probe(runtime.db, runtime.service))
    return Pruner(runtime.db, runtime.settings)
