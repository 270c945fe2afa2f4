"""A slow provider call holds no lock and delays no other order's charge."""

import asyncio

from sqlalchemy import select

from libs.events import topics
from services.payments.db import payment_orders
from tests.integration.payments.conftest import Payments, new_customer, new_order_id
from tests.support.kafka import TopicTail, of_type


async def test_a_slow_provider_call_holds_no_lock_and_delays_no_other_order(
    payments_service: Payments,
) -> None:
    """The provider takes 2 s for one order; ten orders checked out meanwhile are all captured
    while that call is still in flight, and the slow order's row is not locked during it."""
    provider = payments_service.provider
    slow_order, customer = new_order_id(), new_customer()
    provider.delay_s[slow_order] = 2.0
    orders = [new_order_id() for _ in range(10)]
    loop = asyncio.get_running_loop()
    async with TopicTail(topics.PAYMENTS) as tail:
        await payments_service.instruct(slow_order, customer, 900)
        await payments_service.reserve(slow_order)
        slow_sent = loop.time()
        await asyncio.wait_for(provider.capture_started[slow_order].wait(), 20)

        async with payments_service.runtime.db.transaction() as session:
            await session.execute(  # raises LockNotAvailable if the call held the row
                select(payment_orders.c.order_id)
                .where(payment_orders.c.order_id == slow_order)
                .with_for_update(nowait=True)
            )

        answered: dict[str, float] = {}

        async def provider_answered(order_id: str) -> None:
            await provider.capture_finished[order_id].wait()
            answered[order_id] = loop.time() - sent[order_id]

        sent: dict[str, float] = {}
        watching = [asyncio.create_task(provider_answered(o)) for o in orders]
        for order_id in orders:
            await payments_service.instruct(order_id, customer, 100)
            await payments_service.reserve(order_id)
            sent[order_id] = loop.time()
        latency: dict[str, float] = {}
        for order_id in orders:
            await tail.wait_for(of_type("PaymentCaptured", order_id))
            latency[order_id] = loop.time() - sent[order_id]
        assert not provider.capture_finished[slow_order].is_set(), "slow call already done"
        await asyncio.gather(*watching)

        await tail.wait_for(of_type("PaymentCaptured", slow_order))
        slow_latency = loop.time() - slow_sent

    assert slow_latency >= 2.0
    assert max(latency.values()) < 1.5, latency
    print(
        f"\nslow order (2 s provider call): captured {slow_latency:.3f}s after its reservation;"
        f" 10 others during that call: min {min(latency.values()):.3f}s,"
        f" median {sorted(latency.values())[5]:.3f}s, max {max(latency.values()):.3f}s"
        f" on the topic; provider answered within {min(answered.values()):.3f}"
        f"-{max(answered.values()):.3f}s of their reservation"
    )
