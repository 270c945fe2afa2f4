"""Shipping rates on the real PostgreSQL and Kafka (issue 12): methods per region with exactly one
default (also under concurrent PUTs), weights learnt from catalog events, and quotes with their
shipping line, thresholds, free-shipping promotions and refusals naming `shipping_method`."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from libs.events import topics
from libs.events.catalog import ProductCreated
from services.pricing.main import create_app
from services.pricing.settings import PricingSettings
from tests.integration.pricing.test_pricing import (
    add_rule,
    eur,
    fields,
    quote_when_ready,
    set_price,
    set_tax,
)
from tests.support.auth import admin
from tests.support.kafka import make_event, publish
from tests.support.service import running


@pytest.fixture(scope="module")
def app(migrated_databases: None) -> FastAPI:
    return create_app(PricingSettings())


@pytest.fixture(scope="module")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with running(app) as http:
        yield http


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


WEIGHT_BANDS = [{"up_to": 1000, "amount": 490}, {"up_to": 5000, "amount": 690}]


def method_body(region: str, **kw: Any) -> dict[str, Any]:
    return {
        "region": region,
        "name": "Standard",
        "currency": "EUR",
        "rate": {"by": "weight", "bands": WEIGHT_BANDS},
    } | kw


async def put_method(client: httpx.AsyncClient, code: str, body: dict[str, Any]) -> Any:
    response = await client.put(f"/pricing/shipping-methods/{code}", json=body, headers=admin())
    assert response.status_code == 200, response.text
    return response.json()


async def weighed_product(client: httpx.AsyncClient, amount: int, weight: dict[str, Any]) -> str:
    sku = unique("SKU")
    data = ProductCreated(sku=sku, name=sku, category=unique("cat"), attributes={"weight": weight})
    await publish(make_event("catalog", data, subject=sku), topics.CATALOG)
    await set_price(client, sku, amount)
    return sku


async def test_one_default_per_region_even_when_admins_race(client: httpx.AsyncClient) -> None:
    region = unique("R")
    first = await put_method(client, unique("std"), method_body(region))
    assert first["default"] is True and first["active"] is True
    assert first["rate"] == {"by": "weight", "bands": WEIGHT_BANDS}
    codes = [unique("m") for _ in range(6)]
    answers = await asyncio.gather(
        *(
            client.put(
                f"/pricing/shipping-methods/{code}",
                json=method_body(region, default=True),
                headers=admin(),
            )
            for code in codes
        )
    )
    assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
    listed = await client.get("/pricing/shipping-methods", params={"region": region})
    assert listed.status_code == 200
    items = listed.json()["items"]
    assert len(items) == 7 and sum(m["default"] for m in items) == 1
    assert [m["code"] for m in items] == sorted(m["code"] for m in items)

    page = await client.get("/pricing/shipping-methods", params={"region": region, "limit": 4})
    rest = await client.get(
        "/pricing/shipping-methods",
        params={"region": region, "cursor": page.json()["next_cursor"]},
    )
    assert [m["code"] for m in page.json()["items"] + rest.json()["items"]] == [
        m["code"] for m in items
    ]
    assert rest.json()["next_cursor"] is None

    default = next(m for m in items if m["default"])
    unset = await client.put(
        f"/pricing/shipping-methods/{default['code']}",
        json=method_body(region, default=False),
        headers=admin(),
    )
    assert unset.status_code == 422 and "default" in fields(unset)


async def test_method_input_is_checked_and_admin_only(client: httpx.AsyncClient) -> None:
    region = unique("R")
    body = method_body(region, rate={"by": "weight", "bands": [{"up_to": None, "amount": 1}] * 2})
    bad = await client.put(f"/pricing/shipping-methods/{unique('m')}", json=body, headers=admin())
    assert bad.status_code == 422 and "rate.bands" in fields(bad)
    descending = method_body(
        region,
        rate={"by": "weight", "bands": [{"up_to": 9, "amount": 1}, {"up_to": 3, "amount": 2}]},
    )
    bad = await client.put(
        f"/pricing/shipping-methods/{unique('m')}", json=descending, headers=admin()
    )
    assert bad.status_code == 422 and "rate.bands" in fields(bad)
    bad = await client.put(
        f"/pricing/shipping-methods/{unique('m')}",
        json=method_body(region, rate={"by": "volume", "bands": WEIGHT_BANDS}),
        headers=admin(),
    )
    assert bad.status_code == 422 and "rate.by" in fields(bad)
    anonymous = await client.put(
        f"/pricing/shipping-methods/{unique('m')}", json=method_body(region)
    )
    assert anonymous.status_code == 401
    missing = await client.get(f"/pricing/shipping-methods/{unique('m')}")
    assert missing.status_code == 404


async def test_quotes_carry_the_shipping_line_taxed_and_free_when_due(
    client: httpx.AsyncClient,
) -> None:
    region = unique("R")
    await set_tax(client, region, 1900)
    standard, express, value = unique("std"), unique("exp"), unique("val")
    await put_method(client, standard, method_body(region, free_over=10_000))
    await put_method(
        client,
        express,
        method_body(
            region,
            name="Express",
            rate={"by": "weight", "bands": [{"up_to": None, "amount": 1490}]},
        ),
    )
    await put_method(
        client,
        value,
        method_body(
            region,
            rate={
                "by": "order_value",
                "bands": [{"up_to": 2999, "amount": 390}, {"up_to": None, "amount": 0}],
            },
        ),
    )
    kettle = await weighed_product(client, 2500, {"value": 1.2, "unit": "kg"})
    feather = await weighed_product(client, 100, {"value": 0.5, "unit": "oz"})  # 14 g

    body = {
        "lines": [{"sku": kettle, "quantity": 1}, {"sku": feather, "quantity": 2}],
        "region": region,
    }
    quoted = await quote_when_ready(client, body)
    # 1228 g -> the 690 band; lines 2700 net, tax 19 %: 475 + 38; shipping tax 131.1 -> 131.
    assert quoted["shipping_method"] == standard
    assert quoted["shipping"] == eur(690) and quoted["shipping_tax"] == eur(131)
    assert quoted["tax"] == eur(475 + 38 + 131)
    assert quoted["total"] == eur(2700 + 513 + 690 + 131)
    stored = await client.get(f"/pricing/quotes/{quoted['id']}")
    assert stored.json()["total"] == quoted["total"]

    by_express = await quote_when_ready(client, body | {"shipping_method": express})
    assert by_express["shipping"] == eur(1490) and by_express["shipping_tax"] == eur(283)
    by_value = await quote_when_ready(client, body | {"shipping_method": value})
    assert by_value["shipping"] == eur(390)

    four_kettles = {"lines": [{"sku": kettle, "quantity": 4}], "region": region}
    assert (await quote_when_ready(client, four_kettles))["shipping"] == eur(0)  # 10000: free
    too_heavy = {"lines": [{"sku": kettle, "quantity": 5}], "region": region}  # 6000 g
    refused = await client.post("/pricing/quotes", json=too_heavy)
    assert refused.status_code == 422 and list(fields(refused)) == ["shipping_method"]

    now = datetime.now(UTC)
    await add_rule(
        client,
        {
            "kind": "free_shipping",
            "region": region,
            "methods": [express],
            "min_order_value": 2000,
            "starts_at": (now - timedelta(minutes=1)).isoformat(),
            "ends_at": (now + timedelta(days=1)).isoformat(),
        },
    )
    promoted = await quote_when_ready(client, body | {"shipping_method": express})
    assert promoted["shipping"] == eur(0) and promoted["shipping_tax"] == eur(0)
    assert promoted["total"] == eur(2700 + 513)
    assert (await quote_when_ready(client, body))["shipping"] == eur(690)  # standard: not covered

    for code in (unique("nope"), None):
        asked = body | {"shipping_method": code or "x" * 65}
        refused = await client.post("/pricing/quotes", json=asked)
        assert refused.status_code == 422 and "shipping_method" in fields(refused)


async def test_a_region_without_methods_keeps_v1_totals(client: httpx.AsyncClient) -> None:
    region = unique("R")
    await set_tax(client, region, 2000)
    sku = await weighed_product(client, 1000, {"value": 3, "unit": "lb"})
    quoted = await quote_when_ready(
        client, {"lines": [{"sku": sku, "quantity": 2}], "region": region}
    )
    assert quoted["shipping_method"] is None and quoted["shipping"] == eur(0)
    assert quoted["total"] == eur(2400)
