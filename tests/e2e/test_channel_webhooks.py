"""Webhooks per sales channel through the gateway (issue 13): a marketplace's webhook
subscription of its channel gets, after a burst of 50 stock moves, one signed ListingChanged per
sku (the coalesced update), delivered from the channel's own topic, which notifications finds
after the channel was created; a subscription of another channel gets none of them."""

import asyncio
import uuid
from typing import Any

import httpx

from tests.e2e.shop import admin_put, eur, new_product
from tests.e2e.test_listings import STOCK, adjust
from tests.support.auth import admin
from tests.support.eventually import eventually
from tests.support.webhook_receiver import Delivery, WebhookReceiver


async def new_channel(gw: httpx.AsyncClient) -> str:
    channel = f"mkt-{uuid.uuid4().hex[:8]}"
    created = await gw.put(
        f"/catalog/channels/{channel}",
        json={"name": "E2E webhook marketplace", "kind": "marketplace"},
        headers=admin(),
    )
    assert created.status_code == 201, created.text
    return channel


async def subscribe(gw: httpx.AsyncClient, url: str, channel: str, secret: str) -> str:
    hook = await gw.post(
        "/notifications/webhooks",
        json={"url": url, "events": ["ListingChanged"], "secret": secret, "channel": channel},
        headers=admin(),
    )
    assert hook.status_code == 201, hook.text
    assert hook.json()["channel"] == channel
    subscription_id: str = hook.json()["id"]
    return subscription_id


def updates(receiver: WebhookReceiver, sku: str) -> list[dict[str, Any]]:
    """The sku's ListingChanged as delivered, once per webhook-id, by version."""
    unique: dict[str, Delivery] = {}
    for delivery in receiver.deliveries:
        unique.setdefault(delivery.headers["webhook-id"], delivery)
    found = [d.json()["data"] for d in unique.values() if d.json()["subject"] == sku]
    return sorted(found, key=lambda data: int(data["version"]))


async def latest(receiver: WebhookReceiver, sku: str, **want: Any) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        found = updates(receiver, sku)
        if found and all(found[-1].get(k) == v for k, v in want.items()):
            return found[-1]
        return None

    return await eventually(probe, timeout=60, what=f"a webhook of {sku} with {want}")


async def test_a_channel_webhook_gets_one_signed_listing_update_per_sku_after_a_burst(
    gateway: httpx.AsyncClient,
) -> None:
    channel, elsewhere = await new_channel(gateway), await new_channel(gateway)
    secret = uuid.uuid4().hex
    async with WebhookReceiver() as receiver, WebhookReceiver() as other:
        hooks = [
            await subscribe(gateway, receiver.url, channel, secret),
            await subscribe(gateway, other.url, elsewhere, secret),
        ]
        try:
            skus = sorted([await new_product(gateway, stock=STOCK) for _ in range(2)])
            for sku in skus:
                await admin_put(
                    gateway, f"/catalog/products/{sku}/listings/{channel}", {"published": True}
                )
            before = {
                sku: await latest(receiver, sku, published=True, price=eur(1000), available=STOCK)
                for sku in skus
            }

            # 50 stock moves at once, 25 per sku; then one more each, after the burst's update
            await asyncio.gather(*(adjust(gateway, skus[n % 2], -1) for n in range(50)))
            for sku in skus:
                await latest(receiver, sku, available=STOCK - 25)
            for sku in skus:
                await adjust(gateway, sku, +1)
            for sku in skus:
                await latest(receiver, sku, available=STOCK - 24)

            for sku in skus:
                v = before[sku]["version"]
                burst = [u for u in updates(receiver, sku) if u["version"] > v]
                assert [(u["version"], u["available"], u["channel"]) for u in burst] == [
                    (v + 1, STOCK - 25, channel),
                    (v + 2, STOCK - 24, channel),
                ]
            assert receiver.deliveries
            for delivery in receiver.deliveries:
                assert delivery.json()["type"] == "ListingChanged"
                assert delivery.standard_signature_valid(secret)
                assert not delivery.standard_signature_valid(uuid.uuid4().hex)
            assert not [d for d in other.deliveries if d.json()["subject"] in skus]
            page = await gateway.get(
                f"/notifications/webhooks/{hooks[1]}/deliveries", headers=admin()
            )
            assert page.status_code == 200 and page.json()["items"] == []
        finally:
            for hook in hooks:
                removed = await gateway.delete(f"/notifications/webhooks/{hook}", headers=admin())
                assert removed.status_code == 204, removed.text
