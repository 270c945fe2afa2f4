"""Sales channels and listing sync through the gateway (issue 13): a marketplace channel, two
products published on it, a subscriber of its listing topic that sees one coalesced update per
sku after a burst of 50 stock moves, the channel's export, and the channel-filtered reads."""

import asyncio
import csv
import io
import json
import uuid
from typing import Any

import httpx
from aiokafka.admin import AIOKafkaAdminClient

from libs.events import topics
from libs.kit.kafka import KafkaConnection
from tests.e2e.shop import admin_put, eur, new_product
from tests.support.auth import admin
from tests.support.eventually import eventually
from tests.support.kafka import TopicTail, bootstrap, of_type

STOCK = 100


async def topic_exists(name: str) -> None:
    client = AIOKafkaAdminClient(**KafkaConnection.operator(bootstrap()).client_options())
    await client.start()
    try:

        async def probe() -> bool:
            return name in set(await client.list_topics())

        await eventually(probe, what=f"topic {name} created")
    finally:
        await client.close()


def updates(tail: TopicTail, sku: str) -> list[dict[str, Any]]:
    return [e["data"] for e in tail.events(of_type("ListingChanged", sku))]


async def latest(tail: TopicTail, sku: str, **want: Any) -> dict[str, Any]:
    """Wait for the sku's newest ListingChanged to say `want`; returns it."""

    async def probe() -> dict[str, Any] | None:
        await tail.poll()
        found = updates(tail, sku)
        if found and all(found[-1].get(k) == v for k, v in want.items()):
            return found[-1]
        return None

    return await eventually(probe, timeout=40, what=f"ListingChanged of {sku} with {want}")


async def adjust(gw: httpx.AsyncClient, sku: str, delta: int) -> None:
    moved = await gw.post(
        f"/inventory/items/{sku}/adjustments",
        json={"delta": delta, "reason": "count_correction"},
        headers=admin(),
    )
    assert moved.status_code == 200, moved.text


async def test_a_marketplace_subscriber_sees_one_coalesced_update_per_sku_after_a_burst(
    gateway: httpx.AsyncClient,
) -> None:
    channel = f"mkt-{uuid.uuid4().hex[:8]}"
    created = await gateway.put(
        f"/catalog/channels/{channel}",
        json={"name": "E2E marketplace", "kind": "marketplace"},
        headers=admin(),
    )
    assert created.status_code == 201, created.text
    await topic_exists(topics.listings(channel))

    async with TopicTail(topics.listings(channel)) as tail:
        skus = sorted([await new_product(gateway, stock=STOCK) for _ in range(2)])
        hidden = await new_product(gateway, stock=STOCK)
        for sku in skus:
            listing = await admin_put(
                gateway, f"/catalog/products/{sku}/listings/{channel}", {"published": True}
            )
            assert listing["published"] is True and listing["channel"] == channel
        before = {
            sku: await latest(tail, sku, published=True, price=eur(1000), available=STOCK)
            for sku in skus
        }

        # 50 stock moves at once, 25 per sku
        await asyncio.gather(*(adjust(gateway, skus[n % 2], -1) for n in range(50)))
        after = {sku: await latest(tail, sku, available=STOCK - 25) for sku in skus}
        # one more move each: anything the burst published besides its one update would be
        # on the sku's partition before this one
        for sku in skus:
            await adjust(gateway, sku, +1)
        final = {sku: await latest(tail, sku, available=STOCK - 24) for sku in skus}

        for sku in skus:
            v = before[sku]["version"]
            assert after[sku]["version"] == v + 1 and after[sku]["changed"] == ["available"]
            assert final[sku]["version"] == v + 2
            burst = [u for u in updates(tail, sku) if u["version"] > v]
            assert [(u["version"], u["available"]) for u in burst] == [
                (v + 1, STOCK - 25),
                (v + 2, STOCK - 24),
            ]
        assert not updates(tail, hidden)

    # the channel's reads: only what it publishes, with its availability
    page = await gateway.get("/catalog/products", params={"channel": channel})
    assert page.status_code == 200, page.text
    assert [(p["sku"], p["availability"]["available"]) for p in page.json()["items"]] == [
        (sku, STOCK - 24) for sku in skus
    ]
    assert (
        await gateway.get(f"/catalog/products/{hidden}", params={"channel": channel})
    ).status_code == 404
    unknown = await gateway.get("/catalog/products", params={"channel": "no-such-channel"})
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "channel"

    # the export a polling marketplace reads
    as_json = await gateway.get(f"/catalog/channels/{channel}/export", headers=admin())
    assert as_json.status_code == 200, as_json.text
    items = json.loads(as_json.content)["items"]
    assert [(i["sku"], i["price_amount"], i["currency"], i["available"]) for i in items] == [
        (sku, 1000, "EUR", STOCK - 24) for sku in skus
    ]
    as_csv = await gateway.get(
        f"/catalog/channels/{channel}/export", params={"format": "csv"}, headers=admin()
    )
    assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
    assert "attachment" in as_csv.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(as_csv.text, newline="")))
    assert rows[0][:3] == ["sku", "name", "status"]
    assert [(r[0], r[5]) for r in rows[1:]] == [(sku, str(STOCK - 24)) for sku in skus]
