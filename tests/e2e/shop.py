"""A shopper's and an operator's moves through the gateway, for the e2e tests."""

import asyncio
import uuid
from typing import Any

import httpx

from tests.support.auth import admin, bearer
from tests.support.eventually import eventually

REGION = "E2E-LAND"
TAX_BPS = 2000
TERMINAL = {"confirmed", "rejected", "cancelled"}


async def ensure_region(gw: httpx.AsyncClient) -> None:
    response = await gw.put(
        f"/pricing/tax-rates/{REGION}", json={"rate_bps": TAX_BPS}, headers=admin()
    )
    assert response.status_code in (200, 201), response.text


async def new_product(
    gw: httpx.AsyncClient,
    *,
    stock: int,
    price: int = 1000,
    reorder_point: int = 0,
    category: str = "e2e",
) -> str:
    """A product that is on sale: in the catalog, priced, stocked, and known to pricing."""
    sku = f"E2E-{uuid.uuid4().hex[:10].upper()}"
    created = await gw.post(
        "/catalog/products",
        json={"sku": sku, "name": f"Test product {sku}", "category": category},
        headers=admin(),
    )
    assert created.status_code == 201, created.text
    priced = await gw.put(
        f"/pricing/prices/{sku}", json={"amount": price, "currency": "EUR"}, headers=admin()
    )
    assert priced.status_code == 200, priced.text
    stocked = await gw.put(
        f"/inventory/items/{sku}",
        json={"on_hand": stock, "reorder_point": reorder_point},
        headers=admin(),
    )
    assert stocked.status_code in (200, 201), stocked.text
    await ensure_region(gw)

    async def quotable() -> bool:
        quote = await gw.post(
            "/pricing/quotes", json={"lines": [{"sku": sku, "quantity": 1}], "region": REGION}
        )
        return quote.status_code == 201

    await eventually(quotable, what=f"pricing knows {sku}")
    return sku


def order_body(
    lines: list[tuple[str, int]], token: str = "tok_visa", **extra: Any
) -> dict[str, Any]:
    return {
        "lines": [{"sku": sku, "quantity": qty} for sku, qty in lines],
        "region": REGION,
        "shipping_address": {"name": "Test Shopper", "street": "1 Test Way", "city": "Testville"},
        "payment": {"token": token},
        **extra,
    }


async def place_order(
    gw: httpx.AsyncClient,
    customer: str,
    lines: list[tuple[str, int]],
    token: str = "tok_visa",
    key: str | None = None,
    request_id: str | None = None,
) -> httpx.Response:
    headers = bearer(customer, "customer", email=f"{customer}@shoppers.test") | {
        "Idempotency-Key": key or uuid.uuid4().hex
    }
    if request_id:
        headers["X-Request-ID"] = request_id
    return await gw.post("/orders", json=order_body(lines, token), headers=headers)


async def order(gw: httpx.AsyncClient, order_id: str) -> dict[str, Any]:
    response = await gw.get(f"/orders/{order_id}", headers=admin())
    assert response.status_code == 200, response.text
    return dict(response.json())


async def settled(gw: httpx.AsyncClient, order_id: str, timeout: float = 40.0) -> dict[str, Any]:
    """Wait until the order has left `pending`; returns it."""

    async def probe() -> dict[str, Any] | None:
        current = await order(gw, order_id)
        return current if current["status"] in TERMINAL else None

    return await eventually(probe, timeout=timeout, interval=0.2, what=f"order {order_id} settled")


async def stock(gw: httpx.AsyncClient, sku: str) -> dict[str, Any]:
    response = await gw.get(f"/inventory/items/{sku}")
    assert response.status_code == 200, response.text
    return dict(response.json())


async def payments(gw: httpx.AsyncClient, order_id: str) -> list[dict[str, Any]]:
    response = await gw.get("/payments", params={"order_id": order_id}, headers=admin())
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


async def notifications(gw: httpx.AsyncClient, order_id: str) -> list[dict[str, Any]]:
    response = await gw.get("/notifications", params={"order_id": order_id}, headers=admin())
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


async def gather_orders(
    gw: httpx.AsyncClient, customers: list[str], lines: list[tuple[str, int]]
) -> list[httpx.Response]:
    return list(await asyncio.gather(*(place_order(gw, c, lines) for c in customers)))


def eur(amount: int) -> dict[str, Any]:
    return {"amount": amount, "currency": "EUR"}


async def admin_put(gw: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """An operator's PUT (prices, tax rates, stock, shipping methods) that must succeed."""
    response = await gw.put(path, json=body, headers=admin())
    assert response.status_code in (200, 201), response.text
    return dict(response.json())
