"""Two throwaway 'services' built from the kit alone: a producer with an outbox and a consumer
with an inbox, each on its own real database, talking through a real topic."""

import uuid
from typing import Any

import asyncpg
from sqlalchemy import BigInteger, Column, Identity, Integer, MetaData, String, Table, func, select

from libs.events import topics
from libs.events.common import WireModel
from libs.kit.db import Database, kit_metadata
from libs.kit.inbox import EventContext
from libs.kit.kafka import KafkaConnection, ensure_topics
from libs.kit.runtime import Runtime
from libs.kit.settings import SUPERUSER, ServiceSettings

test_metadata = MetaData()
applied = Table(
    "applied",
    test_metadata,
    Column("seq_no", BigInteger, Identity(), primary_key=True),
    Column("event_id", String(64), nullable=False),
    Column("message_key", String(200), nullable=False),
    Column("position", Integer, nullable=False),
)


class Ping(WireModel):
    """The event the harness sends: `position` counts per key."""

    key: str
    position: int
    poison: bool = False


def settings_for(database: str, service: str) -> ServiceSettings:
    base = ServiceSettings()
    return ServiceSettings(
        service_name=service,
        database_name=database,
        consumer_max_attempts=3,
        consumer_backoff_initial_s=0.05,
        consumer_backoff_max_s=0.2,
        relay_poll_interval_s=0.5,
        kafka_bootstrap=base.kafka_bootstrap,
        pg_port=base.pg_port,
        # The kit's scratch databases belong to no service: the operator's superuser.
        pg_user=SUPERUSER,
    )


async def create_database(name: str) -> None:
    """Create the database (if missing) with the kit's tables and the harness's own table."""
    settings = settings_for(name, "kit")
    admin = await asyncpg.connect(
        host=settings.pg_host, port=settings.pg_port, user=settings.pg_user, database="postgres"
    )
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    db = Database.from_settings(settings)
    async with db.engine.begin() as conn:
        await conn.run_sync(kit_metadata.create_all)
        await conn.run_sync(test_metadata.create_all)
    await db.dispose()


async def new_topic() -> str:
    topic = f"test.kit.{uuid.uuid4().hex[:10]}"
    await ensure_topics(KafkaConnection.operator(), [topic, topics.dlq(topic)], partitions=6)
    return topic


class PoisonError(RuntimeError):
    pass


class Switch:
    """Lets a test 'fix the handler' after a poison message was dead-lettered."""

    fixed = False


def consumer_runtime(topic: str, switch: Switch | None = None) -> Runtime:
    runtime = Runtime(settings_for("kit_b", f"kit-consumer-{topic}"))

    @runtime.processor.on(Ping, topic=topic)
    async def on_ping(ping: Ping, ctx: EventContext) -> None:
        if ping.poison and not (switch and switch.fixed):
            raise PoisonError(f"cannot handle {ping.key}/{ping.position}")
        await ctx.session.execute(
            applied.insert().values(
                event_id=ctx.event.id, message_key=ping.key, position=ping.position
            )
        )

    return runtime


def producer_runtime() -> Runtime:
    return Runtime(settings_for("kit_a", "kit-producer"))


async def applied_rows(runtime: Runtime, key_prefix: str) -> list[Any]:
    async with runtime.db.transaction() as session:
        result = await session.execute(
            select(applied)
            .where(applied.c.message_key.like(f"{key_prefix}%"))
            .order_by(applied.c.seq_no)
        )
        return list(result.all())


async def count_applied(runtime: Runtime, event_id: str) -> int:
    async with runtime.db.transaction() as session:
        return int(
            await session.scalar(
                select(func.count()).select_from(applied).where(applied.c.event_id == event_id)
            )
            or 0
        )
