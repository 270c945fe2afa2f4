"""The customer's cancellation and the operator's ship and deliver: who may, from which status,
what is recorded and announced."""

import pytest

from libs.events.orders import OrderCancellationRequested, OrderDelivered, OrderShipped
from libs.kit.errors import Conflict, NotFound
from services.orders import service
from services.orders.domain import OrderStatus, OrderView
from tests.unit.orders.fakes import ALICE, BOB, OPERATOR, World

S = OrderStatus


async def ship(world: World, order_id: str) -> OrderView:
    return await service.ship(
        world.tx(), OPERATOR, order_id, carrier="UPS", tracking_number="1Z999", clock=world.clock
    )


@pytest.mark.parametrize("status", [S.PENDING, S.CONFIRMED])
async def test_the_owner_asks_for_a_cancellation(status: OrderStatus) -> None:
    world = World()
    oid = await (world.placed() if status is S.PENDING else world.confirmed())
    order = await service.request_cancellation(world.tx(), ALICE, oid, "found_cheaper")
    assert order.cancellation_requested and order.status is status
    [asked] = world.emitted(OrderCancellationRequested)
    assert (asked.order_id, asked.reason, asked.previous_status) == (
        oid,
        "found_cheaper",
        status.value,
    )


async def test_asking_again_changes_nothing() -> None:
    world = World()
    oid = await world.placed()
    await service.request_cancellation(world.tx(), ALICE, oid, "customer_request")
    again = await service.request_cancellation(world.tx(), ALICE, oid, "other_reason")
    assert again.cancellation_requested
    assert len(world.emitted(OrderCancellationRequested)) == 1
    assert world.store.orders.rows[oid].state.cancellation_reason == "customer_request"


async def test_an_operator_may_cancel_anyones_order() -> None:
    world = World()
    oid = await world.placed(ALICE)
    order = await service.request_cancellation(world.tx(), OPERATOR, oid, "fraud")
    assert order.cancellation_requested


async def test_another_customers_order_cannot_be_cancelled_and_is_not_confirmed_to_exist() -> None:
    world = World()
    oid = await world.placed(ALICE)
    with pytest.raises(NotFound):
        await service.request_cancellation(world.tx(), BOB, oid, "customer_request")
    with pytest.raises(NotFound):
        await service.request_cancellation(world.tx(), BOB, "no-such-order", "customer_request")
    assert not (await world.view(oid)).cancellation_requested
    assert world.emitted(OrderCancellationRequested) == []


async def test_a_shipped_or_finished_order_cannot_be_cancelled() -> None:
    world = World()
    shipped = await world.shipped()
    rejected = await world.placed()
    await service.payment_failed(world.tx(), rejected)
    for oid in (shipped, rejected):
        with pytest.raises(Conflict):
            await service.request_cancellation(world.tx(), ALICE, oid, "customer_request")
    assert world.emitted(OrderCancellationRequested) == []


async def test_the_operator_ships_a_confirmed_order() -> None:
    world = World()
    oid = await world.confirmed()
    order = await ship(world, oid)
    assert order.status is S.SHIPPED
    assert order.tracking == {
        "carrier": "UPS",
        "tracking_number": "1Z999",
        "shipped_at": world.clock.now.isoformat(),
    }
    assert [h.status for h in order.history] == [S.PENDING, S.CONFIRMED, S.SHIPPED]
    [shipped] = world.emitted(OrderShipped)
    assert shipped.email == "alice@example.com" and shipped.tracking == order.tracking


async def test_only_a_confirmed_order_not_being_cancelled_ships() -> None:
    world = World()
    pending = await world.placed()
    cancelling = await world.confirmed()
    await service.request_cancellation(world.tx(), ALICE, cancelling, "customer_request")
    for oid in (pending, cancelling):
        with pytest.raises(Conflict):
            await ship(world, oid)
    with pytest.raises(NotFound):
        await ship(world, "no-such-order")
    assert world.emitted(OrderShipped) == []


async def test_the_operator_delivers_a_shipped_order_once() -> None:
    world = World()
    oid = await world.confirmed()
    with pytest.raises(Conflict):
        await service.deliver(world.tx(), OPERATOR, oid)
    await ship(world, oid)
    order = await service.deliver(world.tx(), OPERATOR, oid)
    assert order.status is S.DELIVERED
    assert [h.status for h in order.history][-1] is S.DELIVERED
    [delivered] = world.emitted(OrderDelivered)
    assert delivered.order_id == oid
    with pytest.raises(Conflict):
        await service.deliver(world.tx(), OPERATOR, oid)
    with pytest.raises(NotFound):
        await service.deliver(world.tx(), OPERATOR, "no-such-order")
    assert len(world.emitted(OrderDelivered)) == 1
