"""Emails: queued once per (order, template) in the event's transaction, sent afterwards by the
worker outside any transaction, their outcome logged and announced (no database, no SMTP)."""

import json
from datetime import timedelta
from typing import Any

import pytest

from libs.events.notifications import NotificationSent
from libs.kit.retry import RetryPolicy
from services.notifications import service
from services.notifications.service import Intake, Mailing, ReceivedEvent
from tests.support.fakes import FakeUnitOfWork, MutableClock
from tests.unit.notifications.fakes import (
    FakeMailer,
    FakeStore,
    FakeTemplates,
    SimulatedCrash,
    guard,
    unit_of_work,
)

WAREHOUSE = "warehouse@backroom.local"
NO_PAUSE = RetryPolicy(attempts=4, initial_s=0.0, max_s=0.0)


def order_event(
    event_type: str, order_id: str, event_id: str = "ev-1", **data: Any
) -> ReceivedEvent:
    body: dict[str, Any] = {
        "order_id": order_id,
        "customer_id": "carol",
        "email": f"{order_id}@example.com",
    }
    body |= data
    if event_type == "OrderConfirmed":
        body |= {"lines": [], "total": {"amount": 100, "currency": "EUR"}}
    if event_type == "OrderRejected":
        body.setdefault("reason", "out_of_stock")
    raw = json.dumps({"type": event_type, "id": event_id, "data": body})
    return ReceivedEvent(event_type, event_id, f"corr-{order_id}", body, raw)


class World:
    """One service's worth of fakes: the store, the SMTP server, the clock, both use cases."""

    def __init__(self, lease_s: float = 60.0, unavailable_pause_s: float = 5.0) -> None:
        self.uow: FakeUnitOfWork[FakeStore] = unit_of_work()
        self.mailer = FakeMailer()
        self.clock = MutableClock()
        self.mailer_woken = 0
        self.webhooks_woken = 0
        self.intake = Intake(
            FakeTemplates(), WAREHOUSE, self.clock, self._wake_mailer, self._wake_webhooks
        )
        self.mailing = Mailing(
            self.uow,
            self.mailer,
            self.clock,
            retry=NO_PAUSE,
            lease_s=lease_s,
            unavailable_pause_s=unavailable_pause_s,
            wake_webhooks=self._wake_webhooks,
        )

    def _wake_mailer(self) -> None:
        self.mailer_woken += 1

    def _wake_webhooks(self) -> None:
        self.webhooks_woken += 1

    async def consume(self, event: ReceivedEvent) -> bool:
        async with self.uow() as tx:
            return await service.take_event(tx, self.intake, event)

    async def send(self) -> int:
        return await service.send_queued_emails(self.mailing)

    async def log(self, order_id: str) -> list[tuple[str, str, str | None]]:
        async with self.uow() as tx:
            entries = await service.list_notifications(tx, order_id, None, 50)
        return [(e.template, e.status, e.error) for e in entries]

    def announced(self) -> list[NotificationSent]:
        return [e for e in self.uow.events.emitted if isinstance(e, NotificationSent)]


async def test_an_order_event_queues_its_email_and_sends_nothing_in_its_transaction() -> None:
    world = World()
    assert await world.consume(order_event("OrderConfirmed", "ord-1"))
    assert world.mailer.sent == []
    assert await world.log("ord-1") == []  # pending: not in the log yet
    assert world.mailer_woken == 1  # the worker is woken once the event's transaction commits
    [row] = world.uow.store.notifications.rows.values()
    assert (row.status, row.to, row.template) == ("pending", "ord-1@example.com", "order_confirmed")
    assert row.email is not None
    assert row.email.message_id == "<ord-1/order_confirmed@backroom>"
    assert row.email.mail_subject == "order_confirmed ord-1"  # rendered when queued


async def test_a_repeated_event_queues_no_second_email() -> None:
    world = World()
    assert await world.consume(order_event("OrderConfirmed", "ord-1", "ev-1"))
    # Redelivered, or the same fact under a new event id: the (order, template) key is taken.
    assert not await world.consume(order_event("OrderConfirmed", "ord-1", "ev-2"))
    assert await world.send() == 1
    assert len(world.mailer.to("ord-1@example.com")) == 1
    assert world.mailer_woken == 1


async def test_an_event_without_email_queues_nothing() -> None:
    world = World()
    placed = ReceivedEvent("OrderPlaced", "ev-1", "c", {"order_id": "ord-1"}, "{}")
    assert not await world.consume(placed)
    assert world.uow.store.notifications.rows == {}
    assert await world.send() == 0


async def test_a_sent_email_is_logged_and_announced_in_its_event_story() -> None:
    world = World()
    await world.consume(order_event("OrderShipped", "ord-1", tracking={"number": "JD1"}))
    assert await world.send() == 1
    [mail] = world.mailer.sent
    assert (mail.to, mail.message_id) == ("ord-1@example.com", "<ord-1/order_shipped@backroom>")
    assert mail.subject == "order_shipped ord-1"
    assert await world.log("ord-1") == [("order_shipped", "sent", None)]
    [sent] = world.announced()
    assert (sent.channel, sent.template, sent.status, sent.order_id) == (
        "email",
        "order_shipped",
        "sent",
        "ord-1",
    )
    [row] = world.uow.store.notifications.rows.values()
    assert sent.notification_id == row.id
    assert world.uow.events.envelopes[0].subject == "ord-1"
    assert await world.send() == 0  # nothing left to send


async def test_a_refused_email_is_logged_as_failed_without_retrying() -> None:
    world = World()
    world.mailer.answer("ord-1@example.com", "refused")
    await world.consume(order_event("OrderRejected", "ord-1"))
    await world.send()
    assert world.mailer.sent == [] and world.mailer.calls == 1
    [(template, status, error)] = await world.log("ord-1")
    assert (template, status) == ("order_rejected", "failed")
    assert error is not None and "550" in error
    assert [s.status for s in world.announced()] == ["failed"]


async def test_a_deferral_or_a_dropped_connection_is_retried_then_sent() -> None:
    world = World()
    world.mailer.answer("ord-1@example.com", "deferred", "unreachable")
    await world.consume(order_event("OrderConfirmed", "ord-1"))
    await world.send()
    assert len(world.mailer.sent) == 1 and world.mailer.calls == 3
    assert await world.log("ord-1") == [("order_confirmed", "sent", None)]


async def test_an_unreachable_server_keeps_the_email_queued_until_it_is_back() -> None:
    world = World(unavailable_pause_s=5.0)
    world.mailer.answer("ord-1@example.com", *["unreachable"] * 4)
    await world.consume(order_event("OrderConfirmed", "ord-1"))
    await world.send()
    assert world.mailer.sent == []
    assert await world.log("ord-1") == []  # still pending, nothing failed
    assert await world.send() == 0, "put back for the pause, not retried in a tight loop"
    world.clock.advance(5)
    assert await world.send() == 1
    assert len(world.mailer.sent) == 1
    assert await world.log("ord-1") == [("order_confirmed", "sent", None)]


async def test_after_a_crash_between_send_and_record_the_same_message_is_sent_again() -> None:
    world = World(lease_s=60.0)
    world.mailer.answer("ord-1@example.com", "crash")
    await world.consume(order_event("OrderConfirmed", "ord-1"))
    with pytest.raises(SimulatedCrash):
        await world.send()
    assert len(world.mailer.sent) == 1
    assert await world.send() == 0, "its lease still holds"
    world.clock.advance(61)
    assert await world.send() == 1
    first, again = world.mailer.sent
    assert again == first  # same Message-ID, same Date: a recognisable duplicate
    assert await world.log("ord-1") == [("order_confirmed", "sent", None)]
    assert len(world.announced()) == 1


async def test_an_outcome_after_the_lease_was_taken_over_is_dropped() -> None:
    world = World(lease_s=60.0)
    await world.consume(order_event("OrderConfirmed", "ord-1"))
    async with world.uow() as tx:
        now = world.clock()
        [stale] = await tx.store.notifications.claim_emails(now, now + timedelta(seconds=60), 1)
    world.clock.advance(61)
    assert await world.send() == 1  # another worker took it over and recorded it
    assert not await service.record_email_outcome(world.mailing, stale, "sent", None)
    assert len(world.announced()) == 1


async def test_a_slow_server_never_keeps_a_claim_past_half_its_lease() -> None:
    world = World(lease_s=60.0)

    def slow() -> None:
        world.clock.advance(40)

    world.mailer.on_send = slow
    for n in range(3):
        await world.consume(order_event("OrderConfirmed", f"ord-{n}", f"ev-{n}"))
    assert await world.send() == 3
    assert len(world.mailer.sent) == 1  # the other two went back to the queue, claimable now
    assert await world.send() == 2
    assert await world.send() == 1
    assert [m.message_id for m in world.mailer.sent] == [
        f"<ord-{n}/order_confirmed@backroom>" for n in range(3)
    ]


async def test_the_warehouse_gets_one_alert_per_crossing() -> None:
    world = World()
    low = {"sku": "MUG-1", "available": 2, "reorder_point": 5}
    for event_id in ("ev-1", "ev-2"):
        await world.consume(ReceivedEvent("StockLow", event_id, "c", low, "{}"))
    await world.send()
    assert [m.to for m in world.mailer.sent] == [WAREHOUSE, WAREHOUSE]
    assert {s.sku for s in world.announced()} == {"MUG-1"}


async def test_webhooks_subscribed_to_notification_sent_get_the_email_announcement() -> None:
    world = World()
    async with world.uow() as tx:
        await service.create_subscription(
            tx, guard(), "https://hooks.example/a", ["NotificationSent"], "s"
        )
    await world.consume(order_event("OrderConfirmed", "ord-1"))
    await world.send()
    [delivery] = world.uow.store.deliveries.rows.values()
    assert delivery.event_type == "NotificationSent"
    assert json.loads(delivery.payload)["data"]["template"] == "order_confirmed"
    assert world.webhooks_woken == 1
