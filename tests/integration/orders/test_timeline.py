"""The saga inspector on the real PostgreSQL and Kafka (issue 14 part 5): the journal keeps what
orders emitted (copied from the outbox by its trigger, the payment instruction without its data)
and what it consumed, in order; a service that cannot be reached is an error for that service,
not for the timeline."""

import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from services.orders.main import create_app
from services.orders.settings import OrdersSettings
from tests.integration.orders.conftest import Priced
from tests.integration.orders.test_orders import (
    confirmed,
    customer,
    order_body,
    place,
)
from tests.support.auth import admin, bearer
from tests.support.eventually import eventually
from tests.support.service import running


def _closed_port() -> str:
    """A loopback URL nothing listens on (the port was free a moment ago)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture(scope="module")
def app(pricing: Priced) -> FastAPI:
    nowhere = _closed_port()
    return create_app(
        OrdersSettings(
            pricing_url=pricing.url,
            relay_poll_interval_s=0.5,
            inventory_url=nowhere,
            payments_url=nowhere,
            notifications_url=nowhere,
            timeline_timeout_s=2.0,
        )
    )


@pytest.fixture(scope="module")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with running(app) as http:
        yield http


async def test_a_confirmed_orders_timeline_shows_its_saga_in_order(
    app: FastAPI, client: httpx.AsyncClient, pricing: Priced
) -> None:
    who = customer()
    order = await confirmed(client, pricing, who)

    async def complete() -> dict[str, Any]:
        response = await client.get(f"/orders/{order['id']}/timeline", headers=admin())
        assert response.status_code == 200, response.text
        timeline: dict[str, Any] = response.json()
        types = [e["type"] for e in timeline["events"]]
        assert "OrderConfirmed" in types, types
        return timeline

    timeline: dict[str, Any] = await eventually(
        complete, timeout=30, what="the confirmation journaled"
    )
    events = timeline["events"]
    assert isinstance(events, list)
    # The label worker's ShipmentCreated may follow the confirmation.
    assert {e["type"] for e in events[5:]} <= {"ShipmentCreated"}
    assert [(e["type"], e["direction"]) for e in events[:5]] == [
        ("OrderPlaced", "emitted"),
        ("PaymentInstructionIssued", "emitted"),
        ("StockReserved", "consumed"),
        ("PaymentCaptured", "consumed"),
        ("OrderConfirmed", "emitted"),
    ]
    assert {e["subject"] for e in events} == {order["id"]}
    placed = events[0]
    assert placed["topic"] == "backroom.orders" and placed["source"] == "backroom/orders"
    assert events[2]["causationid"] is None and events[4]["causationid"] == events[3]["id"]
    assert timeline["order"] == {
        **timeline["order"],
        "id": order["id"],
        "status": "confirmed",
        "channel": "web",
    }
    assert timeline["waiting"] == {
        "for": "OrderShipped",
        "from": "orders",
        "since": timeline["order"]["history"][1]["at"],
        "deadline": None,
        "overdue": False,
    }
    services = timeline["services"]
    assert isinstance(services, dict)
    for name in ("inventory", "payments", "notifications"):
        assert "unreachable" in services[name]["error"], services[name]
    assert len(services["orders"]["shipments"]) == 1  # the automatic shipment, orders' own
    assert isinstance(timeline["dead_letters"], list)


async def test_the_payment_token_never_reaches_the_journal(
    app: FastAPI, client: httpx.AsyncClient, pricing: Priced
) -> None:
    token = f"tok_{uuid.uuid4().hex}"
    response = await place(client, customer(), order_body(pricing, token))
    assert response.status_code == 202, response.text
    order_id = response.json()["id"]
    async with app.state.runtime.db.transaction() as session:
        kept = await session.scalar(
            text("SELECT count(*) FROM order_events WHERE order_id = :id"), {"id": order_id}
        )
        leaked = await session.scalar(
            text("SELECT count(*) FROM order_events WHERE payload LIKE :token"),
            {"token": f"%{token}%"},
        )
    assert kept == 2 and leaked == 0  # OrderPlaced and the instruction, without its data


async def test_the_timeline_is_for_admins_and_known_orders_only(
    client: httpx.AsyncClient, pricing: Priced
) -> None:
    who = customer()
    response = await place(client, who, order_body(pricing))
    order_id = response.json()["id"]
    assert (await client.get(f"/orders/{order_id}/timeline")).status_code == 401
    mine = await client.get(f"/orders/{order_id}/timeline", headers=bearer(who, "customer"))
    assert mine.status_code == 403
    missing = await client.get("/orders/no-such-order/timeline", headers=admin())
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")


async def test_a_pending_order_waits_for_its_reservation(
    client: httpx.AsyncClient, pricing: Priced
) -> None:
    response = await place(client, customer(), order_body(pricing))
    order = response.json()

    async def waiting() -> dict[str, Any]:
        timeline = await client.get(f"/orders/{order['id']}/timeline", headers=admin())
        assert timeline.status_code == 200, timeline.text
        body: dict[str, Any] = timeline.json()
        return body

    body = await eventually(waiting, what="the timeline")
    assert body["waiting"] == {
        "for": "StockReserved",
        "from": "inventory",
        "since": body["order"]["placed_at"],
        "deadline": order["reservation_deadline"],
        "overdue": False,
    }
