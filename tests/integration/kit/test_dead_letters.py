"""The dead-letter store and retention (issue 14 part 7), on the real broker and PostgreSQL: a
handler that always fails leaves a row beside its `.dlq` record; replaying it after the fix
applies it once, in the failed group only; dropping is audited; pruning takes only old rows."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from prometheus_client import REGISTRY
from sqlalchemy import text

from libs.events import topics
from libs.kit.deadletters import (
    drop,
    get_dead_letter,
    list_dead_letters,
    replay,
)
from libs.kit.errors import Conflict, NotFound
from libs.kit.inbox import EventContext
from libs.kit.kafka import KafkaConnection, read_dlq, topic_partitions
from libs.kit.retention import Pruner
from libs.kit.runtime import Runtime
from tests.integration.kit.harness import (
    Ping,
    Switch,
    consumer_runtime,
    count_applied,
    new_topic,
    settings_for,
)
from tests.integration.kit.test_outbox_inbox import emit
from tests.support.eventually import eventually


async def dead_letter_of(runtime: Runtime, event_id: str) -> Any:
    async with runtime.db.transaction() as session:
        return (
            await session.execute(
                text("SELECT * FROM dead_letters WHERE event_id = :id"), {"id": event_id}
            )
        ).first()


async def end_offsets(topic: str) -> int:
    """Records ever written to `topic` (the sum of its partitions' end offsets)."""
    consumer = AIOKafkaConsumer(**KafkaConnection.operator().client_options())
    await consumer.start()
    try:
        partitions = await topic_partitions(consumer, [topic])
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


async def seen_id(seen: list[str], event_id: str) -> bool:
    return event_id in seen


def other_group(topic: str, seen: list[str]) -> Runtime:
    """A second consumer group of the same topic (its own database): what it is handed."""
    runtime = Runtime(settings_for("kit_a", f"kit-other-{topic}"))

    @runtime.processor.on(Ping, topic=topic)
    async def on_ping(ping: Ping, ctx: EventContext) -> None:
        seen.append(ctx.event.id)

    return runtime


async def test_a_poison_event_is_stored_replayed_to_its_group_only_and_applied_once(
    producer: Runtime,
) -> None:
    topic = await new_topic()
    switch = Switch()
    consumer = consumer_runtime(topic, switch)
    seen: list[str] = []
    other = other_group(topic, seen)
    await consumer.start()
    await other.start()
    try:
        key = f"dl-{topic}"
        [bad] = await emit(producer, topic, Ping(key=key, position=1, poison=True))
        row = await eventually(lambda: dead_letter_of(consumer, bad), what="dead letter row")
        assert row.status == "open"
        assert row.consumer_group == consumer.service
        assert row.source_topic == topic
        assert row.attempts == 3
        assert row.error_type == "PoisonError"
        assert row.event_type == "Ping"
        assert row.subject == key

        # ... and the contract's dead-letter topic still has it.
        async def parked() -> list[dict[str, Any]]:
            dlq = await read_dlq(KafkaConnection.operator(), [topics.dlq(topic)])
            return [e for e in dlq if e["event_id"] == bad]

        [entry] = await eventually(parked, what="the record on the DLQ topic")
        assert entry["consumer_group"] == consumer.service
        await eventually(lambda: seen_id(seen, bad), what="the other group handled it")
        written = await end_offsets(topic)

        # Still broken: the replay fails again, the row stays open with the new failure.
        failed = await replay(consumer.db, consumer.processor, row.id, "ops-alice")
        assert failed.outcome == "failed"
        assert failed.dead_letter.status == "open"
        assert failed.dead_letter.attempts == 6
        assert await count_applied(consumer, bad) == 0

        switch.fixed = True
        done = await replay(consumer.db, consumer.processor, row.id, "ops-alice")
        assert done.outcome == "applied"
        assert done.dead_letter.status == "replayed"
        assert done.dead_letter.resolved_by == "ops-alice"
        assert [(a.action, a.actor, a.outcome) for a in done.dead_letter.actions] == [
            ("replay", "ops-alice", "failed"),
            ("replay", "ops-alice", "applied"),
        ]
        assert await count_applied(consumer, bad) == 1
        with pytest.raises(Conflict):
            await replay(consumer.db, consumer.processor, row.id, "ops-alice")

        # Nothing went back to the source topic: no other group can see it again.
        [marker] = await emit(producer, topic, Ping(key=key, position=2))
        await eventually(lambda: seen_id(seen, marker), what="the other group reached the marker")
        assert seen.count(bad) == 1
        assert await end_offsets(topic) == written + 1
        assert await count_applied(consumer, bad) == 1
    finally:
        await other.stop()
        await consumer.stop()


async def test_dropping_is_audited_and_final(producer: Runtime) -> None:
    topic = await new_topic()
    consumer = consumer_runtime(topic)
    await consumer.start()
    try:
        [bad] = await emit(producer, topic, Ping(key=f"drop-{topic}", position=1, poison=True))
        row = await eventually(lambda: dead_letter_of(consumer, bad), what="dead letter row")
        listed, _ = await list_dead_letters(
            consumer.db, "ops-bob", status="open", event_type="Ping", limit=200, before=None
        )
        assert row.id in [d.id for d in listed]

        dropped = await drop(consumer.db, row.id, "ops-bob", "test data, never valid")
        assert dropped.status == "dropped"
        assert dropped.note == "test data, never valid"
        assert dropped.resolved_by == "ops-bob"
        assert dropped.resolved_at is not None
        assert [(a.action, a.actor, a.outcome, a.note) for a in dropped.actions] == [
            ("drop", "ops-bob", "dropped", "test data, never valid")
        ]
        with pytest.raises(Conflict):
            await drop(consumer.db, row.id, "ops-bob", "again")
        with pytest.raises(Conflict):
            await replay(consumer.db, consumer.processor, row.id, "ops-bob")
        assert await count_applied(consumer, bad) == 0
        with pytest.raises(NotFound):
            await get_dead_letter(consumer.db, 2**62)
        still_open, _ = await list_dead_letters(
            consumer.db, "ops-bob", status="open", event_type=None, limit=200, before=None
        )
        assert row.id not in [d.id for d in still_open]
    finally:
        await consumer.stop()


async def test_the_depth_gauge_counts_open_dead_letters_of_the_group(producer: Runtime) -> None:
    topic = await new_topic()
    consumer = consumer_runtime(topic)
    await consumer.start()
    try:
        [bad] = await emit(producer, topic, Ping(key=f"depth-{topic}", position=1, poison=True))
        row = await eventually(lambda: dead_letter_of(consumer, bad), what="dead letter row")

        def depth() -> float | None:
            return REGISTRY.get_sample_value("backroom_dlq_depth", {"group": consumer.service})

        await consumer.metrics.poll_once()
        assert depth() == 1
        await drop(consumer.db, row.id, "ops", "handled")
        await consumer.metrics.poll_once()
        assert depth() == 0
    finally:
        await consumer.stop()


async def test_pruning_deletes_only_old_rows_in_batches(kit_databases: None) -> None:
    settings = settings_for("kit_b", "kit-pruner").model_copy(
        update={"retention_batch_size": 2, "retention_inbox_s": 86400.0}
    )
    runtime = Runtime(settings)
    tag = uuid.uuid4().hex[:8]
    now = datetime.now(UTC)
    old = [f"old-{tag}-{n}" for n in range(5)]
    recent = [f"new-{tag}-{n}" for n in range(3)]
    async with runtime.db.transaction() as session:
        for event_id, at in [(e, now - timedelta(days=3)) for e in old] + [
            (e, now - timedelta(hours=1)) for e in recent
        ]:
            await session.execute(
                text(
                    "INSERT INTO processed_events (event_id, event_type, topic, processed_at)"
                    " VALUES (:id, 'Ping', 'test', :at)"
                ),
                {"id": event_id, "at": at},
            )
        # A dead letter resolved long ago goes; an open one as old stays.
        for status, offset in (("dropped", 1), ("open", 2)):
            await session.execute(
                text(
                    "INSERT INTO dead_letters (consumer_group, source_topic, source_partition,"
                    " source_offset, value, headers, error, error_type, attempts, failed_at,"
                    " status, resolved_at) VALUES (:group, 'test', 0, :offset, '', '[]', 'e', 'E', 1,"
                    " :at, :status, :resolved_at)"
                ),
                {
                    "group": f"prune-{tag}",
                    "offset": offset,
                    "at": now - timedelta(days=90),
                    "status": status,
                    "resolved_at": None if status == "open" else now - timedelta(days=90),
                },
            )
    before = REGISTRY.get_sample_value("backroom_pruned_rows_total", {"table": "processed_events"})
    try:
        done = await runtime.retention.run_once()
        assert done["processed_events"] >= len(old)
        async with runtime.db.transaction() as session:
            left = set(
                await session.scalars(
                    text("SELECT event_id FROM processed_events WHERE event_id LIKE :p"),
                    {"p": f"%-{tag}-%"},
                )
            )
            statuses = set(
                await session.scalars(
                    text("SELECT status FROM dead_letters WHERE consumer_group = :g"),
                    {"g": f"prune-{tag}"},
                )
            )
        assert left == set(recent)
        assert statuses == {"open"}
        after = REGISTRY.get_sample_value(
            "backroom_pruned_rows_total", {"table": "processed_events"}
        )
        assert (after or 0) - (before or 0) >= len(old)
    finally:
        await runtime.db.dispose()


def test_a_service_task_must_name_a_retention_setting() -> None:
    from libs.kit.retention import PruneTask

    pruner = Pruner(None, settings_for("kit_b", "kit"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no setting"):
        pruner.add(PruneTask("things", text("DELETE FROM things"), "retention_things_s"))
