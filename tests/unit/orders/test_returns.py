"""Returns use cases (issue 12) on fakes: who may ask and when, what a receipt refunds and
announces, and how the two halves complete a return once."""

from datetime import timedelta

import pytest

from libs.events.orders import ReturnCompleted, ReturnReceived, ReturnRequested
from libs.kit.auth import Principal
from libs.kit.errors import Conflict, Invalid, NotFound
from services.orders import service
from services.orders.domain import (
    OrderReturn,
    ReceivedLine,
    ReturnLine,
    ReturnStatus,
    ShippingRefundPolicy,
)
from tests.unit.orders.fakes import ALICE, BOB, OPERATOR, World

WINDOW_DAYS = 30
# The default order (fakes.order_request): MUG-1 x2 at 1250 + 20% tax = 3000, TEA-9 x1 = 599.
MUG_TOTAL, TEA_TOTAL = 3000, 599


async def delivered(world: World) -> str:
    order_id = await world.shipped()
    await service.deliver(world.tx(), OPERATOR, order_id)
    return order_id


async def ask(
    world: World,
    order_id: str,
    *lines: ReturnLine,
    who: Principal = ALICE,
    key: str | None = None,
    body: str | None = None,
) -> service.ReturnAnswer:
    request = service.ReturnRequest(
        order_id=order_id, lines=list(lines), idempotency_key=key, request_hash=body or key
    )
    return await service.request_return(
        world.tx(), who, request, clock=world.clock, window_days=WINDOW_DAYS
    )


async def receive(
    world: World,
    order_id: str,
    return_id: str,
    *lines: ReceivedLine,
    policy: ShippingRefundPolicy = "never",
) -> OrderReturn:
    return await service.receive_return(
        world.tx(), order_id, return_id, list(lines), clock=world.clock, shipping_policy=policy
    )


async def test_the_customer_returns_part_of_a_delivered_order() -> None:
    world = World()
    order_id = await delivered(world)
    answer = await ask(world, order_id, ReturnLine("MUG-1", 2, "damaged"))
    assert answer.order_return.status is ReturnStatus.REQUESTED
    [requested] = world.emitted(ReturnRequested)
    assert (requested.order_id, requested.return_id) == (order_id, answer.order_return.id)
    assert [(ln.sku, ln.quantity, ln.reason) for ln in requested.lines] == [("MUG-1", 2, "damaged")]
    view = await world.view(order_id)
    assert [r.id for r in view.returns] == [answer.order_return.id]
    assert view.status.value == "delivered"


async def test_an_order_that_is_not_delivered_cannot_be_returned() -> None:
    world = World()
    order_id = await world.shipped()
    with pytest.raises(Conflict, match="delivered"):
        await ask(world, order_id, ReturnLine("MUG-1", 1, "damaged"))
    assert world.emitted(ReturnRequested) == []


async def test_the_window_closes_thirty_days_after_delivery() -> None:
    world = World()
    order_id = await delivered(world)
    world.clock.advance(timedelta(days=WINDOW_DAYS).total_seconds())
    await ask(world, order_id, ReturnLine("TEA-9", 1, "other"))  # the last moment
    world.clock.advance(1)
    with pytest.raises(Conflict, match="window"):
        await ask(world, order_id, ReturnLine("MUG-1", 1, "other"))


async def test_another_customer_cannot_return_the_order_but_an_operator_can() -> None:
    world = World()
    order_id = await delivered(world)
    with pytest.raises(NotFound):
        await ask(world, order_id, ReturnLine("MUG-1", 1, "other"), who=BOB)
    await ask(world, order_id, ReturnLine("MUG-1", 1, "other"), who=OPERATOR)


async def test_returns_together_never_exceed_what_was_ordered() -> None:
    world = World()
    order_id = await delivered(world)
    await ask(world, order_id, ReturnLine("MUG-1", 1, "other"))
    with pytest.raises(Invalid) as refused:
        await ask(world, order_id, ReturnLine("TEA-9", 1, "other"), ReturnLine("MUG-1", 2, "other"))
    assert refused.value.errors[0].field == "lines[1].quantity"
    with pytest.raises(Invalid) as unknown:
        await ask(world, order_id, ReturnLine("NOPE", 1, "other"))
    assert unknown.value.errors[0].field == "lines[0].sku"
    assert len(world.emitted(ReturnRequested)) == 1


async def test_an_idempotency_key_replays_the_return_and_refuses_another_body() -> None:
    world = World()
    order_id = await delivered(world)
    first = await ask(world, order_id, ReturnLine("MUG-1", 1, "other"), key="k1", body="b1")
    again = await ask(world, order_id, ReturnLine("MUG-1", 1, "other"), key="k1", body="b1")
    assert again.replayed and again.order_return.id == first.order_return.id
    with pytest.raises(Conflict):
        await ask(world, order_id, ReturnLine("MUG-1", 2, "other"), key="k1", body="b2")
    assert len(world.emitted(ReturnRequested)) == 1


async def test_a_receipt_refunds_the_received_units_share_as_charged() -> None:
    world = World()
    order_id = await delivered(world)
    asked = (await ask(world, order_id, ReturnLine("MUG-1", 2, "damaged"))).order_return
    received = await receive(
        world,
        order_id,
        asked.id,
        ReceivedLine("MUG-1", 1, "resellable"),
        ReceivedLine("MUG-1", 1, "damaged"),
    )
    assert received.status is ReturnStatus.RECEIVED
    assert received.refund is not None and received.refund.amount == MUG_TOTAL
    [event] = world.emitted(ReturnReceived)
    assert event.refund.amount == MUG_TOTAL
    assert [(ln.sku, ln.quantity, ln.condition) for ln in event.lines] == [
        ("MUG-1", 1, "resellable"),
        ("MUG-1", 1, "damaged"),
    ]
    with pytest.raises(Conflict):  # received already
        await receive(world, order_id, asked.id, ReceivedLine("MUG-1", 1, "resellable"))


async def test_units_that_did_not_arrive_are_not_refunded_and_may_be_asked_again() -> None:
    world = World()
    order_id = await delivered(world)
    asked = (await ask(world, order_id, ReturnLine("MUG-1", 2, "other"))).order_return
    received = await receive(world, order_id, asked.id, ReceivedLine("MUG-1", 1, "resellable"))
    assert received.refund is not None and received.refund.amount == MUG_TOTAL // 2
    await ask(world, order_id, ReturnLine("MUG-1", 1, "other"))


async def test_a_receipt_beyond_the_request_is_refused() -> None:
    world = World()
    order_id = await delivered(world)
    asked = (await ask(world, order_id, ReturnLine("MUG-1", 1, "other"))).order_return
    with pytest.raises(Invalid) as refused:
        await receive(world, order_id, asked.id, ReceivedLine("MUG-1", 2, "resellable"))
    assert refused.value.errors[0].field == "lines[0].quantity"
    with pytest.raises(NotFound):
        await receive(world, order_id, "no-such-return", ReceivedLine("MUG-1", 1, "damaged"))
    assert world.emitted(ReturnReceived) == []


async def test_a_receipt_refunds_no_more_than_is_left_unrefunded() -> None:
    world = World()
    order_id = await delivered(world)
    await service.payment_refunded(world.tx(), order_id, 3000, fully=False)  # an operator's
    asked = (await ask(world, order_id, ReturnLine("MUG-1", 2, "other"))).order_return
    received = await receive(world, order_id, asked.id, ReceivedLine("MUG-1", 2, "resellable"))
    assert received.refund is not None and received.refund.amount == MUG_TOTAL + TEA_TOTAL - 3000


async def test_the_return_completes_once_stock_and_refund_are_done() -> None:
    world = World()
    order_id = await delivered(world)
    asked = (await ask(world, order_id, ReturnLine("TEA-9", 1, "damaged"))).order_return
    await receive(world, order_id, asked.id, ReceivedLine("TEA-9", 1, "damaged"))
    assert await service.return_stock_returned(world.tx(), order_id, asked.id, clock=world.clock)
    assert world.emitted(ReturnCompleted) == []
    assert await service.return_refunded(world.tx(), order_id, asked.id, clock=world.clock)
    assert not await service.return_refunded(world.tx(), order_id, asked.id, clock=world.clock)
    [completed] = world.emitted(ReturnCompleted)
    assert (completed.return_id, completed.refund.amount) == (asked.id, TEA_TOTAL)
    [shown] = (await world.view(order_id)).returns
    assert shown.status is ReturnStatus.COMPLETED and shown.completed_at == world.clock()
    assert (await world.view(order_id)).status.value == "delivered"


async def test_a_return_with_nothing_to_refund_completes_on_its_stock_alone() -> None:
    world = World()
    order_id = await delivered(world)
    await service.payment_refunded(world.tx(), order_id, MUG_TOTAL + TEA_TOTAL, fully=True)
    asked = (await ask(world, order_id, ReturnLine("TEA-9", 1, "other"))).order_return
    received = await receive(world, order_id, asked.id, ReceivedLine("TEA-9", 1, "resellable"))
    assert received.refund is not None and received.refund.amount == 0
    await service.return_stock_returned(world.tx(), order_id, asked.id, clock=world.clock)
    [completed] = world.emitted(ReturnCompleted)
    assert completed.refund.amount == 0


async def test_facts_about_a_return_still_requested_change_nothing() -> None:
    world = World()
    order_id = await delivered(world)
    asked = (await ask(world, order_id, ReturnLine("TEA-9", 1, "other"))).order_return
    assert not await service.return_refunded(world.tx(), order_id, asked.id, clock=world.clock)
    assert not await service.return_stock_returned(world.tx(), "nope", asked.id, clock=world.clock)
    assert world.emitted(ReturnCompleted) == []


async def test_shipping_as_charged_comes_back_with_the_last_units_only_when_the_policy_says() -> (
    None
):
    # The order ships for 490 + 20% tax = 588, in its total (3599 + 588).
    cases: list[tuple[ShippingRefundPolicy, list[int]]] = [
        ("never", [MUG_TOTAL, TEA_TOTAL]),
        ("when_all_returned", [MUG_TOTAL, TEA_TOTAL + 588]),
    ]
    for policy, refunds in cases:
        world = World()
        world.pricing.shipping_rates = {"std": 490}
        world.pricing.default_shipping = "std"
        order_id = await delivered(world)
        assert (await world.view(order_id)).total.amount == MUG_TOTAL + TEA_TOTAL + 588
        got = []
        for sku, quantity in (("MUG-1", 2), ("TEA-9", 1)):
            asked = (await ask(world, order_id, ReturnLine(sku, quantity, "other"))).order_return
            back = await receive(
                world, order_id, asked.id, ReceivedLine(sku, quantity, "resellable"), policy=policy
            )
            assert back.refund is not None
            got.append(back.refund.amount)
        assert got == refunds, policy
