"""In-memory fakes of notifications' repositories and adapters, for use-case tests."""

import asyncio
import ipaddress
import itertools
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, TypeVar

from libs.kit.uow import Tx
from services.notifications.adapters import (
    Answer,
    EmailDeferred,
    EmailRefused,
    MailServerUnavailable,
    OutgoingEmail,
    PinnedPost,
    Rendered,
    ResolutionFailed,
)
from services.notifications.domain import (
    Announcement,
    DeliveryRecord,
    DueDelivery,
    LogEntry,
    QueuedEmail,
    Subscription,
)
from services.notifications.service import Guard
from services.notifications.targets import parse_networks
from tests.support.fakes import FakeTx, FakeUnitOfWork, RecordingEvents

S = TypeVar("S")

_seq = itertools.count(1)


@dataclass
class Row:
    """One `notifications` row: a queued email (with its claim) or a concluded notification."""

    id: str
    seq: int
    dedupe_key: str
    channel: str
    template: str
    to: str
    status: str
    at: datetime
    order_id: str | None = None
    error: str | None = None
    email: QueuedEmail | None = None
    attempts: int = 0
    lease_until: datetime | None = None


@dataclass
class DeliveryRow:
    id: str
    subscription_id: str
    event_id: str
    event_type: str
    payload: str
    attempts: int = 0
    status: str = "pending"
    next_attempt_at: datetime | None = None  # None: due at once (the database's now())
    last_error: str | None = None
    seq: int = field(default_factory=lambda: next(_seq))
    retry_from: datetime | None = None
    redeliveries: int = 0
    created_at: datetime = datetime(2026, 1, 1)
    updated_at: datetime = datetime(2026, 1, 1)

    def record(self) -> DeliveryRecord:
        return DeliveryRecord(
            self.id,
            self.seq,
            self.subscription_id,
            self.event_id,
            self.event_type,
            self.status,
            self.attempts,
            self.last_error,
            self.next_attempt_at if self.status == "pending" else None,
            self.created_at,
            self.updated_at,
            self.redeliveries,
        )


@dataclass
class SubscriptionRow:
    subscription: Subscription
    secrets: tuple[str, ...]


@dataclass
class FakeNotificationLog:
    rows: dict[str, Row] = field(default_factory=dict)
    deliveries: "FakeDeliveries | None" = None  # where a concluded email's announcement goes

    def by_key(self, dedupe_key: str) -> Row | None:
        return next((r for r in self.rows.values() if r.dedupe_key == dedupe_key), None)

    async def queue_email(self, email: QueuedEmail) -> bool:
        if self.by_key(email.dedupe_key) is not None:
            return False
        self.rows[email.id] = Row(
            id=email.id,
            seq=next(_seq),
            dedupe_key=email.dedupe_key,
            channel="email",
            template=email.template,
            to=email.to,
            status="pending",
            at=email.queued_at,
            order_id=email.order_id,
            email=email,
            lease_until=email.lease_until,  # queued already claimed (handed to its mailer)
            attempts=0 if email.lease_until is None else 1,
        )
        return True

    async def claim_emails(
        self, now: datetime, lease_until: datetime, limit: int
    ) -> list[QueuedEmail]:
        free = sorted(
            (
                r
                for r in self.rows.values()
                if r.status == "pending" and (r.lease_until is None or r.lease_until <= now)
            ),
            key=lambda r: r.seq,
        )[:limit]
        claimed = []
        for row in free:
            assert row.email is not None
            row.lease_until, row.attempts = lease_until, row.attempts + 1
            claimed.append(replace(row.email, lease_until=lease_until))
        return claimed

    async def conclude_email(
        self,
        email: QueuedEmail,
        status: str,
        error: str | None,
        at: datetime,
        announcement: Announcement,
    ) -> bool:
        row = self.rows.get(email.id)
        if row is None or row.status != "pending" or row.lease_until != email.lease_until:
            return False
        row.status, row.error, row.at, row.lease_until = status, error, at, None
        if self.deliveries is not None:
            await self.deliveries.enqueue(announcement)
        return True

    async def release(self, emails: list[QueuedEmail], until: datetime) -> None:
        for email in emails:
            row = self.rows[email.id]
            if row.status == "pending" and row.lease_until == email.lease_until:
                row.lease_until = until

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
        key = log_key
        if self.by_key(key) is None:
            self.rows[notification_id] = Row(
                notification_id, next(_seq), key, "webhook", event_type, url, status, at, order_id
            )
            self.rows[notification_id].error = error

    async def page(self, order_id: str | None, after_seq: int | None, limit: int) -> list[LogEntry]:
        rows = sorted(
            (
                r
                for r in self.rows.values()
                if r.status != "pending"
                and (order_id is None or r.order_id == order_id)
                and (after_seq is None or r.seq > after_seq)
            ),
            key=lambda r: r.seq,
        )
        return [
            LogEntry(r.id, r.seq, r.channel, r.template, r.to, r.status, r.at, r.order_id, r.error)
            for r in rows[: limit + 1]
        ]


@dataclass
class FakeSubscriptions:
    rows: dict[str, SubscriptionRow] = field(default_factory=dict)
    clock: Callable[[], datetime] | None = None
    on_remove: Callable[[str], None] | None = None

    async def add(
        self,
        subscription_id: str,
        url: str,
        events: list[str],
        secret: str,
        channel: str | None = None,
    ) -> Subscription:
        now = self.clock() if self.clock else datetime(2026, 1, 1)
        subscription = Subscription(
            subscription_id, next(_seq), url, tuple(events), now, channel=channel
        )
        self.rows[subscription_id] = SubscriptionRow(subscription, (secret,))
        return subscription

    async def exists(self, subscription_id: str) -> bool:
        return subscription_id in self.rows

    async def lock_secrets(self, subscription_id: str) -> tuple[str, ...] | None:
        row = self.rows.get(subscription_id)
        return None if row is None else row.secrets

    async def set_secrets(self, subscription_id: str, secrets: tuple[str, ...]) -> Subscription:
        row = self.rows[subscription_id]
        row.secrets = secrets
        row.subscription = replace(row.subscription, active_secrets=len(secrets))
        return row.subscription

    async def page(self, after_seq: int | None, limit: int) -> list[Subscription]:
        subs = sorted((r.subscription for r in self.rows.values()), key=lambda s: s.seq)
        return [s for s in subs if after_seq is None or s.seq > after_seq][: limit + 1]

    async def remove(self, subscription_id: str) -> bool:
        if self.rows.pop(subscription_id, None) is None:
            return False
        if self.on_remove is not None:
            self.on_remove(subscription_id)
        return True

    async def listed_types(self) -> frozenset[str]:
        return frozenset(t for r in self.rows.values() for t in r.subscription.events)

    async def listed_types_in_this_transaction(self) -> frozenset[str]:
        return await self.listed_types()


@dataclass
class FakeDeliveries:
    subscriptions: FakeSubscriptions
    rows: dict[str, DeliveryRow] = field(default_factory=dict)
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    async def enqueue(self, announcement: Announcement) -> None:
        event_type, event_id, payload = (
            announcement.event_type,
            announcement.event_id,
            announcement.payload,
        )
        for sub in self.subscriptions.rows.values():
            if event_type not in sub.subscription.events:
                continue
            if sub.subscription.channel != announcement.channel:  # issue 13: per channel
                continue
            if any(
                d.subscription_id == sub.subscription.id and d.event_id == event_id
                for d in self.rows.values()
            ):
                continue
            delivery_id = f"dlv-{next(self._ids)}"
            self.rows[delivery_id] = DeliveryRow(
                delivery_id, sub.subscription.id, event_id, event_type, payload
            )

    async def claim_due(
        self, now: datetime, lease_until: datetime, limit: int
    ) -> list[DueDelivery]:
        due = [
            d
            for d in self.rows.values()
            if d.status == "pending" and (d.next_attempt_at is None or d.next_attempt_at <= now)
        ][:limit]
        claimed = []
        for d in due:
            d.next_attempt_at = lease_until
            sub = self.subscriptions.rows[d.subscription_id]
            claimed.append(
                DueDelivery(
                    d.id,
                    d.subscription_id,
                    d.event_type,
                    d.payload,
                    d.attempts,
                    sub.subscription.url,
                    sub.secrets,
                    lease_until,
                    d.retry_from,
                    d.redeliveries,
                )
            )
        return claimed

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
        row = self.rows.get(delivery.id)
        if row is None or row.status != "pending" or row.next_attempt_at != delivery.lease_until:
            return False
        row.attempts, row.status, row.last_error = attempts, status, error
        row.retry_from, row.updated_at = retry_from, now
        if next_attempt_at is not None:
            row.next_attempt_at = next_attempt_at
        return True

    async def page(
        self, subscription_id: str, before_seq: int | None, limit: int
    ) -> list[DeliveryRecord]:
        rows = sorted(
            (
                d
                for d in self.rows.values()
                if d.subscription_id == subscription_id
                and (before_seq is None or d.seq < before_seq)
            ),
            key=lambda d: -d.seq,
        )
        return [d.record() for d in rows[: limit + 1]]

    async def get(self, subscription_id: str, delivery_id: str) -> DeliveryRecord | None:
        row = self.rows.get(delivery_id)
        return row.record() if row and row.subscription_id == subscription_id else None

    async def redeliver(self, delivery: DeliveryRecord, now: datetime) -> DeliveryRecord | None:
        row = self.rows.get(delivery.id)
        if row is None or row.status == "pending" or row.redeliveries != delivery.redeliveries:
            return None
        row.status, row.attempts, row.next_attempt_at = "pending", 0, now
        row.retry_from, row.last_error, row.updated_at = None, None, now
        row.redeliveries += 1
        return row.record()

    def drop_subscription(self, subscription_id: str) -> None:
        """ON DELETE CASCADE."""
        for key in [k for k, d in self.rows.items() if d.subscription_id == subscription_id]:
            del self.rows[key]


@dataclass
class FakeStore:
    notifications: FakeNotificationLog
    subscriptions: FakeSubscriptions
    deliveries: FakeDeliveries

    @classmethod
    def empty(cls) -> "FakeStore":
        subscriptions = FakeSubscriptions()
        deliveries = FakeDeliveries(subscriptions)
        subscriptions.on_remove = deliveries.drop_subscription
        return cls(FakeNotificationLog(deliveries=deliveries), subscriptions, deliveries)


@dataclass
class EventsRollBack(FakeUnitOfWork[S]):
    """FakeUnitOfWork whose events are kept only if the transaction ends without an error, as
    the outbox's are (store writes are not undone: use cases here raise before writing)."""

    def __call__(
        self, correlation_id: str | None = None, causation_id: str | None = None
    ) -> AbstractAsyncContextManager[Tx[S]]:
        return self._begin_with_events()

    @asynccontextmanager
    async def _begin_with_events(self) -> AsyncIterator[Tx[S]]:
        self.opened += 1
        tx = FakeTx(self.store, RecordingEvents(self.events.service))
        yield tx
        self.events.emitted += tx.events.emitted
        self.events.envelopes += tx.events.envelopes
        tx.commit()


def unit_of_work() -> EventsRollBack[FakeStore]:
    return EventsRollBack(FakeStore.empty())


# --- adapters ----------------------------------------------------------------------------------


class SimulatedCrash(BaseException):
    """The process dying right after the SMTP server accepted a mail (nothing catches it)."""


@dataclass
class FakeMailer:
    """An SMTP server: keeps accepted mail; `script` holds, per recipient, what the next calls
    answer ("ok", "deferred", "refused", "unreachable", "crash": accepted, then the process dies)
    in order, then "ok"."""

    sent: list[OutgoingEmail] = field(default_factory=list)
    script: dict[str, list[str]] = field(default_factory=dict)
    calls: int = 0
    on_send: Callable[[], None] | None = None

    def answer(self, to: str, *answers: str) -> None:
        self.script[to] = list(answers)

    async def send(self, email: OutgoingEmail) -> None:
        self.calls += 1
        if self.on_send is not None:
            self.on_send()
        answers = self.script.get(email.to) or self.script.get("*") or []
        answer = answers.pop(0) if answers else "ok"
        if answer == "deferred":
            raise EmailDeferred("SMTP server refused the message: 451 try again later")
        if answer == "refused":
            raise EmailRefused("SMTP server refused the message: 550 no such user")
        if answer == "unreachable":
            raise MailServerUnavailable("ConnectionRefusedError: [Errno 111]")
        self.sent.append(email)
        if answer == "crash":
            raise SimulatedCrash

    def to(self, address: str) -> list[OutgoingEmail]:
        return [m for m in self.sent if m.to == address]


class FakeTemplates:
    """Renders any template as its name and context, so tests see what went into the mail."""

    def render(self, template: str, context: Mapping[str, Any]) -> Rendered:
        about = context.get("order_id") or context.get("sku")
        return Rendered(subject=f"{template} {about}", text=f"{dict(context)}\n")


@dataclass
class FakeWebhookSender:
    """Webhook receivers: each URL answers with the next of its scripted status codes (None: no
    answer; the last one repeats; unscripted URLs answer 200). Keeps every request it got."""

    answers: dict[str, list[int | None]] = field(default_factory=dict)
    posts: list[PinnedPost] = field(default_factory=list)
    delay_s: float = 0.0

    async def post(self, request: PinnedPost) -> Answer:
        self.posts.append(request)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        script = self.answers.get(request.url, [200])
        status = script.pop(0) if len(script) > 1 else script[0]
        if status is None:
            return Answer(None, "could not connect")
        return Answer(status, None if 200 <= status < 300 else f"HTTP {status}")


@dataclass
class FakeResolver:
    """DNS: each host resolves to its scripted addresses (a list per lookup: the next one each
    time, the last one repeating); an IP literal is itself; any other host does not resolve."""

    names: dict[str, list[list[str]]] = field(default_factory=dict)
    lookups: list[str] = field(default_factory=list)

    def point(self, host: str, *answers: list[str]) -> None:
        self.names[host] = list(answers)

    async def resolve(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            pass
        script = self.names.get(host)
        if not script:
            raise ResolutionFailed(f"{host} does not resolve")
        return script.pop(0) if len(script) > 1 else script[0]


# Public addresses for the example receivers (resolved by the fake DNS, never contacted).
PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"


def public_dns() -> FakeResolver:
    """DNS where `hooks.example` and `other.example` are public hosts."""
    resolver = FakeResolver()
    resolver.point("hooks.example", [PUBLIC_V4, PUBLIC_V6])
    resolver.point("other.example", [PUBLIC_V4])
    return resolver


def guard(resolver: FakeResolver | None = None, allowed: str = "") -> Guard:
    return Guard(resolver or public_dns(), parse_networks(allowed))
