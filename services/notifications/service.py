"""Notifications use cases: send an event's email once, queue and deliver webhooks, read the log."""

import asyncio
import contextlib
import logging
import smtplib
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy import Row, String, delete, func, literal, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from libs.events.envelope import CloudEvent
from libs.events.notifications import NotificationSent
from libs.kit.db import Database
from libs.kit.faults import crash_point
from libs.kit.outbox import Emitter
from libs.kit.problems import not_found
from services.notifications import domain
from services.notifications.db import notifications, webhook_deliveries, webhook_subscriptions
from services.notifications.settings import NotificationsSettings

log = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
_templates = Environment(
    loader=FileSystemLoader(TEMPLATES_DIR),
    undefined=StrictUndefined,
    autoescape=False,  # plain-text mail: nothing is interpreted as markup
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


def new_id() -> str:
    return str(uuid.uuid4())


# --- email -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str


def render(template: str, context: dict[str, Any]) -> Rendered:
    """Render a template file's `subject` and `text` blocks."""
    tmpl = _templates.get_template(f"{template}.jinja")
    ctx = tmpl.new_context(context)
    subject = " ".join("".join(tmpl.blocks["subject"](ctx)).split())
    text = "".join(tmpl.blocks["text"](ctx)).strip("\n") + "\n"
    return Rendered(subject=subject, text=text)


def build_message(
    settings: NotificationsSettings, email: domain.Email, now: datetime
) -> EmailMessage:
    rendered = render(email.template, email.context)
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = email.to
    message["Subject"] = rendered.subject
    message["Date"] = format_datetime(now)
    message["Message-ID"] = email.message_id
    message["X-Backroom-Template"] = email.template
    message.set_content(rendered.text)
    return message


class EmailRejected(Exception):
    """The SMTP server answered with an error. Not an OSError, so the kit retries it a few times
    with backoff and then dead-letters the event, instead of retrying forever."""


_REFUSALS = (
    smtplib.SMTPRecipientsRefused,
    smtplib.SMTPResponseException,
    smtplib.SMTPNotSupportedError,
)


class SmtpSession:
    """One SMTP connection kept open from message to message (connect, greeting, EHLO and QUIT
    once, not per mail). A kept connection that turns out dead (server restarted, idle timeout)
    is replaced and the message sent once more on the new one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._smtp: smtplib.SMTP | None = None
        self._server: tuple[str, int] | None = None

    def send(self, settings: NotificationsSettings, message: EmailMessage) -> None:
        # An unreachable or vanished server raises OSError (SMTPServerDisconnected is one): the
        # kit treats that as infrastructure trouble and retries until the server is back.
        server = (settings.smtp_host, settings.smtp_port)
        with self._lock:
            if self._server != server:
                self._close()
            for fresh in (False, True) if self._smtp is not None else (True,):
                if fresh:
                    self._close()
                    self._smtp = smtplib.SMTP(*server, timeout=settings.smtp_timeout_s)
                    self._server = server
                assert self._smtp is not None
                try:
                    self._smtp.send_message(message)
                    return
                except _REFUSALS as exc:
                    self._reset()
                    raise EmailRejected(f"SMTP server refused the message: {exc}") from exc
                except OSError:
                    self._close()
                    if fresh:
                        raise

    def _reset(self) -> None:
        """Back to a clean session after a refusal (or a new connection next time)."""
        try:
            if self._smtp is not None:
                self._smtp.rset()
        except (OSError, smtplib.SMTPException):
            self._close()

    def _close(self) -> None:
        smtp, self._smtp, self._server = self._smtp, None, None
        if smtp is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                smtp.close()


_smtp_session = SmtpSession()


def _smtp_send(settings: NotificationsSettings, message: EmailMessage) -> None:
    _smtp_session.send(settings, message)


async def send_email(settings: NotificationsSettings, message: EmailMessage) -> None:
    await asyncio.to_thread(_smtp_send, settings, message)


async def notify_by_email(
    session: AsyncSession, emitter: Emitter, settings: NotificationsSettings, email: domain.Email
) -> bool:
    """Send `email` unless its dedupe key was sent before; False if it was.

    The log row, the SMTP send and NotificationSent share the handler's transaction: if the send
    fails nothing is kept and the event is retried; if we crash after the server accepted the
    mail, the retry sends it again with the same Message-ID, so the duplicate is recognisable."""
    notification_id = await session.scalar(
        pg_insert(notifications)
        .values(
            id=new_id(),
            dedupe_key=email.dedupe_key,
            channel="email",
            template=email.template,
            recipient=email.to,
            order_id=email.order_id,
            status="pending",
        )
        .on_conflict_do_nothing(index_elements=[notifications.c.dedupe_key])
        .returning(notifications.c.id)
    )
    if notification_id is None:
        return False
    await send_email(settings, build_message(settings, email, datetime.now(UTC)))
    crash_point("notifications.after_smtp_send")
    await session.execute(
        update(notifications)
        .where(notifications.c.id == notification_id)
        .values(status="sent", at=func.now())
    )
    sent = await emitter.emit(
        NotificationSent(
            notification_id=notification_id,
            order_id=email.order_id,
            sku=email.sku,
            channel="email",
            template=email.template,
            to=email.to,
            status="sent",
        ),
        subject=email.subject,
    )
    # We do not consume our own topic, so webhooks subscribed to NotificationSent get it from
    # here. Only email ones: announcing webhook deliveries by webhook would feed itself forever.
    await enqueue_deliveries(session, sent.type, sent.id, sent.model_dump_json())
    return True


# --- webhooks ----------------------------------------------------------------------------------


_SUBSCRIBED_TYPES = "notifications_subscribed_types"


class WebhookInterest:
    """Which event types can have an effect here: the email ones, and those some webhook
    subscription lists, as this process last read them. The consumer skips every other event
    without a transaction (most events of most types, when few subscriptions exist).

    Read at start (until then every type counts), again every `refresh_s`, and widened at once
    when this process creates a subscription. A subscription created through another replica
    is seen here within `refresh_s`: events consumed before that are not delivered to it."""

    def __init__(self, refresh_s: float) -> None:
        self.refresh_s = refresh_s
        self.types: frozenset[str] | None = None
        self._widened: set[str] = set()  # since the read in progress began

    def __call__(self, event_type: str) -> bool:
        return (
            self.types is None or event_type in domain.EMAIL_EVENT_TYPES or event_type in self.types
        )

    def widen(self, event_types: list[str]) -> None:
        self._widened.update(event_types)
        if self.types is not None:
            self.types = self.types | frozenset(event_types)

    async def refresh(self, db: Database) -> None:
        self._widened = set()
        async with db.transaction() as session:
            read = await _listed_types(session)
        # A subscription made while we read may be missing from what we read: keep its types.
        self.types = read | self._widened

    async def run(self, db: Database) -> None:
        """Background task: re-read every `refresh_s`; a failed read keeps the last answer."""
        while True:
            try:
                await self.refresh(db)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("reading webhook subscriptions failed: %r", exc)
            await asyncio.sleep(self.refresh_s)


async def subscribed_types(session: AsyncSession) -> frozenset[str]:
    """The event types any webhook subscription lists, read once per transaction: the consumer
    applies several events in one transaction, and most types usually have no subscriber, so
    this spares each of them a statement. Events applied together count as consumed at the same
    moment, the moment of this read."""
    transaction = session.sync_session.get_transaction()
    cached = session.info.get(_SUBSCRIBED_TYPES)
    if cached is not None and transaction is not None and cached[0] is transaction:
        return frozenset(cached[1])
    types = await _listed_types(session)
    session.info[_SUBSCRIBED_TYPES] = (transaction, types)
    return types


async def _listed_types(session: AsyncSession) -> frozenset[str]:
    """Every event type some webhook subscription lists."""
    return frozenset(
        await session.scalars(
            select(func.jsonb_array_elements_text(webhook_subscriptions.c.events)).distinct()
        )
    )


async def enqueue_deliveries(
    session: AsyncSession, event_type: str, event_id: str, payload: str
) -> None:
    """One pending delivery per subscription that lists `event_type` (once per event)."""
    if event_type not in await subscribed_types(session):
        return
    subscribers = select(
        func.gen_random_uuid().cast(String),
        webhook_subscriptions.c.id,
        literal(event_id, String),
        literal(event_type, String),
        literal(payload, String),
    ).where(webhook_subscriptions.c.events.contains([event_type]))
    await session.execute(
        pg_insert(webhook_deliveries)
        .from_select(["id", "subscription_id", "event_id", "event_type", "payload"], subscribers)
        .on_conflict_do_nothing(index_elements=["subscription_id", "event_id"])
    )


async def create_subscription(
    session: AsyncSession, url: str, events: list[str], secret: str
) -> Row[Any]:
    row = (
        await session.execute(
            pg_insert(webhook_subscriptions)
            .values(id=new_id(), url=url, events=events, secret=secret)
            .returning(webhook_subscriptions)
        )
    ).one()
    return row


async def list_subscriptions(
    session: AsyncSession, after_seq: int | None, limit: int
) -> list[Row[Any]]:
    """One page in creation order, one row more than asked so the caller knows if there is more."""
    query = select(webhook_subscriptions).order_by(webhook_subscriptions.c.seq).limit(limit + 1)
    if after_seq is not None:
        query = query.where(webhook_subscriptions.c.seq > after_seq)
    return list((await session.execute(query)).all())


async def delete_subscription(session: AsyncSession, subscription_id: str) -> None:
    """Remove a subscription; its undelivered deliveries go with it (ON DELETE CASCADE)."""
    deleted = await session.scalar(
        delete(webhook_subscriptions)
        .where(webhook_subscriptions.c.id == subscription_id)
        .returning(webhook_subscriptions.c.id)
    )
    if deleted is None:
        raise not_found(f"webhook subscription {subscription_id}")


async def post_delivery(client: httpx.AsyncClient, delivery: Row[Any]) -> str | None:
    """POST one delivery; None on a 2xx answer, else what went wrong."""
    body = delivery.payload.encode()
    headers = {
        "Content-Type": "application/cloudevents+json",
        "X-Backroom-Signature": domain.signature(delivery.secret, body),
        "X-Backroom-Delivery": delivery.id,
        "User-Agent": "Backroom-Webhooks/1",
    }
    try:
        response = await client.post(delivery.url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"[:1000]
    if domain.is_success(response.status_code):
        return None
    return f"HTTP {response.status_code}"


async def deliver_due_webhooks(
    session: AsyncSession,
    service_name: str,
    client: httpx.AsyncClient,
    settings: NotificationsSettings,
    now: datetime,
) -> int:
    """Claim due deliveries (SKIP LOCKED, so several workers share them), POST them concurrently,
    and record each outcome; returns how many were attempted."""
    due = (
        await session.execute(
            select(
                webhook_deliveries.c.id,
                webhook_deliveries.c.subscription_id,
                webhook_deliveries.c.event_id,
                webhook_deliveries.c.event_type,
                webhook_deliveries.c.payload,
                webhook_deliveries.c.attempts,
                webhook_subscriptions.c.url,
                webhook_subscriptions.c.secret,
            )
            .join(webhook_subscriptions)
            .where(webhook_deliveries.c.status == "pending")
            .where(webhook_deliveries.c.next_attempt_at <= now)
            .order_by(webhook_deliveries.c.next_attempt_at)
            .limit(settings.webhook_batch_size)
            .with_for_update(of=webhook_deliveries, skip_locked=True)
        )
    ).all()
    errors = await asyncio.gather(*(post_delivery(client, d) for d in due))
    for delivery, error in zip(due, errors, strict=True):
        await record_attempt(session, service_name, settings, delivery, error, now)
    return len(due)


async def record_attempt(
    session: AsyncSession,
    service_name: str,
    settings: NotificationsSettings,
    delivery: Row[Any],
    error: str | None,
    now: datetime,
) -> None:
    outcome = domain.after_attempt(
        succeeded=error is None,
        attempts_before=delivery.attempts,
        now=now,
        max_attempts=settings.webhook_max_attempts,
        base_s=settings.webhook_backoff_base_s,
        max_s=settings.webhook_backoff_max_s,
    )
    values: dict[str, Any] = {
        "attempts": outcome.attempts,
        "status": outcome.status,
        "last_error": error,
        "updated_at": now,
    }
    if outcome.next_attempt_at is not None:
        values["next_attempt_at"] = outcome.next_attempt_at
    await session.execute(
        update(webhook_deliveries).where(webhook_deliveries.c.id == delivery.id).values(**values)
    )
    if outcome.status == "pending":
        return
    status = "sent" if outcome.status == "delivered" else "failed"
    event = CloudEvent.from_json(delivery.payload)
    order_id = event.data.get("order_id")
    order_id = order_id if isinstance(order_id, str) else None
    notification_id = new_id()
    await session.execute(
        pg_insert(notifications)
        .values(
            id=notification_id,
            dedupe_key=f"webhook:{delivery.id}",
            channel="webhook",
            template=delivery.event_type,
            recipient=delivery.url,
            order_id=order_id,
            status=status,
            error=error,
            at=now,
        )
        .on_conflict_do_nothing(index_elements=[notifications.c.dedupe_key])
    )
    emitter = Emitter(session, service_name, event.correlationid, event.id)
    await emitter.emit(
        NotificationSent(
            notification_id=notification_id,
            order_id=order_id,
            subscription_id=delivery.subscription_id,
            channel="webhook",
            template=delivery.event_type,
            to=delivery.url,
            status=status,
        ),
        subject=event.subject,
    )


# --- the log -----------------------------------------------------------------------------------


async def list_notifications(
    session: AsyncSession, order_id: str | None, after_seq: int | None, limit: int
) -> list[Row[Any]]:
    """One page of the log, oldest first, one row more than asked."""
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
    return list((await session.execute(query)).all())
