"""Orders' catalog adapter (carts): a product read into its state, base price and availability,
an unknown sku as None, outages and unreadable or mismatched answers as Unavailable (503)."""

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from libs.events.common import Money
from libs.kit.errors import Unavailable
from services.orders.adapters import HttpCatalog
from services.orders.domain import CatalogProduct

PRODUCT: dict[str, Any] = {
    "sku": "MUG-1",
    "name": "Mug",
    "description": None,
    "category": "kitchen",
    "attributes": {},
    "images": [],
    "status": "active",
    "price": {"amount": 1250, "currency": "EUR"},
    "availability": {"available": 7, "in_stock": True},
    "created_at": "2026-01-01T00:00:00+00:00",
    "updated_at": "2026-01-01T00:00:00+00:00",
}


def catalog_answering(handler: Callable[[httpx.Request], httpx.Response]) -> HttpCatalog:
    catalog = HttpCatalog("http://catalog", 1.0)
    catalog.client = httpx.AsyncClient(
        base_url="http://catalog", transport=httpx.MockTransport(handler)
    )
    return catalog


async def test_a_product_is_read_with_its_state_price_and_availability() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=PRODUCT)

    found = await catalog_answering(answer).product("MUG-1", request_id="req-7")
    assert found == CatalogProduct(
        "MUG-1", True, Money(amount=1250, currency="EUR"), available=7, in_stock=True
    )
    [request] = seen
    assert request.url.path == "/catalog/products/MUG-1"
    assert request.headers["X-Request-ID"] == "req-7"


async def test_a_discontinued_product_without_a_price_is_read_as_such() -> None:
    body = {**PRODUCT, "status": "discontinued", "price": None}
    found = await catalog_answering(lambda _: httpx.Response(200, json=body)).product(
        "MUG-1", request_id="r"
    )
    assert found is not None and (found.active, found.price) == (False, None)


@pytest.mark.parametrize("status", [404, 422])
async def test_an_unknown_sku_is_none(status: int) -> None:
    catalog = catalog_answering(lambda _: httpx.Response(status, json={"status": status}))
    assert await catalog.product("NOPE", request_id="r") is None


async def test_a_sku_is_sent_as_one_path_segment() -> None:
    paths: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.raw_path.decode())
        return httpx.Response(404)

    await catalog_answering(answer).product("a/../b", request_id="r")
    assert paths == ["/catalog/products/a%2F..%2Fb"]


@pytest.mark.parametrize(
    "answer",
    [
        lambda _: httpx.Response(500),
        lambda _: httpx.Response(503),
        lambda _: httpx.Response(200, content=b"not json"),
        lambda _: httpx.Response(200, json={**PRODUCT, "sku": "OTHER"}),
    ],
)
async def test_outages_and_untrustworthy_answers_are_unavailable(
    answer: Callable[[httpx.Request], httpx.Response],
) -> None:
    with pytest.raises(Unavailable):
        await catalog_answering(answer).product("MUG-1", request_id="r")


async def test_an_unreachable_or_unstarted_catalog_is_unavailable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(Unavailable):
        await catalog_answering(refuse).product("MUG-1", request_id="r")
    with pytest.raises(Unavailable):
        await HttpCatalog("http://catalog", 1.0).product("MUG-1", request_id="r")
