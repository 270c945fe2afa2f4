"""Catalog on the real PostgreSQL: a NUL (which PostgreSQL refuses in text and jsonb, once a 500)
or another control character in any field is a 422 naming it, and nothing is written; the
product description is the one multi-line field (issue 9, item 6)."""

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from services.catalog.main import create_app
from tests.support.auth import admin
from tests.support.service import running


@pytest.fixture(scope="module")
async def catalog(migrated_databases: None) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app()) as client:
        yield client


def product(sku: str, **change: Any) -> dict[str, Any]:
    return {"sku": sku, "name": "Mug", "category": "kitchen"} | change


def named(response: httpx.Response) -> list[str]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return [e["field"] for e in response.json()["errors"]]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": "Mug\u0000"}, "name"),
        ({"category": "kit\u0000chen"}, "category"),
        ({"attributes": {"colour": "bl\u0000ue"}}, "attributes.colour"),
        ({"attributes": {"col\u0000our": "blue"}}, "attributes"),
        ({"attributes": {"sizes": [1, {"x": "\u0085"}]}}, "attributes.sizes[1].x"),
        ({"description": "a\u0000b"}, "description"),
    ],
)
async def test_a_control_character_anywhere_is_named_and_nothing_is_written(
    catalog: httpx.AsyncClient, change: dict[str, Any], field: str
) -> None:
    sku = f"SKU-{uuid.uuid4().hex[:8]}"
    response = await catalog.post("/catalog/products", json=product(sku, **change), headers=admin())
    assert named(response) == [field]
    assert (await catalog.get(f"/catalog/products/{sku}")).status_code == 404


async def test_a_non_finite_number_in_the_attributes_is_refused(catalog: httpx.AsyncClient) -> None:
    sku = f"SKU-{uuid.uuid4().hex[:8]}"
    raw = (
        b'{"sku": "' + sku.encode() + b'", "name": "M", "category": "k", "attributes": {"w": NaN}}'
    )
    response = await catalog.post(
        "/catalog/products",
        content=raw,
        headers=admin() | {"Content-Type": "application/json"},
    )
    assert named(response) == ["attributes.w"]
    assert (await catalog.get(f"/catalog/products/{sku}")).status_code == 404


async def test_the_description_may_span_lines(catalog: httpx.AsyncClient) -> None:
    sku = f"SKU-{uuid.uuid4().hex[:8]}"
    text = "Stoneware.\r\n\tDishwasher safe.\nMade in Portugal."
    created = await catalog.post(
        "/catalog/products", json=product(sku, description=text), headers=admin()
    )
    assert created.status_code == 201, created.text
    assert created.json()["description"] == text
    patched = await catalog.patch(
        f"/catalog/products/{sku}", json={"name": "Mug\u0001"}, headers=admin()
    )
    assert named(patched) == ["name"]
    assert (await catalog.get(f"/catalog/products/{sku}")).json()["name"] == "Mug"


async def test_query_and_path_parameters_are_checked(catalog: httpx.AsyncClient) -> None:
    assert named(await catalog.get("/catalog/products?q=mu%00g")) == ["q"]
    assert named(await catalog.get("/catalog/products/SKU%00-1")) == ["sku"]
