"""The outside world of catalog: Kafka admin, to create each sales channel's listing topic."""

import asyncio
import logging

from libs.events import topics
from libs.kit.kafka import KafkaConnection, ensure_topics

log = logging.getLogger(__name__)


class KafkaListingTopics:
    """Creates `backroom.listings.<channel>` (and its dead-letter twin, for consumers that
    dead-letter its events) in the background: never inside a transaction, never holding up a
    request. Creating a topic that exists is a no-op, so start-up simply asks for all of them."""

    def __init__(self, kafka: KafkaConnection, partitions: int, replication: int) -> None:
        self.kafka = kafka
        self.partitions = partitions
        self.replication = replication
        self._tasks: set[asyncio.Task[None]] = set()

    def ensure_soon(self, channel: str) -> None:
        task = asyncio.get_running_loop().create_task(self.ensure([channel]))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def ensure(self, channels: list[str]) -> None:
        names = [n for c in channels for n in (topics.listings(c), topics.dlq(topics.listings(c)))]
        if not names:
            return
        try:
            await ensure_topics(
                self.kafka, names, partitions=self.partitions, replication=self.replication
            )
        except Exception as exc:  # the next start-up tries again; publishing creates nothing
            log.error("could not create listing topics %s: %r", names, exc)

    async def wait(self) -> None:
        """Until every topic asked for so far was created (tests)."""
        await asyncio.gather(*self._tasks, return_exceptions=True)
