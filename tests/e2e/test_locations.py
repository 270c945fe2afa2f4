"""Issue 13 through the gateway: an order is served from a second location when the preferred
one is empty; its reservation names that location, that location's on_hand falls when the order
is confirmed, and the item read shows both locations."""

import uuid

import httpx

from tests.e2e.shop import new_product, place_order, settled, stock
from tests.support.auth import admin
from tests.support.eventually import eventually


async def test_an_order_is_served_from_the_second_location_when_the_first_is_empty(
    gateway: httpx.AsyncClient,
) -> None:
    second = f"e2e-{uuid.uuid4().hex[:8]}"
    # Less preferred than `main` (priority 0).
    created = await gateway.put(
        f"/inventory/locations/{second}",
        json={"name": "E2E second warehouse", "priority": 900},
        headers=admin(),
    )
    assert created.status_code == 201, created.text
    sku = await new_product(gateway, stock=0)
    stocked = await gateway.put(
        f"/inventory/items/{sku}/locations/{second}", json={"on_hand": 3}, headers=admin()
    )
    assert stocked.status_code == 200, stocked.text
    assert stocked.json()["available"] == 3

    async def catalog_sees_stock() -> bool:
        product = await gateway.get(f"/catalog/products/{sku}")
        return product.status_code == 200 and product.json()["availability"]["available"] == 3

    await eventually(catalog_sees_stock, what=f"catalog sees {sku} in stock")

    placed = await place_order(gateway, "locations-lena", [(sku, 2)])
    assert placed.status_code == 202, placed.text
    order_id = placed.json()["id"]
    assert (await settled(gateway, order_id))["status"] == "confirmed"

    reservation = await gateway.get(f"/inventory/reservations/{order_id}", headers=admin())
    assert reservation.status_code == 200, reservation.text
    assert reservation.json()["status"] == "committed"
    assert reservation.json()["allocations"] == [{"sku": sku, "location": second, "quantity": 2}]
    item = await stock(gateway, sku)
    assert (item["on_hand"], item["reserved"], item["available"]) == (1, 0, 1)
    assert {x["location"]: (x["on_hand"], x["reserved"]) for x in item["locations"]} == {
        "main": (0, 0),
        second: (1, 0),
    }
