"""Orders on the real PostgreSQL and Kafka: a NUL in the shipping address (once a 500), a token
holding a card number (once accepted and published), an email other than the customer's own and
a free-text cancellation reason are each a 422 naming the field, and nothing is written to the
orders tables or the outbox (issue 9, items 6 and 8)."""

import uuid
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from tests.integration.orders.conftest import Priced
from tests.support.auth import bearer


def body(p: Priced, **change: Any) -> dict[str, Any]:
    return {
        "lines": [{"sku": p.mug, "quantity": 1}],
        "region": p.region,
        "shipping_address": {"name": "Ada", "city": "Paris"},
        "payment": {"token": "tok_visa"},
    } | change


def named(response: httpx.Response) -> list[str]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return [e["field"] for e in response.json()["errors"]]


async def rows_mentioning(app: FastAPI, needle: str) -> dict[str, int]:
    """How many rows of each orders table (the outbox included) mention `needle`."""
    found = {}
    async with app.state.runtime.db.transaction() as session:
        for table in ("orders", "order_history", "idempotency_keys", "outbox"):
            found[table] = int(
                await session.scalar(
                    text(f"SELECT count(*) FROM {table} t WHERE t::text LIKE :needle"),
                    {"needle": f"%{needle}%"},
                )
                or 0
            )
    return found


NOTHING = {"orders": 0, "order_history": 0, "idempotency_keys": 0, "outbox": 0}


async def place(client: httpx.AsyncClient, who: str, payload: dict[str, Any]) -> httpx.Response:
    headers = bearer(who, "customer", email=f"{who}@example.com")
    return await client.post("/orders", json=payload, headers=headers | {"Idempotency-Key": who})


async def test_a_nul_in_the_shipping_address_is_named_and_nothing_is_written(
    app: FastAPI, client: httpx.AsyncClient, pricing: Priced
) -> None:
    who = f"cust-{uuid.uuid4().hex[:10]}"
    payload = body(pricing, shipping_address={"name": "Ada", "city": "Pa\u0000ris"})
    assert named(await place(client, who, payload)) == ["shipping_address.city"]
    assert await rows_mentioning(app, who) == NOTHING


async def test_a_card_number_token_is_refused_and_never_reaches_the_database_or_the_outbox(
    app: FastAPI, client: httpx.AsyncClient, pricing: Priced
) -> None:
    who = f"cust-{uuid.uuid4().hex[:10]}"
    response = await place(client, who, body(pricing, payment={"token": "tok_4242424242424242"}))
    assert named(response) == ["payment.token"]
    assert "4242424242424242" not in response.text
    assert await rows_mentioning(app, "4242424242424242") == NOTHING
    assert await rows_mentioning(app, who) == NOTHING


async def test_another_address_is_refused_and_the_claim_is_used(
    app: FastAPI, client: httpx.AsyncClient, pricing: Priced
) -> None:
    who = f"cust-{uuid.uuid4().hex[:10]}"
    refused = await place(client, who, body(pricing, email="victim@example.org"))
    assert named(refused) == ["email"]
    assert await rows_mentioning(app, "victim@example.org") == NOTHING
    placed = await place(client, who, body(pricing))
    assert placed.status_code == 202, placed.text
    assert placed.json()["email"] == f"{who}@example.com"


async def test_a_free_text_cancellation_reason_is_refused_and_the_order_is_unchanged(
    app: FastAPI, client: httpx.AsyncClient, pricing: Priced
) -> None:
    who = f"cust-{uuid.uuid4().hex[:10]}"
    placed = await place(client, who, body(pricing))
    assert placed.status_code == 202, placed.text
    order_id = placed.json()["id"]
    headers = bearer(who, "customer")
    response = await client.post(
        f"/orders/{order_id}/cancel", json={"reason": "Click http://evil.example"}, headers=headers
    )
    assert named(response) == ["reason"]
    order = await client.get(f"/orders/{order_id}", headers=headers)
    assert order.json()["cancellation_requested"] is False
    fixed = await client.post(
        f"/orders/{order_id}/cancel", json={"reason": "found_cheaper"}, headers=headers
    )
    assert fixed.status_code == 202 and fixed.json()["cancellation_requested"] is True
