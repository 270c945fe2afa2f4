"""Issue 13 on the real PostgreSQL: drafting once per crossing under concurrent moves, receipts
(partial, full, over-receipt, idempotent retry) through the HTTP routes, and backorders filled
by a receipt whether the order's reservation is still live or already committed."""

import asyncio
import uuid
from typing import Any

from sqlalchemy import func, select

from libs.kit.db import Database
from libs.kit.uow import utc_now
from services.inventory import service
from services.inventory.db import purchase_orders
from services.inventory.domain import ReservationStatus
from tests.integration.inventory.conftest import Inventory, new_order_id, new_sku, order_placed
from tests.integration.inventory.test_stock_races import counts, in_transaction
from tests.support.auth import admin


async def put_supplier(inventory: Inventory, supplier_id: str, items: list[dict[str, Any]]) -> Any:
    response = await inventory.http.put(
        f"/inventory/suppliers/{supplier_id}",
        json={"name": "Acme", "email": "po@acme.example", "lead_time_days": 5, "items": items},
        headers=admin(),
    )
    assert response.status_code in (200, 201), response.text
    return response.json()


async def post(inventory: Inventory, path: str, body: Any = None, **headers: str) -> Any:
    return await inventory.http.post(path, json=body, headers={**admin(), **headers})


async def sent_po(inventory: Inventory, supplier_id: str, sku: str, quantity: int) -> str:
    response = await post(
        inventory,
        "/inventory/purchase-orders",
        {"supplier_id": supplier_id, "lines": [{"sku": sku, "quantity": quantity}]},
    )
    assert response.status_code == 201, response.text
    po_id: str = response.json()["id"]
    sent = await post(inventory, f"/inventory/purchase-orders/{po_id}/send")
    assert sent.status_code == 200, sent.text
    return po_id


def new_supplier() -> str:
    return f"sup-{uuid.uuid4().hex[:10]}"


async def test_twenty_concurrent_moves_across_the_reorder_point_draft_once(
    inventory: Inventory, database: Database
) -> None:
    sku, supplier_id = new_sku(), new_supplier()
    await put_supplier(inventory, supplier_id, [{"sku": sku, "reorder_quantity": 50}])
    await inventory.set_stock(sku, 20, reorder_point=10)

    async def damage() -> None:
        await in_transaction(database, lambda tx: service.adjust_stock(tx, sku, -1, "damage"))

    await asyncio.gather(*(damage() for _ in range(20)))

    async with database.transaction() as session:
        drafted = await session.scalar(
            select(func.count()).where(purchase_orders.c.reorder_sku == sku)
        )
    assert drafted == 1
    listed = await inventory.http.get(
        "/inventory/purchase-orders", params={"sku": sku}, headers=admin()
    )
    [po] = listed.json()["items"]
    assert (po["status"], po["supplier_id"], po["lines"][0]["quantity"]) == (
        "draft",
        supplier_id,
        50,
    )


async def test_receipts_partial_full_over_and_replayed(inventory: Inventory) -> None:
    sku, supplier_id = new_sku(), new_supplier()
    await put_supplier(inventory, supplier_id, [{"sku": sku, "reorder_quantity": 10}])
    await inventory.set_stock(sku, 2)
    po_id = await sent_po(inventory, supplier_id, sku, 10)
    assert (await inventory.item(sku))["on_order"] == 10

    path = f"/inventory/purchase-orders/{po_id}/receipts"
    no_key = await post(inventory, path, {"lines": [{"sku": sku, "quantity": 1}]})
    assert no_key.status_code == 422
    over = await post(
        inventory, path, {"lines": [{"sku": sku, "quantity": 11}]}, **{"Idempotency-Key": "x"}
    )
    assert over.status_code == 422
    assert over.json()["errors"][0]["field"] == "lines[0].quantity"

    first = await post(
        inventory, path, {"lines": [{"sku": sku, "quantity": 4}]}, **{"Idempotency-Key": "r1"}
    )
    assert first.status_code == 201, first.text
    again = await post(
        inventory, path, {"lines": [{"sku": sku, "quantity": 4}]}, **{"Idempotency-Key": "r1"}
    )
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    item = await inventory.item(sku)
    assert (item["on_hand"], item["available"], item["on_order"]) == (6, 6, 6)
    po = (await inventory.http.get(f"/inventory/purchase-orders/{po_id}", headers=admin())).json()
    assert po["status"] == "partially_received"

    cancel = await post(inventory, f"/inventory/purchase-orders/{po_id}/cancel")
    assert cancel.status_code == 409

    full = await post(
        inventory, path, {"lines": [{"sku": sku, "quantity": 6}]}, **{"Idempotency-Key": "r2"}
    )
    assert full.status_code == 201
    item = await inventory.item(sku)
    assert (item["on_hand"], item["on_order"]) == (12, 0)
    po = (await inventory.http.get(f"/inventory/purchase-orders/{po_id}", headers=admin())).json()
    assert po["status"] == "received"


async def test_a_draft_cannot_receive(inventory: Inventory) -> None:
    sku, supplier_id = new_sku(), new_supplier()
    await put_supplier(inventory, supplier_id, [{"sku": sku, "reorder_quantity": 10}])
    draft = await post(
        inventory,
        "/inventory/purchase-orders",
        {"supplier_id": supplier_id, "lines": [{"sku": sku, "quantity": 3}]},
    )
    receipt = await post(
        inventory,
        f"/inventory/purchase-orders/{draft.json()['id']}/receipts",
        {"lines": [{"sku": sku, "quantity": 1}]},
        **{"Idempotency-Key": "k"},
    )
    assert receipt.status_code == 409


async def test_a_sku_listed_twice_names_the_item(inventory: Inventory) -> None:
    sku = new_sku()
    response = await inventory.http.put(
        f"/inventory/suppliers/{new_supplier()}",
        json={
            "name": "Acme",
            "lead_time_days": 3,
            "items": [{"sku": sku, "reorder_quantity": 1}, {"sku": sku, "reorder_quantity": 2}],
        },
        headers=admin(),
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "items[1].sku"


async def reserve(db: Database, order_id: str, lines: list[tuple[str, int]]) -> object:
    order = order_placed(order_id, lines)
    return await in_transaction(
        db,
        lambda tx: service.reserve_for_order(
            tx, order, correlation_id=None, clock=utc_now, grace_s=60
        ),
    )


async def receive(inventory: Inventory, po_id: str, sku: str, quantity: int) -> None:
    response = await post(
        inventory,
        f"/inventory/purchase-orders/{po_id}/receipts",
        {"lines": [{"sku": sku, "quantity": quantity}]},
        **{"Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code == 201, response.text


async def backorderable(inventory: Inventory, on_hand: int, on_order: int) -> tuple[str, str]:
    sku, supplier_id = new_sku(), new_supplier()
    await put_supplier(inventory, supplier_id, [{"sku": sku, "reorder_quantity": 10}])
    await inventory.set_stock(sku, on_hand)
    response = await inventory.http.put(
        f"/inventory/items/{sku}/backorders", json={"allowed": True}, headers=admin()
    )
    assert response.status_code == 200, response.text
    return sku, await sent_po(inventory, supplier_id, sku, on_order)


async def test_a_receipt_fills_a_live_reservation(inventory: Inventory, database: Database) -> None:
    sku, po_id = await backorderable(inventory, on_hand=1, on_order=5)
    order_id = new_order_id()
    assert await reserve(database, order_id, [(sku, 3)]) is ReservationStatus.RESERVED
    item = await inventory.item(sku)
    assert (item["reserved"], item["backorders"]["waiting"]) == (1, 2)
    # More than what is on order and not promised yet: refused as before.
    assert await reserve(database, new_order_id(), [(sku, 4)]) is ReservationStatus.FAILED

    await receive(inventory, po_id, sku, 5)

    assert await counts(database, sku) == (6, 3)
    reservation = await inventory.reservation(order_id)
    assert reservation["lines"] == [{"sku": sku, "quantity": 3}]
    assert (await inventory.item(sku))["backorders"]["waiting"] == 0


async def test_a_receipt_fills_a_committed_order_at_once(
    inventory: Inventory, database: Database
) -> None:
    sku, po_id = await backorderable(inventory, on_hand=0, on_order=5)
    order_id = new_order_id()
    assert await reserve(database, order_id, [(sku, 2)]) is ReservationStatus.RESERVED
    await in_transaction(database, lambda tx: service.commit_order(tx, order_id))

    await receive(inventory, po_id, sku, 3)

    assert await counts(database, sku) == (1, 0)  # 3 in, 2 left with the order at once
    assert (await inventory.reservation(order_id))["status"] == "committed"


async def test_releasing_cancels_the_waiting_backorders(
    inventory: Inventory, database: Database
) -> None:
    sku, po_id = await backorderable(inventory, on_hand=0, on_order=5)
    order_id = new_order_id()
    await reserve(database, order_id, [(sku, 2)])

    await in_transaction(database, lambda tx: service.release_order(tx, order_id, "expired"))

    assert (await inventory.item(sku))["backorders"]["waiting"] == 0
    await receive(inventory, po_id, sku, 5)
    assert await counts(database, sku) == (5, 0)


async def test_a_receipt_on_an_unknown_purchase_order_is_404(inventory: Inventory) -> None:
    response = await post(
        inventory,
        "/inventory/purchase-orders/po_nope/receipts",
        {"lines": [{"sku": "x", "quantity": 1}]},
        **{"Idempotency-Key": "k"},
    )
    assert response.status_code == 404
