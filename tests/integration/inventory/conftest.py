"""Inventory on the real PostgreSQL (and Kafka): the running service, and order events to feed it."""

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from libs.events import topics
from libs.events.common import Money, PricedLine
from libs.events.envelope import CloudEvent
from libs.events.orders import (
    OrderCancellationRequested,
    OrderConfirmed,
    OrderPlaced,
    OrderRejected,
)
from libs.kit.db import Database
from libs.kit.runtime import Runtime
from services.inventory.main import create_app
from services.inventory.settings import InventorySettings
from tests.support.auth import admin
from tests.support.kafka import make_event, publish
from tests.support.service import running


def settings_at(moment: datetime | None = None) -> InventorySettings:
    """Inventory settings whose clock is frozen at `moment` (or the real clock when None)."""

    class Frozen(InventorySettings):
        def now(self) -> datetime:
            return moment or datetime.now(UTC)

    return Frozen(relay_poll_interval_s=0.5, consumer_backoff_initial_s=0.05)


@dataclass
class Inventory:
    http: httpx.AsyncClient
    app: FastAPI

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    async def set_stock(self, sku: str, on_hand: int, reorder_point: int | None = None) -> Any:
        body: dict[str, Any] = {"on_hand": on_hand}
        if reorder_point is not None:
            body["reorder_point"] = reorder_point
        response = await self.http.put(f"/inventory/items/{sku}", json=body, headers=admin())
        assert response.status_code in (200, 201), response.text
        return response.json()

    async def item(self, sku: str) -> Any:
        response = await self.http.get(f"/inventory/items/{sku}")
        assert response.status_code == 200, response.text
        return response.json()

    async def reservation(self, order_id: str) -> Any:
        response = await self.http.get(f"/inventory/reservations/{order_id}", headers=admin())
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="package")
async def inventory(migrated_databases: None) -> AsyncIterator[Inventory]:
    """One inventory service for this package, gone before e2e starts its own (joining the consumer group takes seconds)."""
    app = create_app(settings_at(None))
    async with running(app) as http:
        yield Inventory(http, app)


@pytest.fixture
async def database(migrated_databases: None) -> AsyncIterator[Database]:
    """The inventory database alone, for tests that drive the use cases in parallel."""
    db = Database.from_settings(InventorySettings())
    yield db
    await db.dispose()


def new_sku() -> str:
    return f"sku-{uuid.uuid4().hex[:12]}"


def new_order_id() -> str:
    return f"ord-{uuid.uuid4().hex}"


def _eur(amount: int) -> Money:
    return Money(amount=amount, currency="EUR")


def priced(lines: list[tuple[str, int]]) -> list[PricedLine]:
    return [
        PricedLine(
            sku=sku,
            quantity=quantity,
            unit_price=_eur(100),
            discount=_eur(0),
            tax=_eur(0),
            total=_eur(100 * quantity),
        )
        for sku, quantity in lines
    ]


def order_placed(
    order_id: str, lines: list[tuple[str, int]], deadline: datetime | None = None
) -> OrderPlaced:
    total = _eur(sum(100 * q for _, q in lines))
    return OrderPlaced(
        order_id=order_id,
        customer_id="cust-inventory-tests",
        lines=priced(lines),
        region="EU",
        subtotal=total,
        discount=_eur(0),
        tax=_eur(0),
        total=total,
        reservation_deadline=deadline or datetime.now(UTC) + timedelta(minutes=15),
    )


def order_confirmed(order_id: str, lines: list[tuple[str, int]]) -> OrderConfirmed:
    return OrderConfirmed(
        order_id=order_id,
        customer_id="cust-inventory-tests",
        lines=priced(lines),
        total=_eur(sum(100 * q for _, q in lines)),
    )


def order_rejected(order_id: str, reason: str) -> OrderRejected:
    return OrderRejected(order_id=order_id, customer_id="cust-inventory-tests", reason=reason)


def cancellation_requested(order_id: str, previous_status: str) -> OrderCancellationRequested:
    return OrderCancellationRequested(
        order_id=order_id,
        customer_id="cust-inventory-tests",
        reason="customer_request",
        previous_status=previous_status,
    )


async def send(data: Any, order_id: str) -> CloudEvent:
    """Publish an orders event on `backroom.orders`, keyed by the order id as orders' relay does."""
    event = make_event("orders", data, subject=order_id)
    await publish(event, topics.ORDERS, key=order_id)
    return event
