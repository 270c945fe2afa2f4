"""POST /orders refuses bad input with a 422 naming the field, before any database or pricing."""

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from services.orders.main import create_app
from services.orders.settings import OrdersSettings
from tests.support.auth import bearer

GOOD: dict[str, Any] = {
    "lines": [{"sku": "MUG-1", "quantity": 2}],
    "region": "FR",
    "shipping_address": {"name": "Ada", "city": "Paris"},
    "payment": {"token": "tok_visa"},
}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    # No lifespan: nothing connects, and validation answers before anything would.
    app = create_app(OrdersSettings(pricing_url="http://127.0.0.1:9"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://orders") as c:
        yield c


def headers(key: str | None = "k-1") -> dict[str, str]:
    h = bearer("alice", "customer")
    if key is not None:
        h["Idempotency-Key"] = key
    return h


async def post(client: httpx.AsyncClient, body: dict[str, Any], **kw: Any) -> httpx.Response:
    return await client.post("/orders", json=body, headers=headers(**kw))


def fields(response: httpx.Response) -> list[str]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return [e["field"] for e in response.json()["errors"]]


async def test_no_token_is_401(client: httpx.AsyncClient) -> None:
    response = await client.post("/orders", json=GOOD, headers={"Idempotency-Key": "k"})
    assert response.status_code == 401


async def test_missing_idempotency_key_is_named(client: httpx.AsyncClient) -> None:
    assert fields(await post(client, GOOD, key=None)) == ["Idempotency-Key"]


async def test_overlong_idempotency_key_is_named(client: httpx.AsyncClient) -> None:
    assert fields(await post(client, GOOD, key="k" * 201)) == ["Idempotency-Key"]


@pytest.mark.parametrize(
    "token",
    [
        "4242424242424242",
        "tok_",
        "tok_visa 1",
        "TOK_visa",
        "tok_" + "a" * 61,
        "",
        "pm_",
        "pm_4242 4242 4242 4242",
        "PM_card_visa",
        "src_card_visa",
        "card_1PgaftB7WZ01zgkWm3waTcFp",
        "pm_" + "a" * 61,
    ],
)
async def test_anything_but_a_provider_token_is_refused(
    client: httpx.AsyncClient, token: str
) -> None:
    response = await post(client, GOOD | {"payment": {"token": token}})
    assert fields(response) == ["payment.token"]
    if token.isdigit():
        assert token not in response.text  # a card number is never echoed back


async def test_card_fields_next_to_the_token_are_refused(client: httpx.AsyncClient) -> None:
    body = GOOD | {"payment": {"token": "tok_visa", "card_number": "4242424242424242"}}
    assert fields(await post(client, body)) == ["payment.card_number"]


async def test_duplicate_skus_name_the_repeated_line(client: httpx.AsyncClient) -> None:
    lines = [{"sku": "A", "quantity": 1}, {"sku": "B", "quantity": 1}, {"sku": "A", "quantity": 2}]
    assert fields(await post(client, GOOD | {"lines": lines})) == ["lines[2].sku"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"lines": []}, "lines"),
        ({"lines": [{"sku": "A", "quantity": 0}]}, "lines[0].quantity"),
        ({"lines": [{"sku": "A", "quantity": 1001}]}, "lines[0].quantity"),
        ({"lines": [{"sku": f"S{i}", "quantity": 1} for i in range(101)]}, "lines"),
        ({"region": ""}, "region"),
        ({"region": "R" * 51}, "region"),
        ({"shipping_address": {f"k{i}": "v" for i in range(21)}}, "shipping_address"),
        ({"shipping_address": {"street": "x" * 501}}, "shipping_address.street"),
        ({"shipping_address": {"nested": {"a": "b"}}}, "shipping_address.nested"),
        ({"email": "not-an-email"}, "email"),
        ({"coupon": "FREE"}, "coupon"),
    ],
)
async def test_bad_fields_are_named(
    client: httpx.AsyncClient, change: dict[str, Any], field: str
) -> None:
    assert field in fields(await post(client, GOOD | change))


async def test_missing_shipping_address_is_named(client: httpx.AsyncClient) -> None:
    body = {k: v for k, v in GOOD.items() if k != "shipping_address"}
    assert fields(await post(client, body)) == ["shipping_address"]


async def test_unknown_status_filter_is_named(client: httpx.AsyncClient) -> None:
    response = await client.get("/orders?status=lost", headers=headers())
    assert fields(response) == ["status"]


async def test_ship_needs_the_admin_role(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/orders/x/ship", json={"carrier": "UPS", "tracking_number": "1"}, headers=headers()
    )
    assert response.status_code == 403
