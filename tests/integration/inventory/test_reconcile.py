"""Inventory's reconciliation on the real database: each kind of inconsistency, seeded with raw
SQL, is found with the ids of what it is about; stock moved only by the use cases is not; the
admin routes answer the last run."""

from sqlalchemy import text

from libs.kit.db import Database
from libs.kit.reconcile import Finding
from services.inventory import db, domain, service
from tests.integration.inventory.conftest import Inventory, new_order_id, new_sku
from tests.integration.inventory.test_stock_races import in_transaction, reserve, stock
from tests.support.auth import admin, bearer

LIMITS = service.ReconcileLimits(
    stock_window_s=3600, scan_skus=100_000, expiry_grace_s=60, limit=100_000
)


async def findings(database: Database) -> list[Finding]:
    reads = db.ReconcileReads(database)
    return [
        *await service.reconcile_stock(reads, LIMITS),
        *await service.reconcile_reservations(reads, LIMITS),
    ]


def about(found: list[Finding], key: str, value: str) -> list[str]:
    return sorted(f.kind for f in found if f.ids.get(key) == value)


async def execute(database: Database, sql: str, **params: object) -> None:
    async with database.transaction() as session:
        await session.execute(text(sql), params)


async def test_stock_moved_by_the_use_cases_reconciles(database: Database) -> None:
    sku, kept, dropped = new_sku(), new_order_id(), new_order_id()
    await stock(database, sku, 10)
    await reserve(database, kept, [(sku, 2)])
    await reserve(database, dropped, [(sku, 3)])
    await in_transaction(database, lambda tx: service.commit_order(tx, kept))
    await in_transaction(database, lambda tx: service.release_order(tx, dropped, "payment_failed"))
    await reserve(database, new_order_id(), [(sku, 1)])

    found = await findings(database)

    assert about(found, "sku", sku) == []
    assert about(found, "order_id", kept) == about(found, "order_id", dropped) == []


async def test_each_seeded_inconsistency_is_found_with_its_ids(database: Database) -> None:
    shelf_off, unaudited, unbooked = new_sku(), new_sku(), new_sku()
    held, order_unbooked = new_order_id(), new_order_id()
    for sku in (shelf_off, unaudited, unbooked):
        await stock(database, sku, 10)
    await reserve(database, held, [(shelf_off, 1)])
    await reserve(database, order_unbooked, [(unbooked, 2)])
    # A location row changed without its item: the per-sku sum no longer holds.
    await execute(
        database, "UPDATE location_stock SET on_hand = on_hand + 1 WHERE sku = :sku", sku=shelf_off
    )
    # Both counts changed without a movement: the audit no longer adds up.
    await execute(
        database,
        "UPDATE stock_items SET on_hand = on_hand + 2, updated_at = now() WHERE sku = :sku",
        sku=unaudited,
    )
    await execute(
        database, "UPDATE location_stock SET on_hand = on_hand + 2 WHERE sku = :sku", sku=unaudited
    )
    # Units reserved that no open reservation holds.
    await execute(
        database,
        "UPDATE reservations SET allocations = '[]' WHERE order_id = :order_id",
        order_id=order_unbooked,
    )
    # A reservation the expiry sweep should have released an hour ago.
    await execute(
        database,
        "UPDATE reservations SET expires_at = now() - interval '1 hour' WHERE order_id = :order_id",
        order_id=held,
    )

    try:
        found = await findings(database)
    finally:  # the inconsistencies go, so later runs (e2e's among them) do not report them
        for table in ("stock_movements", "location_stock", "stock_items"):
            await execute(
                database,
                f"DELETE FROM {table} WHERE sku = ANY(:skus)",
                skus=[shelf_off, unaudited, unbooked],
            )
        await execute(
            database,
            "DELETE FROM reservations WHERE order_id = ANY(:ids)",
            ids=[held, order_unbooked],
        )

    assert about(found, "sku", shelf_off) == [domain.STOCK_LOCATION_MISMATCH]
    assert about(found, "sku", unaudited) == [domain.MOVEMENTS_MISMATCH]
    assert about(found, "sku", unbooked) == [domain.RESERVED_MISMATCH]
    assert about(found, "order_id", held) == [domain.RESERVATION_EXPIRED_HELD]
    assert about(found, "order_id", order_unbooked) == []
    [mismatch] = [f for f in found if f.ids.get("sku") == unaudited]
    assert "12/0" in mismatch.detail and "10/0" in mismatch.detail


async def test_the_admin_routes_answer_the_run_they_made(inventory: Inventory) -> None:
    assert (await inventory.http.get("/inventory/reconciliation")).status_code == 401
    denied = await inventory.http.post(
        "/inventory/reconciliation/runs", headers=bearer("shopper", "customer")
    )
    assert denied.status_code == 403

    ran = await inventory.http.post("/inventory/reconciliation/runs", headers=admin())
    assert ran.status_code == 200, ran.text
    body = ran.json()
    assert body["ran_at"] is not None and body["failed_checks"] == []
    assert all(set(f) == {"kind", "ids", "detail", "since"} for f in body["findings"])
    assert {f["kind"] for f in body["findings"]} <= {*domain.RECONCILIATION_KINDS, "outbox_stuck"}
    last = await inventory.http.get("/inventory/reconciliation", headers=admin())
    assert last.status_code == 200 and last.json()["ran_at"] == body["ran_at"]
