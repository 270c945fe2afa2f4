"""Webhooks: one delivery per subscription listing the event's type, vetted again and POSTed
to the vetted address outside any transaction, signed (v1 and Standard Webhooks, with two
secrets while rotating), retried with backoff up to the horizon unless a 4xx says it is
pointless, listed and redelivered by an admin (no database, no network, no DNS)."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from libs.events.notifications import NotificationSent
from libs.kit.errors import Conflict, Invalid, NotFound
from services.notifications import service
from services.notifications.adapters import Answer
from services.notifications.domain import verify_signature
from services.notifications.service import Delivering, Intake, ReceivedEvent
from tests.support.fakes import FakeUnitOfWork, MutableClock
from tests.unit.notifications.fakes import (
    PUBLIC_V4,
    FakeResolver,
    FakeStore,
    FakeTemplates,
    FakeWebhookSender,
    guard,
    public_dns,
    unit_of_work,
)

HOOK = "https://hooks.example/a"
OTHER = "https://other.example/b"
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
    def __init__(
        self, horizon_s: float = 86400, allowed: str = "", total_timeout_s: float = 10.0
    ) -> None:
        self.uow: FakeUnitOfWork[FakeStore] = unit_of_work()
        self.sender = FakeWebhookSender()
        self.dns: FakeResolver = public_dns()
        self.guard = guard(self.dns, allowed)
        self.clock = MutableClock(datetime.now(UTC))  # real time: the verifier checks timestamps
        self.woken = 0
        self.intake = Intake(FakeTemplates(), "w@x", self.clock, wake_webhooks=self._wake)
        self.delivering = Delivering(
            self.uow,
            self.sender,
            self.guard,
            lease_s=60.0,
            horizon_s=horizon_s,
            backoff_base_s=1.0,
            backoff_max_s=300.0,
            total_timeout_s=total_timeout_s,
        )

    def _wake(self) -> None:
        self.woken += 1

    async def subscribe(self, url: str, events: list[str], secret: str = SECRET) -> str:
        async with self.uow() as tx:
            return (await service.create_subscription(tx, self.guard, url, events, secret)).id

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
    world.sender.answers[HOOK] = [500, 429, None, 408, 200]  # 5xx, 429, no answer, 408: retried
    await world.subscribe(HOOK, ["PaymentCaptured"])
    await world.consume(captured("ord-1"))
    assert await world.deliver() == 1
    assert await world.deliver(0.5) == 0, "retried before its backoff (1 s) elapsed"
    assert await world.deliver(0.5) == 1
    assert await world.deliver(1.5) == 0, "second retry before its backoff (2 s) elapsed"
    assert await world.deliver(0.5) == 1
    assert await world.deliver(4) == 1
    assert await world.deliver(8) == 1
    assert len(world.sender.posts) == 5
    assert len({p.headers["webhook-id"] for p in world.sender.posts}) == 1
    assert len({p.headers["X-Backroom-Delivery"] for p in world.sender.posts}) == 1
    assert len({p.body for p in world.sender.posts}) == 1
    assert await world.log("ord-1") == [("webhook", "PaymentCaptured", "sent", None)]
    assert len(world.announced()) == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
async def test_a_4xx_answer_other_than_408_or_429_fails_the_delivery_at_once(status: int) -> None:
    world = World()
    world.sender.answers[HOOK] = [status, 200]
    await world.subscribe(HOOK, ["PaymentCaptured"])
    await world.consume(captured("ord-1"))
    assert await world.deliver() == 1
    assert await world.deliver(3600) == 0, "not retried"
    assert len(world.sender.posts) == 1
    assert await world.log("ord-1") == [("webhook", "PaymentCaptured", "failed", f"HTTP {status}")]
    assert [s.status for s in world.announced()] == ["failed"]


async def test_a_delivery_is_retried_until_the_horizon_then_given_up() -> None:
    world = World(horizon_s=3600)
    world.sender.answers[HOOK] = [503]
    await world.subscribe(HOOK, ["PaymentCaptured"])
    await world.consume(captured("ord-1"))
    for _ in range(7):  # ten minutes apart: past every backoff (5 min at most)
        await world.deliver(600)
    # At 0, 10, ..., 60 minutes: the one at the horizon is the last.
    assert len(world.sender.posts) == 7
    assert await world.deliver(600) == 0
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
    assert not await service.record_delivery_attempt(world.delivering, claimed, Answer(200), now)
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


# --- refused targets (issue 9: the metadata URL was accepted with 201) ---------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/latest/meta-data/",
        "http://127.0.0.1:8106/notifications",
        "http://[::1]/",
        "http://10.0.0.5/",
        "http://192.168.1.1/",
        "http://[fe80::1]/",
        "http://224.0.0.1/",
        "http://0.0.0.0:8106/",
        "http://240.0.0.1/",
        "ftp://hooks.example/x",
        "https://admin:pw@hooks.example/x",
        "https://internal.example/x",  # resolves to a private address
        "https://mixed.example/x",  # one public, one private address
        "https://nowhere.example/x",  # does not resolve
    ],
)
async def test_a_webhook_url_that_is_not_public_http_is_refused_naming_url(url: str) -> None:
    world = World()
    world.dns.point("internal.example", ["10.20.30.40"])
    world.dns.point("mixed.example", [PUBLIC_V4, "192.168.0.7"])
    with pytest.raises(Invalid) as refused:
        await world.subscribe(url, ["OrderConfirmed"])
    assert [e.field for e in refused.value.errors] == ["url"]
    assert world.uow.store.subscriptions.rows == {}


async def test_the_allowlist_lets_loopback_receivers_subscribe_and_nothing_more() -> None:
    world = World(allowed="127.0.0.0/8,::1/128")
    world.dns.point("localhost", ["127.0.0.1", "::1"])
    await world.subscribe("http://127.0.0.1:9999/hook", ["OrderConfirmed"])
    await world.subscribe("http://localhost:9999/hook", ["OrderConfirmed"])
    for url in ("http://10.0.0.1/", "http://169.254.169.254/"):
        with pytest.raises(Invalid):
            await world.subscribe(url, ["OrderConfirmed"])
    assert len(world.uow.store.subscriptions.rows) == 2


async def test_a_delivery_connects_to_the_address_that_was_vetted() -> None:
    world = World()
    await world.subscribe(HOOK, ["PaymentCaptured"])
    await world.consume(captured("ord-1"))
    world.dns.lookups.clear()
    await world.deliver()
    [post] = world.sender.posts
    assert world.dns.lookups == ["hooks.example"], "resolved again at delivery"
    assert (post.url, post.address) == (HOOK, PUBLIC_V4)


async def test_a_host_rebound_to_an_internal_address_gets_no_delivery() -> None:
    world = World()
    # Public when subscribed, then the attacker's DNS answers with the metadata address.
    world.dns.point("rebind.example", [PUBLIC_V4], ["169.254.169.254"])
    await world.subscribe("https://rebind.example/hook", ["PaymentCaptured"])
    await world.consume(captured("ord-1"))
    assert await world.deliver() == 1
    assert world.sender.posts == [], "nothing was sent to the rebound address"
    assert await world.deliver(3600) == 0, "a refused target is not retried"
    [(channel, _, status, error)] = await world.log("ord-1")
    assert (channel, status) == ("webhook", "failed")
    assert error is not None and "169.254.169.254, a metadata address" in error


async def test_a_receiver_that_takes_too_long_is_a_failed_attempt_that_is_retried() -> None:
    world = World(total_timeout_s=0.05)
    world.sender.delay_s = 1.0
    await world.subscribe(HOOK, ["PaymentCaptured"])
    await world.consume(captured("ord-1"))
    assert await world.deliver() == 1
    [row] = world.uow.store.deliveries.rows.values()
    assert (row.status, row.attempts, row.last_error) == ("pending", 1, "no answer within 0.05 s")


async def test_a_redirect_is_a_failed_attempt_not_followed() -> None:
    world = World()
    world.sender.answers[HOOK] = [302, 200]
    await world.subscribe(HOOK, ["PaymentCaptured"])
    await world.consume(captured("ord-1"))
    await world.deliver()
    [row] = world.uow.store.deliveries.rows.values()
    assert (row.status, row.last_error) == ("pending", "HTTP 302")
    assert [p.url for p in world.sender.posts] == [HOOK]


# --- Standard Webhooks signatures and rotation ----------------------------------------------


def verified(post_headers: dict[str, str], body: bytes, secret: str) -> bool:
    try:
        Webhook(secret.encode()).verify(body, post_headers, json_parse=False)
    except WebhookVerificationError:
        return False
    return True


async def test_a_delivery_verifies_with_the_standard_webhooks_library() -> None:
    world = World()
    await world.subscribe(HOOK, ["PaymentCaptured"])
    await world.consume(captured("ord-1"))
    await world.deliver()
    [post] = world.sender.posts
    headers = dict(post.headers)
    [row] = world.uow.store.deliveries.rows.values()
    assert headers["webhook-id"] == row.id == headers["X-Backroom-Delivery"]
    assert abs(int(headers["webhook-timestamp"]) - world.clock().timestamp()) < 1
    assert headers["webhook-signature"].startswith("v1,")
    assert verified(headers, post.body, SECRET)
    assert not verified(headers, post.body + b" ", SECRET), "the body is signed"
    assert not verified(headers, post.body, "another-secret-entirely")
    replayed = headers | {"webhook-timestamp": str(int(world.clock().timestamp()) - 3600)}
    assert not verified(replayed, post.body, SECRET), "an old timestamp is refused"
    assert verify_signature(SECRET, post.body, headers["X-Backroom-Signature"])


async def test_a_whsec_secret_verifies_as_the_specification_decodes_it() -> None:
    world = World()
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    await world.subscribe(HOOK, ["PaymentCaptured"], secret)
    await world.consume(captured("ord-1"))
    await world.deliver()
    [post] = world.sender.posts
    Webhook(secret).verify(post.body, dict(post.headers), json_parse=False)


async def test_during_rotation_deliveries_verify_with_either_secret_then_only_the_new() -> None:
    world = World()
    new_secret = "whsec-new-" + "n" * 20
    subscription_id = await world.subscribe(HOOK, ["PaymentCaptured"])
    async with world.uow() as tx:
        rotated = await service.add_secret(tx, subscription_id, new_secret)
        assert rotated.active_secrets == 2
        with pytest.raises(Conflict):
            await service.add_secret(tx, subscription_id, "a-third-secret-value")
    await world.consume(captured("ord-1"))
    await world.deliver()
    during = world.sender.posts[-1]
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    assert verified(dict(during.headers), during.body, SECRET)
    assert verified(dict(during.headers), during.body, new_secret)
    # v1's single signature stays with the older secret until it is retired.
    assert verify_signature(SECRET, during.body, during.headers["X-Backroom-Signature"])

    async with world.uow() as tx:
        retired = await service.retire_previous_secret(tx, subscription_id)
        assert retired.active_secrets == 1
        with pytest.raises(Conflict):
            await service.retire_previous_secret(tx, subscription_id)
    await world.consume(captured("ord-2", "ev-2"))
    await world.deliver()
    after = world.sender.posts[-1]
    assert not verified(dict(after.headers), after.body, SECRET)
    assert verified(dict(after.headers), after.body, new_secret)
    assert verify_signature(new_secret, after.body, after.headers["X-Backroom-Signature"])


async def test_rotating_an_unknown_subscription_is_not_found() -> None:
    world = World()
    async with world.uow() as tx:
        with pytest.raises(NotFound):
            await service.add_secret(tx, "nope", "a-long-enough-secret")
        with pytest.raises(NotFound):
            await service.retire_previous_secret(tx, "nope")


# --- an admin's view: list and redeliver --------------------------------------------------------


async def test_an_admin_lists_a_subscriptions_deliveries_newest_first_page_by_page() -> None:
    world = World()
    subscription_id = await world.subscribe(HOOK, ["PaymentCaptured"])
    other_id = await world.subscribe(OTHER, ["PaymentCaptured"])
    for n in range(3):
        await world.consume(captured(f"ord-{n}", f"ev-{n}"))
    async with world.uow() as tx:
        first = await service.list_deliveries(tx, subscription_id, None, 2)
        assert [d.event_id for d in first] == ["ev-2", "ev-1", "ev-0"]  # one more: there is more
        rest = await service.list_deliveries(tx, subscription_id, first[1].seq, 2)
        assert [d.event_id for d in rest] == ["ev-0"]
        assert {d.subscription_id for d in first + rest} == {subscription_id}
        assert len(await service.list_deliveries(tx, other_id, None, 50)) == 3
        with pytest.raises(NotFound):
            await service.list_deliveries(tx, "nope", None, 50)


async def test_an_admin_redelivers_a_failed_delivery_as_a_fresh_round() -> None:
    world = World()
    world.sender.answers[HOOK] = [410, 200]
    subscription_id = await world.subscribe(HOOK, ["PaymentCaptured"])
    await world.consume(captured("ord-1"))
    await world.deliver()
    [failed] = [d for d in world.uow.store.deliveries.rows.values()]
    assert failed.status == "failed"
    woken = world.woken
    async with world.uow() as tx:
        again = await service.redeliver(
            tx, subscription_id, failed.id, world.clock(), wake=world._wake
        )
        assert (again.status, again.attempts, again.redeliveries) == ("pending", 0, 1)
        with pytest.raises(Conflict):  # pending again: the worker has it
            await service.redeliver(tx, subscription_id, failed.id, world.clock())
        with pytest.raises(NotFound):
            await service.redeliver(tx, "another-subscription", failed.id, world.clock())
    assert world.woken == woken + 1
    assert await world.deliver() == 1
    first, second = world.sender.posts
    assert first.headers["webhook-id"] == second.headers["webhook-id"], "the same delivery"
    assert first.body == second.body
    # Each round is in the log.
    assert await world.log("ord-1") == [
        ("webhook", "PaymentCaptured", "failed", "HTTP 410"),
        ("webhook", "PaymentCaptured", "sent", None),
    ]
    assert [s.status for s in world.announced()] == ["failed", "sent"]
