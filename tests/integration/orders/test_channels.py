"""Sales channels in orders (issue 13) on the real PostgreSQL and Kafka, priced by the real
pricing service: catalog's ChannelChanged decides which channels exist, a channel's principal
places and reads its channel's orders at the channel's prices, and everything else refuses it."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select, text

from libs.events import topics
from libs.events.catalog import ChannelChanged, ChannelKind
from libs.kit.db import processed_events
from libs.kit.idempotency import request_hash
from tests.integration.orders.conftest import Priced
from tests.integration.orders.test_orders import (
    customer,
    order_body,
    payment_captured,
    reaches,
    stock_reserved,
)
from tests.support.auth import admin, bearer, channel_bearer
from tests.support.eventually import eventually
from tests.support.kafka import TopicTail, make_event, of_type, publish


def new_channel() -> str:
    return f"mkt-{uuid.uuid4().hex[:10]}"


async def channel_changed(
    code: str, kind: ChannelKind = "marketplace", active: bool = True, at: datetime | None = None
) -> str:
    """What catalog announces when an admin PUTs /catalog/channels/{code}; the event's id."""
    data = ChannelChanged(code=code, name=code.title(), kind=kind, active=active)
    event = make_event("catalog", data, subject=code, at=at)
    await publish(event, topics.CATALOG)
    return event.id


async def post(
    client: httpx.AsyncClient, headers: dict[str, str], body: dict[str, Any], key: str | None = None
) -> httpx.Response:
    return await client.post(
        "/orders", json=body, headers=headers | {"Idempotency-Key": key or uuid.uuid4().hex}
    )


async def known(client: httpx.AsyncClient, pricing: Priced, code: str) -> dict[str, Any]:
    """Wait until orders has projected the channel: its principal's order is accepted."""

    async def accepted() -> dict[str, Any]:
        response = await post(client, channel_bearer(code), order_body(pricing))
        assert response.status_code == 202, response.text
        order: dict[str, Any] = response.json()
        return order

    return await eventually(accepted, timeout=30, what=f"orders knows channel {code}")


def field_of(response: httpx.Response) -> list[str]:
    assert response.status_code == 422, response.text
    return [e["field"] for e in response.json()["errors"]]


async def test_a_channel_order_is_priced_from_its_list_and_announced_with_its_channel(
    client: httpx.AsyncClient, pricing: Priced
) -> None:
    code = new_channel()
    async with httpx.AsyncClient(base_url=pricing.url) as prices:
        listed = await prices.put(
            f"/pricing/channels/{code}/prices/{pricing.mug}",
            json={"amount": 1500, "currency": "EUR"},
            headers=admin(),
        )
        assert listed.status_code == 200, listed.text
    await channel_changed(code)
    async with TopicTail(topics.ORDERS) as tail:
        order = await known(client, pricing, code)
        assert order["channel"] == code
        units = {ln["sku"]: ln["unit_price"]["amount"] for ln in order["lines"]}
        assert units == {pricing.mug: 1500, pricing.tea: 499}  # the tea has no channel price
        [placed] = await tail.wait_for(of_type("OrderPlaced", order["id"]))
        assert placed["data"]["channel"] == code
        await stock_reserved(order)
        await payment_captured(order)
        await reaches(client, order["id"], "confirmed")
        [confirmed] = await tail.wait_for(of_type("OrderConfirmed", order["id"]))
        assert confirmed["data"]["channel"] == code


async def test_unknown_inactive_and_forbidden_channels_are_refused(
    app: FastAPI, client: httpx.AsyncClient, pricing: Priced
) -> None:
    code = new_channel()
    body = order_body(pricing)
    alice = bearer(customer(), "customer")
    # Not announced yet: unknown, for its principal and an admin alike.
    assert field_of(await post(client, channel_bearer(code), body)) == ["channel"]
    assert field_of(await post(client, admin(), body | {"channel": code})) == ["channel"]
    at = datetime.now(UTC)
    await channel_changed(code, at=at)
    await known(client, pricing, code)
    # A marketplace is not the customers' to order on; an admin may.
    assert (await post(client, alice, body | {"channel": code})).status_code == 403
    assert (await post(client, admin(), body | {"channel": code})).status_code == 202
    # Its principal orders for its own channel only.
    other = await post(client, channel_bearer(code), body | {"channel": "web"})
    assert other.status_code == 403
    # Deactivated: 422 for everyone; a replayed older event does not bring it back.
    await channel_changed(code, active=False, at=at + timedelta(seconds=1))

    async def refused() -> bool:
        return field_of(await post(client, channel_bearer(code), body)) == ["channel"]

    await eventually(refused, timeout=30, what=f"channel {code} deactivated")
    replayed = await channel_changed(code, active=True, at=at)

    async def handled() -> bool:
        async with app.state.runtime.db.transaction() as session:
            return bool(
                await session.scalar(
                    select(processed_events.c.event_id).where(
                        processed_events.c.event_id == replayed
                    )
                )
            )

    await eventually(handled, timeout=30, what="the replayed ChannelChanged handled")
    assert field_of(await post(client, channel_bearer(code), body)) == ["channel"]


async def test_customers_order_on_social_channels_and_web_is_always_known(
    client: httpx.AsyncClient, pricing: Priced
) -> None:
    social = new_channel()
    await channel_changed(social, kind="social")
    alice = bearer(customer(), "customer")

    async def placed() -> dict[str, Any]:
        response = await post(client, alice, order_body(pricing) | {"channel": social})
        assert response.status_code == 202, response.text
        order: dict[str, Any] = response.json()
        return order

    assert (await eventually(placed, timeout=30, what="social channel known"))["channel"] == social
    web = await post(client, alice, order_body(pricing) | {"channel": "web"})
    assert web.status_code == 202 and web.json()["channel"] == "web"


async def test_a_channel_principal_reads_its_channels_orders_and_reaches_nothing_else(
    client: httpx.AsyncClient, pricing: Priced
) -> None:
    mine, theirs = new_channel(), new_channel()
    await channel_changed(mine)
    await channel_changed(theirs)
    order = await known(client, pricing, mine)
    other = await known(client, pricing, theirs)
    who = customer()
    web = (await post(client, bearer(who, "customer"), order_body(pricing))).json()
    me = channel_bearer(mine)

    read = await client.get(f"/orders/{order['id']}", headers=me)
    assert read.status_code == 200 and read.json()["channel"] == mine
    for hidden in (other["id"], web["id"]):
        assert (await client.get(f"/orders/{hidden}", headers=me)).status_code == 404
    # The web customer does not see the channel's order either.
    assert (await client.get(f"/orders/{order['id']}", headers=bearer(who))).status_code == 404

    listed = await client.get("/orders", params={"limit": 200}, headers=me)
    assert listed.status_code == 200
    assert {o["channel"] for o in listed.json()["items"]} == {mine}
    assert order["id"] in {o["id"] for o in listed.json()["items"]}
    asked_other = await client.get("/orders", params={"channel": theirs}, headers=me)
    assert {o["channel"] for o in asked_other.json()["items"]} == {mine}
    by_admin = await client.get("/orders", params={"channel": theirs}, headers=admin())
    assert [o["id"] for o in by_admin.json()["items"]] == [other["id"]]

    # Nothing a customer owns, nothing an admin does.
    denied = [
        await client.post(f"/orders/{order['id']}/cancel", headers=me),
        await client.post(
            f"/orders/{order['id']}/ship",
            json={"carrier": "UPS", "tracking_number": "1Z"},
            headers=me,
        ),
        await client.post(f"/orders/{order['id']}/deliver", headers=me),
        await client.post(f"/orders/{order['id']}/shipments", headers=me),
        await client.get(f"/orders/{order['id']}/invoice", headers=me),
        await client.post(
            f"/orders/{order['id']}/returns",
            json={"lines": [{"sku": pricing.mug, "quantity": 1, "reason": "damaged"}]},
            headers=me,
        ),
        await client.post("/carts", headers=me),
        await client.get(f"/carts/{uuid.uuid4()}", headers=me),
    ]
    assert [r.status_code for r in denied] == [403] * len(denied), [r.text for r in denied]
    assert (await client.get(f"/orders/{order['id']}", headers=me)).json()["status"] == "pending"


async def test_bodies_without_channel_keep_their_v1_request_hash(
    app: FastAPI, client: httpx.AsyncClient, pricing: Priced
) -> None:
    who, key = customer(), uuid.uuid4().hex
    body = order_body(pricing)
    first = await post(client, bearer(who, "customer"), body, key=key)
    assert first.status_code == 202, first.text
    async with app.state.runtime.db.transaction() as session:
        stored = await session.scalar(
            text("SELECT request_hash FROM idempotency_keys WHERE customer_id = :c AND key = :k"),
            {"c": who, "k": key},
        )
    # What POST /orders hashed before issue 13 (and 12): the v1 model's dump, email as null.
    assert stored == request_hash(body | {"email": None})
    replay = await post(client, bearer(who, "customer"), body, key=key)
    assert replay.status_code == 200 and replay.json()["id"] == first.json()["id"]
    # Naming the channel is another body under that key.
    named = await post(client, bearer(who, "customer"), body | {"channel": "web"}, key=key)
    assert named.status_code == 409
