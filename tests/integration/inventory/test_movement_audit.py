"""The stock movement audit on the real database: one row per moved line, in line order, with the
line's deltas, the level the move led to, the reason and the order."""

from sqlalchemy import select

from libs.kit.db import Database
from services.inventory import service
from services.inventory.db import stock_items, stock_movements
from services.inventory.domain import ReservationStatus
from tests.integration.inventory.conftest import new_order_id
from tests.integration.inventory.test_stock_races import in_transaction, reserve, stock


async def audit(db: Database, skus: list[str]) -> list[tuple[object, ...]]:
    async with db.transaction() as session:
        rows = await session.execute(
            select(stock_movements)
            .where(stock_movements.c.sku.in_(skus))
            .order_by(stock_movements.c.id)
        )
        return [
            (r.sku, r.delta_on_hand, r.delta_reserved, r.on_hand, r.reserved, r.reason, r.order_id)
            for r in rows
        ]


async def test_every_order_hop_audits_each_line_with_its_level_after_the_move(
    database: Database,
) -> None:
    # Skus whose sort order is not their creation order, to tell line order from insertion order.
    suffix = new_order_id()[-8:]
    a, b = f"a-{suffix}", f"b-{suffix}"
    await stock(database, b, 4)
    await stock(database, a, 10)
    placed, confirmed = new_order_id(), new_order_id()

    assert await reserve(database, placed, [(b, 1), (a, 2), (b, 2)]) is ReservationStatus.RESERVED
    assert await reserve(database, confirmed, [(a, 1)]) is ReservationStatus.RESERVED
    await in_transaction(database, lambda tx: service.release_order(tx, placed, "payment_failed"))
    await in_transaction(database, lambda tx: service.commit_order(tx, confirmed))

    assert await audit(database, [a, b]) == [
        (b, 4, 0, 4, 0, "set", None),
        (a, 10, 0, 10, 0, "set", None),
        (a, 0, 2, 10, 2, "reserved", placed),
        (b, 0, 3, 4, 3, "reserved", placed),
        (a, 0, 1, 10, 3, "reserved", confirmed),
        (a, 0, -2, 10, 1, "released", placed),
        (b, 0, -3, 4, 0, "released", placed),
        (a, -1, -1, 9, 0, "committed", confirmed),
    ]
    async with database.transaction() as session:
        levels = {
            r.sku: (r.on_hand, r.reserved, r.version)
            for r in await session.execute(select(stock_items).where(stock_items.c.sku.in_([a, b])))
        }
    assert levels == {a: (9, 0, 5), b: (4, 0, 3)}
