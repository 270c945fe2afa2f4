"""The reservation deadline: the sweep rejects pending orders past it, oldest deadline first, one
transaction each, on a clock the test moves; the rejection belongs to the placing checkout."""

from libs.events.orders import OrderRejected
from services.orders import handlers, service
from services.orders.domain import OrderStatus
from tests.unit.orders.fakes import ALICE, TTL_S, World

S = OrderStatus


async def test_an_order_past_its_deadline_is_rejected_for_the_checkout_that_placed_it() -> None:
    world = World()
    placed = await world.place(request_id="checkout-7")
    oid = placed.order.id

    assert await service.expire_overdue(world.claims, world.clock.advance(TTL_S), 10) == 0
    assert (await world.view(oid)).status is S.PENDING

    assert await service.expire_overdue(world.claims, world.clock.advance(1), 10) == 1
    order = await world.view(oid)
    assert (order.status, order.reason) == (S.REJECTED, "reservation_expired")
    assert world.history(oid)[-1] == (S.REJECTED, "reservation_expired")
    [rejected] = world.emitted(OrderRejected)
    assert (rejected.order_id, rejected.reason) == (oid, "reservation_expired")
    assert world.events.envelopes[-1].correlationid == "checkout-7"
    # Nothing is left to sweep.
    assert await service.expire_overdue(world.claims, world.clock.advance(60), 10) == 0


async def test_only_pending_orders_expire() -> None:
    world = World()
    confirmed = await world.confirmed()
    cancelling = await world.placed()
    await service.request_cancellation(world.tx(), ALICE, cancelling, "customer_request")
    assert await service.expire_overdue(world.claims, world.clock.advance(TTL_S + 1), 10) == 1
    assert (await world.view(confirmed)).status is S.CONFIRMED
    # A rejection wins over a cancellation still waiting for its answers.
    assert (await world.view(cancelling)).status is S.REJECTED


async def test_a_pass_sweeps_at_most_its_limit_oldest_deadline_first() -> None:
    world = World()
    ids = [await world.placed() for _ in range(3)]
    now = world.clock.advance(TTL_S + 1)
    assert await service.expire_overdue(world.claims, now, 2) == 2
    statuses = [(await world.view(oid)).status for oid in ids]
    assert statuses == [S.REJECTED, S.REJECTED, S.PENDING]
    assert world.claims.claimed == 2  # one transaction per order
    assert await service.expire_overdue(world.claims, now, 2) == 1


async def test_orders_another_sweeper_holds_are_skipped() -> None:
    world = World()
    held, free = await world.placed(), await world.placed()
    world.store.orders.held.add(held)
    assert await service.expire_overdue(world.claims, world.clock.advance(TTL_S + 1), 10) == 1
    assert (await world.view(held)).status is S.PENDING
    assert (await world.view(free)).status is S.REJECTED


async def test_the_background_step_asks_to_run_again_only_after_a_full_batch() -> None:
    world = World()
    for _ in range(3):
        await world.placed()
    step = handlers.deadline_sweep(world.claims, world.clock, limit=2)
    world.clock.advance(TTL_S + 1)
    assert await step() == 2  # a full batch: more may be waiting
    assert await step() == 0  # the last one: then wait for the next poll
    assert len(world.emitted(OrderRejected)) == 3
