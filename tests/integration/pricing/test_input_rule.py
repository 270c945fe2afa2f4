"""Pricing on the real PostgreSQL: currencies must be ISO 4217 codes (`AAA` was accepted), and a
control character in a price, rule or quote is a 422 naming the field; nothing is written
(issue 9, item 6)."""

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from services.pricing.main import create_app
from services.pricing.settings import PricingSettings
from tests.support.auth import admin
from tests.support.service import running


@pytest.fixture(scope="module")
def app(migrated_databases: None) -> FastAPI:
    return create_app(PricingSettings())


@pytest.fixture(scope="module")
async def pricing(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with running(app) as client:
        yield client


async def count(app: FastAPI, table: str) -> int:
    async with app.state.runtime.db.transaction() as session:
        return int(await session.scalar(text(f"SELECT count(*) FROM {table}")) or 0)


def named(response: httpx.Response) -> list[str]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return [e["field"] for e in response.json()["errors"]]


def new_sku() -> str:
    return f"SKU-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("currency", ["AAA", "XXX", "XTS", "HRK"])
async def test_a_price_in_an_unknown_currency_is_refused(
    pricing: httpx.AsyncClient, currency: str
) -> None:
    sku = new_sku()
    response = await pricing.put(
        f"/pricing/prices/{sku}", json={"amount": 100, "currency": currency}, headers=admin()
    )
    assert named(response) == ["currency"]
    assert "ISO 4217" in response.json()["errors"][0]["message"]
    assert (await pricing.get(f"/pricing/prices/{sku}")).status_code == 404


async def test_iso_currencies_are_accepted(pricing: httpx.AsyncClient) -> None:
    for currency in ("EUR", "JPY", "CHF"):
        response = await pricing.put(
            f"/pricing/prices/{new_sku()}",
            json={"amount": 100, "currency": currency},
            headers=admin(),
        )
        assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        (
            {
                "kind": "promotion",
                "category": "tea\u0000",
                "percent_off": 10,
                "starts_at": "2026-01-01T00:00:00Z",
                "ends_at": "2027-01-01T00:00:00Z",
            },
            "category",
        ),
        ({"kind": "customer_group", "group": "vip\u0000", "sku": "S-1", "amount": 1}, "group"),
        (
            {
                "kind": "volume",
                "sku": "S-1",
                "tiers": [{"min_quantity": 1, "percent_off": 5, "x\u0001": 1}],
            },
            "tiers[0]",
        ),
    ],
)
async def test_a_control_character_in_a_rule_is_named_and_no_rule_is_stored(
    app: FastAPI, pricing: httpx.AsyncClient, rule: dict[str, Any], field: str
) -> None:
    before = await count(app, "rules")
    response = await pricing.post("/pricing/rules", json=rule, headers=admin())
    assert named(response) == [field]
    assert await count(app, "rules") == before


async def test_a_control_character_in_a_quote_is_named(pricing: httpx.AsyncClient) -> None:
    body = {"lines": [{"sku": "S\u0000-1", "quantity": 1}], "region": "FR"}
    assert named(await pricing.post("/pricing/quotes", json=body)) == ["lines[0].sku"]
    assert named(await pricing.get("/pricing/prices/S%00-1")) == ["sku"]
