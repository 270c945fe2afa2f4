"""Kafka plumbing: connections (address and credentials), the idempotent producer, topic
provisioning, and CloudEvent headers."""

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from faststream.security import (
    BaseSecurity,
    SASLPlaintext,
    SASLScram256,
    SASLScram512,
)

from libs.events import topics
from libs.kit.settings import TOPIC_PARTITIONS, ServiceSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KafkaConnection:
    """Where the brokers are and who we are to them: every Kafka client of ours is built from
    one of these (`client_options` for aiokafka, `faststream_security` for FastStream)."""

    bootstrap: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-256"
    username: str = ""
    password: str = field(default="", repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> "KafkaConnection":
        sasl = settings.kafka_uses_sasl
        return cls(
            bootstrap=settings.kafka_bootstrap,
            security_protocol=settings.kafka_security_protocol,
            sasl_mechanism=settings.kafka_sasl_mechanism,
            username=settings.kafka_username if sasl else "",
            password=settings.kafka_sasl_password() if sasl else "",
            ssl_cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None,
            ssl_certfile=str(settings.kafka_ssl_certfile) if settings.kafka_ssl_certfile else None,
            ssl_keyfile=str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
        )

    @classmethod
    def operator(cls, bootstrap: str | None = None) -> "KafkaConnection":
        """The admin principal's connection (operators' tools: the bench, tests' probes), to
        the configured brokers or to `bootstrap`."""
        settings = ServiceSettings()
        if bootstrap is not None:
            settings.kafka_bootstrap = bootstrap
        return cls.from_settings(settings)

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        """Verifying the brokers' certificates (and host names) against the CA file, or the
        system's CAs; with a client certificate for mutual TLS when one is configured."""
        if not self.uses_tls:
            return None
        context = ssl.create_default_context(cafile=self.ssl_cafile)
        if self.ssl_certfile:
            context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
        return context

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for AIOKafkaProducer, AIOKafkaConsumer and AIOKafkaAdminClient."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": self.security_protocol,
        }
        if self.uses_sasl:
            options |= {
                "sasl_mechanism": self.sasl_mechanism,
                "sasl_plain_username": self.username,
                "sasl_plain_password": self.password,
            }
        if self.uses_tls:
            options["ssl_context"] = self.ssl_context()
        return options

    def faststream_security(self) -> BaseSecurity | None:
        """The same credentials for FastStream's KafkaBroker."""
        context = self.ssl_context()
        if not self.uses_sasl:
            return BaseSecurity(ssl_context=context) if context else None
        kinds: dict[str, type[SASLPlaintext | SASLScram256 | SASLScram512]] = {
            "PLAIN": SASLPlaintext,
            "SCRAM-SHA-256": SASLScram256,
            "SCRAM-SHA-512": SASLScram512,
        }
        return kinds[self.sasl_mechanism](
            self.username, self.password, ssl_context=context, use_ssl=self.uses_tls
        )


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


def new_producer(kafka: KafkaConnection, client_id: str) -> AIOKafkaProducer:
    """An idempotent producer: acks=all, no duplicates or reordering on internal retries."""
    return AIOKafkaProducer(
        **kafka.client_options(),
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
    names += [topics.listings(DEFAULT_LISTING_CHANNEL)]  # issue 13, see the end of the module
    return names + [topics.dlq(t) for t in names]


async def ensure_topics(
    kafka: KafkaConnection,
    names: list[str] | None = None,
    partitions: int = TOPIC_PARTITIONS,
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
        admin = AIOKafkaAdminClient(**kafka.client_options(), request_timeout_ms=5000)
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


# --- channels and listings (issue 13) ---

# The sales channel every catalog has (its migration seeds it): `backroom topics` creates its
# listing topic; catalog creates every other channel's when the channel is created.
DEFAULT_LISTING_CHANNEL = "web"


# --- the dead-letter topics (read by `backroom`, the saga inspector and the fault harness) ---


async def read_dlq(kafka: KafkaConnection, dlq_topics: list[str]) -> list[dict[str, Any]]:
    """Every record currently on the given dead-letter topics, oldest first per partition."""
    consumer = AIOKafkaConsumer(**kafka.client_options(), enable_auto_commit=False)
    await consumer.start()
    entries: list[dict[str, Any]] = []
    try:
        partitions = await topic_partitions(consumer, dlq_topics)
        if not partitions:
            return entries
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        remaining = {tp for tp in partitions if end[tp] > 0}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=2000)
            if not batch:
                break
            for tp, records in batch.items():
                for rec in records:
                    headers = {k: v.decode(errors="replace") for k, v in (rec.headers or ())}
                    try:
                        event = json.loads(rec.value)
                    except ValueError:
                        event = {}
                    entries.append(
                        {
                            "dlq_topic": rec.topic,
                            "partition": rec.partition,
                            "offset": rec.offset,
                            "key": rec.key.decode() if rec.key else None,
                            "event_id": event.get("id") if isinstance(event, dict) else None,
                            "type": event.get("type") if isinstance(event, dict) else None,
                            "original_topic": headers.get("x-dlq-original-topic"),
                            "consumer_group": headers.get("x-dlq-consumer-group"),
                            "attempts": headers.get("x-dlq-attempts"),
                            "error": headers.get("x-dlq-error"),
                            "failed_at": headers.get("x-dlq-failed-at"),
                            "_record": rec,
                        }
                    )
                    if rec.offset + 1 >= end[tp]:
                        remaining.discard(tp)
    finally:
        await consumer.stop()
    return entries


async def replay_dlq(kafka: KafkaConnection, dlq_topics: list[str], event_id: str | None) -> int:
    """Re-publish dead-lettered records to their original topic (same key and value): EVERY
    consumer group of that topic reads them again (their inboxes make it harmless). Not what
    `backroom dlq replay` does (issue 14: the owning service replays to the failed group only)."""
    entries = [e for e in await read_dlq(kafka, dlq_topics) if event_id in (None, e["event_id"])]
    producer = new_producer(kafka, "backroom-dlq-replay")
    await producer.start()
    try:
        for entry in entries:
            rec = entry["_record"]
            headers = [(k, v) for k, v in (rec.headers or ()) if not k.startswith("x-dlq-")]
            headers.append(
                ("x-dlq-replayed-from", f"{rec.topic}/{rec.partition}/{rec.offset}".encode())
            )
            original = entry["original_topic"] or rec.topic.removesuffix(topics.DLQ_SUFFIX)
            await producer.send_and_wait(original, value=rec.value, key=rec.key, headers=headers)
    finally:
        await producer.stop()
    return len(entries)
