"""Run one service in-process on the real broker and database, and talk to it over ASGI."""

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from fastapi import FastAPI

from libs.kit.kafka import KafkaConnection, topic_partitions


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Start the app's lifespan (migrated DB, Kafka consumers, relay) and yield an HTTP client."""
    async with app.router.lifespan_context(app):
        await caught_up(app)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            yield client


async def caught_up(app: FastAPI, timeout: float = 120.0) -> None:
    """Wait until the app's consumer group has caught up (see group_caught_up)."""
    runtime = app.state.runtime
    await group_caught_up(
        runtime.settings.kafka_bootstrap, runtime.service, runtime.subscribed_topics, timeout
    )


async def group_caught_up(
    bootstrap: str, group: str, topics: list[str] | tuple[str, ...], timeout: float = 120.0
) -> None:
    """Wait until `group` has committed up to the end of every topic it reads, so a test's events
    are not queued behind what earlier tests left on the shared topics."""
    if not topics:
        return
    admin = AIOKafkaAdminClient(**KafkaConnection.operator(bootstrap).client_options())
    probe = AIOKafkaConsumer(
        **KafkaConnection.operator(bootstrap).client_options(), enable_auto_commit=False
    )
    await admin.start()
    await probe.start()
    try:
        partitions = await topic_partitions(probe, topics)
        ends = await probe.end_offsets(partitions)
        deadline = time.monotonic() + timeout
        while True:
            committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
            behind = {
                tp: ends[tp] - max(committed[tp].offset if tp in committed else 0, 0)
                for tp in partitions
                if ends[tp] > 0
            }
            if all(lag <= 0 for lag in behind.values()):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{group} still behind after {timeout}s: {behind}")
            await asyncio.sleep(0.2)
    finally:
        await probe.stop()
        await admin.close()
