"""Refunds of returns by the running payments service (issue 12): ReturnReceived from Kafka
makes the charger refund the return's share of the order's capture once, however often the
return is announced, announced as PaymentRefunded with the return's id."""

import asyncio
import uuid

from sqlalchemy import select

from libs.events import topics
from libs.events.common import Money
from libs.events.orders import ReceivedLine, ReturnReceived
from services.payments.db import refunds
from tests.integration.payments.conftest import Payments, send
from tests.integration.payments.test_refunds_api import _captured
from tests.support.eventually import eventually
from tests.support.kafka import TopicTail, of_type


def received(order_id: str, customer: str, return_id: str, amount: int) -> ReturnReceived:
    return ReturnReceived(
        order_id=order_id,
        return_id=return_id,
        customer_id=customer,
        lines=[ReceivedLine(sku="sku-pay", quantity=1, condition="damaged")],
        refund=Money(amount=amount, currency="EUR"),
    )


async def test_a_received_return_is_refunded_once(payments_service: Payments) -> None:
    order_id, customer, payment_id = await _captured(payments_service, amount=1000)
    return_id = f"ret-{uuid.uuid4().hex}"
    event = received(order_id, customer, return_id, 400)

    async with TopicTail(topics.PAYMENTS) as tail:
        await asyncio.gather(
            send(event, order_id, topics.ORDERS, "orders"),
            send(event, order_id, topics.ORDERS, "orders"),
        )
        [refunded] = await tail.wait_for(of_type("PaymentRefunded", order_id))
        await asyncio.sleep(1.5)
        await tail.poll()
        assert len(tail.events(of_type("PaymentRefunded", order_id))) == 1

    data = refunded["data"]
    assert (data["return_id"], data["payment_id"]) == (return_id, payment_id)
    assert data["amount"] == {"amount": 400, "currency": "EUR"}
    assert data["fully_refunded"] is False
    [capture] = await payments_service.payment_rows(order_id)
    assert (capture.status, capture.refunded_amount, capture.refund_reserved) == (
        "partially_refunded",
        400,
        400,
    )
    async with payments_service.runtime.db.transaction() as session:
        rows = (await session.execute(select(refunds).where(refunds.c.order_id == order_id))).all()
    assert [(r.return_id, r.amount, r.status, r.reason) for r in rows] == [
        (return_id, 400, "succeeded", "return")
    ]


async def test_a_return_with_nothing_to_refund_moves_no_money(payments_service: Payments) -> None:
    order_id, customer, _ = await _captured(payments_service, amount=500)
    event = received(order_id, customer, f"ret-{uuid.uuid4().hex}", 0)
    sent = await send(event, order_id, topics.ORDERS, "orders")

    async def handled() -> bool:
        return await payments_service.handled(sent)

    await eventually(handled, what="ReturnReceived handled")
    [capture] = await payments_service.payment_rows(order_id)
    assert (capture.status, capture.refunded_amount) == ("captured", 0)
