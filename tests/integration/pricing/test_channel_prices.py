"""Channel price lists (issue 13) on the real PostgreSQL and Kafka: PUT/GET/DELETE per channel,
PriceChanged with its channel, and quotes for a channel charging its price list."""

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from libs.events import topics
from services.pricing.main import create_app
from services.pricing.settings import PricingSettings
from tests.integration.pricing.test_pricing import (
    eur,
    fields,
    new_sku,
    product_created,
    quote_when_ready,
    set_price,
    set_tax,
)
from tests.support.auth import admin, bearer, channel_bearer
from tests.support.kafka import TopicTail, of_type
from tests.support.service import running


@pytest.fixture(scope="module")
def app(migrated_databases: None) -> FastAPI:
    return create_app(PricingSettings())


@pytest.fixture(scope="module")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with running(app) as http:
        yield http


def new_channel() -> str:
    return f"mkt-{uuid.uuid4().hex[:10]}"


async def put_channel_price(
    client: httpx.AsyncClient, channel: str, sku: str, amount: int, **kw: Any
) -> httpx.Response:
    return await client.put(
        f"/pricing/channels/{channel}/prices/{sku}",
        json={"amount": amount, "currency": "EUR"},
        headers=kw.get("headers", admin()),
    )


async def test_a_channel_price_is_set_read_announced_with_its_channel_and_deleted(
    client: httpx.AsyncClient,
) -> None:
    sku, channel = new_sku(), new_channel()
    await set_price(client, sku, 1000)
    async with TopicTail(topics.PRICING) as tail:
        first = await put_channel_price(client, channel, sku, 1200)
        assert first.status_code == 200, first.text
        assert first.json()["channel"] == channel and first.json()["price"] == eur(1200)
        assert (await put_channel_price(client, channel, sku, 1200)).status_code == 200
        read = await client.get(f"/pricing/channels/{channel}/prices/{sku}")
        assert read.status_code == 200 and read.json()["price"] == eur(1200)
        deleted = await client.delete(f"/pricing/channels/{channel}/prices/{sku}", headers=admin())
        assert deleted.status_code == 204
        # The base price's own PriceChanged may still be on its way: only this channel's count.
        changes = await tail.wait_for(
            lambda e: of_type("PriceChanged", sku)(e) and e["data"].get("channel") == channel,
            count=2,
        )

    assert [(c["_key"], c["data"]) for c in changes] == [
        (sku, {"sku": sku, "price": eur(1200), "previous": None, "channel": channel}),
        (sku, {"sku": sku, "price": None, "previous": eur(1200), "channel": channel}),
    ]
    gone = await client.get(f"/pricing/channels/{channel}/prices/{sku}")
    assert gone.status_code == 404
    again = await client.delete(f"/pricing/channels/{channel}/prices/{sku}", headers=admin())
    assert again.status_code == 404
    # The base price was never touched.
    assert (await client.get(f"/pricing/prices/{sku}")).json()["price"] == eur(1000)


async def test_a_quote_for_a_channel_uses_its_price_list_and_the_base_for_the_rest(
    client: httpx.AsyncClient,
) -> None:
    listed, unlisted, channel = new_sku(), new_sku(), new_channel()
    region = f"R-{uuid.uuid4().hex[:8]}"
    await product_created(listed)
    await product_created(unlisted)
    await set_price(client, listed, 1000)
    await set_price(client, unlisted, 400)
    await set_tax(client, region, 2000)
    assert (await put_channel_price(client, channel, listed, 1500)).status_code == 200
    lines = [{"sku": listed, "quantity": 2}, {"sku": unlisted, "quantity": 1}]

    quote = await quote_when_ready(client, {"lines": lines, "region": region, "channel": channel})

    assert quote["channel"] == channel
    units = {line["sku"]: line["unit_price"]["amount"] for line in quote["lines"]}
    assert units == {listed: 1500, unlisted: 400}
    assert (quote["subtotal"], quote["total"]) == (eur(3400), eur(4080))
    stored = await client.get(f"/pricing/quotes/{quote['id']}")
    assert stored.json()["channel"] == channel
    # No channel is web, which has no price list here: base prices, as before issue 13.
    web = await quote_when_ready(client, {"lines": lines, "region": region})
    assert web["channel"] == "web" and web["subtotal"] == eur(2400)


@pytest.mark.parametrize("who", ["anonymous", "customer", "channel"])
async def test_only_admins_change_channel_price_lists(client: httpx.AsyncClient, who: str) -> None:
    sku, channel = new_sku(), new_channel()
    tokens = {"anonymous": {}, "customer": bearer("alice"), "channel": channel_bearer(channel)}
    token = tokens[who]
    put = await put_channel_price(client, channel, sku, 100, headers=token)
    assert put.status_code == (401 if not token else 403)
    assert (await client.get(f"/pricing/channels/{channel}/prices/{sku}")).status_code == 404
    delete = await client.delete(f"/pricing/channels/{channel}/prices/{sku}", headers=token)
    assert delete.status_code == (401 if not token else 403)


async def test_bad_channel_price_input_is_422_naming_the_field(client: httpx.AsyncClient) -> None:
    sku = new_sku()
    bad_path = await put_channel_price(client, "bad channel", sku, 100)
    assert bad_path.status_code == 422 and "channel" in fields(bad_path)
    negative = await put_channel_price(client, new_channel(), sku, -1)
    assert negative.status_code == 422 and "amount" in fields(negative)
    quote = await client.post(
        "/pricing/quotes",
        json={"lines": [{"sku": sku, "quantity": 1}], "region": "DE", "channel": "-x"},
    )
    assert quote.status_code == 422 and "channel" in fields(quote)
