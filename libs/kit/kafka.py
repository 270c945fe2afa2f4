"""Kafka plumbing: the idempotent producer, topic provisioning, and CloudEvent headers."""

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from libs.events import topics

log = logging.getLogger(__name__)


def bootstrap_servers(bootstrap: str) -> list[str]:
    """`host:port[,host:port...]` as a list. aiokafka splits such a string itself, but FastStream's
    KafkaBroker takes a string as one server: given a cluster's list, the services could not start."""
    return [server.strip() for server in bootstrap.split(",") if server.strip()]


async def topic_partitions(
    consumer: AIOKafkaConsumer, topics: Iterable[str]
) -> list[TopicPartition]:
    """Every partition of these topics, in order. A started consumer knows only the metadata of
    topics it has seen: for the others it asks the broker once. Topics that do not exist have
    none."""
    partitions: list[TopicPartition] = []
    for topic in topics:
        numbers = consumer.partitions_for_topic(topic)
        if not numbers:
            await consumer._client.force_metadata_update()
            numbers = consumer.partitions_for_topic(topic) or set()
        partitions += [TopicPartition(topic, n) for n in sorted(numbers)]
    return partitions


def new_producer(bootstrap: str, client_id: str) -> AIOKafkaProducer:
    """An idempotent producer: acks=all, no duplicates or reordering on internal retries."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=2,
        request_timeout_ms=15000,
    )


def ce_headers(
    event_id: str, event_type: str, extra: dict[str, str] | None = None
) -> list[tuple[str, bytes]]:
    """Kafka headers mirroring the envelope, so consumers can filter without parsing the value."""
    headers = {
        "ce_id": event_id,
        "ce_type": event_type,
        "content-type": "application/cloudevents+json",
    }
    headers.update(extra or {})
    return [(k, v.encode()) for k, v in headers.items()]


def all_topic_names() -> list[str]:
    """Every Backroom topic and its dead-letter twin."""
    names = list(topics.ALL_TOPICS)
    return names + [topics.dlq(t) for t in names]


async def ensure_topics(
    bootstrap: str,
    names: list[str] | None = None,
    partitions: int = 6,
    replication: int = 1,
    timeout_s: float = 60.0,
) -> None:
    """Create missing topics (idempotent); waits for the broker to answer first."""
    names = names or all_topic_names()
    configs: dict[str, str] = {}
    if replication > 1:
        configs["min.insync.replicas"] = "2"
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [n for n in names if n not in existing]
            if missing:
                new = []
                for name in missing:
                    topic_configs = dict(configs)
                    if name in (
                        topics.PAYMENT_INSTRUCTIONS,
                        topics.dlq(topics.PAYMENT_INSTRUCTIONS),
                    ):
                        # Tokens live on the broker for one hour at most, dead-lettered or not.
                        topic_configs["retention.ms"] = str(3_600_000)
                    new.append(NewTopic(name, partitions, replication, topic_configs=topic_configs))
                with contextlib.suppress(TopicAlreadyExistsError):  # another process won
                    await admin.create_topics(new)
                log.info("created topics %s", missing)
            return
        except Exception:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)
        finally:
            await admin.close()
