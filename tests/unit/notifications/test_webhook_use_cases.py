"""Webhooks: one delivery per subscription listing the event's type, POSTed outside any
transaction, signed, retried with backoff, given up after the last attempt (no database, no
network)."""

import json
from datetime import timedelta

from libs.events.notifications import NotificationSent
from services.notifications import service
from services.notifications.domain import verify_signature
from services.notifications.service import Delivering, Intake, ReceivedEvent
from tests.support.fakes import FakeUnitOfWork, MutableClock
from tests.unit.notifications.fakes import FakeStore, FakeTemplates, FakeWebhookSender, unit_of_work

HOOK = "https://hooks.example/a"
OTHER = "https://hooks.example/b"
SECRET = "whsec-" + "x" * 24


def captured(order_id: str, event_id: str = "ev-1") -> ReceivedEvent:
    data = {"order_id": order_id, "payment_id": "p", "provider_ref": "r"}
    raw = json.dumps(
        {
            "specversion": "1.0",
            "id": event_id,
            "source": "backroom/payments",
            "type": "PaymentCaptured",
            "subject": order_id,
            "time": "2026-01-01T12:00:00Z",
            "correlationid": f"corr-{order_id}",
            "data": data,
        },
        indent=2,  # forwarded as received: these bytes, not a re-serialisation
    )
    return ReceivedEvent("PaymentCaptured", event_id, f"corr-{order_id}", data, raw)


class World:
    def __init__(self, max_attempts: int = 8) -> None:
        self.uow: FakeUnitOfWork[FakeStore] = unit_of_work()
        self.sender = FakeWebhookSender()
        self.clock = MutableClock()
        self.woken = 0
        self.intake = Intake(FakeTemplates(), "w@x", self.clock, wake_webhooks=self._wake)
        self.delivering = Delivering(
            self.uow, self.sender, lease_s=60.0, max_attempts=max_attempts, backoff_base_s=1.0
        )

    def _wake(self) -> None:
        self.woken += 1

    async def subscribe(self, url: str, events: list[str]) -> str:
        async with self.uow() as tx:
            return (await service.create_subscription(tx, url, events, SECRET)).id

    async def consume(self, event: ReceivedEvent) -> None:
        async with self.uow() as tx:
            await service.take_event(tx, self.intake, event)

    async def deliver(self, after_s: float = 0.0) -> int:
        return await service.deliver_due_webhooks(self.delivering, self.clock.advance(after_s))

    async def log(self, order_id: str) -> list[tuple[str, str, str, str | None]]:
        async with self.uow() as tx:
            entries = await service.list_notifications(tx, order_id, None, 50)
        return [(e.channel, e.template, e.status, e.error) for e in entries]

    def announced(self) -> list[NotificationSent]:
        return [e for e in self.uow.events.emitted if isinstance(e, NotificationSent)]


async def test_an_event_is_queued_once_per_subscription_that_lists_its_type() -> None:
    world = World()
    await world.subscribe(HOOK, ["PaymentCaptured"])
    await world.subscribe(OTHER, ["OrderConfirmed"])
    event = captured("ord-1")
    await world.consume(event)
    await world.consume(event)  # redelivered
    assert [(d.event_type, d.event_id) for d in world.uow.store.deliveries.rows.values()] == [
        ("PaymentCaptured", "ev-1")
    ]
    assert world.woken >= 1
    assert await world.deliver() == 1
    assert [p.url for p in world.sender.posts] == [HOOK]


async def test_a_delivery_is_the_received_event_signed_and_logged_as_sent() -> None:
    world = World()
    subscription_id = await world.subscribe(HOOK, ["PaymentCaptured"])
    event = captured("ord-1")
    await world.consume(event)
    await world.deliver()
    [post] = world.sender.posts
    assert post.body == event.raw.encode()
    assert post.headers["Content-Type"] == "application/cloudevents+json"
    assert verify_signature(SECRET, post.body, post.headers["X-Backroom-Signature"])
    assert post.headers["X-Backroom-Delivery"]
    assert await world.log("ord-1") == [("webhook", "PaymentCaptured", "sent", None)]
    [sent] = world.announced()
    assert (sent.channel, sent.status, sent.to, sent.subscription_id) == (
        "webhook",
        "sent",
        HOOK,
        subscription_id,
    )
    assert world.uow.events.envelopes[0].subject == "ord-1"
    assert await world.deliver(3600) == 0, "a delivered event is never sent again"


async def test_failed_deliveries_are_retried_with_backoff_until_one_succeeds() -> None:
    world = World()
    world.sender.answers[HOOK] = ["HTTP 500", "HTTP 404", None]  # 4xx is retried like 5xx
    await world.subscribe(HOOK, ["PaymentCaptured"])
    await world.consume(captured("ord-1"))
    assert await world.deliver() == 1
    assert await world.deliver(0.5) == 0, "retried before its backoff (1 s) elapsed"
    assert await world.deliver(0.5) == 1
    assert await world.deliver(1.5) == 0, "second retry before its backoff (2 s) elapsed"
    assert await world.deliver(0.5) == 1
    assert len(world.sender.posts) == 3
    assert len({p.headers["X-Backroom-Delivery"] for p in world.sender.posts}) == 1
    assert len({p.body for p in world.sender.posts}) == 1
    assert await world.log("ord-1") == [("webhook", "PaymentCaptured", "sent", None)]
    assert len(world.announced()) == 1


async def test_a_delivery_is_given_up_after_the_last_attempt() -> None:
    world = World(max_attempts=3)
    world.sender.answers[HOOK] = ["HTTP 503"]
    await world.subscribe(HOOK, ["PaymentCaptured"])
    await world.consume(captured("ord-1"))
    for _ in range(10):
        await world.deliver(600)
    assert len(world.sender.posts) == 3
    assert await world.log("ord-1") == [("webhook", "PaymentCaptured", "failed", "HTTP 503")]
    assert [s.status for s in world.announced()] == ["failed"]


async def test_a_delivery_claimed_by_a_worker_that_died_is_posted_again_after_its_lease() -> None:
    world = World()
    await world.subscribe(HOOK, ["PaymentCaptured"])
    await world.consume(captured("ord-1"))
    async with world.uow() as tx:  # a worker claims, then dies before recording anything
        now = world.clock()
        [claimed] = await tx.store.deliveries.claim_due(now, now + timedelta(seconds=60), 10)
    assert await world.deliver(30) == 0, "its lease still holds"
    assert await world.deliver(31) == 1
    [post] = world.sender.posts
    assert post.headers["X-Backroom-Delivery"] == claimed.id  # receivers dedupe on it
    assert not await service.record_delivery_attempt(world.delivering, claimed, None, now)
    assert len(world.announced()) == 1


async def test_a_deleted_subscription_receives_nothing_more() -> None:
    world = World()
    subscription_id = await world.subscribe(HOOK, ["PaymentCaptured"])
    await world.consume(captured("ord-1"))
    async with world.uow() as tx:
        await service.delete_subscription(tx, subscription_id)
    await world.consume(captured("ord-2", "ev-2"))
    assert await world.deliver(3600) == 0
    assert world.sender.posts == []
