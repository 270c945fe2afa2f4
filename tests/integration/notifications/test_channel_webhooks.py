"""Webhooks per sales channel (issue 13) on the real broker and database: a channel's
subscription receives that channel's ListingChanged, signed, from the channel's own topic; a
topic created after the service started is picked up; a listing event that cannot be handled is
dead-lettered to its topic's twin."""

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from standardwebhooks.webhooks import Webhook

from libs.events import topics
from libs.events.catalog import ListingChanged
from libs.events.common import Money
from libs.kit.kafka import KafkaConnection, ensure_topics
from tests.integration.notifications.conftest import Notifications, Receiver
from tests.support.auth import admin
from tests.support.eventually import eventually
from tests.support.kafka import TopicTail, bootstrap, make_event, publish

SECRET = "whsec-" + "c" * 24


def listing(channel: str, sku: str, available: int) -> ListingChanged:
    return ListingChanged(
        channel=channel,
        sku=sku,
        name=sku.title(),
        status="active",
        published=True,
        price=Money(amount=1299, currency="EUR"),
        available=available,
        changed=["available"],
        version=available,
        as_of=datetime.now(UTC),
    )


async def new_channel_topic() -> str:
    """A channel's listing topic and its dead-letter twin, created as catalog would (now)."""
    channel = f"it-{uuid.uuid4().hex[:12]}"
    topic = topics.listings(channel)
    await ensure_topics(KafkaConnection.operator(bootstrap()), [topic, topics.dlq(topic)])
    return channel


async def subscribe(
    notifications: Notifications, url: str, channel: str | None, events: list[str] | None = None
) -> Any:
    return await notifications.http.post(
        "/notifications/webhooks",
        json={
            "url": url,
            "events": events or ["ListingChanged"],
            "secret": SECRET,
            **({"channel": channel} if channel is not None else {}),
        },
        headers=admin(),
    )


async def test_a_channel_subscription_gets_its_channels_listings_signed_and_no_other(
    notifications: Notifications, receiver: Receiver
) -> None:
    # Both topics are created after the service started: the pattern consumer must find them
    # (within kafka_metadata_max_age_s, 10 s) and read them from their start.
    mine, theirs = await new_channel_topic(), await new_channel_topic()
    created = await subscribe(notifications, receiver.url + "/mine", mine)
    assert created.status_code == 201, created.text
    subscription = created.json()
    assert subscription["channel"] == mine and subscription["events"] == ["ListingChanged"]
    other = (await subscribe(notifications, receiver.url + "/theirs", theirs)).json()
    try:
        mugs = make_event("catalog", listing(mine, "MUG", 3), subject="MUG")
        await publish(mugs, topics.listings(mine))
        await publish(
            make_event("catalog", listing(mine, "CUP", 5), subject="CUP"), topics.listings(mine)
        )
        # The other channel's topic carries nothing: its subscription must get nothing of ours.

        async def both_arrived() -> bool:
            return len([r for r in receiver.requests if r.path == "/hooks/mine"]) >= 2

        await eventually(both_arrived, timeout=60, what="the channel's listing webhooks")
        requests = [r for r in receiver.requests if r.path == "/hooks/mine"]
        bodies = [json.loads(r.body) for r in requests]
        assert sorted(b["data"]["sku"] for b in bodies) == ["CUP", "MUG"]
        assert {b["data"]["channel"] for b in bodies} == {mine}
        for request in requests:
            verified = Webhook(SECRET.encode()).verify(request.body, request.headers)
            assert verified["type"] == "ListingChanged"
        mug = next(r for r in requests if json.loads(r.body)["id"] == mugs.id)
        assert mug.body == mugs.to_json(), "forwarded as published"
        assert not [r for r in receiver.requests if r.path == "/hooks/theirs"]
        assert await notifications.deliveries(other["id"]) == []

        listed = await notifications.http.get("/notifications/webhooks?limit=200", headers=admin())
        shown = {s["id"]: s["channel"] for s in listed.json()["items"]}
        assert shown[subscription["id"]] == mine
    finally:
        await notifications.unsubscribe(subscription["id"])
        await notifications.unsubscribe(other["id"])


async def test_subscriptions_that_mix_channels_and_events_are_refused_naming_the_field(
    notifications: Notifications, receiver: Receiver
) -> None:
    no_channel = await subscribe(notifications, receiver.url, None)
    assert no_channel.status_code == 422, no_channel.text
    assert "channel" in json.dumps(no_channel.json()["errors"])
    mixed = await subscribe(notifications, receiver.url, "web", ["ListingChanged", "StockLow"])
    assert mixed.status_code == 422, mixed.text
    assert "events" in json.dumps(mixed.json()["errors"])
    bad_code = await subscribe(notifications, receiver.url, "Not A Code")
    assert bad_code.status_code == 422, bad_code.text
    assert "channel" in json.dumps(bad_code.json()["errors"])


async def test_a_listing_event_that_cannot_be_handled_is_dead_lettered_to_its_topics_twin(
    notifications: Notifications, receiver: Receiver
) -> None:
    channel = await new_channel_topic()
    topic = topics.listings(channel)
    subscription = (await subscribe(notifications, receiver.url, channel)).json()
    try:
        broken = make_event("catalog", listing(channel, "MUG", 1), subject="MUG")
        value = json.loads(broken.to_json())
        del value["data"]["version"]  # not a valid ListingChanged
        async with TopicTail(topics.dlq(topic)) as dead:
            await publish(broken, topic, value=json.dumps(value).encode())
            [parked] = await dead.wait_for(lambda e: e.get("id") == broken.id, timeout=60)
        assert parked["_headers"]["x-dlq-original-topic"] == topic
        assert parked["_headers"]["x-dlq-consumer-group"] == "notifications"
        assert await notifications.deliveries(subscription["id"]) == []
    finally:
        await notifications.unsubscribe(subscription["id"])
