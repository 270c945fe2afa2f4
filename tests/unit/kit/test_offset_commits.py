"""Consumed offsets are committed coalesced, after the database commit, never before."""

from typing import Any

from aiokafka import ConsumerRecord, TopicPartition

from libs.kit.inbox import OffsetCommitter


class FakeConsumer:
    """The two calls OffsetCommitter makes on aiokafka's consumer."""

    def __init__(self, *assigned: TopicPartition) -> None:
        self.assigned = set(assigned)
        self.commits: list[dict[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return self.assigned

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))


def record(partition: int, offset: int) -> ConsumerRecord[Any, Any]:
    return ConsumerRecord("t", partition, offset, 0, 0, None, b"{}", None, 0, 2, [])


P0, P1 = TopicPartition("t", 0), TopicPartition("t", 1)


async def test_applied_batches_are_committed_together_by_the_next_flush() -> None:
    consumer = FakeConsumer(P0, P1)
    offsets = OffsetCommitter(interval_s=0.25)
    await offsets.done(consumer, [record(0, 5), record(0, 6)], ["applied", "applied"])
    await offsets.done(consumer, [record(1, 9)], ["duplicate"])
    await offsets.done(consumer, [record(0, 7)], ["ignored"])
    assert consumer.commits == [], "no broker round trip per batch"
    await offsets.flush()
    assert consumer.commits == [{P0: 8, P1: 10}]
    await offsets.flush()
    assert len(consumer.commits) == 1, "nothing new, nothing committed"


async def test_a_dead_lettered_record_is_committed_at_once_with_what_was_pending() -> None:
    consumer = FakeConsumer(P0, P1)
    offsets = OffsetCommitter(interval_s=0.25)
    await offsets.done(consumer, [record(1, 3)], ["applied"])
    await offsets.done(consumer, [record(0, 4)], ["dead_lettered"])
    assert consumer.commits == [{P0: 5, P1: 4}]


async def test_a_partition_taken_by_a_rebalance_is_left_to_its_new_owner() -> None:
    consumer = FakeConsumer(P0, P1)
    offsets = OffsetCommitter(interval_s=0.25)
    await offsets.done(consumer, [record(0, 1), record(1, 1)], ["applied", "applied"])
    consumer.assigned = {P1}
    await offsets.flush()
    assert consumer.commits == [{P1: 2}]


async def test_interval_zero_commits_after_every_batch() -> None:
    consumer = FakeConsumer(P0)
    offsets = OffsetCommitter(interval_s=0)
    await offsets.done(consumer, [record(0, 1)], ["ignored"])
    assert consumer.commits == [{P0: 2}]
