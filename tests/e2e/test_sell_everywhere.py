"""Issue 13 across services, through the gateway: a marketplace channel capped at 3 units of a
sku while the web channel sells the rest, the cap holding under 20 concurrent marketplace orders
placed by the channel's own integration principal; the channel's listing shows what it may still
sell."""

import asyncio
import uuid
from typing import Any

import httpx

from tests.e2e import shop
from tests.support.auth import channel_bearer
from tests.support.eventually import eventually


async def _marketplace_order(
    gw: httpx.AsyncClient, channel: str, sku: str, worker: int
) -> httpx.Response:
    # The marketplace's integration runs several workers (principals of the one channel): the
    # gateway's per-client checkout limit is per principal, and the cap is per channel.
    headers = channel_bearer(channel, sub=f"{channel}-worker-{worker}") | {
        "Idempotency-Key": uuid.uuid4().hex
    }
    return await gw.post("/orders", json=shop.order_body([(sku, 1)]), headers=headers)


async def _offered(gw: httpx.AsyncClient, channel: str, sku: str) -> dict[str, Any] | None:
    listed = await gw.get(f"/catalog/products/{sku}", params={"channel": channel})
    return dict(listed.json()) if listed.status_code == 200 else None


async def test_a_capped_marketplace_sells_three_while_the_web_sells_the_rest(
    gateway: httpx.AsyncClient,
) -> None:
    sku = await shop.new_product(gateway, stock=10)
    channel = f"mkt-{uuid.uuid4().hex[:8]}"
    await shop.admin_put(
        gateway,
        f"/catalog/channels/{channel}",
        {"name": f"Market {channel}", "kind": "marketplace"},
    )
    await shop.admin_put(
        gateway, f"/catalog/products/{sku}/listings/{channel}", {"published": True}
    )
    capped = await shop.admin_put(gateway, f"/inventory/items/{sku}/channels/{channel}", {"cap": 3})
    assert [(c["channel"], c["cap"], c["available"]) for c in capped["channels"]] == [
        (channel, 3, 3)
    ]

    async def listed_with_its_cap() -> bool:
        offer = await _offered(gateway, channel, sku)
        return offer is not None and offer["availability"]["available"] == 3

    await eventually(listed_with_its_cap, what=f"{channel} offers 3 of {sku}")

    async def orders_know_the_channel() -> bool:
        # A probe that cannot be confirmed (an unknown payment token fails it) tells when orders
        # has heard of the channel; it takes none of the cap for long (the order is rejected).
        probe = await gateway.post(
            "/orders",
            json=shop.order_body([(sku, 1)], token="tok_chargeDeclined"),
            headers=channel_bearer(channel) | {"Idempotency-Key": uuid.uuid4().hex},
        )
        if probe.status_code != 202:
            return False
        assert (await shop.settled(gateway, probe.json()["id"]))["status"] == "rejected"
        return True

    await eventually(orders_know_the_channel, timeout=30, what=f"orders knows {channel}")

    async def probe_released() -> bool:
        return [c["used"] for c in (await shop.stock(gateway, sku))["channels"]] == [0]

    await eventually(probe_released, what="the probe's unit back in the cap")

    placed = await asyncio.gather(
        *(_marketplace_order(gateway, channel, sku, i) for i in range(20))
    )
    assert [r.status_code for r in placed] == [202] * 20, [r.text for r in placed]
    outcomes = [await shop.settled(gateway, r.json()["id"]) for r in placed]
    assert sorted(o["status"] for o in outcomes) == ["confirmed"] * 3 + ["rejected"] * 17
    assert {o["channel"] for o in outcomes} == {channel}

    async def cap_spent() -> dict[str, Any] | None:
        item = await shop.stock(gateway, sku)
        return item if item["on_hand"] == 7 else None

    item = await eventually(cap_spent, what=f"{sku} committed 3")
    assert [(c["cap"], c["used"], c["available"]) for c in item["channels"]] == [(3, 3, 0)]

    web = await shop.gather_orders(gateway, [f"web-shopper-{i}" for i in range(7)], [(sku, 1)])
    web_outcomes = [await shop.settled(gateway, r.json()["id"]) for r in web]
    assert [o["status"] for o in web_outcomes] == ["confirmed"] * 7
    assert {o["channel"] for o in web_outcomes} == {"web"}

    async def sold_out_everywhere() -> bool:
        offer = await _offered(gateway, channel, sku)
        return offer is not None and offer["availability"]["available"] == 0

    await eventually(sold_out_everywhere, what=f"{channel} offers none of {sku}")
    assert (await shop.stock(gateway, sku))["available"] == 0
