"""Who may do what on the brokers: the Kafka principals and their ACLs, derived from which
service owns which topic and which topics each service subscribes to (ADR 0007).

- A service writes (and may create) the topics it owns and the dead-letter twins of the topics
  it consumes; it reads only the topics it subscribes to, in its own consumer group.
- Only orders writes, and only payments reads, the internal payment-instruction topic.
- `subscriber`, the read-only principal for downstream systems, reads the public topics in any
  consumer group except the services' own (joining `payments` would take its partitions).
- `admin` (operators' tools: topics, ACLs, dead-letter replay, the bench's and tests' probes) is
  the brokers' super user and needs no ACL.

The brokers deny whatever no ACL allows (StandardAuthorizer, allow.everyone.if.no.acl.found
false). `backroom topics` applies these ACLs; `tests/unit/kit/test_kafka_acl.py` checks that
SUBSCRIPTIONS is what each service's handlers really subscribe to.
"""

from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.admin import CreateAclsRequest_v1
from aiokafka.protocol.api import Request

from libs.events import topics
from libs.kit.kafka import KafkaConnection
from libs.kit.settings import KAFKA_ADMIN, SERVICE_ROLES

SUBSCRIBER = "subscriber"
PRINCIPALS = (KAFKA_ADMIN, *SERVICE_ROLES, SUBSCRIBER)

OWNERS: dict[str, str] = {
    topics.CATALOG: "catalog",
    topics.PRICING: "pricing",
    topics.INVENTORY: "inventory",
    topics.ORDERS: "orders",
    topics.PAYMENTS: "payments",
    topics.NOTIFICATIONS: "notifications",
    topics.PAYMENT_INSTRUCTIONS: "orders",
}

# The topics each service's consumer subscribes to (its handlers' topics).
SUBSCRIPTIONS: dict[str, tuple[str, ...]] = {
    "catalog": (topics.INVENTORY, topics.PRICING),
    "inventory": (topics.ORDERS,),
    "pricing": (topics.CATALOG,),
    # catalog: ChannelChanged (issue 13).
    "orders": (topics.CATALOG, topics.INVENTORY, topics.PAYMENTS),
    "payments": (topics.PAYMENT_INSTRUCTIONS, topics.INVENTORY, topics.ORDERS),
    "notifications": (
        topics.CATALOG,
        topics.INVENTORY,
        topics.ORDERS,
        topics.PAYMENTS,
        topics.PRICING,
    ),
}


class Resource(IntEnum):
    """Kafka's AclResourceType codes."""

    TOPIC = 2
    GROUP = 3
    CLUSTER = 4


class Pattern(IntEnum):
    """Kafka's PatternType codes."""

    LITERAL = 3
    PREFIXED = 4


class Operation(IntEnum):
    """Kafka's AclOperation codes."""

    READ = 3
    WRITE = 4
    CREATE = 5
    DESCRIBE = 8
    IDEMPOTENT_WRITE = 12


class Permission(IntEnum):
    """Kafka's AclPermissionType codes."""

    DENY = 2
    ALLOW = 3


@dataclass(frozen=True, order=True)
class Acl:
    principal: str
    resource: Resource
    name: str
    operation: Operation
    permission: Permission = Permission.ALLOW
    pattern: Pattern = Pattern.LITERAL

    def __str__(self) -> str:
        where = f"{self.resource.name.lower()} {self.name}"
        if self.pattern is Pattern.PREFIXED:
            where += "*"
        return f"User:{self.principal} {self.permission.name} {self.operation.name} on {where}"


def writes(service: str) -> list[str]:
    """The topics a service produces to: its own, and the dead letters of what it consumes."""
    owned = [topic for topic, owner in OWNERS.items() if owner == service]
    return owned + [topics.dlq(topic) for topic in SUBSCRIPTIONS.get(service, ())]


def acls() -> list[Acl]:
    """Every ACL of the model, sorted (stable output for `backroom topics --print-acls`)."""
    out: list[Acl] = []
    for service in SERVICE_ROLES:
        for topic in writes(service):
            for op in (Operation.WRITE, Operation.DESCRIBE, Operation.CREATE):
                out.append(Acl(service, Resource.TOPIC, topic, op))
        for topic in SUBSCRIPTIONS.get(service, ()):
            for op in (Operation.READ, Operation.DESCRIBE):
                out.append(Acl(service, Resource.TOPIC, topic, op))
        out.append(Acl(service, Resource.GROUP, service, Operation.READ))
        # Our producers are idempotent (acks=all, no duplicates on retry): InitProducerId asks
        # for this on the cluster (the broker did not infer it from WRITE on a topic here).
        out.append(Acl(service, Resource.CLUSTER, "kafka-cluster", Operation.IDEMPOTENT_WRITE))
    for topic in topics.PUBLIC_TOPICS:
        for op in (Operation.READ, Operation.DESCRIBE):
            out.append(Acl(SUBSCRIBER, Resource.TOPIC, topic, op))
    out.append(Acl(SUBSCRIBER, Resource.GROUP, "*", Operation.READ))
    for service in SERVICE_ROLES:  # a DENY wins over the ALLOW on every group
        for op in (Operation.READ, Operation.DESCRIBE):
            out.append(Acl(SUBSCRIBER, Resource.GROUP, service, op, Permission.DENY))
    out += listing_acls()
    out += timeline_acls()  # issue 14
    return sorted(set(out))


class _CreateAcls(Request[CreateAclsRequest_v1]):  # type: ignore[misc]
    """CreateAcls v1 carrying many creations at once (aiokafka has the wire format, and a
    request for one ACL, but no admin call). Creating an ACL that exists changes nothing."""

    API_KEY: ClassVar[int] = 30

    def __init__(self, entries: list[Acl]) -> None:
        self._entries = entries

    def build(self, request_struct_class: type[CreateAclsRequest_v1]) -> CreateAclsRequest_v1:
        return request_struct_class(
            [
                (
                    acl.resource.value,
                    acl.name,
                    acl.pattern.value,
                    f"User:{acl.principal}",
                    "*",
                    acl.operation.value,
                    acl.permission.value,
                )
                for acl in self._entries
            ]
        )


class AclError(RuntimeError):
    """The brokers refused to create an ACL (no authorizer configured, or not the admin)."""


async def create_acls(admin: AIOKafkaAdminClient, entries: list[Acl]) -> None:
    """Create these ACLs (idempotent) through a started admin client."""
    response = await admin._send_request(_CreateAcls(entries))
    errors = [
        f"{acl}: error {code} {message or ''}".strip()
        for acl, (code, message) in zip(entries, response.creation_responses, strict=True)
        if code != 0
    ]
    if errors:
        raise AclError("; ".join(errors))


async def apply_acls(kafka: KafkaConnection) -> int:
    """Create every ACL of the model on the brokers (as the admin principal); how many."""
    entries = acls()
    admin = AIOKafkaAdminClient(**kafka.client_options(), request_timeout_ms=10000)
    await admin.start()
    try:
        await create_acls(admin, entries)
    finally:
        await admin.close()
    return len(entries)


# --- channels and listings (issue 13) ---

# Each sales channel's ListingChanged go to a topic of its own (topics.listings), created when the
# channel is: the ACLs name them by prefix. Catalog writes (and creates) them; the subscriber
# principal and notifications (webhooks per channel) read them. A marketplace's own principal
# would get a LITERAL READ on its one channel's topic.
LISTING_READERS = (SUBSCRIBER, "notifications")


def listing_acls() -> list[Acl]:
    prefix = topics.LISTINGS_PREFIX
    out = [
        Acl("catalog", Resource.TOPIC, prefix, op, pattern=Pattern.PREFIXED)
        for op in (Operation.WRITE, Operation.DESCRIBE, Operation.CREATE)
    ]
    out += [
        Acl(reader, Resource.TOPIC, prefix, op, pattern=Pattern.PREFIXED)
        for reader in LISTING_READERS
        for op in (Operation.READ, Operation.DESCRIBE)
    ]
    return out + channel_webhook_acls()


# --- channel webhooks (issue 13) ---

# Notifications reads the listing topics by pattern in a consumer group of its own (a new
# channel's topic rebalances that group only), and dead-letters a listing event it cannot handle
# to the topic's twin, `backroom.listings.<channel>.dlq` (catalog creates it with the channel).
# Kafka ACLs match names literally or by prefix, never by suffix: WRITE on those twins is WRITE on
# the prefix, which covers the listing topics too. Accepted: notifications already signs what
# each channel's webhook subscribers receive of those topics. It may not create them.
NOTIFICATIONS_LISTINGS_GROUP = "notifications.listings"


def channel_webhook_acls() -> list[Acl]:
    prefix = topics.LISTINGS_PREFIX
    group = NOTIFICATIONS_LISTINGS_GROUP
    out = [
        Acl("notifications", Resource.TOPIC, prefix, Operation.WRITE, pattern=Pattern.PREFIXED),
        Acl("notifications", Resource.GROUP, group, Operation.READ),
    ]
    # Like the services' own groups: the subscriber principal may not join it.
    out += [
        Acl(SUBSCRIBER, Resource.GROUP, group, op, Permission.DENY)
        for op in (Operation.READ, Operation.DESCRIBE)
    ]
    return out


# --- timeline (issue 14) ---

# Orders' saga inspector (GET /orders/{id}/timeline) shows the dead letters about an order from
# every `<topic>.dlq`: it reads them (by partition assignment: no consumer group), nothing more.
TIMELINE_READER = "orders"


def timeline_acls() -> list[Acl]:
    return [
        Acl(TIMELINE_READER, Resource.TOPIC, topics.dlq(topic), op)
        for topic in topics.ALL_TOPICS
        for op in (Operation.READ, Operation.DESCRIBE)
    ]
