"""Talk to the real local broker as a downstream subscriber or an upstream producer would."""

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pydantic import BaseModel

from libs.events.envelope import CloudEvent, new_event
from libs.kit.kafka import KafkaConnection, ce_headers, topic_partitions
from libs.kit.settings import ServiceSettings


def bootstrap() -> str:
    return ServiceSettings().kafka_bootstrap


async def publish(
    event: CloudEvent, topic: str, key: str | None = None, value: bytes | None = None
) -> None:
    """Publish one CloudEvent (or raw bytes) as an upstream service's relay would."""
    producer = AIOKafkaProducer(
        **KafkaConnection.operator(bootstrap()).client_options(),
        acks="all",
        enable_idempotence=True,
    )
    await producer.start()
    try:
        await producer.send_and_wait(
            topic,
            value=value if value is not None else event.to_json(),
            key=(key or event.subject).encode(),
            headers=ce_headers(event.id, event.type),
        )
    finally:
        await producer.stop()


def make_event(service: str, data: BaseModel, subject: str, **kw: Any) -> CloudEvent:
    return new_event(service=service, data=data, subject=subject, **kw)


class TopicTail:
    """Reads a topic from the position it had when `start()` was called (all partitions)."""

    def __init__(self, *topics: str) -> None:
        self.topics = topics
        self.records: list[Any] = []
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> "TopicTail":
        self._consumer = AIOKafkaConsumer(
            **KafkaConnection.operator(bootstrap()).client_options(), enable_auto_commit=False
        )
        await self._consumer.start()
        partitions = await topic_partitions(self._consumer, self.topics)
        self._consumer.assign(partitions)
        await self._consumer.seek_to_end(*partitions)
        for tp in partitions:  # resolve positions now, before the action under test
            await self._consumer.position(tp)
        return self

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def __aenter__(self) -> "TopicTail":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def poll(self) -> None:
        assert self._consumer is not None
        batch = await self._consumer.getmany(timeout_ms=200)
        for records in batch.values():
            self.records.extend(records)

    def events(
        self, predicate: Callable[[dict[str, Any]], bool] = lambda e: True
    ) -> list[dict[str, Any]]:
        out = []
        for record in self.records:
            try:
                value = json.loads(record.value)
            except ValueError:
                continue
            if predicate(value):
                out.append(
                    value
                    | {
                        "_key": record.key.decode() if record.key else None,
                        "_topic": record.topic,
                        "_partition": record.partition,
                        "_headers": {k: v.decode() for k, v in record.headers or ()},
                    }
                )
        return out

    async def wait_for(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        count: int = 1,
        timeout: float = 20.0,
    ) -> list[dict[str, Any]]:
        """Wait until at least `count` events match; returns them."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.events(predicate)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                seen = [(e.get("type"), e.get("subject")) for e in self.events()][-20:]
                raise AssertionError(
                    f"expected {count} matching events, got {len(found)}; recent: {seen}"
                )
            await self.poll()
            await asyncio.sleep(0)


def of_type(event_type: str, subject: str | None = None) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("type") == event_type and (
        subject is None or e.get("subject") == subject
    )
