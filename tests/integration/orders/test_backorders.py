"""Backordered orders on the real PostgreSQL and Kafka (issue 13): confirmed with `backordered`,
their shipment held (`awaiting_stock`) until BackorderFilled, which may also come before the
confirmation; then the label is bought as for any order."""

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from libs.events import topics
from libs.events.common import BackorderedLine, Line
from libs.events.inventory import BackorderFilled, StockReserved
from tests.integration.orders.conftest import Priced
from tests.integration.orders.test_orders import (
    customer,
    fact,
    payment_captured,
    placed,
    reaches,
    read,
)
from tests.support.auth import admin
from tests.support.eventually import eventually

EXPECTED = datetime(2031, 1, 8, tzinfo=UTC)


async def backordered(order: dict[str, Any]) -> None:
    """Inventory reserved the order with one mug promised from incoming stock."""
    lines = [Line(sku=ln["sku"], quantity=ln["quantity"]) for ln in order["lines"]]
    mug = lines[0].sku
    data = StockReserved(
        order_id=order["id"],
        lines=lines,
        expires_at=datetime.now(UTC) + timedelta(minutes=30),
        backordered=[BackorderedLine(sku=mug, quantity=1, expected_at=EXPECTED)],
    )
    await fact("inventory", topics.INVENTORY, data, order["id"])


async def filled(order: dict[str, Any]) -> None:
    mug = order["lines"][0]["sku"]
    data = BackorderFilled(order_id=order["id"], lines=[Line(sku=mug, quantity=1)])
    await fact("inventory", topics.INVENTORY, data, order["id"])


async def backorder_noted(client: httpx.AsyncClient, order: dict[str, Any]) -> None:
    """Orders has applied the StockReserved (its backordered lines show on the order). Payments
    captures only after that StockReserved, so its PaymentCaptured comes later in the saga; but
    orders reads the two topics side by side and could apply a capture published at the same
    instant first (it then waits for the StockReserved: the last test below)."""

    async def probe() -> bool:
        assert (await read(client, order["id"]))["backordered"], "backorder not noted yet"
        return True

    await eventually(probe, timeout=30, what=f"backorder of {order['id']} noted")


async def shipment_is(client: httpx.AsyncClient, order_id: str, status: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any]:
        shipments = (await read(client, order_id))["shipments"]
        assert len(shipments) == 1, shipments  # an assertion: `eventually` asks again
        assert shipments[0]["status"] == status, shipments[0]
        return dict(shipments[0])

    return await eventually(probe, timeout=30, what=f"shipment of {order_id} {status}")


async def test_the_shipment_waits_for_the_fill_after_the_confirmation(
    client: httpx.AsyncClient, pricing: Priced
) -> None:
    order = await placed(client, pricing, customer())
    await backordered(order)
    await backorder_noted(client, order)
    await payment_captured(order)

    confirmed = await reaches(client, order["id"], "confirmed")
    assert confirmed["backordered"] == [
        {"sku": order["lines"][0]["sku"], "quantity": 1, "expected_at": "2031-01-08T00:00:00Z"}
    ]
    await shipment_is(client, order["id"], "awaiting_stock")

    await filled(order)

    shipment = await shipment_is(client, order["id"], "label_created")
    assert shipment["tracking_number"]


async def test_a_fill_before_the_confirmation_ships_at_once(
    client: httpx.AsyncClient, pricing: Priced
) -> None:
    order = await placed(client, pricing, customer())
    await backordered(order)
    await backorder_noted(client, order)
    await filled(order)
    await payment_captured(order)

    await reaches(client, order["id"], "confirmed")
    await shipment_is(client, order["id"], "label_created")


async def test_a_capture_applied_before_its_stock_reserved_waits_and_the_shipment_is_held(
    client: httpx.AsyncClient, pricing: Priced
) -> None:
    # The race the saga allows: payments captures right after inventory's StockReserved, and
    # orders, reading the two topics side by side, applies the capture first.
    order = await placed(client, pricing, customer())
    await payment_captured(order)

    async def capture_applied() -> dict[str, Any]:
        response = await client.get(f"/orders/{order['id']}/timeline", headers=admin())
        assert response.status_code == 200, response.text
        timeline: dict[str, Any] = response.json()
        assert "PaymentCaptured" in [e["type"] for e in timeline["events"]], timeline["events"]
        return timeline

    timeline = await eventually(capture_applied, timeout=30, what="the capture applied")
    assert timeline["order"]["status"] == "pending"  # not confirmed without its reservation
    assert timeline["waiting"]["for"] == "StockReserved"

    await backordered(order)

    confirmed = await reaches(client, order["id"], "confirmed")
    assert [ln["sku"] for ln in confirmed["backordered"]] == [order["lines"][0]["sku"]]
    await shipment_is(client, order["id"], "awaiting_stock")
