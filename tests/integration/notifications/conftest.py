"""Notifications on the real PostgreSQL and Kafka, with a throwaway SMTP server and webhook receivers."""

import asyncio
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from fastapi import FastAPI

from libs.events.envelope import CloudEvent
from services.notifications.main import WebhookWorker, create_app
from services.notifications.settings import NotificationsSettings
from tests.support.auth import admin
from tests.support.kafka import make_event, publish
from tests.support.service import running

LOOPBACK = "127.0.0.0/8,::1/128"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Mailbox:
    """An aiosmtpd handler keeping every accepted message in memory; it can refuse recipients."""

    def __init__(self) -> None:
        self.port = 0
        self._lock = threading.Lock()
        self._messages: list[EmailMessage] = []
        self._refusals: dict[str, tuple[str, int | None]] = {}
        self.slow: dict[str, float] = {}  # recipient -> seconds the server takes to accept

    def refuse(self, address: str, reply: str, times: int | None = None) -> None:
        """Answer RCPT TO `address` with `reply`, `times` times (None: always)."""
        with self._lock:
            self._refusals[address] = (reply, times)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        with self._lock:
            reply, times = self._refusals.get(address, ("", 0))
            if times is None or times > 0:
                self._refusals[address] = (reply, None if times is None else times - 1)
                return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        delay = max((self.slow.get(to, 0.0) for to in envelope.rcpt_tos), default=0.0)
        if delay:
            await asyncio.sleep(delay)
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        with self._lock:
            self._messages.append(message)
        return "250 Message accepted"

    def to(self, address: str) -> list[EmailMessage]:
        with self._lock:
            return [m for m in self._messages if m["To"] == address]

    def with_order(self, order_id: str) -> list[EmailMessage]:
        with self._lock:
            return [m for m in self._messages if order_id in str(m["Subject"])]


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A tiny HTTP server for webhook deliveries: answers each request with the next scripted
    status (the last one repeats) and keeps what it received."""

    statuses: list[int]
    requests: list[Request] = field(default_factory=list)
    server: asyncio.Server | None = None
    delay_s: float = 0.0  # how long it takes to answer (a slow receiver)
    answered: int = 0
    location: str = ""  # sent with a 3xx answer

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/hooks"

    async def start(self) -> "Receiver":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        request_line, *header_lines = head.split("\r\n")
        headers = {}
        for line in header_lines:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.requests.append(Request(request_line.split(" ")[1], headers, body))
        index = min(len(self.requests), len(self.statuses)) - 1
        status = self.statuses[index]
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        self.answered += 1
        location = f"Location: {self.location}\r\n" if 300 <= status < 400 else ""
        writer.write(
            f"HTTP/1.1 {status} X\r\n{location}Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        writer.close()


class Clock:
    """The delivery worker's clock: real time, unless a test freezes it."""

    def __init__(self) -> None:
        self.frozen: datetime | None = None

    def __call__(self) -> datetime:
        return self.frozen or datetime.now(UTC)


@dataclass
class Notifications:
    http: httpx.AsyncClient
    app: FastAPI
    mailbox: Mailbox
    clock: Clock

    @property
    def worker(self) -> WebhookWorker:
        worker: WebhookWorker = self.app.state.webhook_worker
        return worker

    async def log(self, order_id: str) -> list[dict[str, Any]]:
        response = await self.http.get(
            "/notifications", params={"order_id": order_id}, headers=admin()
        )
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    async def deliveries(self, subscription_id: str) -> list[dict[str, Any]]:
        response = await self.http.get(
            f"/notifications/webhooks/{subscription_id}/deliveries", headers=admin()
        )
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    async def subscribe(self, url: str, events: list[str], secret: str) -> dict[str, Any]:
        response = await self.http.post(
            "/notifications/webhooks",
            json={"url": url, "events": events, "secret": secret},
            headers=admin(),
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def unsubscribe(self, subscription_id: str) -> None:
        response = await self.http.delete(
            f"/notifications/webhooks/{subscription_id}", headers=admin()
        )
        assert response.status_code == 204, response.text


# Package scope: the service must be gone before other packages (e2e above all) start theirs in
# the same consumer group.
@pytest.fixture(scope="package")
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    box.port = controller.port
    yield box
    controller.stop()


@pytest.fixture(scope="package")
async def notifications(migrated_databases: None, mailbox: Mailbox) -> AsyncIterator[Notifications]:
    """One service for this package's tests (joining the consumer group takes seconds)."""
    clock = Clock()
    settings = NotificationsSettings(
        smtp_port=mailbox.port,
        # The receivers of these tests listen on loopback: allowed here, refused by default.
        webhook_allowed_networks=LOOPBACK,
        webhook_retry_horizon_s=3600,
        webhook_worker_interval_s=0.1,
        relay_poll_interval_s=0.5,
        consumer_backoff_initial_s=0.05,
        consumer_backoff_max_s=0.2,
    )
    app = create_app(settings, clock=clock)
    async with running(app) as http:
        yield Notifications(http, app, mailbox, clock)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = await Receiver(statuses=[200]).start()
    yield server
    await server.stop()


def new_order_id() -> str:
    return f"ord-{uuid.uuid4().hex}"


async def send(service: str, topic: str, data: Any, subject: str) -> CloudEvent:
    """Publish an upstream event as its service's relay would, keyed by its aggregate."""
    event = make_event(service, data, subject=subject)
    await publish(event, topic, key=subject)
    return event
