"""Issue 13 sales channels through the gateway: a marketplace's own integration token places an
order that shows its channel and is charged the channel's price list, and is confirmed through the
whole saga; a customer token is refused (403) on that marketplace channel; an unknown channel is a
422 naming `channel`."""

import uuid

import httpx
import pytest

from tests.e2e.shop import admin_put, eur, new_product, order_body, settled
from tests.support.auth import bearer, channel_bearer
from tests.support.eventually import eventually
from tests.support.kafka import TopicTail, of_type


async def announce_channel(gateway: httpx.AsyncClient, code: str) -> None:
    """An operator configures the channel in catalog, whose ChannelChanged tells orders."""
    await admin_put(
        gateway, f"/catalog/channels/{code}", {"name": f"Marketplace {code}", "kind": "marketplace"}
    )


async def test_a_marketplace_orders_at_its_price_and_customers_cannot_use_it(
    gateway: httpx.AsyncClient, event_stream: TopicTail
) -> None:
    code = f"mkt-{uuid.uuid4().hex[:8]}"
    sku = await new_product(gateway, stock=10, price=1000)
    listed = await admin_put(
        gateway, f"/pricing/channels/{code}/prices/{sku}", {"amount": 1250, "currency": "EUR"}
    )
    assert listed["price"] == eur(1250)
    body = order_body([(sku, 2)])
    # Before the channel is announced, orders does not know it.
    unknown = await gateway.post(
        "/orders",
        json=body | {"channel": code},
        headers=bearer("e2e-ada", "customer") | {"Idempotency-Key": uuid.uuid4().hex},
    )
    assert unknown.status_code == 422, unknown.text
    assert [e["field"] for e in unknown.json()["errors"]] == ["channel"]

    await announce_channel(gateway, code)
    integration = channel_bearer(code)
    key = uuid.uuid4().hex

    async def placed() -> httpx.Response | None:
        response = await gateway.post(
            "/orders", json=body, headers=integration | {"Idempotency-Key": key}
        )
        return response if response.status_code == 202 else None

    response = await eventually(placed, timeout=30, what=f"orders accepts channel {code}")
    order = response.json()
    assert order["channel"] == code
    assert order["lines"][0]["unit_price"] == eur(1250)  # the channel's price, not the base 1000
    assert order["subtotal"] == eur(2500)

    done = await settled(gateway, order["id"])
    assert done["status"] == "confirmed" and done["channel"] == code
    [confirmed] = await event_stream.wait_for(of_type("OrderConfirmed", order["id"]))
    assert confirmed["data"]["channel"] == code
    # The integration reads its channel's order; the list shows only its channel.
    mine = await gateway.get(f"/orders/{order['id']}", headers=integration)
    assert mine.status_code == 200 and mine.json()["channel"] == code
    listed_orders = await gateway.get("/orders", headers=integration)
    assert {o["channel"] for o in listed_orders.json()["items"]} == {code}

    # A customer's token may not order on a marketplace channel.
    refused = await gateway.post(
        "/orders",
        json=body | {"channel": code},
        headers=bearer("e2e-ada", "customer") | {"Idempotency-Key": uuid.uuid4().hex},
    )
    assert refused.status_code == 403, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")


async def test_an_unknown_channel_is_422_naming_it(gateway: httpx.AsyncClient) -> None:
    sku = await new_product(gateway, stock=1)
    response = await gateway.post(
        "/orders",
        json=order_body([(sku, 1)], channel="no-such-channel"),
        headers=bearer("e2e-bob", "customer") | {"Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == ["channel"]
    assert response.headers["content-type"].startswith("application/problem+json")


# Every other service's guarded routes: a channel token is neither a customer nor an admin.
DENIED = [
    ("GET", "/payments?order_id=no-such-order"),
    ("GET", "/pricing/rules"),
    ("PUT", "/pricing/channels/mkt-x/prices/SKU-1"),
    ("GET", "/inventory/reservations/no-such-order"),
    ("GET", "/notifications"),
    ("POST", "/catalog/products"),
    ("POST", "/carts"),
]


@pytest.mark.parametrize(("method", "path"), DENIED, ids=[p for _, p in DENIED])
async def test_a_channel_token_is_refused_everywhere_else(
    gateway: httpx.AsyncClient, method: str, path: str
) -> None:
    body = {"amount": 1, "currency": "EUR"} if method == "PUT" else None
    response = await gateway.request(method, path, json=body, headers=channel_bearer("mkt-x"))
    assert response.status_code == 403, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
