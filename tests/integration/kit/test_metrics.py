"""The state gauges on the real database and broker: outbox depth and oldest row age, and a
consumer group's lag per partition while its handler is held and after it catches up."""

import asyncio
import uuid

from prometheus_client import REGISTRY
from sqlalchemy import text

from libs.kit.db import Database, outbox_stats
from libs.kit.inbox import EventContext
from libs.kit.metrics import outbox_probe
from libs.kit.outbox import Emitter
from libs.kit.runtime import Runtime
from tests.integration.kit.harness import Ping, create_database, new_topic, settings_for
from tests.support.eventually import eventually
from tests.support.kafka import make_event, publish


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def test_outbox_depth_and_oldest_age_come_from_the_outbox_table() -> None:
    await create_database("kit_metrics")
    db = Database.from_settings(settings_for("kit_metrics", "kit-metrics"))
    try:
        async with db.transaction() as session:
            await session.execute(text("DELETE FROM outbox"))
        probe = outbox_probe(lambda: outbox_stats(db))
        await probe()
        assert sample("backroom_outbox_depth") == 0
        assert sample("backroom_outbox_oldest_age_seconds") == 0

        async with db.transaction() as session:  # no relay runs here: the rows stay
            emitter = Emitter(session, "kit-metrics", correlation_id=str(uuid.uuid4()))
            for position in range(3):
                await emitter.emit(Ping(key="k", position=position), subject="k", topic="t.x")
        async with db.transaction() as session:  # one of them written 90 s ago
            await session.execute(
                text(
                    "UPDATE outbox SET created_at = now() - interval '90 seconds'"
                    " WHERE id = (SELECT min(id) FROM outbox)"
                )
            )
        await probe()
        assert sample("backroom_outbox_depth") == 3
        age = sample("backroom_outbox_oldest_age_seconds")
        assert age is not None and 90 <= age < 150
    finally:
        async with db.transaction() as session:
            await session.execute(text("DELETE FROM outbox"))
        await db.dispose()


async def test_consumer_lag_per_partition_while_held_and_after_catching_up(
    kit_databases: None,
) -> None:
    topic = await new_topic()
    group = f"kit-lag-{topic}"
    settings = settings_for("kit_b", group).model_copy(update={"metrics_interval_s": 0})
    runtime = Runtime(settings)
    release = asyncio.Event()
    entered = asyncio.Event()

    @runtime.processor.on(Ping, topic=topic)
    async def held(ping: Ping, ctx: EventContext) -> None:
        entered.set()
        await release.wait()

    await runtime.start()
    try:
        key = f"lag-{topic}"
        for position in range(5):
            await publish(make_event("kit-producer", Ping(key=key, position=position), key), topic)
        await asyncio.wait_for(entered.wait(), timeout=30)
        probe = runtime.metrics.probes["consumer_lag"]

        async def lag_of_partitions() -> dict[str, float]:
            await probe()
            found = {
                s.labels["partition"]: s.value
                for m in REGISTRY.collect()
                for s in m.samples
                if s.name == "backroom_consumer_lag" and s.labels["group"] == group
            }
            return found if len(found) == 6 else {}  # every partition of the topic reported

        lags = await eventually(lag_of_partitions, what="lag reported for the 6 partitions")
        assert sorted(lags.values()) == [0, 0, 0, 0, 0, 5]  # one key: one partition holds all 5

        release.set()

        async def caught_up() -> bool:
            lags = await lag_of_partitions()
            return bool(lags) and set(lags.values()) == {0}

        await eventually(caught_up, what="lag back to 0 once the records are committed")
    finally:
        release.set()
        await runtime.stop()
