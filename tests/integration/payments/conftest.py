"""Payments on the real PostgreSQL and Kafka: the running service and the upstream facts."""

import asyncio
import logging
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from libs.events import topics
from libs.events.common import Line, Money
from libs.events.envelope import CloudEvent
from libs.events.inventory import StockReserved
from libs.events.orders import OrderCancellationRequested, OrderRejected, PaymentInstructionIssued
from libs.kit.db import Database, processed_events
from libs.kit.retry import RetryPolicy
from libs.kit.runtime import Runtime
from libs.kit.transactions import DatabaseUnitOfWork
from services.payments.adapters import SandboxProvider
from services.payments.db import (
    PgSandboxLedger,
    Store,
    payment_orders,
    payments,
    sandbox_ledger,
)
from services.payments.domain import CapturePolicy, ProviderCapture, ProviderResult
from services.payments.main import create_app
from services.payments.service import Charger
from services.payments.settings import PaymentsSettings
from tests.support.auth import bearer
from tests.support.kafka import make_event, publish
from tests.support.service import running
from tests.unit.payments.fakes import WEBHOOK_SECRET, SandboxDelegate


def own_charger(db: Database, policy: CapturePolicy = "immediate") -> Charger:
    """A charger of the test's own on the sandbox (tests that run before the service starts:
    its charger would claim their rows too)."""
    uow = DatabaseUnitOfWork(db, "payments", Store.for_provider("sandbox"))
    return Charger(
        uow,
        SandboxProvider(PgSandboxLedger(db), slow_s=0.0),
        RetryPolicy(attempts=2, initial_s=0.0, max_s=0.0),
        policy=policy,
    )


class ObservedSandbox(SandboxDelegate):
    """The sandbox, observed: tells when a capture starts and ends, answers chosen orders slowly,
    and for chosen orders fails right after the capture the provider made, before we record it
    (as if the process died between the PSP's answer and our commit: the capture stays owed
    until its claim's lease ends, then the next claim asks the provider what it did)."""

    def __init__(self, sandbox: SandboxProvider) -> None:
        self.sandbox = sandbox
        self.crash_once: set[str] = set()
        # For chosen orders, every capture call fails right after the provider's answer until
        # the event is set (as if the process kept dying there; the fact that made the capture
        # owed may be redelivered meanwhile, and the order may close).
        self.crash_until: dict[str, asyncio.Event] = {}
        self.capture_started: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.capture_finished: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        # For chosen orders, how long the provider takes to answer a capture.
        self.delay_s: dict[str, float] = {}

    async def capture(
        self, idempotency_key: str, amount: int, currency: str, token: str
    ) -> ProviderResult:
        self.capture_started[idempotency_key].set()
        try:
            await asyncio.sleep(self.delay_s.get(idempotency_key, 0.0))
            result = await self.sandbox.capture(idempotency_key, amount, currency, token)
        finally:
            self.capture_finished[idempotency_key].set()
        if idempotency_key in self.crash_once:
            self.crash_once.discard(idempotency_key)
            raise RuntimeError("simulated crash between the provider's answer and our commit")
        held = self.crash_until.get(idempotency_key)
        if held is not None and not held.is_set():
            raise RuntimeError("simulated crash between the provider's answer and our commit")
        return result

    async def find_capture(self, idempotency_key: str) -> ProviderCapture | None:
        return await self.sandbox.find_capture(idempotency_key)

    async def refund(self, idempotency_key: str, capture_ref: str, amount: int) -> ProviderResult:
        return await self.sandbox.refund(idempotency_key, capture_ref, amount)


class LogRecorder(logging.Handler):
    """Keeps every log record the service writes, to prove no token ever reaches a log."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.getMessage()} {record.__dict__!r}")


@dataclass
class Payments:
    http: httpx.AsyncClient
    app: FastAPI
    provider: ObservedSandbox
    logs: LogRecorder
    tokens_used: set[str] = field(default_factory=set)

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    async def listing(self, headers: dict[str, str], **params: Any) -> httpx.Response:
        return await self.http.get("/payments", params=params, headers=headers)

    async def of_order(self, order_id: str, customer: str) -> list[dict[str, Any]]:
        response = await self.listing(bearer(customer), order_id=order_id)
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    async def order_row(self, order_id: str) -> Any:
        async with self.runtime.db.transaction() as session:
            return (
                await session.execute(
                    select(payment_orders).where(payment_orders.c.order_id == order_id)
                )
            ).one()

    async def payment_rows(self, order_id: str) -> list[Any]:
        async with self.runtime.db.transaction() as session:
            query = select(payments).where(payments.c.order_id == order_id)
            return list((await session.execute(query)).all())

    async def ledger(self, order_id: str) -> list[Any]:
        """The sandbox's ledger entries for the order (its capture and its refund)."""
        async with self.runtime.db.transaction() as session:
            query = select(sandbox_ledger).where(
                sandbox_ledger.c.idempotency_key.in_([order_id, f"refund:{order_id}"])
            )
            return list((await session.execute(query)).all())

    async def handled(self, *events: CloudEvent) -> bool:
        """Whether the service's inbox has recorded every one of these events."""
        async with self.runtime.db.transaction() as session:
            count = await session.scalar(
                select(func.count())
                .select_from(processed_events)
                .where(processed_events.c.event_id.in_([e.id for e in events]))
            )
        return count == len({e.id for e in events})

    # --- upstream facts, published as orders' and inventory's relays do ---

    async def instruct(
        self, order_id: str, customer: str, amount: int, token: str = "tok_visa"
    ) -> CloudEvent:
        self.tokens_used.add(token)
        data = PaymentInstructionIssued(
            order_id=order_id,
            customer_id=customer,
            amount=Money(amount=amount, currency="EUR"),
            token=token,
        )
        return await send(data, order_id, topics.PAYMENT_INSTRUCTIONS, "orders")

    async def reserve(self, order_id: str) -> CloudEvent:
        data = StockReserved(
            order_id=order_id,
            lines=[Line(sku="sku-pay", quantity=1)],
            expires_at=datetime.now(UTC) + timedelta(minutes=15),
        )
        return await send(data, order_id, topics.INVENTORY, "inventory")

    async def reject(self, order_id: str, customer: str, reason: str) -> CloudEvent:
        data = OrderRejected(order_id=order_id, customer_id=customer, reason=reason)
        return await send(data, order_id, topics.ORDERS, "orders")

    async def cancel(self, order_id: str, customer: str) -> CloudEvent:
        data = OrderCancellationRequested(
            order_id=order_id,
            customer_id=customer,
            reason="customer_request",
            previous_status="pending",
        )
        return await send(data, order_id, topics.ORDERS, "orders")


async def send(data: Any, order_id: str, topic: str, source: str) -> CloudEvent:
    event = make_event(source, data, subject=order_id)
    await publish(event, topic, key=order_id)
    return event


@pytest.fixture
async def db(migrated_databases: None) -> AsyncIterator[Database]:
    """Payments' database, for tests that drive its statements before the service starts."""
    database = Database.from_settings(PaymentsSettings())
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture(scope="package")
async def payments_service(migrated_databases: None) -> AsyncIterator[Payments]:
    """One payments service for this package, gone before e2e starts its own (joining the consumer group takes seconds)."""
    settings = PaymentsSettings(
        relay_poll_interval_s=0.5,
        consumer_backoff_initial_s=0.05,
        capture_backoff_initial_s=0.01,
        sandbox_slow_s=1.0,
        # A "crash" below (an error raised after the provider answered) leaves the call owed
        # until its lease ends; the slowest call here (2 s) stays within one lease.
        intent_lease_s=3.0,
        intent_poll_interval_s=0.2,
    )
    # The sandbox on its own engine: like a real PSP, it shares nothing with our transactions.
    ledger_db = Database.from_settings(settings)
    provider = ObservedSandbox(
        SandboxProvider(
            PgSandboxLedger(ledger_db), settings.sandbox_slow_s, webhook_secret=WEBHOOK_SECRET
        )
    )
    app = create_app(settings, provider=provider)
    logs = LogRecorder()
    try:
        async with running(app) as http:
            # After start-up: the service's lifespan sets up the process's logging (root handlers).
            logging.getLogger().addHandler(logs)
            yield Payments(http, app, provider, logs)
    finally:
        logging.getLogger().removeHandler(logs)
        await ledger_db.dispose()


def new_order_id() -> str:
    return f"ord-{uuid.uuid4().hex}"


def new_customer() -> str:
    return f"cust-{uuid.uuid4().hex[:12]}"
