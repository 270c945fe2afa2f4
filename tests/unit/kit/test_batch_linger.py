"""A consumer batch lingers once for records it will apply (issue 10): what arrives within the
linger joins the same transaction; records only skipped, a full batch or no linger never wait."""

import asyncio
from collections import deque
from typing import Any, cast

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from libs.kit.inbox import gather_batch


def record(offset: int, event_type: str = "OrderPlaced") -> ConsumerRecord[Any, Any]:
    headers = [("ce_type", event_type.encode())]
    return ConsumerRecord("t", 0, offset, 0, 0, None, b"{}", None, 0, 2, headers)


class FakeConsumer:
    """aiokafka's getmany over what the background fetcher has fetched so far; `arriving` are
    fetched while the caller waits (they show up after its first look)."""

    def __init__(self, fetched: list[Any], arriving: list[Any]) -> None:
        self.fetched = deque(fetched)
        self.arriving = arriving
        self.looks = 0

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int, max_records: int
    ) -> dict[TopicPartition, list[Any]]:
        assert timeout_ms == 0
        self.looks += 1
        if self.looks > 1:
            self.fetched.extend(self.arriving)
            self.arriving = []
        taken = [self.fetched.popleft() for _ in range(min(max_records, len(self.fetched)))]
        return {TopicPartition("t", 0): taken} if taken else {}


def wants_orders(r: ConsumerRecord[Any, Any]) -> bool:
    return bool(dict(r.headers)["ce_type"] == b"OrderPlaced")


async def test_records_arriving_within_the_linger_join_the_batch_in_order() -> None:
    consumer = FakeConsumer([record(1)], [record(2), record(3)])
    batch = await gather_batch(
        cast(AIOKafkaConsumer, consumer), record(0), 100, 0.001, wants_orders
    )
    assert [r.offset for r in batch] == [0, 1, 2, 3]
    assert consumer.looks == 2


async def test_a_batch_of_skipped_records_does_not_wait() -> None:
    consumer = FakeConsumer([record(1, "PriceChanged")], [record(2)])
    first = record(0, "PriceChanged")
    batch = await asyncio.wait_for(
        gather_batch(cast(AIOKafkaConsumer, consumer), first, 100, 3600, wants_orders),
        timeout=1,
    )
    assert [r.offset for r in batch] == [0, 1]


async def test_a_full_batch_or_no_linger_takes_only_what_was_fetched() -> None:
    full = FakeConsumer([record(1), record(2)], [record(3)])
    batch = await asyncio.wait_for(
        gather_batch(cast(AIOKafkaConsumer, full), record(0), 3, 3600, wants_orders), 1
    )
    assert [r.offset for r in batch] == [0, 1, 2]
    none = FakeConsumer([], [record(1)])
    batch = await gather_batch(cast(AIOKafkaConsumer, none), record(0), 100, 0, wants_orders)
    assert [r.offset for r in batch] == [0]
