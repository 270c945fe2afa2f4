"""Who sees which order: owners their own, operators all; another customer's order is missing;
lists are newest first, a page at a time."""

import pytest

from libs.kit.auth import Principal
from libs.kit.errors import NotFound
from services.orders import service
from services.orders.domain import OrderStatus
from tests.unit.orders.fakes import ALICE, BOB, OPERATOR, World


async def test_an_order_is_read_by_its_owner_and_operators_only() -> None:
    world = World()
    oid = await world.placed(ALICE)
    assert (await service.get_order(world.tx(), ALICE, oid)).id == oid
    assert (await service.get_order(world.tx(), OPERATOR, oid)).id == oid
    with pytest.raises(NotFound) as hidden:
        await service.get_order(world.tx(), BOB, oid)
    with pytest.raises(NotFound) as missing:
        await service.get_order(world.tx(), OPERATOR, "no-such-order")
    # The same answer either way: ids are not confirmed to exist.
    assert hidden.value.detail == f"order {oid} not found"
    assert missing.value.detail == "order no-such-order not found"


async def listed(
    world: World,
    who: Principal,
    customer_id: str | None = None,
    status: OrderStatus | None = None,
) -> list[str]:
    page = await service.list_orders(
        world.tx(), who, customer_id=customer_id, status=status, before=None, limit=50
    )
    return [o.id for o in page.orders]


async def test_customers_list_their_own_orders_whatever_they_ask_for() -> None:
    world = World()
    first, second = await world.placed(ALICE), await world.placed(ALICE)
    bobs = await world.placed(BOB)
    assert await listed(world, ALICE) == [second, first]
    assert await listed(world, BOB, customer_id="alice") == [bobs]
    assert await listed(world, OPERATOR) == [bobs, second, first]
    assert await listed(world, OPERATOR, customer_id="alice") == [second, first]


async def test_lists_filter_by_status() -> None:
    world = World()
    pending = await world.placed()
    confirmed = await world.confirmed()
    assert await listed(world, ALICE, status=OrderStatus.CONFIRMED) == [confirmed]
    assert await listed(world, ALICE, status=OrderStatus.PENDING) == [pending]
    assert await listed(world, ALICE, status=OrderStatus.SHIPPED) == []


async def test_a_list_comes_a_page_at_a_time_newest_first() -> None:
    world = World()
    ids = [await world.placed() for _ in range(3)]
    seen: list[str] = []
    before = None
    pages = 0
    while True:
        page = await service.list_orders(
            world.tx(), ALICE, customer_id=None, status=None, before=before, limit=2
        )
        pages += 1
        seen += [o.id for o in page.orders]
        if not page.more:
            break
        last = page.orders[-1]
        before = (last.created_at, last.id)
    assert seen == ids[::-1] and pages == 2


async def test_a_listed_order_carries_its_history() -> None:
    world = World()
    oid = await world.confirmed()
    [order] = (
        await service.list_orders(
            world.tx(), ALICE, customer_id=None, status=None, before=None, limit=1
        )
    ).orders
    assert order.id == oid
    assert [h.status for h in order.history] == [OrderStatus.PENDING, OrderStatus.CONFIRMED]
