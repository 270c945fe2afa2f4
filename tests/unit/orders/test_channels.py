"""Sales channels in orders (issue 13): which channel an order goes through, who may use which
kind, the projection of catalog's channels, and what orders with a channel show and announce."""

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from libs.events.orders import OrderConfirmed, OrderPlaced
from libs.kit.auth import Principal
from libs.kit.errors import Forbidden, Invalid, NotFound
from libs.kit.idempotency import request_hash
from services.orders import domain, service
from services.orders.api import OrderIn, _absent_v2_fields
from services.orders.domain import Channel, ChannelRefused
from services.orders.main import create_app
from services.orders.settings import OrdersSettings
from tests.support.auth import bearer, channel_bearer
from tests.unit.orders.fakes import ALICE, OPERATOR, World, order_request

AMAZON = Channel(code="amazon", name="Amazon", kind="marketplace")
INSTAGRAM = Channel(code="insta", name="Instagram", kind="social")
AMAZON_BOT = Principal(sub="amazon-bot", roles=frozenset({"channel"}), channel="amazon")
EBAY_BOT = Principal(sub="ebay-bot", roles=frozenset({"channel"}), channel="ebay")
T0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


# --- the rules (domain) ---


def test_a_channel_principal_places_on_its_own_channel_only() -> None:
    assert domain.requested_channel(None, "amazon") == "amazon"
    assert domain.requested_channel("amazon", "amazon") == "amazon"
    with pytest.raises(ChannelRefused) as refused:
        domain.requested_channel("web", "amazon")
    assert refused.value.status == 403
    # Everyone else: the body's channel, else web.
    assert domain.requested_channel(None, None) == "web"
    assert domain.requested_channel("insta", None) == "insta"


@pytest.mark.parametrize(
    ("channel", "privileged", "status"),
    [
        (None, False, 422),
        (replace(AMAZON, active=False), True, 422),
        (AMAZON, False, 403),
        (Channel("shop1", "Store", "pos"), False, 403),
        (AMAZON, True, None),
        (INSTAGRAM, False, None),
        (domain.BUILT_IN_WEB, False, None),
    ],
    ids=["unknown", "inactive", "marketplace", "pos", "privileged", "social", "web"],
)
def test_who_may_order_on_which_kind_of_channel(
    channel: Channel | None, privileged: bool, status: int | None
) -> None:
    if status is None:
        domain.check_channel_use("c", channel, privileged=privileged)
        return
    with pytest.raises(ChannelRefused) as refused:
        domain.check_channel_use("c", channel, privileged=privileged)
    assert refused.value.status == status


def test_web_is_known_before_catalog_says_anything_and_catalog_has_the_last_word() -> None:
    assert domain.known_channel("web", None) == domain.BUILT_IN_WEB
    assert domain.known_channel("amazon", None) is None
    closed = replace(domain.BUILT_IN_WEB, active=False)
    assert domain.known_channel("web", closed) == closed


def test_who_reads_which_order() -> None:
    def reads(**who: Any) -> bool:
        return domain.may_read_order(customer_id="alice", channel="amazon", **who)

    assert reads(sub="alice", is_admin=False, bound=None)
    assert reads(sub="ops", is_admin=True, bound=None)
    assert reads(sub="amazon-bot", is_admin=False, bound="amazon")
    assert not reads(sub="bob", is_admin=False, bound=None)
    # A channel principal never reads another channel's order, even one placed under its sub.
    assert not reads(sub="alice", is_admin=False, bound="ebay")


# --- the use cases ---


async def world_with_channels(*channels: Channel) -> World:
    world = World()
    for channel in channels:
        await service.record_channel(world.tx(), channel, T0)
    return world


def on_channel(
    who: Principal, channel: str, key: str = "k-1", privileged: bool = False
) -> service.OrderRequest:
    return replace(
        order_request(who, key),
        customer_id=who.sub,
        channel=channel,
        channel_privileged=privileged or who.channel is not None or who.is_admin,
    )


async def test_a_channel_order_is_priced_announced_and_shown_with_its_channel() -> None:
    world = await world_with_channels(AMAZON)
    world.pricing.channel_prices[("amazon", "MUG-1")] = 1500

    placed = await world.place(on_channel(AMAZON_BOT, "amazon"))

    assert placed.order.channel == "amazon"
    assert world.pricing.channel_asked == ["amazon"]
    assert placed.order.lines[0].unit_price.amount == 1500
    [announced] = world.emitted(OrderPlaced)
    assert announced.channel == "amazon"
    await service.stock_reserved(world.tx(), placed.order.id)
    await service.payment_captured(world.tx(), placed.order.id, world.clock)
    [confirmed] = world.emitted(OrderConfirmed)
    assert confirmed.channel == "amazon"


async def test_a_v1_order_is_a_web_order() -> None:
    world = World()
    placed = await world.place()
    assert placed.order.channel == "web" and world.pricing.channel_asked == ["web"]
    assert world.emitted(OrderPlaced)[0].channel == "web"


@pytest.mark.parametrize(
    ("who", "channel", "refusal"),
    [
        (ALICE, "amazon", Forbidden),
        (ALICE, "nowhere", Invalid),
        (AMAZON_BOT, "closed", Invalid),
        (EBAY_BOT, "ebay", Invalid),  # its claim names a channel catalog never announced
    ],
    ids=["customer-on-marketplace", "unknown", "inactive", "unknown-claim"],
)
async def test_refused_channels_spend_no_key_and_ask_no_price(
    who: Principal, channel: str, refusal: type[Exception]
) -> None:
    world = await world_with_channels(AMAZON, Channel("closed", "Old", "web", active=False))
    with pytest.raises(refusal) as refused:
        await world.place(on_channel(who, channel))
    if isinstance(refused.value, Invalid):
        assert [e.field for e in refused.value.errors] == ["channel"]
    assert not world.store.orders.rows and not world.store.keys.keys
    assert world.pricing.asked == [] and world.events.emitted == []


async def test_customers_order_on_social_channels_and_admins_on_any() -> None:
    world = await world_with_channels(AMAZON, INSTAGRAM)
    assert (await world.place(on_channel(ALICE, "insta"))).order.channel == "insta"
    assert (await world.place(on_channel(OPERATOR, "amazon"))).order.channel == "amazon"


async def test_a_channel_principal_reads_its_channels_orders_and_nobody_elses() -> None:
    world = await world_with_channels(AMAZON)
    amazon = (await world.place(on_channel(AMAZON_BOT, "amazon"))).order.id
    world.clock.advance(1)
    web = (await world.place(order_request(ALICE, "k-2"))).order.id

    assert (await service.get_order(world.tx(), AMAZON_BOT, amazon)).channel == "amazon"
    with pytest.raises(NotFound):
        await service.get_order(world.tx(), AMAZON_BOT, web)
    with pytest.raises(NotFound):
        await service.get_order(world.tx(), EBAY_BOT, amazon)
    # Alice never reads the channel's order, nor does the channel read hers.
    with pytest.raises(NotFound):
        await service.get_order(world.tx(), ALICE, amazon)

    async def listed(who: Principal, **asked: Any) -> list[str]:
        page = await service.list_orders(
            world.tx(), who, customer_id=None, status=None, before=None, limit=10, **asked
        )
        return [v.id for v in page.orders]

    assert await listed(AMAZON_BOT) == [amazon]
    assert await listed(AMAZON_BOT, channel="web") == [amazon]  # its own, whatever it asks
    assert await listed(OPERATOR, channel="amazon") == [amazon]
    assert await listed(OPERATOR, channel="web") == [web]
    assert await listed(OPERATOR) == [web, amazon]
    assert await listed(ALICE) == [web]


async def test_the_channels_projection_keeps_the_newest_catalog_event() -> None:
    world = await world_with_channels(AMAZON)
    closed = replace(AMAZON, active=False)
    await service.record_channel(world.tx(), closed, T0 + timedelta(seconds=5))
    await service.record_channel(world.tx(), AMAZON, T0)  # a replay of the older event
    assert await world.store.channels.get("amazon") == closed
    with pytest.raises(Invalid):
        await world.place(on_channel(AMAZON_BOT, "amazon"))


# --- the routes, before any database or pricing ---


V1_BODY: dict[str, Any] = {
    "lines": [{"sku": "MUG-1", "quantity": 2}],
    "region": "FR",
    "shipping_address": {"name": "Ada", "city": "Paris"},
    "payment": {"token": "tok_visa"},
}


def test_a_body_without_channel_hashes_as_before_issue_13() -> None:
    # What a v1 body hashed to: its model's dump, email (absent) included as null.
    before = request_hash({**V1_BODY, "email": None})
    body = OrderIn.model_validate(V1_BODY)
    assert request_hash(body.model_dump(mode="json", exclude=_absent_v2_fields(body))) == before
    # Naming the channel makes it another body, as naming shipping_method does.
    named = OrderIn.model_validate({**V1_BODY, "channel": "web"})
    assert request_hash(named.model_dump(mode="json", exclude=_absent_v2_fields(named))) != before


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(OrdersSettings(pricing_url="http://127.0.0.1:9"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://orders") as c:
        yield c


async def test_a_channel_token_naming_another_channel_is_403(client: httpx.AsyncClient) -> None:
    headers = channel_bearer("amazon") | {"Idempotency-Key": "k-1"}
    response = await client.post("/orders", json={**V1_BODY, "channel": "ebay"}, headers=headers)
    assert response.status_code == 403, response.text


@pytest.mark.parametrize("channel", ["", "a b", "-web", "x" * 65, 7])
async def test_a_malformed_channel_is_422_naming_it(
    client: httpx.AsyncClient, channel: Any
) -> None:
    headers = bearer("alice") | {"Idempotency-Key": "k-1"}
    response = await client.post("/orders", json={**V1_BODY, "channel": channel}, headers=headers)
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == ["channel"]
