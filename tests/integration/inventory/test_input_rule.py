"""Inventory on the real PostgreSQL: a control character in an adjustment's reason or in a sku is
a 422 naming it, and the stock is unchanged (issue 9, item 6)."""

import uuid

import httpx

from tests.integration.inventory.conftest import Inventory
from tests.support.auth import admin


def named(response: httpx.Response) -> list[str]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return [e["field"] for e in response.json()["errors"]]


async def test_a_nul_in_the_reason_is_named_and_the_stock_is_unchanged(
    inventory: Inventory,
) -> None:
    sku = f"SKU-{uuid.uuid4().hex[:8]}"
    created = await inventory.http.put(
        f"/inventory/items/{sku}", json={"on_hand": 5}, headers=admin()
    )
    assert created.status_code == 201, created.text
    response = await inventory.http.post(
        f"/inventory/items/{sku}/adjustments",
        json={"delta": 3, "reason": "restock\u0000"},
        headers=admin(),
    )
    assert named(response) == ["reason"]
    item = await inventory.http.get(f"/inventory/items/{sku}")
    assert item.json()["on_hand"] == 5


async def test_a_nul_in_the_sku_is_named_and_no_item_is_created(inventory: Inventory) -> None:
    response = await inventory.http.put(
        "/inventory/items/SKU%00-1", json={"on_hand": 5}, headers=admin()
    )
    assert named(response) == ["sku"]
    assert named(await inventory.http.get("/inventory/items/SKU%00-1")) == ["sku"]
