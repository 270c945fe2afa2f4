"""Operators set and adjust stock over HTTP; subscribers see every level change and low stock once."""

from libs.events import topics
from tests.integration.inventory.conftest import Inventory, new_sku
from tests.support.auth import admin, bearer
from tests.support.kafka import TopicTail, of_type


async def test_put_creates_then_updates_an_item(inventory: Inventory) -> None:
    sku = new_sku()
    created = await inventory.http.put(
        f"/inventory/items/{sku}", json={"on_hand": 12, "reorder_point": 2}, headers=admin()
    )
    assert created.status_code == 201
    updated = await inventory.http.put(
        f"/inventory/items/{sku}", json={"on_hand": 8}, headers=admin()
    )
    assert updated.status_code == 200

    item = await inventory.http.get(f"/inventory/items/{sku}")  # public, no token

    assert item.status_code == 200
    # Every v1 field as before; issue 13 adds the sku's locations and capped channels.
    assert {k: v for k, v in item.json().items() if k != "updated_at"} == {
        "sku": sku,
        "on_hand": 8,
        "reserved": 0,
        "available": 8,
        "reorder_point": 2,
        # Issue 13: nothing on order, no backorders.
        "on_order": 0,
        "backorders": {"allowed": False, "expected_at": None, "waiting": 0},
        "locations": [
            {"location": "main", "on_hand": 8, "reserved": 0, "safety_stock": 0, "available": 8}
        ],
        "channels": [],
    }


async def test_adjustments_restock_and_write_off(inventory: Inventory) -> None:
    sku = new_sku()
    await inventory.set_stock(sku, 5)

    restock = await inventory.http.post(
        f"/inventory/items/{sku}/adjustments",
        json={"delta": 10, "reason": "restock"},
        headers=admin(),
    )
    damage = await inventory.http.post(
        f"/inventory/items/{sku}/adjustments",
        json={"delta": -3, "reason": "damage"},
        headers=admin(),
    )

    assert (restock.status_code, restock.json()["on_hand"]) == (200, 15)
    assert (damage.status_code, damage.json()["available"]) == (200, 12)


async def test_stock_changes_that_break_the_invariants_are_conflicts(inventory: Inventory) -> None:
    sku = new_sku()
    await inventory.set_stock(sku, 3)

    too_much = await inventory.http.post(
        f"/inventory/items/{sku}/adjustments",
        json={"delta": -4, "reason": "damage"},
        headers=admin(),
    )

    assert too_much.status_code == 409
    assert too_much.headers["content-type"] == "application/problem+json"
    assert (await inventory.item(sku))["on_hand"] == 3


async def test_bad_input_names_the_field(inventory: Inventory) -> None:
    sku = new_sku()
    await inventory.set_stock(sku, 3)
    cases = [
        ("put", f"/inventory/items/{sku}", {"on_hand": -1}, "on_hand"),
        ("put", f"/inventory/items/{sku}", {"on_hand": 1, "reorder_point": -2}, "reorder_point"),
        ("put", f"/inventory/items/{sku}", {"on_hand": 1, "colour": "red"}, "colour"),
        ("post", f"/inventory/items/{sku}/adjustments", {"delta": 0, "reason": "x"}, "delta"),
        ("post", f"/inventory/items/{sku}/adjustments", {"delta": 1, "reason": ""}, "reason"),
        (
            "post",
            f"/inventory/items/{sku}/adjustments",
            {"delta": 1, "reason": "x" * 101},
            "reason",
        ),
        ("put", "/inventory/items/bad%20sku!", {"on_hand": 1}, "sku"),
    ]
    for method, url, body, field in cases:
        response = await inventory.http.request(method, url, json=body, headers=admin())
        assert response.status_code == 422, (url, body, response.text)
        assert field in response.json()["detail"], response.json()


async def test_unknown_items_are_404(inventory: Inventory) -> None:
    sku = new_sku()
    assert (await inventory.http.get(f"/inventory/items/{sku}")).status_code == 404
    adjust = await inventory.http.post(
        f"/inventory/items/{sku}/adjustments",
        json={"delta": 1, "reason": "restock"},
        headers=admin(),
    )
    assert adjust.status_code == 404


async def test_unknown_reservation_is_404(inventory: Inventory) -> None:
    response = await inventory.http.get("/inventory/reservations/no-such-order", headers=admin())
    assert response.status_code == 404


async def test_only_admins_change_stock(inventory: Inventory) -> None:
    sku = new_sku()
    url = f"/inventory/items/{sku}"
    assert (await inventory.http.put(url, json={"on_hand": 1})).status_code == 401
    as_customer = await inventory.http.put(url, json={"on_hand": 1}, headers=bearer("alice"))
    assert as_customer.status_code == 403
    reservation = await inventory.http.get("/inventory/reservations/x", headers=bearer("alice"))
    assert reservation.status_code == 403


async def test_every_change_is_announced_and_low_stock_once_per_crossing(
    inventory: Inventory,
) -> None:
    sku = new_sku()
    async with TopicTail(topics.INVENTORY) as tail:
        await inventory.set_stock(sku, 10, reorder_point=4)
        for delta in (-3, -3, -2, 5, -4):  # available 7, 4 (low), 2, 7 (re-armed), 3 (low)
            response = await inventory.http.post(
                f"/inventory/items/{sku}/adjustments",
                json={"delta": delta, "reason": "count_correction"},
                headers=admin(),
            )
            assert response.status_code == 200

        levels = await tail.wait_for(of_type("StockLevelChanged", sku), count=6)
        await tail.wait_for(of_type("StockLow", sku), count=2)
        await tail.poll()

    assert [e["data"]["available"] for e in levels] == [10, 7, 4, 2, 7, 3]
    assert levels[1]["data"]["reason"] == "count_correction"
    lows = tail.events(of_type("StockLow", sku))
    assert [(e["data"]["available"], e["data"]["reorder_point"]) for e in lows] == [(4, 4), (3, 4)]
    assert all(e["_key"] == sku for e in levels + lows)
