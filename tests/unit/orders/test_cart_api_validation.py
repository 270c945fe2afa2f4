"""The carts routes refuse bad input with a 422 naming the field, before any database or catalog
call; catalog unreachable is a 503 problem."""

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from services.orders.main import create_app
from services.orders.settings import OrdersSettings
from tests.support.auth import bearer

CHECKOUT: dict[str, Any] = {
    "region": "FR",
    "shipping_address": {"name": "Ada", "city": "Paris"},
    "payment": {"token": "tok_visa"},
}
ALICE = bearer("alice", "customer", email="alice@example.com")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    # No lifespan: nothing connects (the catalog client is not even started).
    app = create_app(
        OrdersSettings(pricing_url="http://127.0.0.1:9", catalog_url="http://127.0.0.1:9")
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://orders") as c:
        yield c


def fields(response: httpx.Response) -> list[str]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return [e["field"] for e in response.json()["errors"]]


async def test_carts_need_a_token(client: httpx.AsyncClient) -> None:
    assert (await client.post("/carts")).status_code == 401
    assert (await client.get("/carts/c-1")).status_code == 401
    put = await client.put("/carts/c-1/lines/MUG-1", json={"quantity": 1})
    assert put.status_code == 401


@pytest.mark.parametrize(
    ("lines", "field"),
    [
        ([{"sku": "MUG-1", "quantity": 0}], "lines[0].quantity"),
        ([{"sku": "MUG-1", "quantity": 1000}], "lines[0].quantity"),
        ([{"sku": "MUG-1", "quantity": 1}, {"sku": "MUG-1", "quantity": 2}], "lines[1].sku"),
        ([{"sku": "../x", "quantity": 1}], "lines[0].sku"),
        ([{"sku": "MUG-1", "quantity": 1, "price": 1}], "lines[0].price"),
    ],
)
async def test_bad_cart_lines_are_named(
    client: httpx.AsyncClient, lines: list[dict[str, Any]], field: str
) -> None:
    assert fields(await client.post("/carts", json={"lines": lines}, headers=ALICE)) == [field]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"quantity": -1}, "quantity"),
        ({"quantity": 1000}, "quantity"),
        ({"quantity": "two"}, "quantity"),
        ({}, "quantity"),
        ({"quantity": 1, "note": "x"}, "note"),
    ],
)
async def test_bad_line_quantities_are_named(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    response = await client.put("/carts/c-1/lines/MUG-1", json=body, headers=ALICE)
    assert fields(response) == [field]


async def test_a_malformed_sku_in_the_path_is_named(client: httpx.AsyncClient) -> None:
    response = await client.put("/carts/c-1/lines/-bad", json={"quantity": 1}, headers=ALICE)
    assert fields(response) == ["sku"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"lines": [{"sku": "MUG-1", "quantity": 1}]}, "lines"),
        ({"payment": {"token": "4242424242424242"}}, "payment.token"),
        ({"region": ""}, "region"),
        ({"shipping_method": ""}, "shipping_method"),
        ({"email": "someone@else.example"}, "email"),
    ],
)
async def test_bad_checkouts_are_named(
    client: httpx.AsyncClient, change: dict[str, Any], field: str
) -> None:
    headers = ALICE | {"Idempotency-Key": "k-1"}
    response = await client.post("/carts/c-1/checkout", json=CHECKOUT | change, headers=headers)
    assert fields(response) == [field]


async def test_a_checkout_without_a_key_is_named(client: httpx.AsyncClient) -> None:
    response = await client.post("/carts/c-1/checkout", json=CHECKOUT, headers=ALICE)
    assert fields(response) == ["Idempotency-Key"]


async def test_catalog_unavailable_is_a_503_problem(client: httpx.AsyncClient) -> None:
    body = {"lines": [{"sku": "MUG-1", "quantity": 1}]}
    response = await client.post("/carts", json=body, headers=ALICE)
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "catalog" in response.json()["detail"]
