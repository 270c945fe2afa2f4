"""Channels, listings, channel reads, export and the coalesced listing sync on the real broker
and database (issue 13). The app runs with a sync delay of an hour, and each test runs sync
passes itself at a time past it: what is published when is then the test's to decide."""

import asyncio
import csv
import io
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from fastapi import FastAPI

from libs.events import topics
from libs.events.common import Money
from libs.events.inventory import ChannelAvailability, StockLevelChanged
from libs.events.pricing import PriceChanged
from libs.kit.kafka import KafkaConnection
from services.catalog.main import create_app
from services.catalog.settings import CatalogSettings
from tests.support.auth import admin, bearer
from tests.support.eventually import eventually
from tests.support.kafka import TopicTail, bootstrap, make_event, of_type, publish
from tests.support.service import running

EUR = "EUR"


@pytest.fixture(scope="module")
def app(migrated_databases: None) -> FastAPI:
    # No consumer linger: a fact these tests publish is then applied, or held in a transaction
    # that holds its mark, by the time a sync pass runs (sync_now), so versions are exact.
    return create_app(
        CatalogSettings(listing_sync_delay_s=3600.0, export_page_size=2, consumer_linger_ms=0)
    )


@pytest.fixture(scope="module")
async def catalog(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with running(app) as client:
        yield client


def tag() -> str:
    return uuid.uuid4().hex[:10]


async def sync_now(app: FastAPI) -> int:
    """Sync passes as if the delay had passed for every change made so far, until nothing is left
    (a pass takes one batch, oldest marks first: earlier tests' marks may come before ours)."""
    later = datetime.now(UTC) + timedelta(hours=2)
    total = 0
    idle = 0
    for _ in range(1000):
        done = int(await app.state.listing_sync.run_once(later))
        total += done
        # A pass skips (SKIP LOCKED) a mark that the consumer's transaction for a fact the test
        # published moments ago holds: empty passes a little apart, before calling it done.
        idle = 0 if done else idle + 1
        if idle == 4:
            return total
        if not done:
            await asyncio.sleep(0.05)
    raise AssertionError("listing sync never ran out of work")


async def new_channel(app: FastAPI, catalog: httpx.AsyncClient, kind: str = "marketplace") -> str:
    code = f"mkt-{tag()}"
    put = await catalog.put(
        f"/catalog/channels/{code}", json={"name": "Market", "kind": kind}, headers=admin()
    )
    assert put.status_code == 201, put.text
    await app.state.listing_topics.wait()
    return code


async def new_product(catalog: httpx.AsyncClient, name: str = "Mug", price: int = 1000) -> str:
    sku = f"SKU-{tag()}"
    created = await catalog.post(
        "/catalog/products", json={"sku": sku, "name": name, "category": "k"}, headers=admin()
    )
    assert created.status_code == 201, created.text
    await price_changed(sku, price)
    await stock_changed(sku, 10)
    return sku


async def price_changed(sku: str, amount: int | None, channel: str | None = None) -> None:
    price = Money(amount=amount, currency=EUR) if amount is not None else None
    event = PriceChanged(sku=sku, price=price, channel=channel)
    await publish(make_event("pricing", event, sku), topics.PRICING)


async def stock_changed(sku: str, available: int, capped: dict[str, int] | None = None) -> None:
    level = StockLevelChanged(
        sku=sku,
        on_hand=available,
        reserved=0,
        available=available,
        reason="adjustment",
        channels=[
            ChannelAvailability(channel=c, cap=n, used=0, available=n)
            for c, n in (capped or {}).items()
        ],
    )
    await publish(make_event("inventory", level, sku), topics.INVENTORY)


async def publish_listing(catalog: httpx.AsyncClient, sku: str, channel: str, on: bool) -> Any:
    put = await catalog.put(
        f"/catalog/products/{sku}/listings/{channel}", json={"published": on}, headers=admin()
    )
    assert put.status_code == 200, put.text
    return put.json()


async def offered(catalog: httpx.AsyncClient, sku: str, channel: str, **want: Any) -> None:
    async def probe() -> bool:
        got = await catalog.get(f"/catalog/products/{sku}", params={"channel": channel})
        body = got.json()
        return got.status_code == 200 and all(body.get(k) == v for k, v in want.items())

    await eventually(probe, what=f"{sku} on {channel} with {want}")


def listing_events(tail: TopicTail, sku: str) -> list[dict[str, Any]]:
    return [e["data"] for e in tail.events(of_type("ListingChanged", sku))]


async def test_an_admin_configures_channels_and_each_gets_its_listing_topic(
    app: FastAPI, catalog: httpx.AsyncClient
) -> None:
    code = f"pos-{tag()}"
    async with TopicTail(topics.CATALOG) as tail:
        first = await catalog.put(
            f"/catalog/channels/{code}", json={"name": "Shop", "kind": "pos"}, headers=admin()
        )
        assert first.status_code == 201 and first.json()["active"] is True
        same = await catalog.put(
            f"/catalog/channels/{code}", json={"name": "Shop", "kind": "pos"}, headers=admin()
        )
        assert same.status_code == 200
        off = await catalog.put(
            f"/catalog/channels/{code}",
            json={"name": "Shop", "kind": "pos", "active": False},
            headers=admin(),
        )
        assert off.status_code == 200 and off.json()["active"] is False
        events = await tail.wait_for(of_type("ChannelChanged", code), count=2)
        assert [e["data"]["active"] for e in events] == [True, False]
        assert {e["_key"] for e in events} == {code}

    listed = await catalog.get("/catalog/channels", headers=admin())
    codes = [c["code"] for c in listed.json()["items"]]
    assert "web" in codes and code in codes
    assert (await catalog.get(f"/catalog/channels/{code}", headers=admin())).json()["kind"] == "pos"
    assert (await catalog.get("/catalog/channels/nope", headers=admin())).status_code == 404
    assert (await catalog.get("/catalog/channels", headers=bearer("c1"))).status_code == 403

    await app.state.listing_topics.wait()
    kafka = AIOKafkaAdminClient(**KafkaConnection.operator(bootstrap()).client_options())
    await kafka.start()
    try:
        existing = set(await kafka.list_topics())
    finally:
        await kafka.close()
    assert {topics.listings(code), topics.listings("web")} <= existing


@pytest.mark.parametrize(
    ("code", "body", "field"),
    [
        ("Upper", {"name": "x", "kind": "web"}, "code"),
        ("-dash", {"name": "x", "kind": "web"}, "code"),
        ("ok", {"name": "x", "kind": "shop"}, "kind"),
        ("ok", {"name": "", "kind": "web"}, "name"),
        ("ok", {"name": "x", "kind": "web", "extra": 1}, "extra"),
    ],
)
async def test_a_bad_channel_is_a_422_naming_the_field(
    catalog: httpx.AsyncClient, code: str, body: dict[str, Any], field: str
) -> None:
    answer = await catalog.put(f"/catalog/channels/{code}", json=body, headers=admin())
    assert answer.status_code == 422, answer.text
    assert field in {e["field"].split(".")[-1] for e in answer.json()["errors"]}


async def test_listings_decide_what_each_channel_shows_at_its_own_price_and_cap(
    app: FastAPI, catalog: httpx.AsyncClient
) -> None:
    channel = await new_channel(app, catalog)
    listed, unlisted = await new_product(catalog), await new_product(catalog)
    listing = await publish_listing(catalog, listed, channel, True)
    assert listing["channel"] == channel and listing["published"] is True
    await price_changed(listed, 1250, channel=channel)
    await stock_changed(listed, 10, {channel: 3})

    await offered(
        catalog,
        listed,
        channel,
        price={"amount": 1250, "currency": EUR},
        availability={"available": 3, "in_stock": True},
    )
    await offered(
        catalog,
        listed,
        "web",
        price={"amount": 1000, "currency": EUR},
        availability={"available": 10, "in_stock": True},
    )
    page = await catalog.get("/catalog/products", params={"channel": channel, "limit": 200})
    assert [p["sku"] for p in page.json()["items"]] == [listed]
    assert (
        await catalog.get(f"/catalog/products/{unlisted}", params={"channel": channel})
    ).status_code == 404
    # v1 reads are unchanged: the base price and the pool
    plain = (await catalog.get(f"/catalog/products/{listed}")).json()
    assert plain["price"]["amount"] == 1000 and plain["availability"]["available"] == 10

    unknown = await catalog.get("/catalog/products", params={"channel": "nope"})
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "channel"

    everywhere = await catalog.get(f"/catalog/products/{unlisted}/listings", headers=admin())
    by_channel = {x["channel"]: x["published"] for x in everywhere.json()["items"]}
    assert by_channel["web"] is True and by_channel[channel] is False

    # a channel's price removed: it sells at the base price again
    await price_changed(listed, None, channel=channel)
    await offered(catalog, listed, channel, price={"amount": 1000, "currency": EUR})


async def test_listing_refusals(app: FastAPI, catalog: httpx.AsyncClient) -> None:
    channel = await new_channel(app, catalog)
    sku = await new_product(catalog)
    missing = await catalog.put(
        "/catalog/products/NOPE-1/listings/web", json={"published": True}, headers=admin()
    )
    assert missing.status_code == 404
    nowhere = await catalog.put(
        f"/catalog/products/{sku}/listings/nope", json={"published": True}, headers=admin()
    )
    assert nowhere.status_code == 404
    await catalog.put(
        f"/catalog/channels/{channel}",
        json={"name": "Market", "kind": "marketplace", "active": False},
        headers=admin(),
    )
    inactive = await catalog.put(
        f"/catalog/products/{sku}/listings/{channel}", json={"published": True}, headers=admin()
    )
    assert inactive.status_code == 409
    bad = await catalog.put(
        f"/catalog/products/{sku}/listings/web", json={"published": "maybe"}, headers=admin()
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "published"


async def test_a_burst_of_stock_moves_is_one_listing_changed_per_sku_with_the_final_level(
    app: FastAPI, catalog: httpx.AsyncClient
) -> None:
    channel = await new_channel(app, catalog)
    skus = [await new_product(catalog), await new_product(catalog)]
    async with TopicTail(topics.listings(channel)) as tail:
        for sku in skus:
            await publish_listing(catalog, sku, channel, True)
            await offered(catalog, sku, channel, availability={"available": 10, "in_stock": True})
        await sync_now(app)
        await tail.wait_for(of_type("ListingChanged"), count=2)

        for n in range(50):
            await stock_changed(skus[n % 2], 40 - n)
        for sku, last in zip(skus, (40 - 48, 40 - 49), strict=True):
            final = max(last, 0)
            await offered(
                catalog, sku, channel, availability={"available": final, "in_stock": final > 0}
            )
        await sync_now(app)
        for sku in skus:
            await tail.wait_for(of_type("ListingChanged", sku), count=2)
        # one more change each, so anything the burst published twice would show before it
        for sku in skus:
            await stock_changed(sku, 5)
            await offered(catalog, sku, channel, availability={"available": 5, "in_stock": True})
        await sync_now(app)
        for sku in skus:
            await tail.wait_for(of_type("ListingChanged", sku), count=3)

        for sku in skus:
            events = listing_events(tail, sku)
            assert [(e["version"], e["available"], e["changed"]) for e in events] == [
                (1, 10, ["published", "price", "available", "status", "name"]),
                (2, 0, ["available"]),
                (3, 5, ["available"]),
            ]
            assert events[0]["price"] == {"amount": 1000, "currency": EUR}
        assert {e["_key"] for e in tail.events(of_type("ListingChanged"))} == set(skus)


async def test_every_kind_of_change_is_synced_and_a_change_to_nothing_is_not(
    app: FastAPI, catalog: httpx.AsyncClient
) -> None:
    channel = await new_channel(app, catalog)
    sku = await new_product(catalog)
    changes: list[tuple[int, Any]] = []
    async with TopicTail(topics.listings(channel)) as tail:

        async def expect(count: int, changed: list[str]) -> dict[str, Any]:
            await sync_now(app)
            await tail.wait_for(of_type("ListingChanged", sku), count=count)
            event = listing_events(tail, sku)[-1]
            assert event["changed"] == changed and event["version"] == count
            return event

        await publish_listing(catalog, sku, channel, True)
        await expect(1, ["published", "price", "available", "status", "name"])

        await price_changed(sku, 900, channel=channel)
        await offered(catalog, sku, channel, price={"amount": 900, "currency": EUR})
        assert (await expect(2, ["price"]))["price"] == {"amount": 900, "currency": EUR}

        await stock_changed(sku, 10)  # the same level again: nothing to tell
        await price_changed(sku, 1000)  # the base price, hidden by the channel's own
        renamed = await catalog.patch(
            f"/catalog/products/{sku}", json={"name": "Big mug"}, headers=admin()
        )
        assert renamed.status_code == 200
        assert (await expect(3, ["name"]))["name"] == "Big mug"

        await catalog.patch(
            f"/catalog/products/{sku}", json={"status": "discontinued"}, headers=admin()
        )
        assert (await expect(4, ["status"]))["status"] == "discontinued"

        await stock_changed(sku, 2)
        await offered(catalog, sku, "web", availability={"available": 2, "in_stock": True})
        assert (await expect(5, ["available"]))["available"] == 2

        await publish_listing(catalog, sku, channel, False)
        assert (await expect(6, ["published"]))["published"] is False
        # unpublished: further changes are nobody's news there, until it is published again
        await stock_changed(sku, 1)
        await offered(catalog, sku, "web", availability={"available": 1, "in_stock": True})
        await sync_now(app)
        await publish_listing(catalog, sku, channel, True)
        event = await expect(7, ["published", "available"])
        assert event["available"] == 1
        changes.extend((e["version"], e["changed"]) for e in listing_events(tail, sku))
    assert [v for v, _ in changes] == [1, 2, 3, 4, 5, 6, 7]


async def test_export_streams_the_channels_published_listing_as_json_and_csv(
    app: FastAPI, catalog: httpx.AsyncClient
) -> None:
    channel = await new_channel(app, catalog)
    names = ['Mug, "large"', 'Plate "A", round', "Cup"]  # page size 2: two pages
    skus = sorted([await new_product(catalog, name=n) for n in names])
    hidden = await new_product(catalog)
    for sku in skus:
        await publish_listing(catalog, sku, channel, True)
    await stock_changed(skus[0], 10, {channel: 4})
    await offered(catalog, skus[0], channel, availability={"available": 4, "in_stock": True})
    assert hidden

    as_json = await catalog.get(f"/catalog/channels/{channel}/export", headers=admin())
    assert as_json.status_code == 200 and as_json.headers["content-type"] == "application/json"
    assert f'filename="{channel}-listing.json"' in as_json.headers["content-disposition"]
    document = json.loads(as_json.content)
    assert document["channel"] == channel
    assert [r["sku"] for r in document["items"]] == skus
    first = document["items"][0]
    assert set(first) == {
        "sku",
        "name",
        "status",
        "price_amount",
        "currency",
        "available",
        "updated_at",
    }
    assert (first["price_amount"], first["currency"], first["available"]) == (1000, EUR, 4)

    as_csv = await catalog.get(
        f"/catalog/channels/{channel}/export", params={"format": "csv"}, headers=admin()
    )
    assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
    assert f'filename="{channel}-listing.csv"' in as_csv.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(as_csv.text, newline="")))
    assert rows[0] == [
        "sku",
        "name",
        "status",
        "price_amount",
        "currency",
        "available",
        "updated_at",
    ]
    assert [r[0] for r in rows[1:]] == skus
    assert sorted(r[1] for r in rows[1:]) == sorted(names)
    assert as_csv.text.endswith("\r\n")

    empty = await new_channel(app, catalog)
    nothing = await catalog.get(f"/catalog/channels/{empty}/export", headers=admin())
    assert json.loads(nothing.content) == {"channel": empty, "items": []}
    assert (await catalog.get("/catalog/channels/nope/export", headers=admin())).status_code == 404
    assert (
        await catalog.get(
            f"/catalog/channels/{channel}/export", params={"format": "xml"}, headers=admin()
        )
    ).status_code == 422
    assert (await catalog.get(f"/catalog/channels/{channel}/export")).status_code == 401
