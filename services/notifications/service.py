"""Notifications use cases: queue an event's email and webhooks, send the queued emails, deliver
due webhooks, manage subscriptions, read the log. Every outside call (SMTP, a webhook POST)
happens between two transactions, never inside one: intent, call, outcome."""

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from libs.events.envelope import CloudEvent
from libs.events.notifications import NotificationSent
from libs.kit.errors import Conflict, Invalid, NotFound
from libs.kit.faults import crash_point
from libs.kit.retry import RetryPolicy
from libs.kit.uow import Clock, Tx, UnitOfWork
from libs.kit.worker import Handoff
from services.notifications import domain, targets
from services.notifications.adapters import (
    Answer,
    Documents,
    EmailDeferred,
    EmailRejected,
    Mailer,
    MailServerUnavailable,
    OutgoingEmail,
    PdfDocuments,
    PinnedPost,
    ResolutionFailed,
    Resolver,
    Templates,
    WebhookSender,
)
from services.notifications.domain import (
    Announcement,
    DeliveryRecord,
    DueDelivery,
    LogEntry,
    QueuedEmail,
    Subscription,
)
from services.notifications.targets import Network

log = logging.getLogger(__name__)


def new_id() -> str:
    return str(uuid.uuid4())


# --- the repositories a use case sees (db.py has the real ones) --------------------------------


class NotificationLog(Protocol):
    async def queue_email(self, email: QueuedEmail) -> bool: ...
    async def claim_emails(
        self, now: datetime, lease_until: datetime, limit: int
    ) -> list[QueuedEmail]: ...
    async def conclude_email(
        self,
        email: QueuedEmail,
        status: str,
        error: str | None,
        at: datetime,
        announcement: Announcement,
    ) -> bool: ...
    async def release(self, emails: list[QueuedEmail], until: datetime) -> None: ...
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
    ) -> None: ...
    async def page(
        self, order_id: str | None, after_seq: int | None, limit: int
    ) -> list[LogEntry]: ...


class Subscriptions(Protocol):
    async def add(
        self,
        subscription_id: str,
        url: str,
        events: list[str],
        secret: str,
        channel: str | None = None,
    ) -> Subscription: ...
    async def page(self, after_seq: int | None, limit: int) -> list[Subscription]: ...
    async def remove(self, subscription_id: str) -> bool: ...
    async def exists(self, subscription_id: str) -> bool: ...
    async def lock_secrets(self, subscription_id: str) -> tuple[str, ...] | None: ...
    async def set_secrets(self, subscription_id: str, secrets: tuple[str, ...]) -> Subscription: ...
    async def listed_types(self) -> frozenset[str]: ...
    async def listed_types_in_this_transaction(self) -> frozenset[str]: ...


class Deliveries(Protocol):
    async def enqueue(self, announcement: Announcement) -> None: ...
    async def claim_due(
        self, now: datetime, lease_until: datetime, limit: int
    ) -> list[DueDelivery]: ...
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
    ) -> bool: ...
    async def page(
        self, subscription_id: str, before_seq: int | None, limit: int
    ) -> list[DeliveryRecord]: ...
    async def get(self, subscription_id: str, delivery_id: str) -> DeliveryRecord | None: ...
    async def redeliver(self, delivery: DeliveryRecord, now: datetime) -> DeliveryRecord | None: ...


class Store(Protocol):
    @property
    def notifications(self) -> NotificationLog: ...
    @property
    def subscriptions(self) -> Subscriptions: ...
    @property
    def deliveries(self) -> Deliveries: ...


def _nothing() -> None:
    return None


# --- consumed events: the intents ---------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedEvent:
    """A consumed event as the intake needs it: the raw CloudEvent JSON is what webhooks POST."""

    type: str
    id: str
    correlation_id: str | None
    data: dict[str, Any]
    raw: str


@dataclass(frozen=True)
class Intake:
    """What taking in an event needs besides its transaction."""

    templates: Templates
    warehouse_email: str
    clock: Clock
    wake_mailer: Callable[[], None] = _nothing
    wake_webhooks: Callable[[], None] = _nothing
    operator_email: str | None = None  # where payment disputes are reported
    # Renders the invoice a receipt attaches (issue 12).
    documents: Documents = field(default_factory=PdfDocuments)
    # Emails queued here go to this process's mailer already claimed (leased for
    # `email_lease_s` in the event's transaction) while it has room, saving the mailer's claim
    # transaction (issue 10); without it, or when full, they are queued for any mailer to claim.
    emails: Handoff[QueuedEmail] | None = None
    email_lease_s: float = 60.0


async def take_event(tx: Tx[Store], intake: Intake, event: ReceivedEvent) -> bool:
    """In the event's transaction: one pending delivery per subscription listing its type, and
    the email it calls for (if any) queued, rendered, unless its (order, template) key is taken.
    Nothing is sent here; the workers are woken once this commits. True if an email was queued."""
    if event.type in await tx.store.subscriptions.listed_types_in_this_transaction():
        channel = domain.announcement_channel(event.type, event.data)  # issue 13
        await tx.store.deliveries.enqueue(Announcement(event.type, event.id, event.raw, channel))
        tx.on_commit(intake.wake_webhooks)
    email = domain.plan_email(
        event.type, event.data, event.id, intake.warehouse_email, intake.operator_email
    )
    if email is None:
        return False
    rendered = intake.templates.render(email.template, email.context)
    queued_at = intake.clock()
    handoff = intake.emails if intake.emails is not None and intake.emails.has_room() else None
    queued_email = QueuedEmail(
        id=new_id(),
        dedupe_key=email.dedupe_key,
        template=email.template,
        to=email.to,
        message_id=email.message_id,
        mail_subject=rendered.subject,
        text=rendered.text,
        subject=email.subject,
        order_id=email.order_id,
        sku=email.sku,
        correlation_id=event.correlation_id,
        causation_id=event.id,
        queued_at=queued_at,
        lease_until=(
            None if handoff is None else queued_at + timedelta(seconds=intake.email_lease_s)
        ),
        attachments=_attachments(intake, email),
    )
    queued = await tx.store.notifications.queue_email(queued_email)
    if queued and handoff is not None:
        handoff.give(tx, queued_email)
    elif queued:
        tx.on_commit(intake.wake_mailer)
    return queued


# --- sending queued emails ----------------------------------------------------------------------


_SMTP_RETRY = RetryPolicy(attempts=4, initial_s=0.2, max_s=2.0)


@dataclass(frozen=True)
class Mailing:
    """The email worker's collaborators and knobs."""

    uow: UnitOfWork[Store]
    mailer: Mailer
    clock: Clock
    batch_size: int = 20
    lease_s: float = 60.0
    # Deferrals (4xx) and a vanished server are retried this way, then: a refusal is final, an
    # unreachable server puts the batch back for `unavailable_pause_s`.
    retry: RetryPolicy = _SMTP_RETRY
    unavailable_pause_s: float = 5.0
    wake_webhooks: Callable[[], None] = _nothing
    # Emails the intake queued already claimed for this process (see Intake.emails).
    handoff: Handoff[QueuedEmail] | None = None


class _ClaimLost(Exception):
    """Our lease ran out and the row is no longer ours: roll the outcome back."""


async def send_queued_emails(mailing: Mailing) -> int:
    """One pass: take the emails handed over already claimed, or else claim a batch of pending
    ones (short committed transaction); send each outside any transaction, record each outcome
    with its NotificationSent in its own transaction. Returns how many it took (0: nothing to
    do)."""
    claimed = mailing.handoff.take(mailing.batch_size) if mailing.handoff is not None else []
    if not claimed:
        started = mailing.clock()
        lease_until = started + timedelta(seconds=mailing.lease_s)
        async with mailing.uow() as tx:
            claimed = await tx.store.notifications.claim_emails(
                started, lease_until, mailing.batch_size
            )
    if not claimed:
        return 0
    crash_point("notifications.after_intent_commit")
    half_lease = timedelta(seconds=mailing.lease_s / 2)
    for index, email in enumerate(claimed):
        # Half the lease is left for the sends; whatever is not sent by then goes back, so a
        # slow server never keeps a claim past its lease (another worker would send it too).
        assert email.lease_until is not None  # claimed, one way or the other
        if mailing.clock() >= email.lease_until - half_lease:
            await _put_back(mailing, claimed[index:], mailing.clock())
            break
        try:
            await _send(mailing, email)
        except MailServerUnavailable as exc:
            log.warning("SMTP server unavailable, emails put back: %s", exc)
            pause = timedelta(seconds=mailing.unavailable_pause_s)
            await _put_back(mailing, claimed[index:], mailing.clock() + pause)
            break
        except EmailRejected as exc:
            await record_email_outcome(mailing, email, "failed", str(exc)[:1000])
            continue
        crash_point("notifications.after_smtp_send")
        await record_email_outcome(mailing, email, "sent", None)
    return len(claimed)


async def _send(mailing: Mailing, email: QueuedEmail) -> None:
    """The SMTP call, retried by the one retry policy: same message, same Message-ID."""
    outgoing = OutgoingEmail(
        to=email.to,
        subject=email.mail_subject,
        text=email.text,
        message_id=email.message_id,
        template=email.template,
        date=email.queued_at,
        attachments=email.attachments,
    )

    async def call() -> None:
        await mailing.mailer.send(outgoing)

    await mailing.retry.run(
        f"email {email.message_id}", call, retry_on=(EmailDeferred, MailServerUnavailable)
    )


async def _put_back(mailing: Mailing, emails: list[QueuedEmail], until: datetime) -> None:
    async with mailing.uow() as tx:
        await tx.store.notifications.release(emails, until)


async def record_email_outcome(
    mailing: Mailing, email: QueuedEmail, status: str, error: str | None
) -> bool:
    """The email's log row concluded, NotificationSent emitted (in the story of the event that
    asked for the email) and queued for webhooks subscribed to it; False if the claim was lost
    to another worker, which then records it."""
    try:
        async with mailing.uow(email.correlation_id, email.causation_id) as tx:
            sent = await tx.events.emit(
                NotificationSent(
                    notification_id=email.id,
                    order_id=email.order_id,
                    sku=email.sku,
                    channel="email",
                    template=email.template,
                    to=email.to,
                    status="sent" if status == "sent" else "failed",
                ),
                subject=email.subject,
            )
            # We do not consume our own topic, so webhooks subscribed to NotificationSent get it
            # from here. Only email ones: announcing deliveries by webhook would feed itself.
            announcement = Announcement(sent.type, sent.id, sent.model_dump_json())
            if not await tx.store.notifications.conclude_email(
                email, status, error, mailing.clock(), announcement
            ):
                raise _ClaimLost  # rolls back the event emitted above
            tx.on_commit(mailing.wake_webhooks)
    except _ClaimLost:
        log.warning("email %s: claim lost before its outcome was recorded", email.message_id)
        return False
    return True


# --- delivering webhooks ------------------------------------------------------------------------


@dataclass(frozen=True)
class Guard:
    """Which webhook targets may be called: `allowed` networks are let through although not
    public (`make run` and the tests allow loopback); every address is resolved by `resolver`."""

    resolver: Resolver
    allowed: tuple[Network, ...] = ()
    resolve_timeout_s: float = 5.0

    async def vet(self, url: str) -> str:
        """The address to connect to for `url`: TargetRefused unless it is http(s) without
        credentials and every address of its host is acceptable; ResolutionFailed if the host
        does not resolve (in time)."""
        target = targets.webhook_target(url)
        try:
            async with asyncio.timeout(self.resolve_timeout_s):
                addresses = await self.resolver.resolve(target.host, target.port)
        except TimeoutError as exc:
            raise ResolutionFailed(f"{target.host} did not resolve in time") from exc
        return targets.vet_addresses(target.host, addresses, self.allowed)


@dataclass(frozen=True)
class Delivering:
    """The webhook worker's collaborators and knobs."""

    uow: UnitOfWork[Store]
    sender: WebhookSender
    guard: Guard
    batch_size: int = 50
    lease_s: float = 60.0
    # Failed attempts are retried with backoff until `horizon_s` after the first one.
    horizon_s: float = 24 * 3600.0
    backoff_base_s: float = 1.0
    backoff_max_s: float = 3600.0
    # Resolving, connecting, sending and reading the answer of one POST, all told.
    total_timeout_s: float = 10.0


async def deliver_due_webhooks(delivering: Delivering, now: datetime) -> int:
    """One pass at `now`: claim due deliveries with a lease (short committed transaction), POST
    them concurrently outside any transaction, record each outcome in its own transaction once
    its answer is in. Returns how many were attempted."""
    lease_until = now + timedelta(seconds=delivering.lease_s)
    async with delivering.uow() as tx:
        due = await tx.store.deliveries.claim_due(now, lease_until, delivering.batch_size)
    if not due:
        return 0

    async def post_and_record(delivery: DueDelivery) -> None:
        answer = await attempt_delivery(delivering, delivery, now)
        # Recorded as soon as its own answer is in: a slow receiver delays no other's outcome.
        await record_delivery_attempt(delivering, delivery, answer, now)

    await asyncio.gather(*(post_and_record(d) for d in due))
    return len(due)


async def attempt_delivery(delivering: Delivering, delivery: DueDelivery, now: datetime) -> Answer:
    """One POST of `delivery`, vetted again first (the name may resolve elsewhere now than when
    it was subscribed: DNS rebinding) and sent to the address that was vetted, all within
    `total_timeout_s`."""
    body = delivery.payload.encode()
    headers = domain.delivery_headers(delivery.id, int(now.timestamp()), body, delivery.secrets)
    try:
        async with asyncio.timeout(delivering.total_timeout_s):
            address = await delivering.guard.vet(delivery.url)
            return await delivering.sender.post(PinnedPost(delivery.url, address, body, headers))
    except targets.TargetRefused as exc:
        return Answer(None, f"refused: {exc}"[:1000], refused=True)
    except ResolutionFailed as exc:
        return Answer(None, str(exc)[:1000])
    except TimeoutError:
        return Answer(None, f"no answer within {delivering.total_timeout_s:g} s")


async def record_delivery_attempt(
    delivering: Delivering, delivery: DueDelivery, answer: Answer, now: datetime
) -> bool:
    """Attempts, status and the next attempt (backoff) of one POST; once delivered or given up,
    its log row and NotificationSent. False if the claim was lost (see Deliveries)."""
    outcome = domain.after_attempt(
        status_code=answer.status_code,
        refused=answer.refused,
        attempts_before=delivery.attempts,
        retry_from=delivery.retry_from,
        now=now,
        horizon_s=delivering.horizon_s,
        base_s=delivering.backoff_base_s,
        max_s=delivering.backoff_max_s,
    )
    error = None if outcome.status == "delivered" else answer.error
    event = CloudEvent.from_json(delivery.payload)
    try:
        async with delivering.uow(event.correlationid, event.id) as tx:
            if not await tx.store.deliveries.record_attempt(
                delivery,
                attempts=outcome.attempts,
                status=outcome.status,
                next_attempt_at=outcome.next_attempt_at,
                retry_from=outcome.retry_from,
                error=error,
                now=now,
            ):
                raise _ClaimLost
            if outcome.status == "pending":
                return True
            status = "sent" if outcome.status == "delivered" else "failed"
            order_id = event.data.get("order_id")
            order_id = order_id if isinstance(order_id, str) else None
            notification_id = new_id()
            await tx.store.notifications.log_webhook(
                notification_id,
                domain.delivery_log_key(delivery.id, delivery.redeliveries),
                delivery.event_type,
                delivery.url,
                order_id,
                status,
                error,
                now,
            )
            await tx.events.emit(
                NotificationSent(
                    notification_id=notification_id,
                    order_id=order_id,
                    subscription_id=delivery.subscription_id,
                    channel="webhook",
                    template=delivery.event_type,
                    to=delivery.url,
                    status="sent" if status == "sent" else "failed",
                ),
                subject=event.subject,
            )
    except _ClaimLost:
        log.info("webhook delivery %s: claim lost or subscription deleted", delivery.id)
        return False
    return True


# --- subscriptions and the log ------------------------------------------------------------------


async def _vetted(guard: Guard, url: str) -> None:
    try:
        await guard.vet(url)
    except targets.TargetRefused as exc:
        raise Invalid.field("url", str(exc)) from exc
    except ResolutionFailed as exc:
        raise Invalid.field("url", str(exc)) from exc


async def create_subscription(
    tx: Tx[Store],
    guard: Guard,
    url: str,
    events: list[str],
    secret: str,
    channel: str | None = None,
) -> Subscription:
    """A new subscription, if `guard` accepts its URL (else Invalid naming `url`); a type
    listed twice is still delivered once. With a `channel` (issue 13) it lists ListingChanged
    only and gets that sales channel's; ListingChanged needs one (else Invalid naming the
    field)."""
    problem = domain.subscription_problem(events, channel)
    if problem is not None:
        raise Invalid.field(*problem)
    await _vetted(guard, url)
    return await tx.store.subscriptions.add(
        new_id(), url, list(dict.fromkeys(events)), secret, channel
    )


async def list_subscriptions(
    tx: Tx[Store], after_seq: int | None, limit: int
) -> list[Subscription]:
    """One page in creation order, one more than asked (the caller knows if there is more)."""
    return await tx.store.subscriptions.page(after_seq, limit)


async def delete_subscription(tx: Tx[Store], subscription_id: str) -> None:
    """Remove a subscription and its undelivered deliveries; NotFound if there is none."""
    if not await tx.store.subscriptions.remove(subscription_id):
        raise NotFound(f"webhook subscription {subscription_id}")


async def add_secret(tx: Tx[Store], subscription_id: str, secret: str) -> Subscription:
    """Rotation, step one: `secret` becomes active beside the current one, and every delivery
    is signed with both until the older is retired. Conflict if two are active already."""
    secrets = await tx.store.subscriptions.lock_secrets(subscription_id)
    if secrets is None:
        raise NotFound(f"webhook subscription {subscription_id}")
    if len(secrets) >= domain.MAX_ACTIVE_SECRETS:
        raise Conflict("two secrets are active already: retire the previous one first")
    if secret in secrets:
        raise Conflict("this secret is active already")
    return await tx.store.subscriptions.set_secrets(subscription_id, (*secrets, secret))


async def retire_previous_secret(tx: Tx[Store], subscription_id: str) -> Subscription:
    """Rotation, step two: the older of two active secrets is dropped; deliveries from now on
    are signed with the newer only. Conflict if only one is active."""
    secrets = await tx.store.subscriptions.lock_secrets(subscription_id)
    if secrets is None:
        raise NotFound(f"webhook subscription {subscription_id}")
    if len(secrets) < 2:
        raise Conflict("only one secret is active: add the new one first")
    return await tx.store.subscriptions.set_secrets(subscription_id, secrets[1:])


async def list_deliveries(
    tx: Tx[Store], subscription_id: str, before_seq: int | None, limit: int
) -> list[DeliveryRecord]:
    """One page of a subscription's deliveries, newest first, one more than asked; NotFound
    if there is no such subscription."""
    if not await tx.store.subscriptions.exists(subscription_id):
        raise NotFound(f"webhook subscription {subscription_id}")
    return await tx.store.deliveries.page(subscription_id, before_seq, limit)


async def redeliver(
    tx: Tx[Store],
    subscription_id: str,
    delivery_id: str,
    now: datetime,
    wake: Callable[[], None] = _nothing,
) -> DeliveryRecord:
    """A delivered or failed delivery is due again at once, as a fresh round (same id and
    body, attempts and horizon from zero); the worker is woken after the commit. Conflict if it
    is still pending (it is being retried already)."""
    found = await tx.store.deliveries.get(subscription_id, delivery_id)
    if found is None:
        raise NotFound(f"webhook delivery {delivery_id}")
    if found.status == "pending":
        raise Conflict("the delivery is still pending: it is retried on its own")
    again = await tx.store.deliveries.redeliver(found, now)
    if again is None:
        raise Conflict("the delivery changed meanwhile: try again")
    tx.on_commit(wake)
    return again


async def list_notifications(
    tx: Tx[Store], order_id: str | None, after_seq: int | None, limit: int
) -> list[LogEntry]:
    """One page of the log (sent and failed notifications), oldest first, one more than asked."""
    return await tx.store.notifications.page(order_id, after_seq, limit)


# --- which events matter ------------------------------------------------------------------------


class WebhookInterest:
    """Which event types can have an effect here: the email ones, and those some webhook
    subscription lists, as this process last read them. The consumer skips every other event
    without a transaction (most events of most types, when few subscriptions exist).

    Read at start (until then every type counts), again every `refresh_s`, and widened at once
    when this process creates a subscription. A subscription created through another replica
    is seen here within `refresh_s`: events consumed before that are not delivered to it."""

    # How long a type widened by this process stays counted whatever a read says: the widening
    # comes before the subscription's commit, and a read whose snapshot predates that commit
    # must not drop it (an event consumed meanwhile would be skipped for good).
    WIDENED_GRACE_S = 60.0

    def __init__(self, refresh_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.refresh_s = refresh_s
        self.types: frozenset[str] | None = None
        self.clock = clock
        self._widened: dict[str, float] = {}  # type -> when this process widened it

    def __call__(self, event_type: str) -> bool:
        return (
            self.types is None or event_type in domain.EMAIL_EVENT_TYPES or event_type in self.types
        )

    def lists(self, event_type: str) -> bool:
        """Whether some subscription lists `event_type`, as last read (True until the first read)."""
        return self.types is None or event_type in self.types

    def wake_if_listed(self, event_type: str, wake: Callable[[], None]) -> Callable[[], None]:
        """`wake`, called only while a subscription lists `event_type`: a delivery queued when
        this process had not yet seen its subscription waits for the worker's next poll."""

        def maybe() -> None:
            if self.lists(event_type):
                wake()

        return maybe

    def widen(self, event_types: list[str]) -> None:
        """Count `event_types` at once (called before the subscription listing them commits)."""
        now = self.clock()
        for event_type in event_types:
            self._widened[event_type] = now
        if self.types is not None:
            self.types = self.types | frozenset(event_types)

    async def refresh(self, uow: UnitOfWork[Store]) -> None:
        started = self.clock()
        async with uow() as tx:
            read = await tx.store.subscriptions.listed_types()
        # A subscription made while we read, or whose commit came after this read's snapshot,
        # may be missing from what we read: its types stay for WIDENED_GRACE_S.
        self._widened = {
            t: at for t, at in self._widened.items() if at > started - self.WIDENED_GRACE_S
        }
        self.types = read | frozenset(self._widened)

    async def run(self, uow: UnitOfWork[Store]) -> None:
        """Background task: re-read every `refresh_s`; a failed read keeps the last answer."""
        while True:
            try:
                await self.refresh(uow)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("reading webhook subscriptions failed: %r", exc)
            await asyncio.sleep(self.refresh_s)


# --- invoice attachments (issue 12) ---


def _attachments(intake: Intake, email: domain.Email) -> tuple[domain.Attachment, ...]:
    """The receipt's invoice as a PDF, rendered once when the email is queued (a resend sends
    the same file); none for an event without an invoice (older OrderConfirmed)."""
    if email.invoice is None:
        return ()
    pdf = intake.documents.invoice_pdf(email.invoice)
    return (domain.Attachment(domain.invoice_filename(email.invoice), domain.PDF, pdf),)
