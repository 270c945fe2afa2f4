"""The returns routes (issue 12) refuse bad input with a 422 naming the field, before any
database: reasons and conditions from fixed sets, positive bounded quantities, no extra fields."""

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from services.orders.main import create_app
from services.orders.settings import OrdersSettings
from tests.support.auth import admin, bearer

LINE: dict[str, Any] = {"sku": "MUG-1", "quantity": 1, "reason": "damaged"}
RECEIVED: dict[str, Any] = {"sku": "MUG-1", "quantity": 1, "condition": "resellable"}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(OrdersSettings(pricing_url="http://127.0.0.1:9"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://orders") as c:
        yield c


def fields(response: httpx.Response) -> list[str]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return [e["field"] for e in response.json()["errors"]]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"reason": "I just <b>hate</b> it"}, "lines[0].reason"),
        ({"reason": None}, "lines[0].reason"),
        ({"quantity": 0}, "lines[0].quantity"),
        ({"quantity": 1001}, "lines[0].quantity"),
        ({"sku": ""}, "lines[0].sku"),
        ({"note": "free text"}, "lines[0].note"),
    ],
)
async def test_a_bad_return_line_is_named(
    client: httpx.AsyncClient, change: dict[str, Any], field: str
) -> None:
    body = {"lines": [LINE | change]}
    response = await client.post("/orders/o-1/returns", json=body, headers=bearer("alice"))
    assert fields(response) == [field]


async def test_a_return_needs_lines(client: httpx.AsyncClient) -> None:
    response = await client.post("/orders/o-1/returns", json={"lines": []}, headers=bearer("a"))
    assert fields(response) == ["lines"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"condition": "meh"}, "lines[0].condition"),
        ({"quantity": -1}, "lines[0].quantity"),
    ],
)
async def test_a_bad_received_line_is_named(
    client: httpx.AsyncClient, change: dict[str, Any], field: str
) -> None:
    body = {"lines": [RECEIVED | change]}
    response = await client.post("/orders/o-1/returns/r-1/receive", json=body, headers=admin())
    assert fields(response) == [field]


async def test_only_an_admin_records_a_receipt(client: httpx.AsyncClient) -> None:
    body = {"lines": [RECEIVED]}
    response = await client.post(
        "/orders/o-1/returns/r-1/receive", json=body, headers=bearer("alice", "customer")
    )
    assert response.status_code == 403
