"""Order and stock events become emails, once each, with NotificationSent behind them."""

import time
import uuid

from sqlalchemy import text

from libs.events import topics
from libs.events.common import Money, PricedLine
from libs.events.inventory import StockLow
from libs.events.orders import OrderConfirmed, OrderRejected, OrderShipped
from tests.integration.notifications.conftest import Notifications, Receiver, new_order_id, send
from tests.support.eventually import eventually
from tests.support.kafka import TopicTail, make_event, publish

WAREHOUSE = "warehouse@backroom.local"
SECRET = "whsec-" + "y" * 24


def eur(amount: int) -> Money:
    return Money(amount=amount, currency="EUR")


def confirmed(order_id: str, email: str | None = None) -> OrderConfirmed:
    return OrderConfirmed(
        order_id=order_id,
        customer_id="carol",
        email=email,
        lines=[
            PricedLine(
                sku="MUG-1",
                quantity=2,
                unit_price=eur(1250),
                discount=eur(250),
                tax=eur(450),
                total=eur(2700),
            ),
            PricedLine(
                sku="TEA-7",
                quantity=1,
                unit_price=eur(399),
                discount=eur(0),
                tax=eur(80),
                total=eur(479),
            ),
        ],
        total=eur(3179),
    )


async def test_order_confirmed_twice_sends_one_receipt(notifications: Notifications) -> None:
    order_id = new_order_id()
    to = f"{order_id}@example.com"
    async with TopicTail(topics.NOTIFICATIONS) as tail:
        event = make_event("orders", confirmed(order_id, to), subject=order_id)
        await publish(event, topics.ORDERS)
        await publish(event, topics.ORDERS)  # an at-least-once redelivery
        # The same fact published again under a new event id (e.g. a replay by the producer).
        await send("orders", topics.ORDERS, confirmed(order_id, to), order_id)
        # A later event of the same order is handled after all of those (same key, same partition).
        shipped = OrderShipped(
            order_id=order_id, customer_id="carol", email=to, tracking={"number": "JD1"}
        )
        await send("orders", topics.ORDERS, shipped, order_id)

        async def shipping_email_sent() -> bool:
            return any("shipped" in str(m["Subject"]) for m in notifications.mailbox.to(to))

        await eventually(shipping_email_sent, timeout=30, what="the later shipping email")
        sent = await tail.wait_for(
            lambda e: e["type"] == "NotificationSent" and e["subject"] == order_id, count=2
        )

    receipts = [m for m in notifications.mailbox.to(to) if "confirmed" in str(m["Subject"])]
    assert len(receipts) == 1
    receipt = receipts[0]
    assert receipt["Message-ID"] == f"<{order_id}/order_confirmed@backroom>"
    assert receipt["From"] == "Backroom <orders@backroom.local>"
    text = receipt.get_content()
    assert "2 x MUG-1 at EUR 12.50, discount EUR 2.50, tax EUR 4.50: EUR 27.00" in text
    assert "1 x TEA-7 at EUR 3.99, discount EUR 0.00, tax EUR 0.80: EUR 4.79" in text
    assert "Total: EUR 31.79" in text

    log = await notifications.log(order_id)
    assert [(n["channel"], n["template"], n["to"], n["status"]) for n in log] == [
        ("email", "order_confirmed", to, "sent"),
        ("email", "order_shipped", to, "sent"),
    ]
    assert sorted(e["data"]["template"] for e in sent) == ["order_confirmed", "order_shipped"]
    receipt_event = next(e for e in sent if e["data"]["template"] == "order_confirmed")
    assert receipt_event["_key"] == order_id
    assert receipt_event["data"]["notification_id"] == log[0]["id"]
    assert (receipt_event["data"]["channel"], receipt_event["data"]["to"]) == ("email", to)
    assert receipt_event["data"]["status"] == "sent"
    assert receipt_event["correlationid"] == event.correlationid


async def test_rejection_email_says_why_and_goes_to_the_customer_mailbox(
    notifications: Notifications,
) -> None:
    order_id = new_order_id()
    customer = f"dave-{uuid.uuid4().hex[:8]}"
    rejected = OrderRejected(order_id=order_id, customer_id=customer, reason="out_of_stock")
    await send("orders", topics.ORDERS, rejected, order_id)

    # No email on the event: the customer's mailbox at customers.backroom.local.
    to = f"{customer}@customers.backroom.local"

    async def delivered() -> bool:
        return len(notifications.mailbox.to(to)) == 1

    await eventually(delivered, timeout=30, what="rejection email")
    [mail] = notifications.mailbox.to(to)
    assert str(mail["Subject"]) == f"We could not accept your order {order_id}"
    assert "some of the items you ordered are out of stock" in mail.get_content()
    [row] = await notifications.log(order_id)
    assert (row["template"], row["to"], row["status"]) == ("order_rejected", to, "sent")


async def test_stock_low_alerts_the_warehouse(notifications: Notifications) -> None:
    sku = f"SKU-{uuid.uuid4().hex[:10]}"
    async with TopicTail(topics.NOTIFICATIONS) as tail:
        await send(
            "inventory", topics.INVENTORY, StockLow(sku=sku, available=2, reorder_point=5), sku
        )

        async def alerted() -> bool:
            return any(sku in str(m["Subject"]) for m in notifications.mailbox.to(WAREHOUSE))

        await eventually(alerted, timeout=30, what="low stock email")
        [sent] = await tail.wait_for(lambda e: e["subject"] == sku)
    [mail] = [m for m in notifications.mailbox.to(WAREHOUSE) if sku in str(m["Subject"])]
    assert str(mail["Subject"]) == f"Low stock: {sku} (2 available)"
    text = mail.get_content()
    assert f"SKU:           {sku}" in text
    assert "Available:     2" in text
    assert "Reorder point: 5" in text
    assert sent["_key"] == sku
    assert sent["data"]["sku"] == sku
    assert sent["data"]["template"] == "low_stock"
    assert sent["data"]["to"] == WAREHOUSE


async def test_a_deferral_is_retried_and_a_refusal_is_logged_as_failed(
    notifications: Notifications,
) -> None:
    flaky, refusing = new_order_id(), new_order_id()
    notifications.mailbox.refuse(f"{flaky}@example.com", "451 4.3.0 try again later", times=1)
    notifications.mailbox.refuse(f"{refusing}@example.com", "550 5.1.1 no such user")
    async with TopicTail(topics.NOTIFICATIONS) as tail:
        await send("orders", topics.ORDERS, confirmed(flaky, f"{flaky}@example.com"), flaky)
        await send(
            "orders", topics.ORDERS, confirmed(refusing, f"{refusing}@example.com"), refusing
        )

        async def flaky_delivered() -> bool:
            return len(notifications.mailbox.to(f"{flaky}@example.com")) == 1

        await eventually(flaky_delivered, timeout=30, what="email sent on the retry")
        [announced] = await tail.wait_for(lambda e: e["subject"] == refusing, timeout=30)
    # The event was handled: the refusal is the email's outcome, shown in the log (not a
    # dead-lettered event).
    assert notifications.mailbox.to(f"{refusing}@example.com") == []
    [failed] = await notifications.log(refusing)
    assert (failed["template"], failed["status"]) == ("order_confirmed", "failed")
    assert "550" in failed["error"]
    assert announced["data"]["status"] == "failed"
    assert announced["data"]["notification_id"] == failed["id"]
    assert [n["status"] for n in await notifications.log(flaky)] == ["sent"]


async def test_a_slow_smtp_server_holds_no_row_lock_and_delays_no_webhook(
    notifications: Notifications, receiver: Receiver
) -> None:
    order_id = new_order_id()
    to = f"{order_id}@example.com"
    notifications.mailbox.slow[to] = 2.0
    subscription = await notifications.subscribe(receiver.url, ["OrderRejected"], SECRET)
    try:
        started = time.monotonic()
        rejected = OrderRejected(
            order_id=order_id, customer_id="carol", email=to, reason="out_of_stock"
        )
        await send("orders", topics.ORDERS, rejected, order_id)

        async def posted() -> bool:
            return len(receiver.requests) == 1

        await eventually(posted, timeout=30, what="the webhook delivery")
        latency = time.monotonic() - started
        print(f"webhook of an order whose email takes 2 s to send: {latency * 1000:.0f} ms")
        assert notifications.mailbox.to(to) == [], "the slow server answered first"
        async with notifications.app.state.runtime.db.transaction() as session:
            status = await session.scalar(
                text(
                    "SELECT status FROM notifications"
                    " WHERE order_id = :o AND channel = 'email' FOR UPDATE NOWAIT"
                ),
                {"o": order_id},
            )
        assert status == "pending"  # being sent, and nobody holds its row

        async def sent() -> bool:
            return [n["status"] for n in await notifications.log(order_id)] == ["sent", "sent"]

        await eventually(sent, timeout=30, what="the email and the webhook recorded")
    finally:
        notifications.mailbox.slow.pop(to, None)
        await notifications.unsubscribe(subscription["id"])
