"""Backordered orders with fakes (issue 13): confirmed and charged as any, their OrderConfirmed
carries the backordered lines, and their shipment waits (awaiting_stock) until BackorderFilled,
whether that comes before or after the confirmation."""

from datetime import UTC, datetime

from libs.events.common import BackorderedLine
from libs.events.orders import OrderConfirmed
from services.orders import service
from services.orders.domain import OrderStatus, ShipmentStatus
from tests.unit.orders.fakes import FakeCarrier, World
from tests.unit.orders.test_shipments import worker

EXPECTED = datetime(2031, 1, 8, tzinfo=UTC)
LATE = [BackorderedLine(sku="MUG-1", quantity=1, expected_at=EXPECTED)]


async def backordered(world: World) -> str:
    order_id = await world.placed()
    await service.record_backorders(world.tx(), order_id, LATE)
    await service.stock_reserved(world.tx(), order_id)
    return order_id


async def test_a_backordered_order_is_confirmed_but_its_shipment_waits() -> None:
    world = World()
    order_id = await backordered(world)

    await service.payment_captured(world.tx(), order_id, world.clock)

    view = await world.view(order_id)
    assert view.status is OrderStatus.CONFIRMED
    [confirmed] = world.emitted(OrderConfirmed)
    assert confirmed.backordered == LATE
    [shipment] = view.shipments
    assert shipment.status is ShipmentStatus.AWAITING_STOCK
    carrier = FakeCarrier()
    await worker(world, carrier).step()
    assert carrier.calls == []  # no label while the stock is on its way


async def test_the_fill_after_the_confirmation_releases_the_shipment() -> None:
    world = World()
    order_id = await backordered(world)
    await service.payment_captured(world.tx(), order_id, world.clock)

    assert await service.backorder_filled(world.tx(), order_id)
    assert not await service.backorder_filled(world.tx(), order_id)  # a repeat changes nothing

    carrier = FakeCarrier()
    await worker(world, carrier).step()
    [shipment] = (await world.view(order_id)).shipments
    assert shipment.status is ShipmentStatus.LABEL_CREATED
    assert len(carrier.calls) == 1


async def test_a_fill_before_the_confirmation_lets_the_order_ship_at_once() -> None:
    world = World()
    order_id = await backordered(world)

    assert not await service.backorder_filled(world.tx(), order_id)  # nothing held yet
    await service.payment_captured(world.tx(), order_id, world.clock)

    [shipment] = (await world.view(order_id)).shipments
    assert shipment.status is ShipmentStatus.PENDING
    [confirmed] = world.emitted(OrderConfirmed)
    assert confirmed.backordered == LATE


async def test_an_order_without_backorders_ships_as_before() -> None:
    world = World()
    order_id = await world.confirmed()

    [shipment] = (await world.view(order_id)).shipments
    assert shipment.status is ShipmentStatus.PENDING
    assert world.emitted(OrderConfirmed)[0].backordered == []


async def test_a_capture_that_overtakes_its_stock_reserved_still_holds_the_shipment() -> None:
    # Orders reads payments' and inventory's topics side by side: the capture (made only after
    # the reservation) may be applied first. The order waits for the StockReserved, whose
    # backordered lines then hold the shipment, instead of confirming without them.
    world = World()
    order_id = await world.placed()
    woken: list[str] = []
    wake = lambda: woken.append("labels")  # noqa: E731

    paying = world.tx()
    assert await service.payment_captured(paying, order_id, world.clock, on_confirmed=wake)
    paying.commit()
    assert (await world.view(order_id)).status is OrderStatus.PENDING
    assert world.emitted(OrderConfirmed) == [] and woken == []

    await service.record_backorders(world.tx(), order_id, LATE)
    reserving = world.tx()
    assert await service.stock_reserved(reserving, order_id, on_confirmed=wake)
    reserving.commit()

    view = await world.view(order_id)
    assert view.status is OrderStatus.CONFIRMED
    [confirmed] = world.emitted(OrderConfirmed)
    assert confirmed.backordered == LATE and confirmed.invoice is not None
    [shipment] = view.shipments
    assert shipment.status is ShipmentStatus.AWAITING_STOCK
    assert woken == ["labels"]
    carrier = FakeCarrier()
    await worker(world, carrier).step()
    assert carrier.calls == []
