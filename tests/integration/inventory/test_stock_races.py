"""Races decided by PostgreSQL: parallel transactions of the real use cases on the real database."""

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy import func, select

from libs.kit.db import Database
from libs.kit.errors import Conflict
from libs.kit.outbox import Emitter
from libs.kit.transactions import SessionTx
from libs.kit.uow import utc_now
from services.inventory import service
from services.inventory.db import Store, reservations, stock_items
from services.inventory.domain import ReservationStatus
from tests.integration.inventory.conftest import new_order_id, new_sku, order_placed

T = TypeVar("T")


async def in_transaction(db: Database, use_case: Callable[[SessionTx[Store]], Awaitable[T]]) -> T:
    async with db.transaction() as session:
        return await use_case(
            SessionTx(session, Store(session), Emitter(session, "inventory", None))
        )


async def reserve(db: Database, order_id: str, lines: list[tuple[str, int]]) -> object:
    order = order_placed(order_id, lines)
    return await in_transaction(
        db,
        lambda tx: service.reserve_for_order(
            tx, order, correlation_id=None, clock=utc_now, grace_s=60
        ),
    )


async def stock(db: Database, sku: str, on_hand: int) -> None:
    await in_transaction(db, lambda tx: service.set_stock(tx, sku, on_hand, None))


async def counts(db: Database, sku: str) -> tuple[int, int]:
    async with db.transaction() as session:
        row = (await session.execute(select(stock_items).where(stock_items.c.sku == sku))).one()
        return row.on_hand, row.reserved


async def test_twenty_parallel_orders_for_five_units_reserve_exactly_five(
    database: Database,
) -> None:
    sku = new_sku()
    await stock(database, sku, 5)

    outcomes = await asyncio.gather(
        *(reserve(database, new_order_id(), [(sku, 1)]) for _ in range(20))
    )

    assert Counter(outcomes) == {ReservationStatus.RESERVED: 5, ReservationStatus.FAILED: 15}
    assert await counts(database, sku) == (5, 5)


async def test_multi_line_orders_in_opposite_sku_order_neither_deadlock_nor_oversell(
    database: Database,
) -> None:
    a, b = new_sku(), new_sku()
    for sku in (a, b):
        await stock(database, sku, 6)
    orders = [[(a, 1), (b, 1)] if i % 2 else [(b, 1), (a, 1)] for i in range(20)]

    outcomes = await asyncio.gather(*(reserve(database, new_order_id(), o) for o in orders))

    assert Counter(outcomes)[ReservationStatus.RESERVED] == 6
    assert await counts(database, a) == (6, 6)
    assert await counts(database, b) == (6, 6)


async def test_damage_write_offs_racing_reservations_never_take_reserved_units(
    database: Database,
) -> None:
    sku = new_sku()
    await stock(database, sku, 10)

    async def write_off() -> str:
        try:
            await in_transaction(database, lambda tx: service.adjust_stock(tx, sku, -1, "damage"))
            return "written_off"
        except Conflict:
            return "refused"

    results = await asyncio.gather(
        *(reserve(database, new_order_id(), [(sku, 1)]) for _ in range(10)),
        *(write_off() for _ in range(10)),
    )

    reserved = results[:10].count(ReservationStatus.RESERVED)
    written_off = results[10:].count("written_off")
    assert reserved + written_off == 10
    assert await counts(database, sku) == (10 - written_off, reserved)


async def test_same_order_placed_twice_in_parallel_reserves_once(database: Database) -> None:
    sku, order_id = new_sku(), new_order_id()
    await stock(database, sku, 10)

    outcomes = await asyncio.gather(*(reserve(database, order_id, [(sku, 3)]) for _ in range(5)))

    assert Counter(outcomes) == {ReservationStatus.RESERVED: 1, None: 4}
    assert await counts(database, sku) == (10, 3)
    async with database.transaction() as session:
        rows = await session.scalar(select(func.count()).where(reservations.c.order_id == order_id))
    assert rows == 1
