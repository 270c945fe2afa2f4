"""Carts through the gateway (issue 12): lines checked against the catalog and shown with live
price and availability, an unknown sku refused, the checkout confirming an order of the cart's
lines and closing the cart; an idle cart is reported with CartAbandoned exactly once."""

import asyncio
import uuid
from typing import Any

import httpx

from libs.events import topics
from tests.e2e.conftest import E2E_SETTINGS
from tests.e2e.shop import REGION, new_product, settled
from tests.support.auth import bearer
from tests.support.eventually import eventually
from tests.support.kafka import TopicTail, of_type

ABANDON_AFTER_S = float(E2E_SETTINGS["BACKROOM_CART_ABANDON_AFTER_S"])


def shopper(name: str) -> tuple[str, dict[str, str]]:
    who = f"{name}-{uuid.uuid4().hex[:6]}"
    return who, bearer(who, "customer", email=f"{who}@shoppers.test")


async def read_cart(gw: httpx.AsyncClient, cart_id: str, auth: dict[str, str]) -> dict[str, Any]:
    response = await gw.get(f"/carts/{cart_id}", headers=auth)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_a_cart_is_priced_live_and_checked_out_into_a_confirmed_order(
    gateway: httpx.AsyncClient,
) -> None:
    mug = await new_product(gateway, stock=5, price=1250)
    tea = await new_product(gateway, stock=2, price=499)
    who, auth = shopper("cart-carla")

    created = await gateway.post("/carts", headers=auth)
    assert created.status_code == 201, created.text
    cart = created.json()
    assert (cart["status"], cart["customer_id"], cart["lines"]) == ("open", who, [])
    cart_id = cart["id"]

    # The catalog learns prices and stock from events: wait until it shows both for the mug.
    async def mug_line_live() -> dict[str, Any] | None:
        response = await gateway.put(
            f"/carts/{cart_id}/lines/{mug}", json={"quantity": 2}, headers=auth
        )
        assert response.status_code == 200, response.text
        line = response.json()["lines"][0]
        return line if line["unit_price"] and line["available"] == 5 else None

    line = await eventually(mug_line_live, timeout=30, what="catalog shows the mug's price, stock")
    assert line["unit_price"] == {"amount": 1250, "currency": "EUR"}
    assert (line["quantity"], line["in_stock"], line["short"]) == (2, True, False)
    assert line["line_total"] == {"amount": 2500, "currency": "EUR"}

    unknown = await gateway.put(
        f"/carts/{cart_id}/lines/NOPE-{uuid.uuid4().hex[:8]}", json={"quantity": 1}, headers=auth
    )
    assert unknown.status_code == 422, unknown.text
    assert unknown.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in unknown.json()["errors"]] == ["sku"]

    async def tea_short() -> dict[str, Any] | None:
        response = await gateway.put(
            f"/carts/{cart_id}/lines/{tea}", json={"quantity": 3}, headers=auth
        )
        assert response.status_code == 200, response.text
        found = response.json()
        return found if found["lines"][1]["available"] == 2 else None

    # Three teas with two in stock: kept in the cart, flagged short.
    over = await eventually(tea_short, timeout=30, what="catalog shows the tea's stock")
    assert over["lines"][1]["short"] is True
    fixed = await gateway.put(f"/carts/{cart_id}/lines/{tea}", json={"quantity": 1}, headers=auth)
    assert fixed.json()["subtotal"] == {"amount": 2 * 1250 + 499, "currency": "EUR"}

    body = {
        "region": REGION,
        "shipping_address": {"name": "Carla Cart", "street": "1 Basket Rd", "city": "Testville"},
        "payment": {"token": "tok_visa"},
    }
    key = uuid.uuid4().hex
    placed = await gateway.post(
        f"/carts/{cart_id}/checkout", json=body, headers=auth | {"Idempotency-Key": key}
    )
    assert placed.status_code == 202, placed.text
    order_id = placed.json()["id"]
    assert (await settled(gateway, order_id))["status"] == "confirmed"
    confirmed = await gateway.get(f"/orders/{order_id}", headers=auth)
    assert [(ln["sku"], ln["quantity"]) for ln in confirmed.json()["lines"]] == [(mug, 2), (tea, 1)]
    # 25.00 + 4.99 with 20 % tax.
    assert confirmed.json()["total"] == {"amount": 3599, "currency": "EUR"}

    closed = await read_cart(gateway, cart_id, auth)
    assert (closed["status"], closed["order_id"]) == ("checked_out", order_id)
    replay = await gateway.post(
        f"/carts/{cart_id}/checkout", json=body, headers=auth | {"Idempotency-Key": key}
    )
    assert replay.status_code == 200 and replay.json()["id"] == order_id
    again = await gateway.post(
        f"/carts/{cart_id}/checkout", json=body, headers=auth | {"Idempotency-Key": "other"}
    )
    assert again.status_code == 409, again.text


async def test_an_idle_cart_is_reported_abandoned_exactly_once(
    gateway: httpx.AsyncClient, event_stream: TopicTail
) -> None:
    mug = await new_product(gateway, stock=3, price=900)
    who, auth = shopper("idle-ivan")
    created = await gateway.post(
        "/carts", json={"lines": [{"sku": mug, "quantity": 2}]}, headers=auth
    )
    assert created.status_code == 201, created.text
    cart_id = created.json()["id"]

    [event] = await event_stream.wait_for(
        of_type("CartAbandoned", cart_id), timeout=ABANDON_AFTER_S + 30
    )
    assert event["_topic"] == topics.ORDERS and event["_key"] == cart_id
    data = event["data"]
    assert (data["cart_id"], data["customer_id"], data["email"]) == (
        cart_id,
        who,
        f"{who}@shoppers.test",
    )
    assert data["lines"] == [{"sku": mug, "quantity": 2}]
    # Several more sweeps pass: still the one event.
    await asyncio.sleep(ABANDON_AFTER_S / 2)
    await event_stream.poll()
    assert len(event_stream.events(of_type("CartAbandoned", cart_id))) == 1
    assert (await read_cart(gateway, cart_id, auth))["abandoned_at"] is not None


async def test_a_customer_flooding_cart_checkouts_is_limited_like_post_orders(
    gateway: httpx.AsyncClient,
) -> None:
    _, auth = shopper("flood-fiona")
    cart_id = (await gateway.post("/carts", headers=auth)).json()["id"]
    body = {
        "region": REGION,
        "shipping_address": {"name": "F"},
        "payment": {"token": "tok_visa"},
    }
    answers = await asyncio.gather(
        *(
            gateway.post(
                f"/carts/{cart_id}/checkout",
                json=body,
                headers=auth | {"Idempotency-Key": uuid.uuid4().hex},
            )
            for _ in range(25)
        )
    )
    codes = [a.status_code for a in answers]
    # The empty cart is refused (422) until the customer's checkout burst is spent.
    assert set(codes) == {422, 429} and codes.count(422) <= 12, codes
    limited = next(a for a in answers if a.status_code == 429)
    assert limited.headers["content-type"] == "application/problem+json"
