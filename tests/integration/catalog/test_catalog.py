"""The catalog service on the real broker and database: products, search and the projections."""

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from libs.events import topics
from libs.events.common import Money
from libs.events.inventory import StockLevelChanged
from libs.events.pricing import PriceChanged
from services.catalog.main import create_app
from tests.support.auth import admin, bearer
from tests.support.eventually import eventually
from tests.support.kafka import TopicTail, make_event, of_type, publish
from tests.support.service import running


@pytest.fixture(scope="module")
async def catalog(migrated_databases: None) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app()) as client:
        yield client


def new_sku() -> str:
    return f"SKU-{uuid.uuid4().hex[:10]}"


async def test_admin_creates_and_updates_a_product_and_subscribers_hear_of_it(
    catalog: httpx.AsyncClient,
) -> None:
    sku = new_sku()
    async with TopicTail(topics.CATALOG) as tail:
        created = await catalog.post(
            "/catalog/products",
            json={"sku": sku, "name": "Mug", "category": "kitchen", "attributes": {"ml": 300}},
            headers=admin(),
        )
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["price"] is None
        assert body["availability"] == {"available": 0, "in_stock": False}
        [event] = await tail.wait_for(of_type("ProductCreated", sku))
        assert event["_key"] == sku and event["data"]["category"] == "kitchen"

        again = await catalog.post(
            "/catalog/products",
            json={"sku": sku, "name": "Other", "category": "kitchen"},
            headers=admin(),
        )
        assert again.status_code == 409
        assert again.headers["content-type"] == "application/problem+json"

        patched = await catalog.patch(
            f"/catalog/products/{sku}", json={"status": "discontinued"}, headers=admin()
        )
        assert patched.status_code == 200 and patched.json()["status"] == "discontinued"
        [update] = await tail.wait_for(of_type("ProductUpdated", sku))
        assert update["data"]["changed"] == ["status"]


async def test_price_and_availability_come_from_other_services_events(
    catalog: httpx.AsyncClient,
) -> None:
    sku = new_sku()
    await catalog.post(
        "/catalog/products", json={"sku": sku, "name": "Pen", "category": "office"}, headers=admin()
    )
    await publish(
        make_event("pricing", PriceChanged(sku=sku, price=Money(amount=249, currency="EUR")), sku),
        topics.PRICING,
    )
    level = StockLevelChanged(sku=sku, on_hand=7, reserved=2, available=5, reason="restock")
    await publish(make_event("inventory", level, sku), topics.INVENTORY)

    async def projected() -> bool:
        product = (await catalog.get(f"/catalog/products/{sku}")).json()
        return bool(
            product["price"] == {"amount": 249, "currency": "EUR"}
            and product["availability"] == {"available": 5, "in_stock": True}
        )

    await eventually(projected, what="price and stock projected")


async def test_search_by_text_and_category_with_cursor_pages(catalog: httpx.AsyncClient) -> None:
    tag = uuid.uuid4().hex[:8]
    category = f"cat-{tag}"
    for i in range(5):
        response = await catalog.post(
            "/catalog/products",
            json={"sku": f"P-{tag}-{i}", "name": f"Widget {tag} {i}", "category": category},
            headers=admin(),
        )
        assert response.status_code == 201
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"category": category, "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await catalog.get("/catalog/products", params=params)).json()
        seen += [p["sku"] for p in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"P-{tag}-{i}" for i in range(5)]
    found = (await catalog.get("/catalog/products", params={"q": f"widget {tag} 3"})).json()
    assert [p["sku"] for p in found["items"]] == [f"P-{tag}-3"]


async def test_bad_requests_are_refused_with_problems(catalog: httpx.AsyncClient) -> None:
    product = {"sku": new_sku(), "name": "X", "category": "c"}
    assert (await catalog.post("/catalog/products", json=product)).status_code == 401
    customer = bearer("carol", "customer")
    assert (
        await catalog.post("/catalog/products", json=product, headers=customer)
    ).status_code == 403
    bad = await catalog.post(
        "/catalog/products", json=product | {"name": "x" * 201}, headers=admin()
    )
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "name"
    assert (await catalog.get(f"/catalog/products/{new_sku()}")).status_code == 404
    assert (await catalog.get("/catalog/products", params={"limit": 500})).status_code == 422
    assert (await catalog.get("/catalog/products", params={"cursor": "%%%"})).status_code == 400
