"""Kafka least privilege on the real broker (issue 9, item 3): every principal authenticates,
and the ACLs of libs/kit/kafka_acl.py let each one do only its part.

Refusals are probed with records that could never be applied (the broker refuses them before
they reach a log); reads use assigned partitions, not the services' consumer groups, so no
running service sees a rebalance.
"""

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaError,
    TopicAuthorizationFailedError,
)

from libs.events import topics
from libs.kit.kafka import KafkaConnection
from libs.kit.kafka_acl import PRINCIPALS, SUBSCRIBER, SUBSCRIPTIONS
from libs.kit.settings import KAFKA_ADMIN, SERVICE_ROLES, ServiceSettings

ROOT = Path(__file__).resolve().parents[3]
NEVER_APPLIED = b'{"not": "an event"}'


def connection(principal: str, password: str | None = None) -> KafkaConnection:
    settings = ServiceSettings(kafka_username=principal)
    if password is not None:
        settings.kafka_password = password
    return KafkaConnection.from_settings(settings)


async def produce(principal: str, topic: str, *, idempotent: bool = True) -> None:
    """Send one record as `principal`; raises what the broker answered."""
    producer = AIOKafkaProducer(
        **connection(principal).client_options(),
        acks="all",
        enable_idempotence=idempotent,
        request_timeout_ms=10000,
    )
    try:
        await producer.start()
        await producer.send_and_wait(topic, NEVER_APPLIED, key=b"security-probe")
    finally:
        await producer.stop()


async def read(options: dict[str, object], topic: str) -> int:
    """Fetch partition 0 of `topic` from its start (no group); how many records came back.
    Raises TopicAuthorizationFailedError when the broker hides the topic (no DESCRIBE) or
    refuses the fetch (no READ)."""
    consumer = AIOKafkaConsumer(**options, enable_auto_commit=False, max_partition_fetch_bytes=4096)
    try:
        await consumer.start()
        await consumer._client.add_topic(topic)  # a metadata request naming it
        if topic in consumer._client.cluster.unauthorized_topics:
            raise TopicAuthorizationFailedError(topic)
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, 0)  # no offset lookup: the fetch itself is what is authorized
        batch = await consumer.getmany(tp, timeout_ms=2000)
        return sum(len(records) for records in batch.values())
    finally:
        await consumer.stop()


async def join(options: dict[str, object], topic: str, group: str) -> None:
    """Join `group` on `topic` and fetch once (raises what the broker answered)."""
    consumer = AIOKafkaConsumer(
        topic,
        **options,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="latest",
    )
    try:
        await consumer.start()
        await consumer.getmany(timeout_ms=1500)
    finally:
        await consumer.stop()


async def test_catalogs_principal_cannot_produce_to_payments() -> None:
    """The forged `PaymentCaptured` of the issue: catalog may not write to backroom.payments."""
    with pytest.raises(TopicAuthorizationFailedError):
        await produce("catalog", topics.PAYMENTS)


@pytest.mark.parametrize("topic", [*topics.ALL_TOPICS, *map(topics.dlq, topics.ALL_TOPICS)])
async def test_the_read_only_subscriber_cannot_produce_anywhere(topic: str) -> None:
    with pytest.raises(TopicAuthorizationFailedError):
        await produce(SUBSCRIBER, topic, idempotent=False)
    with pytest.raises(ClusterAuthorizationFailedError):  # nor get an idempotent producer id
        await produce(SUBSCRIBER, topic)


@pytest.mark.parametrize("principal", [p for p in PRINCIPALS if p not in (KAFKA_ADMIN, "orders")])
async def test_only_orders_writes_payment_instructions(principal: str) -> None:
    with pytest.raises((TopicAuthorizationFailedError, ClusterAuthorizationFailedError)):
        await produce(principal, topics.PAYMENT_INSTRUCTIONS)


@pytest.mark.parametrize("principal", [p for p in PRINCIPALS if p not in (KAFKA_ADMIN, "payments")])
async def test_only_payments_reads_payment_instructions(principal: str) -> None:
    with pytest.raises(TopicAuthorizationFailedError):
        await read(connection(principal).client_options(), topics.PAYMENT_INSTRUCTIONS)


async def test_payments_reads_its_instructions() -> None:
    assert await read(connection("payments").client_options(), topics.PAYMENT_INSTRUCTIONS) >= 0


@pytest.mark.parametrize("service", SERVICE_ROLES)
async def test_a_service_cannot_consume_in_another_services_group(service: str) -> None:
    other = "catalog" if service != "catalog" else "pricing"
    readable = SUBSCRIPTIONS[service][0]
    with pytest.raises(GroupAuthorizationFailedError):
        await join(connection(service).client_options(), readable, other)


async def test_a_wrong_password_is_refused() -> None:
    with pytest.raises(KafkaError):
        await read(
            connection("catalog", password="not-" + uuid.uuid4().hex).client_options(),
            topics.CATALOG,
        )


def kafka_config(principal: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", "libs.kit.cli", "kafka-config", "--principal", principal],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    options = json.loads(out.stdout)
    assert isinstance(options, dict)
    return options


async def test_a_downstream_subscriber_finds_its_way_in_with_kafka_config() -> None:
    """What `make run` tells a downstream team: the JSON goes straight to AIOKafkaConsumer; it
    reads every public topic in a group of its own, and nothing internal."""
    options = kafka_config(SUBSCRIBER)
    assert set(options) == {
        "bootstrap_servers",
        "security_protocol",
        "sasl_mechanism",
        "sasl_plain_username",
        "sasl_plain_password",
    }
    assert options["sasl_plain_username"] == SUBSCRIBER
    for topic in topics.PUBLIC_TOPICS:
        assert await read(options, topic) >= 0
    await join(options, topics.ORDERS, f"downstream-{uuid.uuid4().hex[:8]}")
    with pytest.raises(TopicAuthorizationFailedError):
        await read(options, topics.PAYMENT_INSTRUCTIONS)
    for group in SERVICE_ROLES:  # joining `payments` would take the payments service's partitions
        with pytest.raises(GroupAuthorizationFailedError):
            await join(options, topics.ORDERS, group)
