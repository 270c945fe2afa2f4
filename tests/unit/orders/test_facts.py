"""Stock and payment facts decide a pending order and finish a cancellation; late, duplicated,
out-of-order facts and facts about unknown orders change nothing."""

import pytest

from libs.events.orders import (
    OrderCancellationRequested,
    OrderCancelled,
    OrderConfirmed,
    OrderRejected,
)
from services.orders import service
from services.orders.domain import OrderStatus
from tests.unit.orders.fakes import ALICE, TTL_S, World, eur

S = OrderStatus


async def test_stock_reserved_is_noted_on_a_pending_order_once() -> None:
    world = World()
    oid = await world.placed()
    assert await service.stock_reserved(world.tx(), oid)
    assert world.store.orders.rows[oid].state.stock_reserved
    assert (await world.view(oid)).status is S.PENDING
    assert world.history(oid) == [(S.PENDING, None)]
    assert not await service.stock_reserved(world.tx(), oid)  # a duplicate
    assert len(world.events.emitted) == 2  # only the placing's


async def test_a_failed_reservation_rejects_the_order_for_good() -> None:
    world = World()
    oid = await world.placed()
    assert await service.stock_reservation_failed(world.tx(), oid)
    order = await world.view(oid)
    assert (order.status, order.reason) == (S.REJECTED, "out_of_stock")
    assert world.history(oid) == [(S.PENDING, None), (S.REJECTED, "out_of_stock")]
    [rejected] = world.emitted(OrderRejected)
    assert (rejected.order_id, rejected.reason, rejected.email) == (
        oid,
        "out_of_stock",
        "alice@example.com",
    )
    # A capture that still comes in does not revive it (payments refunds on OrderRejected).
    assert not await service.payment_captured(world.tx(), oid, world.clock)
    assert not await service.stock_reservation_failed(world.tx(), oid)
    assert (await world.view(oid)).status is S.REJECTED
    assert len(world.emitted(OrderRejected)) == 1


async def test_a_capture_in_time_confirms_the_order() -> None:
    world = World()
    oid = await world.placed()
    await service.stock_reserved(world.tx(), oid)
    world.clock.advance(TTL_S)  # the deadline itself is still in time
    assert await service.payment_captured(world.tx(), oid, world.clock)
    assert (await world.view(oid)).status is S.CONFIRMED
    assert world.history(oid) == [(S.PENDING, None), (S.CONFIRMED, None)]
    [confirmed] = world.emitted(OrderConfirmed)
    assert confirmed.total == eur(3599) and confirmed.email == "alice@example.com"
    assert [ln.sku for ln in confirmed.lines] == ["MUG-1", "TEA-9"]
    assert not await service.payment_captured(world.tx(), oid, world.clock)  # a duplicate
    assert len(world.emitted(OrderConfirmed)) == 1


async def test_a_capture_after_the_deadline_rejects_the_order() -> None:
    world = World()
    oid = await world.placed()
    world.clock.advance(TTL_S + 1)
    assert await service.payment_captured(world.tx(), oid, world.clock)
    order = await world.view(oid)
    assert (order.status, order.reason) == (S.REJECTED, "reservation_expired")
    [rejected] = world.emitted(OrderRejected)
    assert rejected.reason == "reservation_expired"


async def test_a_failed_payment_rejects_as_declined_but_not_once_confirmed() -> None:
    world = World()
    oid = await world.placed()
    assert await service.payment_failed(world.tx(), oid)
    order = await world.view(oid)
    assert (order.status, order.reason) == (S.REJECTED, "payment_declined")
    assert [e.reason for e in world.emitted(OrderRejected)] == ["payment_declined"]

    confirmed = await world.confirmed()
    assert not await service.payment_failed(world.tx(), confirmed)  # a late report
    assert (await world.view(confirmed)).status is S.CONFIRMED


@pytest.mark.parametrize("stock_first", [True, False], ids=["stock_first", "payment_first"])
async def test_a_cancellation_finishes_once_stock_and_payment_are_back(stock_first: bool) -> None:
    """The payment half is PaymentRefunded or PaymentVoided: both call payment_returned."""
    world = World()
    oid = await world.confirmed()
    await service.request_cancellation(world.tx(), ALICE, oid, "found_cheaper")

    async def stock() -> bool:
        return await service.stock_released(world.tx(), oid, "cancelled")

    async def money() -> bool:
        return await service.payment_returned(world.tx(), oid)

    first, second = (stock, money) if stock_first else (money, stock)
    assert await first()
    assert (await world.view(oid)).status is S.CONFIRMED  # still waiting for the other half
    assert world.emitted(OrderCancelled) == []
    assert await second()
    order = await world.view(oid)
    assert (order.status, order.reason) == (S.CANCELLED, "found_cheaper")
    assert world.history(oid)[-1] == (S.CANCELLED, "found_cheaper")
    [cancelled] = world.emitted(OrderCancelled)
    assert cancelled.reason == "found_cheaper"
    # Duplicates after the end change nothing.
    assert not await stock()
    assert not await money()
    assert len(world.emitted(OrderCancelled)) == 1


async def test_stock_released_for_another_reason_settles_no_cancellation() -> None:
    world = World()
    oid = await world.placed()
    await service.request_cancellation(world.tx(), ALICE, oid, "customer_request")
    assert not await service.stock_released(world.tx(), oid, "expired")
    assert not await service.stock_released(world.tx(), oid, "rejected")
    await service.payment_returned(world.tx(), oid)
    assert (await world.view(oid)).status is S.PENDING
    assert await service.stock_released(world.tx(), oid, "cancelled")
    assert (await world.view(oid)).status is S.CANCELLED


async def test_a_capture_during_a_cancellation_confirms_nothing() -> None:
    world = World()
    oid = await world.placed()
    await service.request_cancellation(world.tx(), ALICE, oid, "customer_request")
    assert not await service.payment_captured(world.tx(), oid, world.clock)
    assert (await world.view(oid)).status is S.PENDING
    assert world.emitted(OrderConfirmed) == []


async def test_a_refund_without_a_cancellation_changes_nothing() -> None:
    world = World()
    oid = await world.confirmed()
    assert not await service.payment_returned(world.tx(), oid)
    assert not await service.stock_released(world.tx(), oid, "cancelled")
    assert (await world.view(oid)).status is S.CONFIRMED


async def test_facts_about_unknown_orders_are_ignored() -> None:
    world = World()
    tx = world.tx()
    assert not await service.stock_reserved(tx, "nope")
    assert not await service.stock_reservation_failed(tx, "nope")
    assert not await service.stock_released(tx, "nope", "cancelled")
    assert not await service.payment_captured(tx, "nope", world.clock)
    assert not await service.payment_failed(tx, "nope")
    assert not await service.payment_returned(tx, "nope")
    assert world.events.emitted == [] and world.store.orders.rows == {}


async def test_a_capture_after_the_deadline_sweep_changes_nothing() -> None:
    world = World()
    oid = await world.placed()
    now = world.clock.advance(TTL_S + 1)
    assert await service.expire_overdue(world.claims, now, limit=10) == 1
    assert not await service.payment_captured(world.tx(), oid, world.clock)
    assert world.history(oid) == [(S.PENDING, None), (S.REJECTED, "reservation_expired")]


async def test_a_partial_refund_shows_on_the_order_but_answers_no_cancellation() -> None:
    """Issue 11: an operator's partial refund (PaymentRefunded with fully_refunded false) is
    counted, while only the refund that leaves nothing captured ends a cancellation."""
    world = World()
    oid = await world.confirmed()
    await service.request_cancellation(world.tx(), ALICE, oid, "found_cheaper")
    assert await service.stock_released(world.tx(), oid, "cancelled")

    await service.payment_refunded(world.tx(), oid, 300, fully=False)
    order = await world.view(oid)
    assert order.status is S.CONFIRMED and order.refunded is not None
    assert order.refunded.amount == 300
    assert world.emitted(OrderCancelled) == []

    await service.payment_refunded(world.tx(), oid, 700, fully=True)
    order = await world.view(oid)
    assert order.status is S.CANCELLED
    assert order.refunded is not None and order.refunded.amount == 1000


async def test_an_order_shows_no_refund_until_one_is_made() -> None:
    world = World()
    oid = await world.confirmed()
    assert (await world.view(oid)).refunded is None
    await service.payment_refunded(world.tx(), oid, 0, fully=True)  # nothing more to give back
    assert (await world.view(oid)).refunded is None
    await service.payment_refunded(world.tx(), "no-such-order", 100, fully=True)
    assert world.store.orders.rows.keys() == {oid}


async def test_a_hold_that_lapsed_before_shipping_cancels_the_confirmed_order() -> None:
    """Capture policy on_shipment: payments' PaymentFailed authorization_expired for a confirmed
    order asks for its cancellation (reason payment_issue), which then runs as any other."""
    world = World()
    oid = await world.confirmed()
    assert await service.payment_hold_lapsed(world.tx(), oid)
    assert not await service.payment_hold_lapsed(world.tx(), oid)  # asked once
    [asked] = world.emitted(OrderCancellationRequested)
    assert (asked.order_id, asked.reason, asked.previous_status) == (
        oid,
        "payment_issue",
        "confirmed",
    )
    assert (await world.view(oid)).cancellation_requested


async def test_a_lapsed_hold_changes_nothing_for_a_pending_or_unknown_order() -> None:
    world = World()
    pending = await world.placed()
    assert not await service.payment_hold_lapsed(world.tx(), pending)
    assert not await service.payment_hold_lapsed(world.tx(), "no-such-order")
    assert world.emitted(OrderCancellationRequested) == []
