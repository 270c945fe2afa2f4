"""Notifications tables: the sent-notifications log, webhook subscriptions and their deliveries."""

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

notifications = Table(
    "notifications",
    metadata,
    Column("id", String(64), primary_key=True),
    # Insertion order: the stable sort key of the paginated log.
    Column("seq", BigInteger, Identity(always=True), nullable=False, unique=True),
    # One email per (order, template): a redelivered or repeated event finds its key taken.
    Column("dedupe_key", String(300), nullable=False, unique=True),
    Column("channel", String(10), nullable=False),
    Column("template", String(100), nullable=False),
    Column("recipient", String(2048), nullable=False),
    Column("order_id", String(64)),
    # 'pending' lives only inside the handler's transaction, between insert and send.
    Column("status", String(10), nullable=False),
    Column("error", Text),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("channel IN ('email', 'webhook')", name="ck_notifications_channel"),
    CheckConstraint("status IN ('pending', 'sent', 'failed')", name="ck_notifications_status"),
    Index("ix_notifications_order_id_seq", "order_id", "seq"),
)

webhook_subscriptions = Table(
    "webhook_subscriptions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("seq", BigInteger, Identity(always=True), nullable=False, unique=True),
    Column("url", String(2048), nullable=False),
    Column("events", JSONB, nullable=False),
    # Kept in clear: it is the HMAC key every delivery is signed with.
    Column("secret", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_webhook_subscriptions_events", "events", postgresql_using="gin"),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", String(64), primary_key=True),
    Column(
        "subscription_id",
        String(64),
        ForeignKey("webhook_subscriptions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("event_id", String(64), nullable=False),
    Column("event_type", String(100), nullable=False),
    # The CloudEvent exactly as received: the body that is POSTed and signed.
    Column("payload", Text, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("status", String(10), nullable=False, server_default="pending"),
    Column("last_error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint(
        "subscription_id", "event_id", name="uq_webhook_deliveries_subscription_event"
    ),
    CheckConstraint("attempts >= 0", name="ck_webhook_deliveries_attempts"),
    CheckConstraint(
        "status IN ('pending', 'delivered', 'failed')", name="ck_webhook_deliveries_status"
    ),
    # The worker's claim query reads only due pending rows.
    Index(
        "ix_webhook_deliveries_due",
        "next_attempt_at",
        postgresql_where=text("status = 'pending'"),
    ),
)
