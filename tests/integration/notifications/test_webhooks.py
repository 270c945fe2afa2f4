"""Webhook subscribers receive the CloudEvents they asked for, signed, retried with backoff up to
the horizon."""

import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from libs.events import topics
from libs.events.orders import OrderCancelled, OrderRejected
from libs.events.payments import PaymentCaptured
from tests.integration.notifications.conftest import (
    Notifications,
    Receiver,
    Request,
    new_order_id,
    send,
)
from tests.integration.notifications.test_email import confirmed, eur
from tests.support.eventually import eventually
from tests.support.kafka import TopicTail, make_event, publish

SECRET = "whsec-" + "x" * 24


def expected_signature(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def test_subscriber_receives_signed_cloud_events_exactly_as_published(
    notifications: Notifications, receiver: Receiver
) -> None:
    order_id = new_order_id()
    subscription = await notifications.subscribe(
        receiver.url, ["OrderConfirmed", "PaymentCaptured", "NotificationSent"], SECRET
    )
    assert "secret" not in subscription
    try:
        async with TopicTail(topics.NOTIFICATIONS) as tail:
            event = make_event("orders", confirmed(order_id), subject=order_id)
            # Published with its own spacing: the body must be these bytes, not a re-serialisation.
            raw = json.dumps(event.model_dump(mode="json"), indent=2).encode()
            await publish(event, topics.ORDERS, value=raw)
            captured = PaymentCaptured(
                order_id=order_id, payment_id="pay-1", amount=eur(3179), provider_ref="sbx_1"
            )
            payment = await send("payments", topics.PAYMENTS, captured, order_id)

            def of_this_order() -> list[Request]:
                # The subscription also gets NotificationSent of other orders' emails.
                return [r for r in receiver.requests if json.loads(r.body)["subject"] == order_id]

            async def three_deliveries() -> bool:
                return len(of_this_order()) == 3

            try:
                await eventually(three_deliveries, timeout=30, what="webhook deliveries")
            except AssertionError as exc:
                # Once seen in CI (two of three arrived): say where the third one stood.
                raise AssertionError(
                    f"{exc}\nemails and webhooks of the order: {await notifications.log(order_id)}"
                    f"\ndeliveries: {await notifications.deliveries(subscription['id'])}"
                ) from exc
            await tail.wait_for(
                lambda e: e["subject"] == order_id and e["data"]["channel"] == "webhook", count=3
            )

        by_type = {json.loads(r.body)["type"]: r for r in of_this_order()}
        assert set(by_type) == {"OrderConfirmed", "PaymentCaptured", "NotificationSent"}
        order = by_type["OrderConfirmed"]
        assert order.body == raw
        assert order.path == "/hooks"
        assert order.headers["content-type"] == "application/cloudevents+json"
        assert order.headers["x-backroom-signature"] == expected_signature(raw)
        assert order.headers["x-backroom-delivery"]
        assert json.loads(by_type["PaymentCaptured"].body)["id"] == payment.id
        # Our own NotificationSent for the receipt email reaches subscribers too.
        sent = json.loads(by_type["NotificationSent"].body)
        assert sent["data"]["channel"] == "email"
        assert sent["data"]["template"] == "order_confirmed"
        for request in receiver.requests:
            assert request.headers["x-backroom-signature"] == expected_signature(request.body)

        log = await notifications.log(order_id)
        webhooks = sorted(
            (n["template"], n["to"], n["status"]) for n in log if n["channel"] == "webhook"
        )
        assert webhooks == [
            ("NotificationSent", receiver.url, "sent"),
            ("OrderConfirmed", receiver.url, "sent"),
            ("PaymentCaptured", receiver.url, "sent"),
        ]
    finally:
        await notifications.unsubscribe(subscription["id"])


async def test_failed_delivery_is_retried_with_backoff_until_it_succeeds(
    notifications: Notifications, receiver: Receiver
) -> None:
    receiver.statuses = [500, 500, 200]
    # Freeze the background worker in the past: this test drives each pass on its own clock.
    notifications.clock.frozen = datetime.now(UTC) - timedelta(hours=1)
    worker = notifications.worker
    subscription = await notifications.subscribe(receiver.url, ["OrderRejected"], SECRET)
    try:
        order_id = new_order_id()
        rejected = OrderRejected(order_id=order_id, customer_id="erin", reason="payment_declined")
        await send("orders", topics.ORDERS, rejected, order_id)
        t0 = datetime.now(UTC) + timedelta(minutes=1)

        async def first_attempt() -> bool:
            await worker.run_once(t0)
            return len(receiver.requests) == 1

        await eventually(first_attempt, timeout=30, what="first delivery attempt")
        await worker.run_once(t0 + timedelta(seconds=0.5))
        assert len(receiver.requests) == 1, "retried before its backoff (1 s) elapsed"
        await worker.run_once(t0 + timedelta(seconds=1))
        assert len(receiver.requests) == 2
        await worker.run_once(t0 + timedelta(seconds=2.5))
        assert len(receiver.requests) == 2, "second retry before its backoff (2 s) elapsed"
        await worker.run_once(t0 + timedelta(seconds=3))
        assert len(receiver.requests) == 3
        await worker.run_once(t0 + timedelta(hours=1))
        assert len(receiver.requests) == 3, "a delivered event is never sent again"

        # Every attempt is the same delivery: same id, same body, same signature.
        assert len({r.headers["x-backroom-delivery"] for r in receiver.requests}) == 1
        assert len({r.body for r in receiver.requests}) == 1
        webhook_rows = [n for n in await notifications.log(order_id) if n["channel"] == "webhook"]
        assert [(n["template"], n["status"]) for n in webhook_rows] == [("OrderRejected", "sent")]
    finally:
        notifications.clock.frozen = None
        await notifications.unsubscribe(subscription["id"])


async def test_delivery_is_given_up_at_the_retry_horizon(
    notifications: Notifications, receiver: Receiver
) -> None:
    receiver.statuses = [503]
    notifications.clock.frozen = datetime.now(UTC) - timedelta(hours=1)
    worker = notifications.worker
    subscription = await notifications.subscribe(receiver.url, ["OrderCancelled"], SECRET)
    try:
        order_id = new_order_id()
        cancelled = OrderCancelled(
            order_id=order_id, customer_id="frank", reason="customer_request"
        )
        async with TopicTail(topics.NOTIFICATIONS) as tail:
            await send("orders", topics.ORDERS, cancelled, order_id)
            t0 = datetime.now(UTC) + timedelta(minutes=1)

            async def first_attempt() -> bool:
                await worker.run_once(t0)
                return len(receiver.requests) == 1

            await eventually(first_attempt, timeout=30, what="first delivery attempt")
            # Passes ten minutes apart: past every backoff this early (at most a minute), so each
            # one retries, until the horizon (webhook_retry_horizon_s: an hour here).
            for step in range(1, 12):
                await worker.run_once(t0 + timedelta(minutes=10 * step))
            [gave_up] = await tail.wait_for(
                lambda e: e["subject"] == order_id and e["data"]["channel"] == "webhook"
            )
        assert len(receiver.requests) == 7  # at 0, 10, ..., 60 minutes: the horizon
        assert gave_up["data"]["status"] == "failed"
        log = await notifications.log(order_id)
        assert [(n["channel"], n["template"], n["status"], n["error"]) for n in log] == [
            ("email", "order_cancelled", "sent", None),
            ("webhook", "OrderCancelled", "failed", "HTTP 503"),
        ]
    finally:
        notifications.clock.frozen = None
        await notifications.unsubscribe(subscription["id"])


async def test_deleted_subscription_receives_nothing_more(
    notifications: Notifications, receiver: Receiver
) -> None:
    subscription = await notifications.subscribe(receiver.url, ["OrderRejected"], SECRET)
    await notifications.unsubscribe(subscription["id"])
    order_id = new_order_id()
    customer = f"gina-{uuid.uuid4().hex[:8]}"
    rejected = OrderRejected(order_id=order_id, customer_id=customer, reason="invalid")
    await send("orders", topics.ORDERS, rejected, order_id)

    async def emailed() -> bool:
        return bool(await notifications.log(order_id))

    await eventually(emailed, timeout=30, what="the event handled")
    await notifications.worker.run_once(datetime.now(UTC) + timedelta(hours=1))
    assert receiver.requests == []


async def test_a_slow_receiver_holds_no_row_lock_and_delays_no_email(
    notifications: Notifications, receiver: Receiver
) -> None:
    receiver.delay_s = 2.0
    subscription = await notifications.subscribe(receiver.url, ["OrderConfirmed"], SECRET)
    try:
        slow, other = new_order_id(), new_order_id()
        event = await send("orders", topics.ORDERS, confirmed(slow, f"{slow}@example.com"), slow)

        async def posting() -> bool:
            return len(receiver.requests) == 1

        await eventually(posting, timeout=30, what="the slow delivery in flight")
        # While the POST waits for its answer, its delivery row is not locked by anyone.
        async with notifications.app.state.runtime.db.transaction() as session:
            locked = await session.scalar(
                text(
                    "SELECT id FROM webhook_deliveries WHERE event_id = :event_id FOR UPDATE NOWAIT"
                ),
                {"event_id": event.id},
            )
        assert locked is not None
        # Nor does it hold up the consumer or the email of another order.
        started = time.monotonic()
        rejected = OrderRejected(
            order_id=other, customer_id="ivy", email=f"{other}@example.com", reason="invalid"
        )
        await send("orders", topics.ORDERS, rejected, other)

        async def other_emailed() -> bool:
            return len(notifications.mailbox.to(f"{other}@example.com")) == 1

        await eventually(other_emailed, timeout=30, what="the other order's email")
        latency = time.monotonic() - started
        print(f"email of another order during a 2 s webhook POST: {latency * 1000:.0f} ms")
        assert receiver.answered == 0, f"the slow receiver answered first ({latency:.2f}s)"
        assert latency < 1.5
        assert len(notifications.mailbox.to(f"{slow}@example.com")) == 1

        async def delivered() -> bool:
            log = await notifications.log(slow)
            return [n["status"] for n in log if n["channel"] == "webhook"] == ["sent"]

        await eventually(delivered, timeout=30, what="the slow delivery recorded")
    finally:
        await notifications.unsubscribe(subscription["id"])
