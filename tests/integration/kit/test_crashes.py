"""Crashes of the relay and of the broker lose nothing and apply nothing twice."""

import asyncio
import os
import signal
import sys
import uuid
from pathlib import Path

from sqlalchemy import func, select

from libs.kit.db import outbox
from libs.kit.outbox import Emitter
from libs.kit.runtime import Runtime
from tests.integration.kit.harness import (
    Ping,
    applied_rows,
    consumer_runtime,
    count_applied,
    new_topic,
)
from tests.support.eventually import eventually
from tests.support.kafka import TopicTail

ROOT = Path(__file__).resolve().parents[3]


async def run_relay_process(crash_at: str | None) -> int:
    env = {k: v for k, v in os.environ.items() if k != "BACKROOM_CRASH_AT"}
    if crash_at:
        env["BACKROOM_CRASH_AT"] = crash_at
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.integration.kit.relay_process", cwd=ROOT, env=env
    )
    return await asyncio.wait_for(proc.wait(), timeout=120)


async def outbox_size(runtime: Runtime) -> int:
    async with runtime.db.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(outbox)) or 0)


async def test_relay_killed_after_publish_republishes_and_the_consumer_applies_once(
    kit_databases: None,
) -> None:
    topic = await new_topic()
    writer = Runtime(consumer_runtime(topic).settings.model_copy(update={"database_name": "kit_a"}))
    consumer = consumer_runtime(topic)
    await consumer.start()
    try:
        async with TopicTail(topic) as tail:
            async with writer.db.transaction() as session:
                event = await Emitter(session, "kit-producer", None).emit(
                    Ping(key=f"crash-{topic}", position=1), subject=f"crash-{topic}", topic=topic
                )
            assert await run_relay_process("relay.after_publish") == -signal.SIGKILL
            assert await outbox_size(writer) >= 1, "the row must survive: it was never marked"
            await tail.wait_for(lambda e: e["id"] == event.id)

            assert await run_relay_process(None) == 0
            await tail.wait_for(lambda e: e["id"] == event.id, count=2)
            await eventually(lambda: count_applied(consumer, event.id), what="applied")
            [marker_event] = [await _emit_marker(writer, topic)]
            assert await run_relay_process(None) == 0
            await eventually(lambda: count_applied(consumer, marker_event), what="marker applied")
            assert await count_applied(consumer, event.id) == 1
    finally:
        await consumer.stop()
        await writer.db.dispose()


async def _emit_marker(writer: Runtime, topic: str) -> str:
    async with writer.db.transaction() as session:
        event = await Emitter(session, "kit-producer", None).emit(
            Ping(key=f"crash-{topic}", position=2), subject=f"crash-{topic}", topic=topic
        )
    return event.id


async def test_broker_killed_during_steady_publish_loses_no_committed_event(
    producer: Runtime,
) -> None:
    topic = await new_topic()
    consumer = consumer_runtime(topic)
    await consumer.start()
    prefix = f"steady-{uuid.uuid4().hex[:8]}-"
    committed = 0
    stop = asyncio.Event()

    async def steady_writer() -> None:
        nonlocal committed
        while not stop.is_set():
            async with producer.db.transaction() as session:
                await Emitter(session, "kit-producer", None).emit(
                    Ping(key=f"{prefix}{committed % 5}", position=committed),
                    subject=f"{prefix}{committed % 5}",
                    topic=topic,
                )
            committed += 1
            await asyncio.sleep(0.01)

    script = str(ROOT / "deploy" / "local" / "kafka.sh")
    writer = asyncio.create_task(steady_writer())
    try:
        await asyncio.sleep(2)
        kill = await asyncio.create_subprocess_exec("bash", script, "kill")
        assert await kill.wait() == 0
        await asyncio.sleep(3)
        start = await asyncio.create_subprocess_exec("bash", script, "up")
        assert await asyncio.wait_for(start.wait(), timeout=180) == 0
        await asyncio.sleep(2)
    finally:
        stop.set()
        await writer
    try:

        async def everything_arrived() -> bool:
            return len({r.position for r in await applied_rows(consumer, prefix)}) == committed

        await eventually(
            everything_arrived, timeout=120, interval=0.5, what="all committed rows consumed"
        )
        assert await outbox_size(producer) == 0
    finally:
        await consumer.stop()
