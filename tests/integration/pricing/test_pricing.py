"""Pricing on the real PostgreSQL and Kafka: it learns products from catalog events, publishes
PriceChanged, and quotes with volume, promotion and group discounts and tax after discount."""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from libs.events import topics
from libs.events.catalog import ProductCreated, ProductStatus, ProductUpdated
from libs.kit.db import processed_events
from services.pricing.main import create_app
from services.pricing.settings import PricingSettings
from tests.support.auth import admin, bearer
from tests.support.eventually import eventually
from tests.support.kafka import TopicTail, make_event, of_type, publish
from tests.support.service import running

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def app(migrated_databases: None) -> FastAPI:
    return create_app(PricingSettings())


@pytest.fixture(scope="module")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with running(app) as http:
        yield http


def new_sku() -> str:
    return f"SKU-{uuid.uuid4().hex[:12]}"


def new_category() -> str:
    """A category of its own, so no other test's category promotion can apply."""
    return f"cat-{uuid.uuid4().hex[:12]}"


async def product_created(
    sku: str,
    category: str | None = None,
    status: ProductStatus = "active",
    at: datetime | None = None,
) -> str:
    data = ProductCreated(sku=sku, name=sku, category=category or new_category(), status=status)
    event = make_event("catalog", data, subject=sku, at=at)
    await publish(event, topics.CATALOG)
    return event.id


async def product_updated(sku: str, status: ProductStatus, at: datetime | None = None) -> str:
    data = ProductUpdated(
        sku=sku, name=sku, category=new_category(), status=status, changed=["status"]
    )
    event = make_event("catalog", data, subject=sku, at=at)
    await publish(event, topics.CATALOG)
    return event.id


async def set_price(
    client: httpx.AsyncClient, sku: str, amount: int, currency: str = "EUR"
) -> httpx.Response:
    response = await client.put(
        f"/pricing/prices/{sku}", json={"amount": amount, "currency": currency}, headers=admin()
    )
    assert response.status_code == 200, response.text
    return response


async def set_tax(client: httpx.AsyncClient, region: str, rate_bps: int) -> None:
    response = await client.put(
        f"/pricing/tax-rates/{region}", json={"rate_bps": rate_bps}, headers=admin()
    )
    assert response.status_code == 200, response.text


async def add_rule(client: httpx.AsyncClient, rule: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/pricing/rules", json=rule, headers=admin())
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def quote_when_ready(
    client: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """Quote once the catalog events have reached pricing's projection."""

    async def attempt() -> dict[str, Any]:
        response = await client.post("/pricing/quotes", json=body, headers=headers or {})
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    return await eventually(attempt, what="quote accepted")


def eur(amount: int) -> dict[str, Any]:
    return {"amount": amount, "currency": "EUR"}


def fields(response: httpx.Response) -> dict[str, str]:
    assert response.headers["content-type"].startswith(PROBLEM), response.text
    return {e["field"]: e["message"] for e in response.json()["errors"]}


async def test_price_changes_are_published_keyed_by_sku_only_when_the_price_changes(
    client: httpx.AsyncClient,
) -> None:
    sku = new_sku()
    async with TopicTail(topics.PRICING) as tail:
        first = await client.put(
            f"/pricing/prices/{sku}",
            json={"amount": 1999, "currency": "EUR"},
            headers={**admin(), "X-Request-ID": f"req-{sku}"},
        )
        assert first.status_code == 200
        assert first.json()["sku"] == sku and first.json()["price"] == eur(1999)
        await set_price(client, sku, 1999)  # the same price again: not a change
        await set_price(client, sku, 2499)
        changes = await tail.wait_for(of_type("PriceChanged", sku), count=2)

    assert len(changes) == 2, "setting an unchanged price published an event"
    created, changed = changes
    assert created["_key"] == sku and created["_topic"] == topics.PRICING
    assert created["specversion"] == "1.0"
    assert created["source"] == "backroom/pricing"
    assert created["subject"] == sku
    assert created["correlationid"] == f"req-{sku}"
    assert created["_headers"]["ce_type"] == "PriceChanged"
    assert created["id"] and created["time"] and created["id"] != changed["id"]
    # `channel` null (issue 13): the base price list.
    base = {"channel": None}
    assert created["data"] == {"sku": sku, "price": eur(1999), "previous": None} | base
    assert changed["data"] == {"sku": sku, "price": eur(2499), "previous": eur(1999)} | base
    assert (await client.get(f"/pricing/prices/{sku}")).json()["price"] == eur(2499)


async def test_quote_applies_the_volume_tier_and_tax_after_discount(
    client: httpx.AsyncClient,
) -> None:
    drill, nails = new_sku(), new_sku()
    region = f"R{uuid.uuid4().hex[:8]}"
    await product_created(drill)
    await product_created(nails)
    await set_price(client, drill, 1999)
    await set_price(client, nails, 500)
    rule = await add_rule(
        client,
        {
            "kind": "volume",
            "sku": drill,
            "tiers": [
                {"min_quantity": 10, "percent_off": 5},
                {"min_quantity": 50, "percent_off": 10},
            ],
        },
    )
    await set_tax(client, region, 2000)

    quote = await quote_when_ready(
        client,
        {
            "lines": [{"sku": drill, "quantity": 12}, {"sku": nails, "quantity": 3}],
            "region": region,
        },
    )

    # drill: gross 23988, 5 % = 1199.4 -> 1199, tax 20 % of 22789 = 4557.8 -> 4558
    # nails: gross 1500, no discount, tax 300
    drill_line, nails_line = quote["lines"]
    assert drill_line == {
        "sku": drill,
        "quantity": 12,
        "unit_price": eur(1999),
        "discount": eur(1199),
        "tax": eur(4558),
        "total": eur(23988 - 1199 + 4558),
        "applied_rule": {"id": rule["id"], "kind": "volume"},
    }
    assert nails_line["discount"] == eur(0) and nails_line["tax"] == eur(300)
    assert nails_line["total"] == eur(1800)
    assert quote["subtotal"] == eur(25488)
    assert quote["discount"] == eur(1199)
    assert quote["tax"] == eur(4858)
    assert quote["total"] == eur(25488 - 1199 + 4858)
    assert quote["region"] == region and quote["currency"] == "EUR"
    created = datetime.fromisoformat(quote["created_at"])
    assert datetime.fromisoformat(quote["expires_at"]) - created == timedelta(seconds=900)

    stored = await client.get(f"/pricing/quotes/{quote['id']}")
    assert stored.status_code == 200 and stored.json() == quote
    assert (await client.get(f"/pricing/quotes/{uuid.uuid4()}")).status_code == 404


async def test_best_single_discount_wins_between_promotion_and_group_price(
    client: httpx.AsyncClient,
) -> None:
    sku = new_sku()
    category = new_category()
    group = f"grp-{uuid.uuid4().hex[:8]}"
    region = f"R{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    await product_created(sku, category=category)
    await set_price(client, sku, 1000)
    await set_tax(client, region, 0)
    promo = await add_rule(
        client,
        {
            "kind": "promotion",
            "category": category,
            "percent_off": 12.5,
            "starts_at": (now - timedelta(hours=1)).isoformat(),
            "ends_at": (now + timedelta(hours=1)).isoformat(),
        },
    )
    await add_rule(  # over already: never applies
        client,
        {
            "kind": "promotion",
            "skus": [sku],
            "percent_off": 90,
            "starts_at": (now - timedelta(hours=2)).isoformat(),
            "ends_at": (now - timedelta(hours=1)).isoformat(),
        },
    )
    group_rule = await add_rule(
        client, {"kind": "customer_group", "group": group, "sku": sku, "amount": 800}
    )
    body = {"lines": [{"sku": sku, "quantity": 2}], "region": region}

    anonymous = await quote_when_ready(client, body)
    assert anonymous["lines"][0]["applied_rule"] == {"id": promo["id"], "kind": "promotion"}
    assert anonymous["discount"] == eur(250) and anonymous["customer_id"] is None

    member = await quote_when_ready(client, body, bearer("alice", "customer", groups=[group]))
    assert member["lines"][0]["applied_rule"] == {"id": group_rule["id"], "kind": "customer_group"}
    assert member["discount"] == eur(400)  # (1000 - 800) * 2, not 400 + 250
    assert member["total"] == eur(1600) and member["customer_id"] == "alice"

    other = await quote_when_ready(client, body, bearer("bob", "customer", groups=["other"]))
    assert other["discount"] == eur(250)


async def test_discontinued_and_unknown_skus_and_regions_cannot_be_quoted(
    client: httpx.AsyncClient,
) -> None:
    sku, never_seen, unpriced = new_sku(), new_sku(), new_sku()
    region = f"R{uuid.uuid4().hex[:8]}"
    await product_created(sku)
    await product_created(unpriced)
    await set_price(client, sku, 1000)
    await set_price(client, never_seen, 1000)  # a price may come before the product
    await set_tax(client, region, 1000)
    await quote_when_ready(client, {"lines": [{"sku": sku, "quantity": 1}], "region": region})

    await product_updated(sku, "discontinued")

    async def refused() -> httpx.Response:
        response = await client.post(
            "/pricing/quotes", json={"lines": [{"sku": sku, "quantity": 1}], "region": region}
        )
        assert response.status_code == 422, response.text
        return response

    assert fields(await eventually(refused)) == {"lines[0].sku": "discontinued"}

    response = await client.post(
        "/pricing/quotes",
        json={
            "lines": [{"sku": never_seen, "quantity": 1}, {"sku": unpriced, "quantity": 1}],
            "region": "NOWHERE",
        },
    )
    assert response.status_code == 422
    errors = fields(response)
    assert errors["lines[0].sku"] == "unknown sku"
    assert errors["lines[1].sku"].startswith("unknown sku")
    assert errors["region"].startswith("unknown region")


async def test_a_replayed_older_catalog_event_does_not_undo_a_newer_one(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    sku = new_sku()
    region = f"R{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    await set_price(client, sku, 1000)
    await set_tax(client, region, 0)
    await product_updated(sku, "discontinued", at=now)
    late = await product_created(sku, status="active", at=now - timedelta(minutes=1))
    runtime = app.state.runtime

    async def late_event_handled() -> bool:
        async with runtime.db.transaction() as session:
            return bool(
                await session.scalar(
                    select(processed_events.c.event_id).where(processed_events.c.event_id == late)
                )
            )

    await eventually(late_event_handled, what="late ProductCreated handled")
    response = await client.post(
        "/pricing/quotes", json={"lines": [{"sku": sku, "quantity": 1}], "region": region}
    )
    assert response.status_code == 422 and fields(response) == {"lines[0].sku": "discontinued"}


async def test_bad_input_is_a_problem_naming_the_field(client: httpx.AsyncClient) -> None:
    sku, usd = new_sku(), new_sku()
    region = f"R{uuid.uuid4().hex[:8]}"
    await product_created(sku)
    await product_created(usd)
    await set_price(client, sku, 100)
    await set_price(client, usd, 100, "USD")
    await set_tax(client, region, 0)
    await quote_when_ready(client, {"lines": [{"sku": usd, "quantity": 1}], "region": region})

    cases: list[tuple[str, str, dict[str, Any], str]] = [
        ("PUT", f"/pricing/prices/{sku}", {"amount": -1, "currency": "EUR"}, "amount"),
        ("PUT", f"/pricing/prices/{sku}", {"amount": 1, "currency": "euro"}, "currency"),
        ("PUT", f"/pricing/tax-rates/{region}", {"rate_bps": 10001}, "rate_bps"),
        ("POST", "/pricing/rules", {"kind": "discount"}, "kind"),
        (
            "POST",
            "/pricing/rules",
            {"kind": "volume", "sku": sku, "tiers": [{"min_quantity": 1, "percent_off": 101}]},
            "tiers[0].percent_off",
        ),
        (
            "POST",
            "/pricing/rules",
            {
                "kind": "promotion",
                "skus": [sku],
                "percent_off": 5,
                "starts_at": "2026-01-02T00:00:00Z",
                "ends_at": "2026-01-01T00:00:00Z",
            },
            "ends_at",
        ),
        (
            "POST",
            "/pricing/quotes",
            {"lines": [{"sku": sku, "quantity": 0}], "region": region},
            "lines[0].quantity",
        ),
        ("POST", "/pricing/quotes", {"lines": [], "region": region}, "lines"),
        (
            "POST",
            "/pricing/quotes",
            {"lines": [{"sku": sku, "quantity": 1}, {"sku": sku, "quantity": 2}], "region": region},
            "lines[1].sku",
        ),
        (
            "POST",
            "/pricing/quotes",
            {"lines": [{"sku": sku, "quantity": 1}, {"sku": usd, "quantity": 1}], "region": region},
            "lines[1].sku",
        ),
    ]
    for method, url, body, field in cases:
        response = await client.request(method, url, json=body, headers=admin())
        assert response.status_code == 422, (url, body, response.text)
        problem = response.json()
        assert problem["status"] == 422 and problem["title"] and problem["detail"]
        assert field in fields(response), (body, problem)


async def test_rules_can_be_listed_and_deleted_and_are_unique_per_sku(
    client: httpx.AsyncClient,
) -> None:
    sku = new_sku()
    volume = {"kind": "volume", "sku": sku, "tiers": [{"min_quantity": 5, "percent_off": 2.5}]}
    created = await add_rule(client, volume)
    assert {k: created[k] for k in volume} == volume and created["id"]
    duplicate = await client.post("/pricing/rules", json=volume, headers=admin())
    assert duplicate.status_code == 409 and created["id"] in duplicate.json()["detail"]
    group_rules = [
        await add_rule(client, {"kind": "customer_group", "group": g, "sku": sku, "amount": 1})
        for g in ("a", "b")
    ]

    seen, cursor = [], None
    while True:
        page = await client.get(
            "/pricing/rules",
            params={"sku": sku, "limit": 2, **({"cursor": cursor} if cursor else {})},
            headers=admin(),
        )
        assert page.status_code == 200
        seen += [r["id"] for r in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == [created["id"]] + [r["id"] for r in group_rules]

    assert (
        await client.delete(f"/pricing/rules/{created['id']}", headers=admin())
    ).status_code == 204
    assert (
        await client.delete(f"/pricing/rules/{created['id']}", headers=admin())
    ).status_code == 404
    listed = await client.get(
        "/pricing/rules", params={"sku": sku, "kind": "volume"}, headers=admin()
    )
    assert listed.json() == {"items": [], "next_cursor": None}


async def test_admin_routes_need_an_admin_token(client: httpx.AsyncClient) -> None:
    sku = new_sku()
    customer = bearer("mallory", "customer")
    routes: list[tuple[str, str, dict[str, Any] | None]] = [
        ("PUT", f"/pricing/prices/{sku}", {"amount": 1, "currency": "EUR"}),
        (
            "POST",
            "/pricing/rules",
            {"kind": "customer_group", "group": "g", "sku": sku, "amount": 1},
        ),
        ("DELETE", f"/pricing/rules/{uuid.uuid4()}", None),
        ("GET", "/pricing/rules", None),
        ("PUT", "/pricing/tax-rates/DE", {"rate_bps": 1900}),
    ]
    for method, url, body in routes:
        anonymous = await client.request(method, url, json=body)
        assert anonymous.status_code == 401, (method, url)
        assert anonymous.headers["content-type"].startswith(PROBLEM)
        bad = await client.request(method, url, json=body, headers={"Authorization": "Bearer junk"})
        assert bad.status_code == 401, (method, url)
        forbidden = await client.request(method, url, json=body, headers=customer)
        assert forbidden.status_code == 403, (method, url)
    assert (await client.get(f"/pricing/prices/{sku}")).status_code == 404
