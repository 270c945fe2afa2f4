"""Composition root of the notifications service: API, event handlers, webhook delivery worker."""

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
from fastapi import FastAPI

from libs.kit.app import create_service_app
from libs.kit.runtime import Runtime
from services.notifications import api, handlers, service
from services.notifications.settings import NotificationsSettings

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class WebhookWorker:
    """Delivers due webhooks every `webhook_worker_interval_s`, on an injectable clock."""

    def __init__(self, runtime: Runtime, settings: NotificationsSettings, clock: Clock) -> None:
        self.runtime = runtime
        self.settings = settings
        self.clock = clock
        self.client: httpx.AsyncClient | None = None

    async def start(self, runtime: Runtime) -> None:
        # Redirects are not followed: a subscriber's URL is the one the admin registered.
        self.client = httpx.AsyncClient(
            timeout=self.settings.webhook_timeout_s, follow_redirects=False
        )
        runtime.extra_tasks.append(asyncio.create_task(self._run(), name="webhook-worker"))

    async def run_once(self, now: datetime | None = None) -> int:
        """One delivery pass (one batch) at `now` (default: the clock); returns deliveries tried."""
        assert self.client is not None, "the worker starts with the app's lifespan"
        async with self.runtime.db.transaction() as session:
            return await service.deliver_due_webhooks(
                session, self.runtime.service, self.client, self.settings, now or self.clock()
            )

    async def _run(self) -> None:
        assert self.client is not None
        try:
            while True:
                try:
                    while await self.run_once() == self.settings.webhook_batch_size:
                        pass
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("webhook delivery pass failed: %r", exc)
                await asyncio.sleep(self.settings.webhook_worker_interval_s)
        finally:
            await self.client.aclose()


def create_app(settings: NotificationsSettings | None = None, clock: Clock = utc_now) -> FastAPI:
    settings = settings or NotificationsSettings()
    runtime = Runtime(settings)
    handlers.register(runtime.processor, settings)
    interest = service.WebhookInterest(settings.webhook_interest_refresh_s)
    runtime.processor.interested = interest
    worker = WebhookWorker(runtime, settings, clock)

    async def start_background(runtime: Runtime) -> None:
        runtime.extra_tasks.append(
            asyncio.create_task(interest.run(runtime.db), name="webhook-interest")
        )
        await worker.start(runtime)

    app = create_service_app(
        runtime, routers=[api.router], title="Backroom notifications", on_startup=start_background
    )
    app.state.webhook_worker = worker
    app.state.webhook_interest = interest
    return app
