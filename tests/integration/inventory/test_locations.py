"""Issue 13 on the real PostgreSQL: stock split over locations never oversold under concurrent
orders (sums consistent per location), a channel cap held exactly under concurrency, transfers
once per Idempotency-Key, the location routes, and the migration's backfill."""

import asyncio
import uuid
from collections import Counter

import asyncpg
import pytest
from sqlalchemy import select

from libs.kit.db import Database
from libs.kit.migrations import upgrade
from libs.kit.settings import ServiceSettings
from libs.kit.uow import utc_now
from services.inventory import service
from services.inventory.db import channel_caps, location_stock, stock_items, stock_movements
from services.inventory.domain import ReservationStatus
from tests.integration.inventory.conftest import Inventory, new_order_id, new_sku, order_placed
from tests.integration.inventory.test_stock_races import in_transaction
from tests.support.auth import admin


def new_location() -> str:
    return f"loc-{uuid.uuid4().hex[:10]}"


async def add_location(db: Database, code: str, priority: int) -> None:
    await in_transaction(
        db, lambda tx: service.put_location(tx, code, code, None, priority, None, None)
    )


async def stock_at(db: Database, sku: str, location: str, on_hand: int) -> None:
    await in_transaction(
        db, lambda tx: service.set_location_stock(tx, sku, location, on_hand, None)
    )


async def reserve_on(
    db: Database, order_id: str, lines: list[tuple[str, int]], channel: str = "web"
) -> object:
    order = order_placed(order_id, lines).model_copy(update={"channel": channel})
    return await in_transaction(
        db,
        lambda tx: service.reserve_for_order(
            tx, order, correlation_id=None, clock=utc_now, grace_s=60
        ),
    )


async def per_location(db: Database, sku: str) -> dict[str, tuple[int, int]]:
    async with db.transaction() as session:
        rows = await session.execute(select(location_stock).where(location_stock.c.sku == sku))
        return {r.location: (r.on_hand, r.reserved) for r in rows}


async def totals(db: Database, sku: str) -> tuple[int, int]:
    async with db.transaction() as session:
        row = (await session.execute(select(stock_items).where(stock_items.c.sku == sku))).one()
        return row.on_hand, row.reserved


async def test_stock_over_two_locations_is_never_oversold_and_sums_stay_consistent(
    database: Database,
) -> None:
    second = new_location()
    await add_location(database, second, 500)
    a, b = new_sku(), new_sku()
    for sku in (a, b):
        await stock_at(database, sku, "main", 3)
        await stock_at(database, sku, second, 4)
    # Single lines, and two-line orders in both sku orders, racing for 7 units of each.
    orders = [[(a, 1)], [(b, 1)], [(a, 1), (b, 1)], [(b, 1), (a, 1)]] * 6

    outcomes = await asyncio.gather(*(reserve_on(database, new_order_id(), o) for o in orders))

    # Every reserved order's units, and only those, are held.
    held = Counter(
        sku
        for order, outcome in zip(orders, outcomes, strict=True)
        if outcome is ReservationStatus.RESERVED
        for sku, _ in order
    )
    assert held == {a: 7, b: 7}
    for sku in (a, b):
        shelves = await per_location(database, sku)
        assert shelves == {"main": (3, 3), second: (4, 4)}
        assert await totals(database, sku) == (7, 7)


async def test_a_cap_of_three_holds_under_twenty_concurrent_orders(database: Database) -> None:
    sku = new_sku()
    await stock_at(database, sku, "main", 50)
    await in_transaction(database, lambda tx: service.set_channel_cap(tx, sku, "marketplace", 3))

    outcomes = await asyncio.gather(
        *(reserve_on(database, new_order_id(), [(sku, 1)], "marketplace") for _ in range(20))
    )

    assert Counter(outcomes) == {ReservationStatus.RESERVED: 3, ReservationStatus.FAILED: 17}
    async with database.transaction() as session:
        cap = (await session.execute(select(channel_caps).where(channel_caps.c.sku == sku))).one()
    assert (cap.cap, cap.used) == (3, 3)
    # The shared pool still sells to an uncapped channel.
    assert await reserve_on(database, new_order_id(), [(sku, 10)]) is ReservationStatus.RESERVED
    assert await totals(database, sku) == (50, 13)


async def test_a_retried_transfer_moves_once(inventory: Inventory) -> None:
    sku, there = new_sku(), new_location()
    put = await inventory.http.put(
        f"/inventory/locations/{there}", json={"name": "Second"}, headers=admin()
    )
    assert put.status_code == 201, put.text
    await inventory.set_stock(sku, 10)
    body = {"sku": sku, "from_location": "main", "to_location": there, "quantity": 4}
    key = {"Idempotency-Key": uuid.uuid4().hex}

    first = await inventory.http.post("/inventory/transfers", json=body, headers=admin() | key)
    again = await inventory.http.post("/inventory/transfers", json=body, headers=admin() | key)
    other = await inventory.http.post(
        "/inventory/transfers", json=body | {"quantity": 5}, headers=admin() | key
    )
    too_many = await inventory.http.post(
        "/inventory/transfers",
        json=body | {"quantity": 7},
        headers=admin() | {"Idempotency-Key": uuid.uuid4().hex},
    )
    keyless = await inventory.http.post("/inventory/transfers", json=body, headers=admin())

    assert first.status_code == 201, first.text
    assert (again.status_code, again.json()["id"]) == (200, first.json()["id"])
    assert (other.status_code, too_many.status_code, keyless.status_code) == (409, 409, 422)
    item = await inventory.item(sku)
    assert item["on_hand"] == 10
    assert {x["location"]: x["on_hand"] for x in item["locations"]} == {"main": 6, there: 4}
    database = inventory.runtime.db
    async with database.transaction() as session:
        rows = await session.execute(
            select(stock_movements).where(
                stock_movements.c.sku == sku, stock_movements.c.reason == "transfer"
            )
        )
        moves = [(r.location, r.delta_on_hand, r.ref) for r in rows]
    assert moves == [("main", -4, first.json()["id"]), (there, 4, first.json()["id"])]


async def test_location_routes(inventory: Inventory) -> None:
    code, sku = new_location(), new_sku()
    created = await inventory.http.put(
        f"/inventory/locations/{code}",
        json={"name": "Shop", "kind": "store", "regions": ["DE"], "priority": 7},
        headers=admin(),
    )
    updated = await inventory.http.put(
        f"/inventory/locations/{code}", json={"name": "Shop 2", "active": False}, headers=admin()
    )
    one = await inventory.http.get(f"/inventory/locations/{code}", headers=admin())
    page = await inventory.http.get("/inventory/locations?limit=1", headers=admin())
    missing = await inventory.http.get("/inventory/locations/nope-nope", headers=admin())
    anonymous = await inventory.http.get("/inventory/locations")

    assert (created.status_code, updated.status_code) == (201, 200)
    assert {k: v for k, v in one.json().items() if k not in ("created_at", "updated_at")} == {
        "code": code,
        "name": "Shop 2",
        "kind": "store",
        "priority": 7,
        "regions": ["DE"],
        "active": False,
    }
    assert page.status_code == 200 and len(page.json()["items"]) == 1
    assert page.json()["next_cursor"]
    assert (missing.status_code, anonymous.status_code) == (404, 401)

    stocked = await inventory.http.put(
        f"/inventory/items/{sku}/locations/{code}",
        json={"on_hand": 5, "safety_stock": 1},
        headers=admin(),
    )
    assert stocked.status_code == 201, stocked.text
    # The location is inactive: nothing there is available.
    assert (stocked.json()["on_hand"], stocked.json()["available"]) == (5, 0)
    capped = await inventory.http.put(
        f"/inventory/items/{sku}/channels/marketplace", json={"cap": 2}, headers=admin()
    )
    assert capped.json()["channels"] == [
        {"channel": "marketplace", "cap": 2, "used": 0, "available": 0}
    ]
    unknown = await inventory.http.put(
        f"/inventory/items/{sku}/locations/nope-nope", json={"on_hand": 1}, headers=admin()
    )
    assert unknown.status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("put", "/inventory/locations/x1", {"name": ""}, "name"),
        ("put", "/inventory/locations/x1", {"name": "a", "kind": "moon"}, "kind"),
        ("put", "/inventory/locations/x1", {"name": "a", "priority": -1}, "priority"),
        ("put", "/inventory/locations/x1", {"name": "a", "regions": [""]}, "regions[0]"),
        ("put", "/inventory/locations/x1", {"name": "a", "colour": 1}, "colour"),
        ("put", "/inventory/items/s1/locations/main", {"on_hand": -1}, "on_hand"),
        (
            "put",
            "/inventory/items/s1/locations/main",
            {"on_hand": 1, "safety_stock": -1},
            "safety_stock",
        ),
        ("put", "/inventory/items/s1/channels/web", {"cap": -1}, "cap"),
        (
            "post",
            "/inventory/transfers",
            {"sku": "s1", "from_location": "main", "to_location": "b", "quantity": 0},
            "quantity",
        ),
    ],
)
async def test_bad_input_names_the_field(
    inventory: Inventory, method: str, path: str, body: dict[str, object], field: str
) -> None:
    headers = admin() | {"Idempotency-Key": uuid.uuid4().hex}
    response = await inventory.http.request(method.upper(), path, json=body, headers=headers)

    assert response.status_code == 422, response.text
    assert field in [e["field"] for e in response.json()["errors"]]


def test_the_migration_backfills_every_item_into_main() -> None:
    """0003 copies each stock_items row into `main` (a scratch database, migrated to 0002 first)."""
    settings = ServiceSettings(service_name="inventory")
    name = f"migcheck_locations_{uuid.uuid4().hex[:10]}"

    async def as_superuser(statement: str, database: str = "postgres") -> list[asyncpg.Record]:
        su = ServiceSettings()
        conn = await asyncpg.connect(
            host=su.pg_host,
            port=su.pg_port,
            user=su.pg_user,
            password=su.pg_password or None,
            database=database,
        )
        try:
            return list(await conn.fetch(statement))
        finally:
            await conn.close()

    def admin_sql(statement: str) -> None:
        asyncio.run(as_superuser(statement))

    def on_scratch(statement: str) -> list[asyncpg.Record]:
        return asyncio.run(as_superuser(statement, name))

    admin_sql(f'CREATE DATABASE "{name}" OWNER "{settings.pg_user}"')
    try:
        url = ServiceSettings(service_name="inventory", database_name=name).sqlalchemy_url()
        upgrade("inventory", url, "0002")
        on_scratch(
            "INSERT INTO stock_items (sku, on_hand, reserved) VALUES ('a', 7, 2), ('b', 0, 0)"
        )
        upgrade("inventory", url)
        rows = on_scratch(
            "SELECT sku, location, on_hand, reserved, safety_stock FROM location_stock ORDER BY sku"
        )
        main = on_scratch("SELECT code, priority, active FROM locations")
    finally:
        admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    assert [tuple(r) for r in rows] == [("a", "main", 7, 2, 0), ("b", "main", 0, 0, 0)]
    assert [tuple(r) for r in main] == [("main", 0, True)]
