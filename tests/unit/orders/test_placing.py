"""Placing an order: priced by pricing outside any transaction, written with its key, history and
events in one; replays answer the stored order, a reused key with another body is a Conflict, and
pricing's refusals and outages pass through with nothing written."""

from datetime import timedelta

import pytest

from libs.events.orders import OrderPlaced, PaymentInstructionIssued
from libs.kit.errors import Conflict, FieldError, Invalid, Unavailable
from services.orders import service
from services.orders.domain import OrderStatus
from tests.unit.orders.fakes import ALICE, BOB, TTL_S, World, eur, order_request, unavailable


async def test_a_new_order_is_priced_pending_and_announced() -> None:
    world = World()
    placed = await world.place(order_request(token="tok_secret_1"), request_id="req-42")

    order = placed.order
    assert not placed.replayed
    assert (order.status, order.customer_id, order.email) == (
        OrderStatus.PENDING,
        "alice",
        "alice@example.com",
    )
    # 2 x 12.50 + 1 x 4.99, 20 % tax per line: 30.00 + 5.99.
    assert [(ln.sku, ln.quantity, ln.total.amount) for ln in order.lines] == [
        ("MUG-1", 2, 3000),
        ("TEA-9", 1, 599),
    ]
    assert (order.subtotal, order.tax, order.total) == (eur(2999), eur(600), eur(3599))
    assert order.reservation_deadline == world.clock.now + timedelta(seconds=TTL_S)
    assert [h.status for h in order.history] == [OrderStatus.PENDING]
    assert await world.view(order.id) == order

    [announced] = world.emitted(OrderPlaced)
    assert announced.order_id == order.id and announced.total == eur(3599)
    assert announced.reservation_deadline == order.reservation_deadline
    assert "tok_secret_1" not in announced.model_dump_json()
    [instruction] = world.emitted(PaymentInstructionIssued)
    assert (instruction.token, instruction.amount) == ("tok_secret_1", eur(3599))
    # Both belong to the request that placed the order.
    assert {e.correlationid for e in world.events.envelopes} == {"req-42"}
    assert [e.subject for e in world.events.envelopes] == [order.id, order.id]


async def test_pricing_is_asked_for_the_callers_prices_with_no_transaction_open() -> None:
    world = World()
    open_during_pricing: list[int] = []

    async def look() -> None:
        open_during_pricing.append(world.uow.open)

    world.pricing.during_call = look
    await world.place()
    assert open_during_pricing == [0]
    assert world.pricing.asked == [([("MUG-1", 2), ("TEA-9", 1)], "Bearer alice-token")]
    # A short read for a replay, then the writes.
    assert world.uow.opened == 2


async def test_the_same_key_and_body_replays_the_stored_order() -> None:
    world = World()
    first = await world.place()
    again = await world.place()
    assert again.replayed and again.order == first.order
    assert len(world.emitted(OrderPlaced)) == 1
    # Answered from the database alone, in one transaction, without asking pricing again.
    assert len(world.pricing.asked) == 1
    assert world.uow.opened == 3


async def test_the_same_key_with_another_body_is_a_conflict() -> None:
    world = World()
    first = await world.place()
    with pytest.raises(Conflict):
        await world.place(order_request(lines=[("MUG-1", 3)]))
    assert list(world.store.orders.rows) == [first.order.id]
    assert len(world.events.emitted) == 2
    assert len(world.pricing.asked) == 1


async def test_keys_belong_to_one_customer() -> None:
    world = World()
    mine = await world.place(order_request(ALICE, key="k"))
    theirs = await world.place(order_request(BOB, key="k"))
    assert not theirs.replayed
    assert theirs.order.id != mine.order.id and theirs.order.customer_id == "bob"


async def test_a_concurrent_request_that_won_the_key_is_answered_with_its_order() -> None:
    world = World()
    winner: list[service.Placed] = []

    async def the_other_request_commits_first() -> None:
        world.pricing.during_call = None  # the other request, priced while ours waits
        winner.append(await world.place())

    world.pricing.during_call = the_other_request_commits_first
    ours = await world.place()
    assert ours.replayed and ours.order.id == winner[0].order.id
    assert len(world.store.orders.rows) == 1
    assert len(world.emitted(OrderPlaced)) == 1


async def test_pricing_refusing_a_line_is_relayed_and_spends_nothing() -> None:
    world = World()
    with pytest.raises(Invalid) as refused:
        await world.place(order_request(lines=[("MUG-1", 1), ("NOPE", 1)]))
    assert refused.value.errors == [FieldError("lines[1].sku", "unknown sku")]
    assert_nothing_written(world)
    # The key was not spent on the refused request.
    assert not (await world.place(order_request(lines=[("MUG-1", 1)]))).replayed


@pytest.mark.parametrize(
    "failure",
    [unavailable(), Invalid("lines: malformed", malformed=True)],
    ids=["unavailable", "malformed"],
)
async def test_pricing_failures_pass_through_and_write_nothing(
    failure: Unavailable | Invalid,
) -> None:
    world = World()
    world.pricing.failure = failure
    with pytest.raises(type(failure)) as caught:
        await world.place()
    assert caught.value is failure
    assert_nothing_written(world)


def assert_nothing_written(world: World) -> None:
    assert world.store.orders.rows == {}
    assert world.store.keys.keys == {}
    assert world.store.history.entries == {}
    assert world.events.emitted == []
