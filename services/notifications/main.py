"""Composition root of the notifications service: API, event handlers, the email sender and the
webhook delivery worker."""

import asyncio
from datetime import datetime

from fastapi import FastAPI

from libs.events.notifications import NotificationSent
from libs.kit.app import create_service_app
from libs.kit.retry import RetryPolicy
from libs.kit.runtime import PatternConsumer, Runtime
from libs.kit.transactions import DatabaseUnitOfWork
from libs.kit.uow import Clock, utc_now
from libs.kit.worker import Handoff, Worker, full_batches
from services.notifications import api, db, handlers, service
from services.notifications.adapters import (
    HttpxWebhookSender,
    JinjaTemplates,
    SmtpMailer,
    SystemResolver,
)
from services.notifications.db import Store
from services.notifications.domain import QueuedEmail
from services.notifications.settings import NotificationsSettings
from services.notifications.targets import parse_networks


class WebhookWorker:
    """Delivers due webhooks on an injectable clock: woken after commits that queue deliveries,
    polled every `webhook_worker_interval_s`."""

    def __init__(self, delivering: service.Delivering, clock: Clock, interval_s: float) -> None:
        self.delivering = delivering
        self.clock = clock
        self.worker = Worker(
            "webhook-worker", full_batches(self._step, delivering.batch_size), interval_s
        )

    async def run_once(self, now: datetime | None = None) -> int:
        """One delivery pass (one batch) at `now` (default: the clock); returns deliveries tried."""
        return await service.deliver_due_webhooks(self.delivering, now or self.clock())

    async def _step(self) -> int:
        return await self.run_once()


def create_app(settings: NotificationsSettings | None = None, clock: Clock = utc_now) -> FastAPI:
    """`clock` drives webhook delivery (due times, backoff); emails run on the real clock."""
    settings = settings or NotificationsSettings()
    runtime = Runtime(settings)
    uow = DatabaseUnitOfWork(runtime.db, runtime.service, Store.of)
    sender = HttpxWebhookSender(settings.webhook_timeout_s, settings.webhook_max_response_bytes)
    guard = service.Guard(
        SystemResolver(),
        parse_networks(settings.webhook_allowed_networks),
        resolve_timeout_s=settings.webhook_timeout_s,
    )
    webhooks = WebhookWorker(
        service.Delivering(
            uow,
            sender,
            guard,
            batch_size=settings.webhook_batch_size,
            lease_s=settings.webhook_lease_s,
            horizon_s=settings.webhook_retry_horizon_s,
            backoff_base_s=settings.webhook_backoff_base_s,
            backoff_max_s=settings.webhook_backoff_max_s,
            total_timeout_s=settings.webhook_total_timeout_s,
        ),
        clock,
        settings.webhook_worker_interval_s,
    )
    interest = service.WebhookInterest(settings.webhook_interest_refresh_s)
    # Emails the consumer queues go to this process's mailer already claimed (issue 10).
    handed_emails: Handoff[QueuedEmail] = Handoff(settings.email_batch_size)
    mailing = service.Mailing(
        uow,
        SmtpMailer(
            settings.smtp_host, settings.smtp_port, settings.smtp_timeout_s, settings.smtp_from
        ),
        utc_now,
        batch_size=settings.email_batch_size,
        lease_s=settings.email_lease_s,
        retry=RetryPolicy(
            settings.smtp_attempts, settings.smtp_retry_initial_s, settings.smtp_retry_max_s
        ),
        unavailable_pause_s=settings.smtp_unavailable_pause_s,
        # Each sent email's NotificationSent is queued (in SQL) for the subscriptions listing
        # it; the worker is woken only if one does, not for every email (issue 10).
        wake_webhooks=interest.wake_if_listed(NotificationSent.__name__, webhooks.worker.wake),
        handoff=handed_emails,
    )
    mailer = Worker(
        "email-sender",
        full_batches(lambda: service.send_queued_emails(mailing), mailing.batch_size),
        settings.email_poll_interval_s,
    )
    handed_emails.wake = mailer.wake
    intake = service.Intake(
        JinjaTemplates(),
        settings.warehouse_email,
        utc_now,
        wake_mailer=mailer.wake,
        wake_webhooks=webhooks.worker.wake,
        operator_email=settings.operator_email,
        emails=handed_emails,
        email_lease_s=settings.email_lease_s,
    )
    handlers.register(runtime.processor, intake)
    runtime.retention.add(*db.PRUNE)  # issue 14: what notifications prunes
    runtime.processor.interested = interest
    # Issue 13: every sales channel's listing topic, by pattern (see handlers).
    listings = PatternConsumer(runtime, handlers.LISTING_TOPICS_PATTERN, handlers.LISTINGS_GROUP)

    async def deliver_then_close() -> None:
        try:
            await webhooks.worker.run()
        finally:
            await sender.aclose()

    async def start_background(runtime: Runtime) -> None:
        runtime.extra_tasks.append(asyncio.create_task(interest.run(uow), name="webhook-interest"))
        runtime.start_worker(mailer)
        runtime.extra_tasks.append(asyncio.create_task(listings.run(), name="listing-offsets"))
        runtime.extra_tasks.append(asyncio.create_task(deliver_then_close(), name="webhook-worker"))

    app = create_service_app(
        runtime, routers=[api.router], title="Backroom notifications", on_startup=start_background
    )
    app.state.webhook_worker = webhooks
    app.state.email_worker = mailer
    app.state.webhook_interest = interest
    app.state.webhook_guard = guard
    return app
