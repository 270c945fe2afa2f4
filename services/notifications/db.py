"""Notifications tables and every query on them: the notifications log (with the emails queued to
send), webhook subscriptions and their deliveries, as small repositories returning domain values."""

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Any

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
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB

from libs.kit.db import DbSession
from libs.kit.retention import PruneTask
from services.notifications.domain import (
    Announcement,
    Attachment,
    DeliveryRecord,
    DueDelivery,
    LogEntry,
    QueuedEmail,
    Subscription,
)

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
    # 'pending': an email queued by the event's transaction, not sent yet (not in the log).
    Column("status", String(10), nullable=False),
    Column("error", Text),
    # When it was sent or given up on (the log's time); when queued, while pending.
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # What a queued email needs to be sent later, fixed at queueing: a resend is the same mail.
    Column("message_id", String(400)),
    Column("mail_subject", Text),
    Column("mail_text", Text),
    Column("queued_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("subject", String(200)),  # the aggregate id, NotificationSent's key
    Column("sku", String(200)),
    Column("correlation_id", String(200)),
    Column("causation_id", String(200)),
    # Claims by the sending worker: a lease that ran out (a crash) lets another claim take it.
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("lease_until", DateTime(timezone=True)),
    # Files sent with a queued email, [{filename, content_type, content (base64)}] (issue 12).
    Column("attachments", JSONB),
    CheckConstraint("channel IN ('email', 'webhook')", name="ck_notifications_channel"),
    CheckConstraint("status IN ('pending', 'sent', 'failed')", name="ck_notifications_status"),
    Index("ix_notifications_order_id_seq", "order_id", "seq"),
    # The sending worker's claim reads only pending rows, oldest first.
    Index("ix_notifications_pending", "seq", postgresql_where=text("status = 'pending'")),
)

webhook_subscriptions = Table(
    "webhook_subscriptions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("seq", BigInteger, Identity(always=True), nullable=False, unique=True),
    Column("url", String(2048), nullable=False),
    Column("events", JSONB, nullable=False),
    # Kept in clear: it is the HMAC key every delivery is signed with (the newest active one).
    Column("secret", String(200), nullable=False),
    # While a secret is being rotated: the older one, still signing every delivery too.
    Column("previous_secret", String(200)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_webhook_subscriptions_events", "events", postgresql_using="gin"),
    # Issue 13: a sales channel's listing subscription (None: every other subscription).
    Column("channel", String(32)),
    Index(
        "ix_webhook_subscriptions_channel",
        "channel",
        postgresql_where=text("channel IS NOT NULL"),
    ),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", String(64), primary_key=True),
    # Insertion order: the stable sort key of a subscription's paginated deliveries.
    Column("seq", BigInteger, Identity(always=True), nullable=False, unique=True),
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
    # The first attempt of the current round: retries stop at the horizon counted from it.
    Column("retry_from", DateTime(timezone=True)),
    # How many times an admin asked for it again (each round logs its own outcome).
    Column("redeliveries", Integer, nullable=False, server_default="0"),
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
    # An admin's page of one subscription's deliveries, newest first.
    Index("ix_webhook_deliveries_subscription_seq", "subscription_id", "seq"),
)


# --- repositories ------------------------------------------------------------------------------

_SUBSCRIBED_TYPES = "notifications_subscribed_types"


def _queued(row: Any) -> QueuedEmail:
    return QueuedEmail(
        id=row.id,
        dedupe_key=row.dedupe_key,
        template=row.template,
        to=row.recipient,
        message_id=row.message_id,
        mail_subject=row.mail_subject,
        text=row.mail_text,
        subject=row.subject,
        order_id=row.order_id,
        sku=row.sku,
        correlation_id=row.correlation_id,
        causation_id=row.causation_id,
        queued_at=row.queued_at,
        lease_until=row.lease_until,
        attachments=_attachments_of(row.attachments),
    )


def _entry(row: Any) -> LogEntry:
    return LogEntry(
        id=row.id,
        seq=row.seq,
        channel=row.channel,
        template=row.template,
        to=row.recipient,
        status=row.status,
        at=row.at,
        order_id=row.order_id,
        error=row.error,
    )


def _subscription(row: Any) -> Subscription:
    return Subscription(
        id=row.id,
        seq=row.seq,
        url=row.url,
        events=tuple(row.events),
        created_at=row.created_at,
        active_secrets=len(_secrets(row)),
        channel=row.channel,
    )


def _secrets(row: Any) -> tuple[str, ...]:
    """The active secrets of a subscription row, oldest first."""
    return (row.previous_secret, row.secret) if row.previous_secret else (row.secret,)


def _delivery(row: Any) -> DeliveryRecord:
    return DeliveryRecord(
        id=row.id,
        seq=row.seq,
        subscription_id=row.subscription_id,
        event_id=row.event_id,
        event_type=row.event_type,
        status=row.status,
        attempts=row.attempts,
        last_error=row.last_error,
        next_attempt_at=row.next_attempt_at if row.status == "pending" else None,
        created_at=row.created_at,
        updated_at=row.updated_at,
        redeliveries=row.redeliveries,
    )


# Every column of a delivery but its payload (an admin's list does not need the bodies).
_DELIVERY_COLUMNS = [c for c in webhook_deliveries.c if c.name != "payload"]


# The INSERTs with ON CONFLICT are text: SQLAlchemy 2.0 never caches PostgreSQL's insert construct
# (inherit_cache=False), nor a statement around it, so it compiled these statements of every email
# again on each execution, while a text constant is compiled once. (A plain INSERT stays core
# `insert()`, which is cached.)


def _queue_deliveries(subscriptions: str) -> str:
    """INSERT one pending delivery of the announced event per subscription (of `subscriptions`,
    the table or a join of it) that lists its type; a delivery already queued is left alone."""
    return (
        "INSERT INTO webhook_deliveries (id, subscription_id, event_id, event_type, payload)"
        " SELECT CAST(gen_random_uuid() AS VARCHAR), webhook_subscriptions.id,"
        " :event_id, :event_type, :payload"
        f" FROM {subscriptions}"
        " WHERE webhook_subscriptions.events @> :listing"
        # Issue 13: a ListingChanged to its channel's subscriptions, the rest to those of none.
        " AND webhook_subscriptions.channel IS NOT DISTINCT FROM :channel"
        " ON CONFLICT (subscription_id, event_id) DO NOTHING"
    )


# Values in a SELECT list take no type from the column they are inserted into: their binds give
# it. `listing` is the JSON array [event_type] that a subscription's `events` must contain.
_ANNOUNCEMENT_BINDS = (
    bindparam("event_id", type_=String),
    bindparam("event_type", type_=String),
    bindparam("payload", type_=String),
    bindparam("listing", type_=webhook_subscriptions.c.events.type),
    bindparam("channel", type_=String),
)


def _announced(announcement: Announcement) -> dict[str, Any]:
    return {
        "event_id": announcement.event_id,
        "event_type": announcement.event_type,
        "payload": announcement.payload,
        "listing": [announcement.event_type],
        "channel": announcement.channel,
    }


# A pending email's `at` is when it was queued.
QUEUE_EMAIL = text(
    "INSERT INTO notifications (id, dedupe_key, channel, template, recipient, order_id, status,"
    " at, message_id, mail_subject, mail_text, queued_at, subject, sku, correlation_id,"
    " causation_id, attachments, lease_until, attempts)"
    " VALUES (:id, :dedupe_key, 'email', :template, :recipient, :order_id, 'pending',"
    " :queued_at, :message_id, :mail_subject, :mail_text, :queued_at, :subject, :sku,"
    " :correlation_id, :causation_id, :attachments, :lease_until,"
    " CASE WHEN :lease_until IS NULL THEN 0 ELSE 1 END)"
    " ON CONFLICT (dedupe_key) DO NOTHING"
    " RETURNING notifications.id"
).bindparams(
    bindparam("attachments", type_=JSONB(none_as_null=True)),
    bindparam("lease_until", type_=notifications.c.lease_until.type),
)

# The claimed email concluded (only while its claim holds: still pending, same lease, where a
# None lease matches only a row without one) and, if it was, its announcement queued.
CONCLUDE_EMAIL = text(
    "WITH concluded AS ("
    " UPDATE notifications SET status = :status, error = :error, at = :at, lease_until = NULL"
    " WHERE notifications.id = :id AND notifications.status = 'pending'"
    " AND notifications.lease_until IS NOT DISTINCT FROM :lease_until"
    " RETURNING notifications.id"
    "), queued AS ("
    f" {_queue_deliveries('webhook_subscriptions JOIN concluded ON true')}"
    " RETURNING webhook_deliveries.id"
    ")"
    " SELECT count(*) FROM concluded"
).bindparams(bindparam("lease_until", type_=notifications.c.lease_until.type), *_ANNOUNCEMENT_BINDS)

LOG_WEBHOOK = text(
    "INSERT INTO notifications"
    " (id, dedupe_key, channel, template, recipient, order_id, status, error, at)"
    " VALUES (:id, :dedupe_key, 'webhook', :template, :recipient, :order_id, :status, :error,"
    " :at)"
    " ON CONFLICT (dedupe_key) DO NOTHING"
)


@dataclass(frozen=True)
class NotificationLog:
    """The `notifications` table: queued emails and the log of concluded notifications."""

    session: DbSession

    async def queue_email(self, email: QueuedEmail) -> bool:
        """Insert `email` as pending unless its dedupe key is taken; False if it was. With a
        `lease_until` it is written claimed (one attempt), by the process that will send it."""
        queued = await self.session.scalar(
            QUEUE_EMAIL,
            {
                "id": email.id,
                "dedupe_key": email.dedupe_key,
                "template": email.template,
                "recipient": email.to,
                "order_id": email.order_id,
                "queued_at": email.queued_at,
                "message_id": email.message_id,
                "mail_subject": email.mail_subject,
                "mail_text": email.text,
                "subject": email.subject,
                "sku": email.sku,
                "correlation_id": email.correlation_id,
                "causation_id": email.causation_id,
                "attachments": _attachments_column(email.attachments),
                "lease_until": email.lease_until,
            },
        )
        return queued is not None

    async def claim_emails(
        self, now: datetime, lease_until: datetime, limit: int
    ) -> list[QueuedEmail]:
        """Lease up to `limit` pending emails nobody holds (SKIP LOCKED: several workers share
        them), oldest first; one statement, committed by the caller before any send."""
        claimable = (
            select(notifications.c.id)
            .where(notifications.c.status == "pending")
            .where(or_(notifications.c.lease_until.is_(None), notifications.c.lease_until <= now))
            .order_by(notifications.c.seq)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        rows = (
            await self.session.execute(
                update(notifications)
                .where(notifications.c.id.in_(claimable.scalar_subquery()))
                .values(lease_until=lease_until, attempts=notifications.c.attempts + 1)
                .returning(notifications)
            )
        ).all()
        return [_queued(r) for r in sorted(rows, key=lambda r: r.seq)]

    async def conclude_email(
        self,
        email: QueuedEmail,
        status: str,
        error: str | None,
        at: datetime,
        announcement: Announcement,
    ) -> bool:
        """Record a claimed email as sent or failed and queue `announcement` (its
        NotificationSent) for the webhooks subscribed to it, in one statement; False if the claim
        was lost (the lease ran out and another claim took it, or it is already concluded), and
        then nothing is queued."""
        found = await self.session.scalar(
            CONCLUDE_EMAIL,
            {
                "id": email.id,
                "lease_until": email.lease_until,
                "status": status,
                "error": error,
                "at": at,
                **_announced(announcement),
            },
        )
        return bool(found)

    async def release(self, emails: list[QueuedEmail], until: datetime) -> None:
        """Hand claimed, unsent emails back: claimable again from `until`."""
        for lease in {e.lease_until for e in emails}:
            await self.session.execute(
                update(notifications)
                .where(notifications.c.id.in_([e.id for e in emails if e.lease_until == lease]))
                .where(notifications.c.status == "pending")
                .where(notifications.c.lease_until == lease)
                .values(lease_until=until)
            )

    async def log_webhook(
        self,
        notification_id: str,
        log_key: str,
        event_type: str,
        url: str,
        order_id: str | None,
        status: str,
        error: str | None,
        at: datetime,
    ) -> None:
        await self.session.execute(
            LOG_WEBHOOK,
            {
                "id": notification_id,
                "dedupe_key": log_key,
                "template": event_type,
                "recipient": url,
                "order_id": order_id,
                "status": status,
                "error": error,
                "at": at,
            },
        )

    async def page(self, order_id: str | None, after_seq: int | None, limit: int) -> list[LogEntry]:
        """One page of the log (pending emails are not in it), oldest first, one more than
        asked so the caller knows if there is more."""
        query = (
            select(notifications)
            .where(notifications.c.status != "pending")
            .order_by(notifications.c.seq)
            .limit(limit + 1)
        )
        if order_id is not None:
            query = query.where(notifications.c.order_id == order_id)
        if after_seq is not None:
            query = query.where(notifications.c.seq > after_seq)
        return [_entry(r) for r in (await self.session.execute(query)).all()]


# Read by most consumer transactions (fixed text: DbSession's asyncpg path, issue 10).
LISTED_EVENT_TYPES = text(
    "SELECT DISTINCT jsonb_array_elements_text(events) FROM webhook_subscriptions"
)


@dataclass(frozen=True)
class Subscriptions:
    """The `webhook_subscriptions` table."""

    session: DbSession

    async def add(
        self,
        subscription_id: str,
        url: str,
        events: list[str],
        secret: str,
        channel: str | None = None,
    ) -> Subscription:
        row = (
            await self.session.execute(
                insert(webhook_subscriptions)
                .values(id=subscription_id, url=url, events=events, secret=secret, channel=channel)
                .returning(webhook_subscriptions)
            )
        ).one()
        return _subscription(row)

    async def page(self, after_seq: int | None, limit: int) -> list[Subscription]:
        """One page in creation order, one more than asked."""
        query = select(webhook_subscriptions).order_by(webhook_subscriptions.c.seq).limit(limit + 1)
        if after_seq is not None:
            query = query.where(webhook_subscriptions.c.seq > after_seq)
        return [_subscription(r) for r in (await self.session.execute(query)).all()]

    async def remove(self, subscription_id: str) -> bool:
        """Delete it, and its undelivered deliveries with it (ON DELETE CASCADE); False if absent."""
        deleted = await self.session.scalar(
            delete(webhook_subscriptions)
            .where(webhook_subscriptions.c.id == subscription_id)
            .returning(webhook_subscriptions.c.id)
        )
        return deleted is not None

    async def exists(self, subscription_id: str) -> bool:
        found = await self.session.scalar(
            select(webhook_subscriptions.c.id).where(webhook_subscriptions.c.id == subscription_id)
        )
        return found is not None

    async def lock_secrets(self, subscription_id: str) -> tuple[str, ...] | None:
        """The active secrets (oldest first), the row locked until the transaction ends; None
        if there is no such subscription."""
        row = (
            await self.session.execute(
                select(webhook_subscriptions.c.secret, webhook_subscriptions.c.previous_secret)
                .where(webhook_subscriptions.c.id == subscription_id)
                .with_for_update()
            )
        ).one_or_none()
        return None if row is None else _secrets(row)

    async def set_secrets(self, subscription_id: str, secrets: tuple[str, ...]) -> Subscription:
        """Make `secrets` (one or two, oldest first) the active ones."""
        previous, current = (None, *secrets) if len(secrets) == 1 else secrets
        row = (
            await self.session.execute(
                update(webhook_subscriptions)
                .where(webhook_subscriptions.c.id == subscription_id)
                .values(secret=current, previous_secret=previous)
                .returning(webhook_subscriptions)
            )
        ).one()
        return _subscription(row)

    async def listed_types(self) -> frozenset[str]:
        """Every event type some subscription lists."""
        return frozenset(await self.session.scalars(LISTED_EVENT_TYPES))

    async def listed_types_in_this_transaction(self) -> frozenset[str]:
        """`listed_types`, read once per transaction: the consumer applies several events in
        one transaction, and most types usually have no subscriber, so this spares each of them
        a statement. Events applied together count as consumed at the moment of this read."""
        cached: frozenset[str] | None = self.session.info.get(_SUBSCRIBED_TYPES)
        if cached is not None:  # `info` lives as long as this transaction
            return cached
        types = await self.listed_types()
        self.session.info[_SUBSCRIBED_TYPES] = types
        return types


ENQUEUE_DELIVERIES = text(_queue_deliveries("webhook_subscriptions")).bindparams(
    *_ANNOUNCEMENT_BINDS
)


@dataclass(frozen=True)
class Deliveries:
    """The `webhook_deliveries` table: one row per (subscription, event) to POST."""

    session: DbSession

    async def enqueue(self, announcement: Announcement) -> None:
        """One pending delivery per subscription that lists the event's type (once per event)."""
        await self.session.execute(ENQUEUE_DELIVERIES, _announced(announcement))

    async def claim_due(
        self, now: datetime, lease_until: datetime, limit: int
    ) -> list[DueDelivery]:
        """Lease up to `limit` due deliveries (SKIP LOCKED), most overdue first: their
        `next_attempt_at` becomes `lease_until`, so after a crash they are due again then."""
        claimable = (
            select(webhook_deliveries.c.id)
            .where(webhook_deliveries.c.status == "pending")
            .where(webhook_deliveries.c.next_attempt_at <= now)
            .order_by(webhook_deliveries.c.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        rows = (
            await self.session.execute(
                update(webhook_deliveries)
                .where(webhook_deliveries.c.id.in_(claimable.scalar_subquery()))
                .where(webhook_deliveries.c.subscription_id == webhook_subscriptions.c.id)
                .values(next_attempt_at=lease_until)
                .returning(
                    webhook_deliveries.c.id,
                    webhook_deliveries.c.subscription_id,
                    webhook_deliveries.c.event_type,
                    webhook_deliveries.c.payload,
                    webhook_deliveries.c.attempts,
                    webhook_deliveries.c.retry_from,
                    webhook_deliveries.c.redeliveries,
                    webhook_subscriptions.c.url,
                    webhook_subscriptions.c.secret,
                    webhook_subscriptions.c.previous_secret,
                )
            )
        ).all()
        return [
            DueDelivery(
                id=r.id,
                subscription_id=r.subscription_id,
                event_type=r.event_type,
                payload=r.payload,
                attempts=r.attempts,
                url=r.url,
                secrets=_secrets(r),
                lease_until=lease_until,
                retry_from=r.retry_from,
                redeliveries=r.redeliveries,
            )
            for r in rows
        ]

    async def record_attempt(
        self,
        delivery: DueDelivery,
        *,
        attempts: int,
        status: str,
        next_attempt_at: datetime | None,
        retry_from: datetime,
        error: str | None,
        now: datetime,
    ) -> bool:
        """Record one POST's outcome on a claimed delivery; False if the claim was lost (lease
        ran out and another worker took it) or the subscription was deleted meanwhile."""
        values: dict[str, Any] = {
            "attempts": attempts,
            "status": status,
            "last_error": error,
            "retry_from": retry_from,
            "updated_at": now,
        }
        if next_attempt_at is not None:
            values["next_attempt_at"] = next_attempt_at
        recorded = await self.session.scalar(
            update(webhook_deliveries)
            .where(webhook_deliveries.c.id == delivery.id)
            .where(webhook_deliveries.c.status == "pending")
            .where(webhook_deliveries.c.next_attempt_at == delivery.lease_until)
            .values(**values)
            .returning(webhook_deliveries.c.id)
        )
        return recorded is not None

    async def page(
        self, subscription_id: str, before_seq: int | None, limit: int
    ) -> list[DeliveryRecord]:
        """One page of a subscription's deliveries, newest first, one more than asked."""
        query = (
            select(*_DELIVERY_COLUMNS)
            .where(webhook_deliveries.c.subscription_id == subscription_id)
            .order_by(webhook_deliveries.c.seq.desc())
            .limit(limit + 1)
        )
        if before_seq is not None:
            query = query.where(webhook_deliveries.c.seq < before_seq)
        return [_delivery(r) for r in (await self.session.execute(query)).all()]

    async def get(self, subscription_id: str, delivery_id: str) -> DeliveryRecord | None:
        row = (
            await self.session.execute(
                select(*_DELIVERY_COLUMNS)
                .where(webhook_deliveries.c.id == delivery_id)
                .where(webhook_deliveries.c.subscription_id == subscription_id)
            )
        ).one_or_none()
        return None if row is None else _delivery(row)

    async def redeliver(self, delivery: DeliveryRecord, now: datetime) -> DeliveryRecord | None:
        """Due again at `now` as a fresh round, if it is still concluded as it was read (a
        concurrent redelivery makes this None)."""
        row = (
            await self.session.execute(
                update(webhook_deliveries)
                .where(webhook_deliveries.c.id == delivery.id)
                .where(webhook_deliveries.c.status != "pending")
                .where(webhook_deliveries.c.redeliveries == delivery.redeliveries)
                .values(
                    status="pending",
                    attempts=0,
                    next_attempt_at=now,
                    retry_from=None,
                    last_error=None,
                    redeliveries=webhook_deliveries.c.redeliveries + 1,
                    updated_at=now,
                )
                .returning(*_DELIVERY_COLUMNS)
            )
        ).one_or_none()
        return None if row is None else _delivery(row)


@dataclass(frozen=True)
class Store:
    """The repositories of one transaction."""

    notifications: NotificationLog
    subscriptions: Subscriptions
    deliveries: Deliveries

    @classmethod
    def of(cls, session: DbSession) -> "Store":
        return cls(NotificationLog(session), Subscriptions(session), Deliveries(session))


# --- invoice attachments (issue 12) ---


def _attachments_column(attachments: tuple[Attachment, ...]) -> list[dict[str, str]] | None:
    if not attachments:
        return None
    return [
        {
            "filename": a.filename,
            "content_type": a.content_type,
            "content": base64.b64encode(a.content).decode("ascii"),
        }
        for a in attachments
    ]


def _attachments_of(value: Any) -> tuple[Attachment, ...]:
    if not value:
        return ()
    return tuple(
        Attachment(a["filename"], a["content_type"], base64.b64decode(a["content"])) for a in value
    )


# --- retention (issue 14) ---

# Finished webhook deliveries (delivered, or failed for good) go `retention_deliveries_s` after
# their last update (libs/kit/retention.py); pending ones never. The job reads this index.
Index(
    "ix_webhook_deliveries_finished",
    webhook_deliveries.c.updated_at,
    postgresql_where=text("status <> 'pending'"),
)

PRUNE = (
    PruneTask(
        "webhook_deliveries",
        text(
            "DELETE FROM webhook_deliveries WHERE id IN (SELECT id FROM webhook_deliveries"
            " WHERE status <> 'pending' AND updated_at < :cutoff ORDER BY updated_at"
            " LIMIT :limit)"
        ),
        "retention_deliveries_s",
    ),
)
