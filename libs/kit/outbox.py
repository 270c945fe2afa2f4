"""The transactional outbox: events are rows written in the caller's transaction, and a relay
publishes them to Kafka in insertion order with the idempotent producer."""

import asyncio
import contextlib
import logging
import os
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from prometheus_client import Counter, Histogram
from pydantic import BaseModel

from libs.events.envelope import CloudEvent, new_event
from libs.events.registry import topic_for
from libs.kit import tracing
from libs.kit.db import (
    OUTBOX_APPEND,
    OUTBOX_COMMITTED,
    OUTBOX_TAKE_SQL,
    Database,
    DbSession,
    after_commit,
)
from libs.kit.faults import crash_point
from libs.kit.kafka import ce_headers
from libs.kit.metrics import emitted_callback

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "backroom_outbox"
# One relay at a time per service database publishes (several replicas may run): the lock keeps
# per-key order, which SKIP LOCKED batches taken by two relays in parallel would not.
RELAY_LOCK_ID = 0x0B0C_0001
# This process, as the payload of its outbox NOTIFYs: its own relay is woken in-process after the
# commit and ignores them; other replicas' relays are woken by them.
ORIGIN = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"

OUTBOX_PUBLISHED = Counter(
    "backroom_outbox_published_total", "Outbox events published to Kafka", ["topic"]
)
OUTBOX_LAG = Histogram(
    "backroom_outbox_lag_seconds",
    "Time from an outbox row's commit to its publication",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def _row(event: CloudEvent, topic: str, key: str) -> dict[str, str]:
    return {
        "event_id": event.id,
        "event_type": event.type,
        "topic": topic,
        "message_key": key,
        "payload": event.model_dump_json(),
    }


async def add_to_outbox(session: DbSession, event: CloudEvent, topic: str, key: str) -> None:
    """Write `event` in the session's transaction; NOTIFY fires only when that transaction commits."""
    await _insert(session, [_row(event, topic, key)])


async def _insert(session: DbSession, rows: list[dict[str, str]]) -> None:
    # One fixed-shape statement whatever the number of rows (compiled once), in the list's
    # order, which is the publish order; with the NOTIFY for other replicas' relays in it.
    await session.execute(
        OUTBOX_APPEND,
        {
            "event_ids": [r["event_id"] for r in rows],
            "event_types": [r["event_type"] for r in rows],
            "topics": [r["topic"] for r in rows],
            "keys": [r["message_key"] for r in rows],
            "payloads": [r["payload"] for r in rows],
            "channel": NOTIFY_CHANNEL,
            "origin": ORIGIN,
        },
    )
    # This process's relay is woken right after the commit, without a round trip through
    # PostgreSQL's notifications (a Database's sessions carry the hook).
    committed = session.info.get(OUTBOX_COMMITTED)
    if committed is not None:
        after_commit(session, committed)


class OutboxBuffer:
    """Outbox rows held back and written with one statement by `flush`, which whoever made the
    buffer calls before the transaction commits (the inbox does, for a batch of events)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, str]] = []

    async def flush(self, session: DbSession) -> None:
        if self.rows:
            rows, self.rows = self.rows, []
            await _insert(session, rows)


class Emitter:
    """Writes a service's outgoing events to its outbox, carrying correlation and causation."""

    def __init__(
        self,
        session: DbSession,
        service: str,
        correlation_id: str | None,
        causation_id: str | None = None,
        buffer: OutboxBuffer | None = None,
    ) -> None:
        self.session = session
        self.service = service
        self.correlation_id = correlation_id
        self.causation_id = causation_id
        self.buffer = buffer
        self.emitted: list[CloudEvent] = []

    async def emit(self, data: BaseModel, *, subject: str, topic: str | None = None) -> CloudEvent:
        """Record one event; `subject` is the aggregate id and the Kafka message key."""
        event = new_event(
            service=self.service,
            data=data,
            subject=subject,
            correlation_id=self.correlation_id,
            causation_id=self.causation_id,
        )
        topic = topic or topic_for(event.type)
        if self.buffer is not None:
            self.buffer.rows.append(_row(event, topic, subject))
        else:
            await add_to_outbox(self.session, event, topic, subject)
        self.emitted.append(event)
        observed = emitted_callback(data)  # issue 14: business metrics, after the commit
        if observed is not None:
            after_commit(self.session, observed)
        return event


class OutboxRelay:
    """Publishes committed outbox rows; woken in-process when this process commits some, by
    LISTEN/NOTIFY when another replica does, and by a slow poll as a safety net. It works on a
    connection of its own, with asyncpg directly: a relay pass is one statement, and SQLAlchemy's
    session and pool would cost several times what PostgreSQL does for it."""

    def __init__(
        self,
        db: Database,
        producer: Any,
        dsn: str,
        poll_interval_s: float = 1.0,
        batch_size: int = 500,
    ) -> None:
        self.db = db
        self.producer = producer
        self.dsn = dsn
        self.poll_interval_s = poll_interval_s
        self.batch_size = batch_size
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._conn: asyncpg.Connection | None = None
        db.outbox_listeners.append(self.wake)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._listen_forever(), name="outbox-listen"),
            asyncio.create_task(self._publish_forever(), name="outbox-relay"),
        ]

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._close()

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)

    def wake(self) -> None:
        self._wake.set()

    async def _listen_forever(self) -> None:
        while not self._stopping:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self.dsn)
                await conn.add_listener(NOTIFY_CHANNEL, self._notified)
                self._wake.set()  # catch up on anything committed while we were not listening
                while not conn.is_closed():  # noqa: ASYNC110 - asyncpg offers no close event
                    await asyncio.sleep(self.poll_interval_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("outbox listener lost its connection: %s", exc)
                await asyncio.sleep(1.0)
            finally:
                if conn is not None and not conn.is_closed():
                    await conn.close()

    def _notified(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        if payload != ORIGIN:  # our own commits have woken us already
            self._wake.set()

    async def _publish_forever(self) -> None:
        backoff = 0.1
        while not self._stopping:
            try:
                self._wake.clear()
                while await self.publish_batch() == self.batch_size:
                    pass
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("outbox relay failed, retrying in %.1fs: %s", backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            with contextlib.suppress(TimeoutError):  # the slow poll: wake up anyway
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_interval_s)

    async def publish_batch(self) -> int:
        """Publish up to one batch of pending rows and delete them; returns how many."""
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self.dsn)
        conn = self._conn
        try:
            async with conn.transaction():
                # Taken and deleted in one statement: exactly the rows published (a transaction
                # that took a lower id but commits later stays for the next batch); if publishing
                # fails or the process dies first, the transaction rolls back and they stay.
                rows = sorted(
                    await conn.fetch(OUTBOX_TAKE_SQL, RELAY_LOCK_ID, self.batch_size),
                    key=lambda row: row["id"],
                )
                if not rows:
                    return 0
                futures = [await publish_row(self.producer, row) for row in rows]
                await asyncio.gather(*futures)
                crash_point("relay.after_publish")
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError):
            await self._close()  # the next pass connects afresh
            raise
        now = datetime.now(UTC)
        for row in rows:
            OUTBOX_PUBLISHED.labels(row["topic"]).inc()
            OUTBOX_LAG.observe((now - row["created_at"]).total_seconds())
        return len(rows)


# --- tracing (issue 14) ---


async def publish_row(producer: Any, row: Any) -> Any:
    """Send one outbox row (its delivery future); while tracing is on, in a span child of its
    event's traceparent."""
    with tracing.publishing(row["payload"], row["topic"]):
        return await producer.send(
            row["topic"],
            value=row["payload"].encode(),
            key=row["message_key"].encode(),
            headers=ce_headers(row["event_id"], row["event_type"]),
        )
