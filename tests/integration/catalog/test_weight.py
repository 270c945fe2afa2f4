"""Product weights through catalog's routes (issue 12): a well-formed `attributes.weight` is kept
and published, a bad one is a 422 naming `attributes.weight.unit` / `.value`, with nothing
written."""

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from libs.events import topics
from services.catalog.main import create_app
from tests.support.auth import admin
from tests.support.kafka import TopicTail, of_type
from tests.support.service import running


@pytest.fixture(scope="module")
async def catalog(migrated_databases: None) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app()) as client:
        yield client


def product(sku: str, weight: object) -> dict[str, object]:
    return {"sku": sku, "name": "Kettle", "category": "kitchen", "attributes": {"weight": weight}}


def fields(response: httpx.Response) -> list[str]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return [e["field"] for e in response.json()["errors"]]


async def test_a_weight_is_kept_and_published_and_a_bad_one_named(
    catalog: httpx.AsyncClient,
) -> None:
    sku = f"SKU-{uuid.uuid4().hex[:10]}"
    bad_unit = await catalog.post(
        "/catalog/products", json=product(sku, {"value": 1, "unit": "st"}), headers=admin()
    )
    assert fields(bad_unit) == ["attributes.weight.unit"]
    bad_value = await catalog.post(
        "/catalog/products", json=product(sku, {"value": 0, "unit": "kg"}), headers=admin()
    )
    assert fields(bad_value) == ["attributes.weight.value"]
    assert (await catalog.get(f"/catalog/products/{sku}")).status_code == 404

    async with TopicTail(topics.CATALOG) as tail:
        weight = {"value": 1.25, "unit": "kg"}
        created = await catalog.post(
            "/catalog/products", json=product(sku, weight), headers=admin()
        )
        assert created.status_code == 201, created.text
        assert created.json()["attributes"]["weight"] == weight
        [event] = await tail.wait_for(of_type("ProductCreated", sku))
        assert event["data"]["attributes"]["weight"] == weight

    patched = await catalog.patch(
        f"/catalog/products/{sku}",
        json={"attributes": {"weight": {"value": -1, "unit": "oz"}}},
        headers=admin(),
    )
    assert fields(patched) == ["attributes.weight.value"]
    unchanged = await catalog.get(f"/catalog/products/{sku}")
    assert unchanged.json()["attributes"]["weight"] == weight
    lighter = await catalog.patch(
        f"/catalog/products/{sku}",
        json={"attributes": {"weight": {"value": 900, "unit": "g"}}},
        headers=admin(),
    )
    assert lighter.status_code == 200
    assert lighter.json()["attributes"]["weight"] == {"value": 900, "unit": "g"}
