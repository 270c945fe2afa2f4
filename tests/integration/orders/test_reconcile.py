"""Orders' reconciliation on the real database: a pending order left past its saga deadline
(seeded with raw SQL) is found with its id; one within the grace period, one not yet due and a
decided one are not."""

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from libs.kit.db import Database
from libs.kit.reconcile import Finding
from services.orders import db as orders_db
from services.orders import domain, service
from services.orders.settings import OrdersSettings


@pytest.fixture
async def database(migrated_databases: None) -> AsyncIterator[Database]:
    db = Database.from_settings(OrdersSettings())
    yield db
    await db.dispose()


async def seed(database: Database, status: str, deadline_in_s: int) -> str:
    order_id = str(uuid.uuid4())
    async with database.transaction() as session:
        await session.execute(
            text(
                "INSERT INTO orders (id, customer_id, status, region, shipping_address, lines,"
                " currency, subtotal, discount, tax, total, reservation_deadline, correlation_id)"
                " VALUES (:id, 'cust-reconcile', :status, 'EU', '{}', '[]', 'EUR', 100, 0, 0,"
                " 100, now() + make_interval(secs => :due), :id)"
            ),
            {"id": order_id, "status": status, "due": deadline_in_s},
        )
    return order_id


async def findings(database: Database) -> list[Finding]:
    return await service.reconcile_orders(orders_db.ReconcileReads(database), 60, 100_000)


async def test_a_pending_order_past_its_deadline_is_found_with_its_id(database: Database) -> None:
    stuck = await seed(database, "pending", -3600)
    in_grace = await seed(database, "pending", -10)
    not_due = await seed(database, "pending", 900)
    decided = await seed(database, "rejected", -3600)

    try:
        found = await findings(database)
    finally:  # the seeded orders go, so later runs (e2e's among them) do not report them
        async with database.transaction() as session:
            await session.execute(
                text("DELETE FROM orders WHERE id = ANY(:ids)"),
                {"ids": [stuck, in_grace, not_due, decided]},
            )

    by_order = {f.ids["order_id"]: f.kind for f in found}
    assert by_order.get(stuck) == domain.ORDER_OVERDUE
    assert {in_grace, not_due, decided}.isdisjoint(by_order)
    [finding] = [f for f in found if f.ids["order_id"] == stuck]
    assert "stock not reserved" in finding.detail and finding.since is not None
