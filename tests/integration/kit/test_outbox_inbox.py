"""Outbox → Kafka → inbox between two service databases, on the real broker and PostgreSQL."""

import asyncio
import contextlib
import json
import uuid
from typing import Any

from libs.events import topics
from libs.kit.db import Database, DbSession
from libs.kit.kafka import KafkaConnection, read_dlq, replay_dlq
from libs.kit.outbox import Emitter, OutboxRelay
from libs.kit.runtime import Runtime
from tests.integration.kit.harness import (
    Ping,
    Switch,
    applied_rows,
    consumer_runtime,
    count_applied,
    new_topic,
    settings_for,
)
from tests.support.eventually import eventually
from tests.support.kafka import TopicTail, make_event, publish


async def emit(producer: Runtime, topic: str, *pings: Ping) -> list[str]:
    """Write pings to the producer's outbox in one transaction; returns their event ids."""
    async with producer.db.transaction() as session:
        emitter = Emitter(session, "kit-producer", correlation_id=str(uuid.uuid4()))
        return [(await emitter.emit(p, subject=p.key, topic=topic)).id for p in pings]


async def test_outbox_event_reaches_the_other_database_once(producer: Runtime) -> None:
    topic = await new_topic()
    consumer = consumer_runtime(topic)
    await consumer.start()
    try:
        async with TopicTail(topic) as tail:
            [event_id] = await emit(producer, topic, Ping(key=f"rt-{topic}", position=1))
            await eventually(lambda: count_applied(consumer, event_id), what="event applied")
            [record] = await tail.wait_for(lambda e: e["id"] == event_id)
            assert record["_key"] == f"rt-{topic}"
            assert record["source"] == "backroom/kit-producer"
            assert record["_headers"]["ce_type"] == "Ping"

            # The same event delivered again (an at-least-once redelivery) has no second effect.
            event = make_event("kit-producer", Ping(key=f"rt-{topic}", position=1), f"rt-{topic}")
            event = event.model_copy(update={"id": event_id})
            await publish(event, topic)
            await publish(event, topic)
            marker = await emit(producer, topic, Ping(key=f"rt-{topic}", position=2))
            await eventually(lambda: count_applied(consumer, marker[0]), what="later event applied")
            assert await count_applied(consumer, event_id) == 1
    finally:
        await consumer.stop()


async def test_poison_message_is_dead_lettered_and_replayed_once_fixed(producer: Runtime) -> None:
    topic = await new_topic()
    switch = Switch()
    consumer = consumer_runtime(topic, switch)
    await consumer.start()
    bootstrap = KafkaConnection.operator()
    try:
        key = f"poison-{topic}"
        [bad] = await emit(producer, topic, Ping(key=key, position=1, poison=True))
        [good] = await emit(producer, topic, Ping(key=key, position=2))
        # The consumer keeps going: the next event on the same key is applied.
        await eventually(
            lambda: count_applied(consumer, good), what="event after the poison applied"
        )
        assert await count_applied(consumer, bad) == 0

        async def parked() -> list[dict[str, object]]:
            return [
                e for e in await read_dlq(bootstrap, [topics.dlq(topic)]) if e["event_id"] == bad
            ]

        [entry] = await eventually(parked, what="poison message on the DLQ")
        assert entry["attempts"] == "3"
        assert "PoisonError" in str(entry["error"])
        assert entry["original_topic"] == topic

        switch.fixed = True
        assert await replay_dlq(bootstrap, [topics.dlq(topic)], bad) == 1
        await eventually(lambda: count_applied(consumer, bad), what="replayed event applied")
        # Replaying again is harmless: the inbox remembers the event id.
        await replay_dlq(bootstrap, [topics.dlq(topic)], bad)
        [marker] = await emit(producer, topic, Ping(key=key, position=3))
        await eventually(lambda: count_applied(consumer, marker), what="marker applied")
        assert await count_applied(consumer, bad) == 1
    finally:
        await consumer.stop()


async def test_thousand_events_over_ten_keys_arrive_in_per_key_order(producer: Runtime) -> None:
    topic = await new_topic()
    consumer = consumer_runtime(topic)
    await consumer.start()
    try:
        prefix = f"order-{topic}-"
        keys = [f"{prefix}{k}" for k in range(10)]
        for batch in range(10):  # ten transactions of 100 events, interleaving the keys
            await emit(
                producer,
                topic,
                *(Ping(key=keys[i % 10], position=batch * 10 + i // 10) for i in range(100)),
            )

        async def all_applied() -> bool:
            return len(await applied_rows(consumer, prefix)) >= 1000

        await eventually(all_applied, timeout=60, what="1000 events applied")
        rows = await applied_rows(consumer, prefix)
        assert len(rows) == 1000
        for key in keys:
            positions = [r.position for r in rows if r.message_key == key]
            assert positions == sorted(positions) and len(positions) == 100, key
    finally:
        await consumer.stop()


async def test_a_transaction_that_commits_during_a_relay_pass_is_not_lost(
    kit_databases: None,
) -> None:
    """Outbox ids are taken at insert time but become visible at commit: a row with a lower id
    can commit while the relay is publishing higher ones; it must stay for the next pass."""
    settings = settings_for("kit_a", "kit-relay-test")
    db = Database.from_settings(settings)
    topic = f"test.kit.unused.{uuid.uuid4().hex[:8]}"
    sent: list[str] = []
    slow_connection = await db.engine.connect()
    await slow_connection.begin()
    [early] = await emit_in(
        DbSession(connection=slow_connection), topic, Ping(key="late-a", position=1)
    )

    class CommitsTheSlowTransactionWhileSending:
        async def send(self, topic: str, value: bytes, key: bytes, headers: object) -> Any:
            if slow_connection.in_transaction():
                await slow_connection.commit()
            sent.append(json.loads(value)["id"])
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done

    relay = OutboxRelay(db, CommitsTheSlowTransactionWhileSending(), dsn=settings.asyncpg_dsn())
    try:
        async with db.transaction() as session:
            [quick] = await emit_in(session, topic, Ping(key="late-b", position=1))
        await relay.publish_batch()
        assert quick in sent and early not in sent
        await relay.publish_batch()
        assert early in sent, "the row committed during the first pass was lost"
    finally:
        await relay.stop()
        await slow_connection.close()
        await db.dispose()


async def emit_in(session: DbSession, topic: str, *pings: Ping) -> list[str]:
    emitter = Emitter(session, "kit-producer", correlation_id=None)
    return [(await emitter.emit(p, subject=p.key, topic=topic)).id for p in pings]


async def test_a_poison_event_amid_a_backlog_fails_alone(producer: Runtime) -> None:
    """A consumer that starts behind applies what it has already fetched in one transaction; a
    poison event among them rolls that back, and the events are applied one by one: the others
    exactly once and in per-key order, the poison dead-lettered."""
    topic = await new_topic()
    prefix = f"backlog-{topic}-"
    keys = [f"{prefix}{k}" for k in range(3)]
    pings = [Ping(key=keys[i % 3], position=i, poison=i == 137) for i in range(300)]
    bootstrap = KafkaConnection.operator()
    async with TopicTail(topic) as tail:
        ids = await emit(producer, topic, *pings)
        await tail.wait_for(lambda e: e["id"] == ids[-1])  # the whole backlog is on the topic
    consumer = consumer_runtime(topic)
    await consumer.start()
    try:

        async def all_but_one_applied() -> bool:
            return len(await applied_rows(consumer, prefix)) >= 299

        await eventually(all_but_one_applied, timeout=60, what="299 events applied")

        async def parked() -> list[dict[str, object]]:
            return [
                e
                for e in await read_dlq(bootstrap, [topics.dlq(topic)])
                if e["event_id"] == ids[137]
            ]

        [entry] = await eventually(parked, what="poison event on the DLQ")
        assert "PoisonError" in str(entry["error"])
        rows = await applied_rows(consumer, prefix)
        assert sorted(r.event_id for r in rows) == sorted(ids[:137] + ids[138:])
        for key in keys:
            positions = [r.position for r in rows if r.message_key == key]
            assert positions == sorted(positions), key
    finally:
        await consumer.stop()


class RecordingProducer:
    """Stands in for the Kafka producer only to see what the relay sends and when."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, topic: str, value: bytes, key: bytes, headers: object) -> Any:
        self.sent.append(json.loads(value)["id"])
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


async def test_a_commit_wakes_its_own_relay_without_notify_or_poll(kit_databases: None) -> None:
    """The relay of the committing process is woken in-process once the transaction commits:
    with no LISTEN connection and an hour-long poll, the event is still published at once;
    a rolled-back transaction wakes nothing and leaves no row."""
    settings = settings_for("kit_a", "kit-wake-test")
    db = Database.from_settings(settings)
    producer = RecordingProducer()
    relay = OutboxRelay(db, producer, dsn=settings.asyncpg_dsn(), poll_interval_s=3600)
    relay._tasks = [asyncio.create_task(relay._publish_forever())]
    topic = f"test.kit.unused.{uuid.uuid4().hex[:8]}"
    try:
        with contextlib.suppress(RuntimeError):
            async with db.transaction() as session:
                await emit_in(session, topic, Ping(key="wake-rolled-back", position=1))
                raise RuntimeError("roll back")
        assert not relay._wake.is_set(), "a rolled-back transaction woke the relay"
        async with db.transaction() as session:
            [event_id] = await emit_in(session, topic, Ping(key="wake", position=1))

        async def published() -> bool:
            return event_id in producer.sent

        await eventually(published, timeout=5, what="published without a NOTIFY")
        assert len(producer.sent) == 1
    finally:
        await relay.stop()
        await db.dispose()
