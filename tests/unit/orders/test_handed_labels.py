"""Shipments claimed by the confirmation that records them and handed to this process's label
worker (issue 10): bought without a claim transaction; a full worker, or a process that died
holding the claim, leave the shipment to a claim from the database."""

from services.orders import service
from services.orders.domain import OrderStatus, ShipmentStatus
from tests.unit.orders.fakes import FakeCarrier, World
from tests.unit.orders.test_shipments import NO_WAIT, label


def handing_worker(world: World, carrier: FakeCarrier, batch: int = 10) -> service.LabelWorker:
    return service.LabelWorker(
        world.uow, carrier, NO_WAIT, lease_s=30, batch=batch, clock=world.clock
    )


async def confirm(world: World, labels: service.LabelWorker) -> str:
    order_id = await world.placed()
    await service.stock_reserved(world.tx(), order_id, labels=labels)
    tx = world.tx()
    assert await service.payment_captured(tx, order_id, world.clock, labels=labels)
    tx.commit()
    return order_id


async def test_a_confirmation_hands_its_shipment_claimed_and_it_is_bought_without_a_claim() -> None:
    world = World()
    carrier = FakeCarrier(answers=[label("TRK-9")])
    labels = handing_worker(world, carrier)
    woken: list[int] = []
    labels.wake = lambda: woken.append(1)
    order_id = await confirm(world, labels)
    assert woken == [1]
    [row] = world.store.shipments.rows.values()
    assert (row.attempts, row.leased, row.carrier) == (1, True, "fake")  # claimed in place
    opened = world.uow.opened
    assert await labels.step() == 0
    assert world.uow.opened == opened + 1  # only the outcome's transaction
    [request] = carrier.calls
    assert request.order_id == order_id and request.address == {
        "name": "Ada Lovelace",
        "city": "Paris",
    }
    [shipment] = (await world.view(order_id)).shipments
    assert (shipment.status, shipment.tracking_number) == (ShipmentStatus.LABEL_CREATED, "TRK-9")
    assert (await world.view(order_id)).status is OrderStatus.CONFIRMED


async def test_a_full_label_worker_leaves_the_shipment_to_be_claimed() -> None:
    world = World()
    carrier = FakeCarrier(answers=[label("TRK-1"), label("TRK-2")])
    labels = handing_worker(world, carrier, batch=1)
    first = await confirm(world, labels)
    second = await confirm(world, labels)  # one waits already: this one is left unclaimed
    rows = {r.order_id: r for r in world.store.shipments.rows.values()}
    assert (rows[first].leased, rows[second].leased) == (True, False)
    await labels.step()  # the handed one
    await labels.step()  # the other, by a claim
    assert sorted(c.order_id for c in carrier.calls) == sorted([first, second])


async def test_a_handed_shipment_whose_process_died_is_bought_once_after_its_lease() -> None:
    world = World()
    carrier = FakeCarrier(answers=[label("TRK-5")])
    await confirm(world, handing_worker(world, carrier))  # this process dies before buying
    survivor = handing_worker(world, carrier)
    await survivor.step()
    assert carrier.calls == []  # leased to the dead process
    world.store.shipments.expire_leases()
    await survivor.step()
    assert len(carrier.calls) == 1
    [row] = world.store.shipments.rows.values()
    assert row.attempts == 2
