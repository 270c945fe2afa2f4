"""The idempotent consumer: each event is handled in one transaction with its processed-events row,
retried with backoff, dead-lettered after N attempts, and its offset committed only after the commit.

Records that are already waiting are applied together: one transaction (one inbox insert, one
commit) for the lot, one offset commit after it. If anything in such a batch fails, it is rolled
back and its records are applied one at a time as above."""

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from libs.events import topics
from libs.events.envelope import CloudEvent
from libs.events.registry import EVENT_TYPES
from libs.kit import tracing
from libs.kit.db import INBOX_CLAIM, Database, DbSession, after_commit
from libs.kit.faults import crash_point
from libs.kit.metrics import DLQ_PUBLISHED
from libs.kit.outbox import Emitter, OutboxBuffer
from libs.kit.retry import RetryPolicy
from libs.kit.transactions import SessionTx

log = logging.getLogger(__name__)

EVENTS_HANDLED = Counter(
    "backroom_events_handled_total",
    "Consumed events by outcome (applied, duplicate, ignored, dead_lettered)",
    ["topic", "type", "outcome"],
)
HANDLER_SECONDS = Histogram(
    "backroom_event_handler_seconds", "Time to apply one consumed event", ["type"]
)
HANDLER_RETRIES = Counter(
    "backroom_event_handler_retries_total",
    "Handler attempts that failed and were retried",
    ["type"],
)


S = TypeVar("S")


@dataclass
class EventContext:
    """What a handler gets beside the validated event data: the CloudEvent, its transaction,
    and an emitter that carries causation."""

    event: CloudEvent
    session: DbSession
    emitter: Emitter
    topic: str
    raw: bytes  # the record's value exactly as received (e.g. to forward it byte for byte)

    async def emit(self, data: Any, *, subject: str, topic: str | None = None) -> CloudEvent:
        return await self.emitter.emit(data, subject=subject, topic=topic)

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once this event's transaction has committed."""
        after_commit(self.session, callback)

    def tx(self, make_store: Callable[[DbSession], S]) -> SessionTx[S]:
        """This event's transaction as a use case sees it (repositories, emitter, hook)."""
        return SessionTx(self.session, make_store(self.session), self.emitter)


# What is done with a record the handler gave up on: (record, error, attempts).
GiveUp = Callable[[ConsumerRecord[Any, Any], BaseException, int], Awaitable[None]]

E = TypeVar("E", bound=BaseModel)
EventHandler = Callable[[E, EventContext], Awaitable[None]]


class UnknownEventType(LookupError):
    """A handler was registered for a model that is not an event of the registry: a start-up
    error, so a misspelt or unpublished type never silently counts as ignored."""


class InvalidEventData(ValueError):
    """A CloudEvent whose `data` does not match its type's model; names the bad fields, never
    their values (a payment token may be among them), since this text is logged and
    dead-lettered."""


@dataclass(frozen=True)
class _Route:
    model: type[BaseModel]
    topic: str
    handler: EventHandler[Any]

    def parse(self, event: CloudEvent) -> BaseModel:
        try:
            return self.model.model_validate(event.data)
        except ValidationError as exc:
            fields = sorted({".".join(map(str, e["loc"])) or "data" for e in exc.errors()})
            raise InvalidEventData(f"invalid {event.type} data, fields: {fields}") from None


def _is_transient(exc: BaseException) -> bool:
    """Infrastructure trouble (database unreachable) is retried forever, never dead-lettered."""
    if isinstance(exc, OperationalError | InterfaceError | ConnectionError | OSError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    name = type(exc).__name__
    return name in {
        "CannotConnectNowError",
        "ConnectionDoesNotExistError",
        "TooManyConnectionsError",
    }


_Todo = tuple[int, ConsumerRecord[Any, Any], CloudEvent, EventHandler[Any], BaseModel]


class EventProcessor:
    """Dispatches CloudEvents by `type` to a service's handlers, exactly once in effect."""

    def __init__(
        self,
        service: str,
        db: Database,
        producer: Any,
        max_attempts: int = 5,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 5.0,
    ) -> None:
        self.service = service
        self.db = db
        self.producer = producer
        self.max_attempts = max_attempts
        # Only its pauses: a handler is retried `max_attempts` times, infrastructure errors forever.
        self.backoff = RetryPolicy(max_attempts, backoff_initial_s, backoff_max_s)
        self.routes: dict[str, _Route] = {}
        # Optional: a cheap, in-memory verdict on whether an event of this type can have any
        # effect right now (see notifications' webhook interest). False means the event is
        # ignored like a type without a handler: no transaction, no inbox row.
        self.interested: Callable[[str], bool] | None = None
        # Issue 14: also records each dead letter in the service's own store (the runtime sets
        # libs/kit/deadletters.py's hook); called before the DLQ topic is written.
        self.on_dead_letter: GiveUp | None = None

    def on(
        self, model: type[E], *, topic: str | None = None
    ) -> Callable[[EventHandler[E]], EventHandler[E]]:
        """Register the handler of one event type, named by its data model; it is called with
        the validated data and the context, and the type's topic joins the subscriptions. A
        model of the registry (libs/events) reads its registered topic; any other model must
        name its `topic` (the kit's own tests do), so a type nobody publishes fails here, at
        start-up, instead of being silently ignored."""
        registered = EVENT_TYPES.get(model.__name__)
        if registered is not None and registered[1] is model:
            if topic is not None and topic != registered[0]:
                raise UnknownEventType(f"{model.__name__} is published on {registered[0]}")
            topic = registered[0]
        elif topic is None or registered is not None:
            raise UnknownEventType(f"{model.__qualname__} is not an event type of libs/events")
        if model.__name__ in self.routes:
            raise ValueError(f"{model.__name__} already has a handler")

        def register(handler: EventHandler[E]) -> EventHandler[E]:
            self.routes[model.__name__] = _Route(model, topic, handler)
            return handler

        return register

    @property
    def topics(self) -> list[str]:
        """The topics this service must read: those of the event types it handles."""
        return sorted({route.topic for route in self.routes.values()})

    def wants(self, record: ConsumerRecord[Any, Any]) -> bool:
        """Whether `record` may be applied here (not skipped on its `ce_type` header)."""
        event_type = _header(record, "ce_type")
        return event_type is None or self._handles(event_type)

    def _handles(self, event_type: str) -> bool:
        return event_type in self.routes and (
            self.interested is None or self.interested(event_type)
        )

    async def process_record(
        self, record: ConsumerRecord[Any, Any], give_up: GiveUp | None = None
    ) -> str:
        """Apply one Kafka record; returns the outcome. Raises only if dead-lettering failed.
        `give_up` replaces dead-lettering (issue 14: a replay records its new failure itself)."""
        dead_letter = give_up or self.dead_letter
        event_type = _header(record, "ce_type")
        if event_type is not None and not self._handles(event_type):
            # Most deliveries are of types this service does not handle: skipped on the header
            # alone, the envelope never parsed (issue 10: 22 of a checkout's 33 deliveries).
            EVENTS_HANDLED.labels(record.topic, event_type, "ignored").inc()
            return "ignored"
        value: bytes = record.value
        try:
            event = CloudEvent.from_json(value)
        except ValidationError as exc:
            await dead_letter(record, exc, 1)
            EVENTS_HANDLED.labels(record.topic, "unparseable", "dead_lettered").inc()
            return "dead_lettered"
        route = self.routes.get(event.type)
        if route is None or not self._handles(event.type):
            EVENTS_HANDLED.labels(record.topic, event.type, "ignored").inc()
            return "ignored"
        try:
            data = route.parse(event)
        except InvalidEventData as exc:
            # Retrying cannot make it valid: straight to the dead letters.
            log.error("event %s dead-lettered: %s", event.id, exc)
            await dead_letter(record, exc, 1)
            EVENTS_HANDLED.labels(record.topic, event.type, "dead_lettered").inc()
            return "dead_lettered"
        attempt = 0
        with structlog.contextvars.bound_contextvars(
            correlation_id=event.correlationid, event_id=event.id, event_type=event.type
        ):
            while True:
                attempt += 1
                started = time.perf_counter()
                try:
                    with tracing.handling(event, record.topic):  # issue 14: nothing when off
                        outcome = await self._apply(route.handler, data, event, record.topic, value)
                    HANDLER_SECONDS.labels(event.type).observe(time.perf_counter() - started)
                    EVENTS_HANDLED.labels(record.topic, event.type, outcome).inc()
                    return outcome
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    HANDLER_RETRIES.labels(event.type).inc()
                    transient = _is_transient(exc)
                    if not transient and attempt >= self.max_attempts:
                        log.error(
                            "event %s failed %d times, dead-lettering: %r", event.id, attempt, exc
                        )
                        await dead_letter(record, exc, attempt)
                        EVENTS_HANDLED.labels(record.topic, event.type, "dead_lettered").inc()
                        return "dead_lettered"
                    delay = self.backoff.delay(min(attempt, 10))
                    log.warning(
                        "event %s attempt %d failed (%s), retrying in %.2fs: %r",
                        event.id,
                        attempt,
                        "transient" if transient else "error",
                        delay,
                        exc,
                    )
                    await asyncio.sleep(delay)

    async def process_batch(self, records: Sequence[ConsumerRecord[Any, Any]]) -> list[str]:
        """Apply records in order, all in one transaction; returns their outcomes. Types without a
        handler are skipped on their `ce_type` header alone. If the transaction fails for any
        reason, every record of it goes through `process_record` (retries, dead letters)."""
        if len(records) == 1:
            return [await self.process_record(records[0])]
        outcomes: list[str] = ["ignored"] * len(records)
        todo: list[_Todo] = []
        for index, record in enumerate(records):
            event_type = _header(record, "ce_type")
            if event_type is not None and not self._handles(event_type):
                EVENTS_HANDLED.labels(record.topic, event_type, "ignored").inc()
                continue
            parsed = self._parse(record)
            if parsed is None:
                # Unparseable (dead-lettered) or not ours (ignored): no database work either way.
                outcomes[index] = await self.process_record(record)
                continue
            event, route, data = parsed
            todo.append((index, record, event, route.handler, data))
        if not todo:
            return outcomes
        try:
            applied = await self._apply_batch(todo)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.info("batch of %d events failed (%r); applying them one by one", len(todo), exc)
            for index, record, *_ in todo:
                outcomes[index] = await self.process_record(record)
            return outcomes
        for (index, record, event, *_), outcome in zip(todo, applied, strict=True):
            outcomes[index] = outcome
            EVENTS_HANDLED.labels(record.topic, event.type, outcome).inc()
        return outcomes

    def _parse(
        self, record: ConsumerRecord[Any, Any]
    ) -> tuple[CloudEvent, _Route, BaseModel] | None:
        """The record's event, route and validated data, if it is valid and ours."""
        try:
            event = CloudEvent.from_json(record.value)
            route = self.routes.get(event.type)
            if route is None or not self._handles(event.type):
                return None
            return event, route, route.parse(event)
        except (ValidationError, InvalidEventData):
            return None

    async def _apply_batch(self, todo: list["_Todo"]) -> list[str]:
        outcomes: list[str] = []
        buffer = OutboxBuffer()  # the batch's outgoing events: one insert at the end
        async with self.db.transaction() as session:
            claims = {event.id: (event.type, record.topic) for _, record, event, *_ in todo}
            fresh = set(await session.scalars(INBOX_CLAIM, _claim_params(claims)))
            for _, record, event, handler, data in todo:
                if event.id not in fresh:
                    outcomes.append("duplicate")
                    continue
                fresh.discard(event.id)  # the same event twice in one batch: applied once
                with structlog.contextvars.bound_contextvars(
                    correlation_id=event.correlationid, event_id=event.id, event_type=event.type
                ):
                    started = time.perf_counter()
                    emitter = Emitter(
                        session, self.service, event.correlationid, event.id, buffer=buffer
                    )
                    context = EventContext(event, session, emitter, record.topic, record.value)
                    with tracing.handling(event, record.topic):  # issue 14: nothing when off
                        await handler(data, context)
                    HANDLER_SECONDS.labels(event.type).observe(time.perf_counter() - started)
                outcomes.append("applied")
            await buffer.flush(session)
        crash_point(f"{self.service}.after_db_commit")
        return outcomes

    async def _apply(
        self,
        handler: EventHandler[Any],
        data: BaseModel,
        event: CloudEvent,
        topic: str,
        raw: bytes,
    ) -> str:
        async with self.db.transaction() as session:
            first_time = await session.scalar(
                INBOX_CLAIM, _claim_params({event.id: (event.type, topic)})
            )
            if first_time is None:
                return "duplicate"
            buffer = OutboxBuffer()  # the handler's outgoing events: one insert at the end
            emitter = Emitter(session, self.service, event.correlationid, event.id, buffer=buffer)
            await handler(data, EventContext(event, session, emitter, topic, raw))
            await buffer.flush(session)
        crash_point(f"{self.service}.after_db_commit")
        return "applied"

    async def dead_letter(
        self, record: ConsumerRecord[Any, Any], exc: BaseException, attempts: int
    ) -> None:
        """Park the record on `<topic>.dlq` with its error; same key and value, so it can be replayed."""
        if self.on_dead_letter is not None:
            await self.on_dead_letter(record, exc, attempts)
        headers = [(k, v) for k, v in (record.headers or ()) if not k.startswith("x-dlq-")]
        headers += [
            (k, v.encode())
            for k, v in {
                "x-dlq-error": repr(exc)[:2000],
                "x-dlq-error-type": type(exc).__name__,
                "x-dlq-original-topic": record.topic,
                "x-dlq-original-partition": str(record.partition),
                "x-dlq-original-offset": str(record.offset),
                "x-dlq-consumer-group": self.service,
                "x-dlq-attempts": str(attempts),
                "x-dlq-failed-at": datetime.now(UTC).isoformat(),
            }.items()
        ]
        await self.producer.send_and_wait(
            topics.dlq(record.topic), value=record.value, key=record.key, headers=headers
        )
        DLQ_PUBLISHED.labels(self.service, record.topic).inc()


async def claim_delivery(session: DbSession, event_id: str, event_type: str, source: str) -> bool:
    """Record in the inbox, in `session`'s transaction, that a message from outside Kafka (a
    provider's webhook: `source` such as "webhook:stripe") is handled; False if it was already
    (a redelivery: do nothing)."""
    claimed = await session.scalars(INBOX_CLAIM, _claim_params({event_id: (event_type, source)}))
    return claimed.first() is not None


def _claim_params(claims: dict[str, tuple[str, str]]) -> dict[str, list[str]]:
    """INBOX_CLAIM's arrays for {event id: (type, topic)}: one row per distinct event."""
    return {
        "event_ids": list(claims),
        "event_types": [event_type for event_type, _ in claims.values()],
        "topics": [topic for _, topic in claims.values()],
    }


def _header(record: ConsumerRecord[Any, Any], name: str) -> str | None:
    for key, value in record.headers or ():
        if key == name:
            return bytes(value).decode(errors="replace")
    return None


async def waiting_records(
    consumer: AIOKafkaConsumer, limit: int, partitions: Sequence[TopicPartition] = ()
) -> list[ConsumerRecord[Any, Any]]:
    """Records the consumer has already fetched (at most `limit`), without waiting for more."""
    if limit <= 0:
        return []
    fetched = await consumer.getmany(*partitions, timeout_ms=0, max_records=limit)
    return [record for records in fetched.values() for record in records]


async def gather_batch(
    consumer: AIOKafkaConsumer,
    first: ConsumerRecord[Any, Any],
    limit: int,
    linger_s: float,
    wants: Callable[[ConsumerRecord[Any, Any]], bool],
) -> list[ConsumerRecord[Any, Any]]:
    """`first` and what the consumer has fetched besides (at most `limit` in all). If that holds
    a record the service will apply (`wants`) and room is left, wait `linger_s` once and take
    what came meanwhile: records that arrive a few milliseconds apart then share one
    transaction (one inbox insert, one outbox insert, one relay publish) instead of paying for
    one each (issue 10). Records only skipped never wait. The background fetcher keeps fetching
    while this waits; per-partition order is the fetch order, kept."""
    batch = [first, *await waiting_records(consumer, limit - 1)]
    if linger_s > 0 and len(batch) < limit and any(wants(record) for record in batch):
        await asyncio.sleep(linger_s)
        batch += await waiting_records(consumer, limit - len(batch))
    return batch


def rewind(consumer: AIOKafkaConsumer, records: Sequence[ConsumerRecord[Any, Any]]) -> None:
    """Seek back to the first of these records on each partition, so they are read again."""
    first: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        first[tp] = min(first.get(tp, record.offset), record.offset)
    for tp, offset in first.items():
        with contextlib.suppress(Exception):  # partition no longer ours: its next owner reads it
            consumer.seek(tp, offset)


def _next_offsets(records: Sequence[ConsumerRecord[Any, Any]]) -> dict[TopicPartition, int]:
    offsets: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        offsets[tp] = max(offsets.get(tp, 0), record.offset + 1)
    return offsets


async def _commit(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> bool:
    try:
        await consumer.commit(offsets)
    except CommitFailedError as exc:
        # A rebalance took the partition: the next owner re-reads the record and the inbox
        # makes that harmless.
        log.warning("offset commit lost to a rebalance: %s", exc)
        return False
    return True


class OffsetCommitter:
    """Commits consumed offsets, always after the database commit of what they cover, coalesced:
    one commit per `interval_s` for everything consumed meanwhile (applied, duplicate, ignored),
    instead of a broker round trip after every batch. Reading such records again after a crash
    or a rebalance costs an inbox lookup, never a second effect. Dead-lettered records are
    committed at once: the dead-letter topic has no inbox, and a re-read would park them twice."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self._pending: dict[TopicPartition, int] = {}
        # What this committer committed last per partition (issue 14: the lag probe reads it).
        self.committed: dict[TopicPartition, int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def done(
        self,
        consumer: AIOKafkaConsumer,
        records: Sequence[ConsumerRecord[Any, Any]],
        outcomes: Sequence[str],
    ) -> None:
        self._consumer = consumer
        for tp, offset in _next_offsets(records).items():
            self._pending[tp] = max(self._pending.get(tp, 0), offset)
        if self.interval_s <= 0 or "dead_lettered" in outcomes:
            await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            consumer, offsets, self._pending = self._consumer, self._pending, {}
            if consumer is None or not offsets:
                return
            assigned = consumer.assignment()  # a revoked partition is its new owner's now
            offsets = {tp: offset for tp, offset in offsets.items() if tp in assigned}
            if offsets and await _commit(consumer, offsets):
                self.committed.update(offsets)

    async def run(self) -> None:
        """Background task: flush every `interval_s`."""
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("deferred offset commit failed (records are read again): %r", exc)
