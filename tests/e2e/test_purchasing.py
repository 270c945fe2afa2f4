"""Issue 13's suppliers, purchase orders and backorders through the gateway: a reorder-point
crossing drafts a purchase order, sending it emails the supplier, receipts (partial, then full)
put the stock on the shelf; and a backordered order is confirmed, then ships once the receipt
lands."""

import uuid
from pathlib import Path
from typing import Any

import httpx

from deploy.local.smtp_sink import read_messages
from tests.e2e.shop import new_product, order, place_order, settled, stock
from tests.support.auth import admin
from tests.support.eventually import eventually
from tests.support.kafka import TopicTail, of_type


async def supplier(gw: httpx.AsyncClient, sku: str, reorder_quantity: int) -> tuple[str, str]:
    supplier_id = f"sup-{uuid.uuid4().hex[:10]}"
    email = f"{supplier_id}@suppliers.test"
    response = await gw.put(
        f"/inventory/suppliers/{supplier_id}",
        json={
            "name": "E2E Supplies",
            "email": email,
            "lead_time_days": 4,
            "items": [{"sku": sku, "reorder_quantity": reorder_quantity}],
        },
        headers=admin(),
    )
    assert response.status_code == 201, response.text
    return supplier_id, email


async def receive(gw: httpx.AsyncClient, po_id: str, sku: str, quantity: int) -> dict[str, Any]:
    response = await gw.post(
        f"/inventory/purchase-orders/{po_id}/receipts",
        json={"lines": [{"sku": sku, "quantity": quantity}]},
        headers=admin() | {"Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def purchase_order(gw: httpx.AsyncClient, po_id: str) -> dict[str, Any]:
    response = await gw.get(f"/inventory/purchase-orders/{po_id}", headers=admin())
    assert response.status_code == 200, response.text
    return dict(response.json())


async def send(gw: httpx.AsyncClient, po_id: str) -> None:
    response = await gw.post(f"/inventory/purchase-orders/{po_id}/send", headers=admin())
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "sent"


async def test_reorder_point_to_purchase_order_to_receipts(
    gateway: httpx.AsyncClient, event_stream: TopicTail, smtp_maildir: Path
) -> None:
    sku = await new_product(gateway, stock=10, reorder_point=5)
    supplier_id, email = await supplier(gateway, sku, reorder_quantity=12)

    adjusted = await gateway.post(
        f"/inventory/items/{sku}/adjustments",
        json={"delta": -6, "reason": "damage"},
        headers=admin(),
    )
    assert adjusted.status_code == 200, adjusted.text
    [drafted] = await event_stream.wait_for(
        lambda e: e.get("type") == "PurchaseOrderDrafted" and e["data"]["lines"][0]["sku"] == sku,
        timeout=30,
    )
    po_id = drafted["data"]["purchase_order_id"]
    assert drafted["data"]["supplier_id"] == supplier_id
    assert drafted["data"]["lines"] == [{"sku": sku, "quantity": 12, "received": 0}]

    await send(gateway, po_id)

    async def supplier_mail() -> list[str] | None:
        found = [
            str(m["Subject"])
            for m in read_messages(smtp_maildir)
            if email in str(m["To"]) and po_id in str(m["Subject"])
        ]
        return found or None

    await eventually(supplier_mail, timeout=30, what="purchase order email in the sink")
    assert (await stock(gateway, sku))["on_order"] == 12

    await receive(gateway, po_id, sku, 5)
    item = await stock(gateway, sku)
    assert (item["on_hand"], item["available"], item["on_order"]) == (9, 9, 7)
    assert (await purchase_order(gateway, po_id))["status"] == "partially_received"

    await receive(gateway, po_id, sku, 7)
    item = await stock(gateway, sku)
    assert (item["on_hand"], item["on_order"]) == (16, 0)
    assert (await purchase_order(gateway, po_id))["status"] == "received"
    received = await event_stream.wait_for(of_type("PurchaseOrderReceived", po_id), count=2)
    assert [e["data"]["status"] for e in received] == ["partially_received", "received"]


async def test_a_backordered_order_is_confirmed_and_ships_after_the_receipt(
    gateway: httpx.AsyncClient, event_stream: TopicTail
) -> None:
    sku = await new_product(gateway, stock=0)
    supplier_id, _ = await supplier(gateway, sku, reorder_quantity=5)
    allowed = await gateway.put(
        f"/inventory/items/{sku}/backorders", json={"allowed": True}, headers=admin()
    )
    assert allowed.status_code == 200, allowed.text
    created = await gateway.post(
        "/inventory/purchase-orders",
        json={"supplier_id": supplier_id, "lines": [{"sku": sku, "quantity": 5}]},
        headers=admin(),
    )
    assert created.status_code == 201, created.text
    po_id = created.json()["id"]
    await send(gateway, po_id)

    placed = await place_order(gateway, "backorder-shopper", [(sku, 2)])
    assert placed.status_code == 202, placed.text
    order_id = placed.json()["id"]
    confirmed = await settled(gateway, order_id)
    assert confirmed["status"] == "confirmed", confirmed
    [line] = confirmed["backordered"]
    assert (line["sku"], line["quantity"]) == (sku, 2)
    assert line["expected_at"]
    [shipment] = confirmed["shipments"]
    assert shipment["status"] == "awaiting_stock"

    await receive(gateway, po_id, sku, 5)

    [filled] = await event_stream.wait_for(of_type("BackorderFilled", order_id), timeout=30)
    assert filled["data"]["lines"] == [{"sku": sku, "quantity": 2}]

    async def labelled() -> dict[str, Any] | None:
        [current] = (await order(gateway, order_id))["shipments"]
        return current if current["status"] == "label_created" else None

    shipped = await eventually(labelled, timeout=30, what="label of the backordered order")
    assert shipped["tracking_number"]
    item = await stock(gateway, sku)
    assert (item["on_hand"], item["available"], item["backorders"]["waiting"]) == (3, 3, 0)
