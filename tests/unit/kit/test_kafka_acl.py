"""The Kafka access model (libs/kit/kafka_acl.py) and the credentials settings: least privilege
as data, checked without a broker (tests/integration/kit/test_security_kafka.py checks that the
broker enforces it)."""

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from bench.invariants import subscriptions
from libs.events import topics
from libs.kit import cli
from libs.kit.kafka import KafkaConnection
from libs.kit.kafka_acl import (
    NOTIFICATIONS_LISTINGS_GROUP,
    OWNERS,
    PRINCIPALS,
    SUBSCRIBER,
    SUBSCRIPTIONS,
    Acl,
    Operation,
    Pattern,
    Permission,
    Resource,
    acls,
    writes,
)
from libs.kit.settings import KAFKA_ADMIN, SERVICE_ROLES, KafkaConfigError, ServiceSettings


def allowed(principal: str, resource: Resource, name: str, operation: Operation) -> bool:
    """What the StandardAuthorizer would decide for this model (literal names and `*`, DENY
    first, READ/WRITE implying DESCRIBE)."""
    implied = {Operation.DESCRIBE: {Operation.READ, Operation.WRITE}}.get(operation, set())
    matching = [
        acl
        for acl in acls()
        if acl.principal == principal
        and acl.resource == resource
        and acl.name in (name, "*")
        and (acl.operation == operation or acl.operation in implied)
    ]
    if any(acl.permission is Permission.DENY for acl in matching):
        return False
    return any(acl.permission is Permission.ALLOW for acl in matching)


def test_subscriptions_are_what_the_services_handlers_read() -> None:
    """The ACLs follow the code: a handler added for a new topic without its READ would leave a
    service unable to start consuming."""
    actual = {svc: set(ts) for svc, ts in subscriptions().items()}
    assert actual == {svc: set(ts) for svc, ts in SUBSCRIPTIONS.items()}


def test_every_topic_has_exactly_one_owner_who_alone_writes_it() -> None:
    assert set(OWNERS) == set(topics.ALL_TOPICS)
    for topic, owner in OWNERS.items():
        writers = {p for p in PRINCIPALS if allowed(p, Resource.TOPIC, topic, Operation.WRITE)}
        assert writers == {owner}, topic


def test_a_dead_letter_topic_is_written_by_its_consumers_only() -> None:
    for topic in topics.ALL_TOPICS:
        consumers = {svc for svc, ts in SUBSCRIPTIONS.items() if topic in ts}
        writers = {
            p for p in PRINCIPALS if allowed(p, Resource.TOPIC, topics.dlq(topic), Operation.WRITE)
        }
        assert writers == consumers, topic


def test_payment_instructions_are_orders_to_payments_only() -> None:
    instructions = topics.PAYMENT_INSTRUCTIONS
    assert {p for p in PRINCIPALS if allowed(p, Resource.TOPIC, instructions, Operation.READ)} == {
        "payments"
    }
    assert {p for p in PRINCIPALS if allowed(p, Resource.TOPIC, instructions, Operation.WRITE)} == {
        "orders"
    }


def test_a_service_reads_only_its_subscriptions_in_its_own_group() -> None:
    for service in SERVICE_ROLES:
        readable = {
            t
            for t in [*topics.ALL_TOPICS, *map(topics.dlq, topics.ALL_TOPICS)]
            if allowed(service, Resource.TOPIC, t, Operation.READ)
        }
        # Issue 14: orders' timeline reads every dead-letter topic (no group: by assignment).
        inspected = set(map(topics.dlq, topics.ALL_TOPICS)) if service == "orders" else set()
        assert readable == set(SUBSCRIPTIONS[service]) | inspected
        groups = {g for g in SERVICE_ROLES if allowed(service, Resource.GROUP, g, Operation.READ)}
        assert groups == {service}


def test_the_subscriber_reads_public_topics_and_writes_nothing() -> None:
    everything = [*topics.ALL_TOPICS, *map(topics.dlq, topics.ALL_TOPICS)]
    readable = {t for t in everything if allowed(SUBSCRIBER, Resource.TOPIC, t, Operation.READ)}
    assert readable == set(topics.PUBLIC_TOPICS)
    for topic in everything:
        for op in (Operation.WRITE, Operation.CREATE):
            assert not allowed(SUBSCRIBER, Resource.TOPIC, topic, op)
    assert not allowed(SUBSCRIBER, Resource.CLUSTER, "kafka-cluster", Operation.IDEMPOTENT_WRITE)
    assert allowed(SUBSCRIBER, Resource.GROUP, "warehouse-sync", Operation.READ)
    for group in SERVICE_ROLES:  # its partitions would be taken from the service
        assert not allowed(SUBSCRIBER, Resource.GROUP, group, Operation.READ)


def test_admin_needs_no_acl_and_a_service_creates_only_what_it_writes() -> None:
    assert not [acl for acl in acls() if acl.principal == KAFKA_ADMIN]
    for service in SERVICE_ROLES:
        created = {
            acl.name
            for acl in acls()
            if acl.principal == service
            and acl.operation is Operation.CREATE
            and acl.pattern is Pattern.LITERAL  # the listing topics by prefix: below
        }
        assert created == set(writes(service))


def test_acls_print_readably() -> None:
    acl = Acl("orders", Resource.TOPIC, topics.ORDERS, Operation.WRITE)
    assert str(acl) == "User:orders ALLOW WRITE on topic backroom.orders"


# --- credentials -------------------------------------------------------------------------------


def test_development_uses_sasl_plaintext_on_loopback_and_elsewhere_tls() -> None:
    assert ServiceSettings(env="dev").kafka_security_protocol == "SASL_PLAINTEXT"
    assert ServiceSettings(env="production").kafka_security_protocol == "SASL_SSL"
    with pytest.raises(ValidationError, match="SECURITY_PROTOCOL"):
        ServiceSettings(kafka_security_protocol="SASL_WHATEVER")
    with pytest.raises(ValidationError, match="SASL_MECHANISM"):
        ServiceSettings(kafka_sasl_mechanism="GSSAPI")


def test_a_service_is_its_own_principal_and_a_tool_is_admin() -> None:
    assert ServiceSettings(env="dev", service_name="payments").kafka_username == "payments"
    assert ServiceSettings(env="dev").kafka_username == KAFKA_ADMIN


@pytest.mark.parametrize("service", SERVICE_ROLES)
def test_outside_development_a_service_without_kafka_password_refuses_to_connect(
    service: str,
) -> None:
    settings = ServiceSettings(env="production", service_name=service, pg_password="pg")
    with pytest.raises(KafkaConfigError, match="BACKROOM_KAFKA_PASSWORD"):
        KafkaConnection.from_settings(settings)
    mutual_tls = ServiceSettings(
        env="production", service_name=service, pg_password="pg", kafka_security_protocol="SSL"
    )
    assert "sasl_plain_password" not in KafkaConnection.from_settings(mutual_tls).client_options()


def test_development_passwords_are_per_principal_and_kept(tmp_path: Path) -> None:
    def password(principal: str) -> str:
        settings = ServiceSettings(
            env="dev", kafka_username=principal, dev_kafka_password_dir=tmp_path
        )
        return str(KafkaConnection.from_settings(settings).client_options()["sasl_plain_password"])

    assert password("orders") == password("orders")
    assert password("orders") != password("payments")
    assert len(password("subscriber")) >= 32
    assert (tmp_path / "orders").stat().st_mode & 0o077 == 0


def test_tls_settings_give_a_verifying_context() -> None:
    conn = KafkaConnection("broker:9093", "SASL_SSL", username="u", password="p")
    context = conn.client_options()["ssl_context"]
    assert context.check_hostname
    assert conn.faststream_security() is not None


def test_kafka_config_prints_aiokafka_keyword_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BACKROOM_ENV", "dev")
    monkeypatch.setenv("BACKROOM_DEV_KAFKA_PASSWORD_DIR", str(tmp_path))
    assert cli.main(["kafka-config", "--principal", "subscriber"]) == 0
    options = json.loads(capsys.readouterr().out)
    assert options["sasl_plain_username"] == "subscriber"
    assert options["sasl_plain_password"] == (tmp_path / "subscriber").read_text().strip()
    assert options["security_protocol"] == "SASL_PLAINTEXT"
    with pytest.raises(SystemExit):
        cli.main(["kafka-config", "--principal", "nobody"])


def test_an_empty_tls_file_setting_means_unset() -> None:
    """A compose `${VAR:-}` or an empty ConfigMap value: the system's CAs, not Path('.')."""
    settings = ServiceSettings(kafka_ssl_cafile="", kafka_ssl_certfile="", kafka_ssl_keyfile="")
    assert (settings.kafka_ssl_cafile, settings.kafka_ssl_certfile) == (None, None)


# --- channels and listings (issue 13) ---


def test_catalog_alone_writes_the_listing_topics_the_subscriber_and_notifications_read_them() -> (
    None
):
    def grants(operation: Operation) -> set[str]:
        return {
            acl.principal
            for acl in acls()
            if acl.pattern is Pattern.PREFIXED
            and acl.name == topics.LISTINGS_PREFIX
            and acl.operation is operation
            and acl.permission is Permission.ALLOW
        }

    assert topics.listings("amazon-de").startswith(topics.LISTINGS_PREFIX)
    # Notifications writes there only the dead letters of what it consumes (channel webhooks,
    # below): a prefix ACL cannot name `.dlq` twins alone. It creates none of them.
    assert grants(Operation.CREATE) == {"catalog"}
    assert grants(Operation.WRITE) == {"catalog", "notifications"}
    assert grants(Operation.READ) == {SUBSCRIBER, "notifications"}
    assert str(
        Acl(
            "catalog",
            Resource.TOPIC,
            topics.LISTINGS_PREFIX,
            Operation.WRITE,
            pattern=Pattern.PREFIXED,
        )
    ) == ("User:catalog ALLOW WRITE on topic backroom.listings.*")


# --- channel webhooks (issue 13) ---


def test_notifications_reads_the_listing_topics_in_a_group_of_its_own_the_subscriber_may_not_join() -> (
    None
):
    group = NOTIFICATIONS_LISTINGS_GROUP
    model = set(acls())
    assert Acl("notifications", Resource.GROUP, group, Operation.READ) in model
    for op in (Operation.READ, Operation.DESCRIBE):
        assert Acl(SUBSCRIBER, Resource.GROUP, group, op, Permission.DENY) in model
    # Its dead letters: WRITE by prefix on the listing topics, never CREATE.
    assert (
        Acl(
            "notifications",
            Resource.TOPIC,
            topics.LISTINGS_PREFIX,
            Operation.WRITE,
            pattern=Pattern.PREFIXED,
        )
        in model
    )
    assert topics.dlq(topics.listings("amazon-de")).startswith(topics.LISTINGS_PREFIX)
