"""Webhooks per sales channel (issue 13): a channel's subscription lists ListingChanged only and
gets that channel's alone; ListingChanged cannot be subscribed without a channel; the other
events reach only the subscriptions without a channel (no database, no network)."""

import json
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from libs.kit.errors import Invalid
from services.notifications import domain, service
from services.notifications.service import ReceivedEvent
from tests.unit.notifications.test_webhook_use_cases import HOOK, OTHER, SECRET, World, captured

THIRD = "https://hooks.example/plain"


def listing(channel: str, sku: str, event_id: str, version: int = 1) -> ReceivedEvent:
    data: dict[str, Any] = {
        "channel": channel,
        "sku": sku,
        "name": sku.title(),
        "status": "active",
        "published": True,
        "price": {"amount": 1299, "currency": "EUR"},
        "available": 7,
        "changed": ["available"],
        "version": version,
        "as_of": "2026-01-01T12:00:00Z",
    }
    raw = json.dumps(
        {
            "specversion": "1.0",
            "id": event_id,
            "source": "backroom/catalog",
            "type": "ListingChanged",
            "subject": sku,
            "time": "2026-01-01T12:00:00Z",
            "correlationid": f"corr-{event_id}",
            "data": data,
        }
    )
    return ReceivedEvent("ListingChanged", event_id, f"corr-{event_id}", data, raw)


async def subscribe(world: World, url: str, events: list[str], channel: str | None) -> str:
    async with world.uow() as tx:
        created = await service.create_subscription(
            tx, world.guard, url, events, SECRET, channel=channel
        )
    assert created.channel == channel
    return created.id


async def refused(world: World, events: list[str], channel: str | None) -> Invalid:
    with pytest.raises(Invalid) as caught:
        await subscribe(world, HOOK, events, channel)
    return caught.value


async def test_listing_changed_needs_a_channel_and_a_channel_takes_listing_changed_only() -> None:
    world = World()
    without = await refused(world, ["ListingChanged", "OrderConfirmed"], None)
    assert [e.field for e in without.errors] == ["channel"]
    mixed = await refused(world, ["ListingChanged", "OrderConfirmed"], "amazon-de")
    assert [e.field for e in mixed.errors] == ["events"]
    assert "OrderConfirmed" in mixed.errors[0].message
    other = await refused(world, ["PaymentCaptured"], "amazon-de")
    assert [e.field for e in other.errors] == ["events"]
    assert not world.uow.store.subscriptions.rows, "nothing refused is stored"


def test_the_rule_is_pure() -> None:
    assert domain.subscription_problem(["OrderConfirmed"], None) is None
    assert domain.subscription_problem(["ListingChanged"], "web") is None
    assert domain.subscription_problem(["ListingChanged"], None) == (
        "channel",
        "ListingChanged is per sales channel: name the channel",
    )
    assert domain.announcement_channel("ListingChanged", {"channel": "web"}) == "web"
    assert domain.announcement_channel("OrderConfirmed", {"channel": "web"}) is None


async def test_a_listing_change_goes_to_its_channels_subscriptions_only_signed() -> None:
    world = World()
    amazon = await subscribe(world, HOOK, ["ListingChanged"], "amazon-de")
    await subscribe(world, OTHER, ["ListingChanged"], "ebay")
    await subscribe(world, THIRD, ["PaymentCaptured"], None)
    event = listing("amazon-de", "MUG", "ev-l1")
    await world.consume(event)
    await world.consume(event)  # redelivered: still one delivery
    rows = list(world.uow.store.deliveries.rows.values())
    assert [(d.subscription_id, d.event_id) for d in rows] == [(amazon, "ev-l1")]
    assert await world.deliver() == 1
    [post] = world.sender.posts
    assert post.url == HOOK
    assert post.body == event.raw.encode()
    verified = Webhook(SECRET.encode()).verify(post.body, dict(post.headers))
    assert verified["data"]["channel"] == "amazon-de"


async def test_other_events_reach_only_the_subscriptions_without_a_channel() -> None:
    world = World()
    await subscribe(world, HOOK, ["ListingChanged"], "amazon-de")
    plain = await subscribe(world, THIRD, ["PaymentCaptured"], None)
    await world.consume(captured("ord-1"))
    await world.consume(listing("ebay", "MUG", "ev-l2"))  # a channel nobody subscribed to
    rows = list(world.uow.store.deliveries.rows.values())
    assert [(d.subscription_id, d.event_type) for d in rows] == [(plain, "PaymentCaptured")]
