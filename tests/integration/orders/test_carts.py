"""Carts on the real PostgreSQL and Kafka, with real catalog and pricing services serving HTTP:
lines checked and priced live through catalog, concurrent line changes never losing a line, the
checkout placing the order through POST /orders' use case and closing the cart in its transaction
(replays, conflicts, a double checkout), and the abandonment sweep emitting once across sweepers."""

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from libs.events import topics
from libs.events.inventory import StockLevelChanged
from libs.kit.transactions import DatabaseUnitOfWork
from services.catalog.main import create_app as create_catalog_app
from services.catalog.settings import CatalogSettings
from services.orders import service
from services.orders.db import Store
from services.orders.main import create_app
from services.orders.settings import OrdersSettings
from tests.integration.orders.conftest import Priced
from tests.support.auth import admin, bearer
from tests.support.eventually import eventually
from tests.support.kafka import TopicTail, make_event, of_type, publish
from tests.support.service import running

PROBLEM = "application/problem+json"


@dataclass(frozen=True)
class Shelf:
    """Catalog products these tests sell: `mug` (12.50, 5 available), `tea` (4.99, none in
    stock), `old` (discontinued), all priced by pricing for `region`."""

    catalog_url: str
    mug: str
    tea: str
    old: str
    region: str


async def _serve(app: FastAPI) -> tuple[uvicorn.Server, "asyncio.Task[None]", socket.socket, str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", ws="none"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))

    async def started() -> bool:
        return server.started

    await eventually(started, what="catalog started")
    return server, serving, sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture(scope="module")
async def shelf(pricing: Priced) -> AsyncIterator[Shelf]:
    server, serving, sock, url = await _serve(create_catalog_app(CatalogSettings()))
    try:
        tag = uuid.uuid4().hex[:8]
        found = Shelf(url, f"CMUG-{tag}", f"CTEA-{tag}", f"COLD-{tag}", pricing.region)
        await _stock_shelf(found, pricing.url)
        yield found
    finally:
        server.should_exit = True
        await serving
        sock.close()


async def _stock_shelf(shelf: Shelf, pricing_url: str) -> None:
    async with (
        httpx.AsyncClient(base_url=shelf.catalog_url) as catalog,
        httpx.AsyncClient(base_url=pricing_url) as pricing,
    ):
        for sku, amount, available in (
            (shelf.mug, 1250, 5),
            (shelf.tea, 499, 0),
            (shelf.old, 999, 3),
        ):
            created = await catalog.post(
                "/catalog/products",
                json={"sku": sku, "name": sku, "category": "kitchen"},
                headers=admin(),
            )
            assert created.status_code == 201, created.text
            level = StockLevelChanged(
                sku=sku, on_hand=available, reserved=0, available=available, reason="restock"
            )
            await publish(make_event("inventory", level, subject=sku), topics.INVENTORY)

            async def priced(sku: str = sku, amount: int = amount) -> bool:
                # Pricing learns the product from catalog's ProductCreated first.
                response = await pricing.put(
                    f"/pricing/prices/{sku}",
                    json={"amount": amount, "currency": "EUR"},
                    headers=admin(),
                )
                return response.status_code == 200

            await eventually(priced, timeout=30, what=f"pricing priced {sku}")

        async def projected() -> bool:
            for sku, available in ((shelf.mug, 5), (shelf.tea, 0), (shelf.old, 3)):
                product = (await catalog.get(f"/catalog/products/{sku}")).json()
                if (
                    product.get("price") is None
                    or product["availability"]["available"] != available
                ):
                    return False
            return True

        await eventually(projected, timeout=30, what="catalog shows prices and stock")
        retired = await catalog.patch(
            f"/catalog/products/{shelf.old}", json={"status": "discontinued"}, headers=admin()
        )
        assert retired.status_code == 200, retired.text


@pytest.fixture(scope="module")
def carts_app(pricing: Priced, shelf: Shelf) -> FastAPI:
    return create_app(
        OrdersSettings(
            pricing_url=pricing.url, catalog_url=shelf.catalog_url, relay_poll_interval_s=0.5
        )
    )


@pytest.fixture(scope="module")
async def http(carts_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with running(carts_app) as client:
        yield client


def customer() -> str:
    return f"cart-{uuid.uuid4().hex[:10]}"


def as_customer(who: str) -> dict[str, str]:
    return bearer(who, "customer", email=f"{who}@example.com")


async def new_cart(
    http: httpx.AsyncClient, who: str, lines: list[tuple[str, int]] | None = None
) -> dict[str, Any]:
    body = {"lines": [{"sku": s, "quantity": q} for s, q in lines]} if lines else None
    response = await http.post("/carts", json=body, headers=as_customer(who))
    assert response.status_code == 201, response.text
    cart: dict[str, Any] = response.json()
    return cart


async def put_line(
    http: httpx.AsyncClient, who: str, cart_id: str, sku: str, quantity: int
) -> httpx.Response:
    return await http.put(
        f"/carts/{cart_id}/lines/{sku}", json={"quantity": quantity}, headers=as_customer(who)
    )


def checkout_body(shelf: Shelf, token: str = "tok_visa") -> dict[str, Any]:
    return {
        "region": shelf.region,
        "shipping_address": {"name": "Ada Lovelace", "city": "Paris"},
        "payment": {"token": token},
    }


async def checkout(
    http: httpx.AsyncClient, who: str, cart_id: str, body: dict[str, Any], key: str
) -> httpx.Response:
    headers = as_customer(who) | {"Idempotency-Key": key}
    return await http.post(f"/carts/{cart_id}/checkout", json=body, headers=headers)


def live(cart: dict[str, Any]) -> list[tuple[str, int, int | None, int, bool, bool]]:
    return [
        (
            ln["sku"],
            ln["quantity"],
            ln["unit_price"]["amount"] if ln["unit_price"] else None,
            ln["available"],
            ln["in_stock"],
            ln["short"],
        )
        for ln in cart["lines"]
    ]


def fields(response: httpx.Response) -> list[str]:
    return [e["field"] for e in response.json()["errors"]]


async def test_lines_are_checked_against_catalog_and_shown_with_live_price_and_stock(
    http: httpx.AsyncClient, shelf: Shelf
) -> None:
    who = customer()
    cart = await new_cart(http, who)
    assert (cart["status"], cart["lines"], cart["subtotal"]) == ("open", [], None)

    assert (await put_line(http, who, cart["id"], shelf.mug, 7)).status_code == 200
    response = await put_line(http, who, cart["id"], shelf.tea, 2)
    assert response.status_code == 200, response.text
    after = response.json()
    # 7 mugs with 5 available: kept, flagged short; tea is out of stock.
    assert live(after) == [
        (shelf.mug, 7, 1250, 5, True, True),
        (shelf.tea, 2, 499, 0, False, True),
    ]
    assert after["subtotal"] == {"amount": 7 * 1250 + 2 * 499, "currency": "EUR"}
    assert after["lines"][0]["line_total"] == {"amount": 8750, "currency": "EUR"}

    for sku, message in (
        ("NOPE-" + uuid.uuid4().hex[:6], "unknown sku"),
        (shelf.old, "discontinued"),
    ):
        refused = await put_line(http, who, cart["id"], sku, 1)
        assert refused.status_code == 422 and refused.headers["content-type"] == PROBLEM
        assert fields(refused) == ["sku"] and message in refused.text
    too_many = await put_line(http, who, cart["id"], shelf.mug, 1000)
    assert too_many.status_code == 422 and "quantity" in fields(too_many)[0]

    removed = await put_line(http, who, cart["id"], shelf.mug, 0)
    assert [ln["sku"] for ln in removed.json()["lines"]] == [shelf.tea]
    read = await http.get(f"/carts/{cart['id']}", headers=as_customer(who))
    assert read.status_code == 200 and live(read.json()) == [(shelf.tea, 2, 499, 0, False, True)]


async def test_a_cart_created_with_an_unknown_sku_is_refused_naming_the_line(
    http: httpx.AsyncClient, shelf: Shelf
) -> None:
    body = {"lines": [{"sku": shelf.mug, "quantity": 1}, {"sku": "NOPE-X1", "quantity": 1}]}
    refused = await http.post("/carts", json=body, headers=as_customer(customer()))
    assert refused.status_code == 422 and fields(refused) == ["lines[1].sku"]


async def test_another_customers_cart_is_not_found_and_an_admin_can_read_it(
    http: httpx.AsyncClient, shelf: Shelf
) -> None:
    who = customer()
    cart = await new_cart(http, who, [(shelf.mug, 1)])
    other = as_customer(customer())
    assert (await http.get(f"/carts/{cart['id']}", headers=other)).status_code == 404
    assert (await put_line(http, customer(), cart["id"], shelf.mug, 2)).status_code == 404
    assert (await http.get(f"/carts/{cart['id']}", headers=admin())).status_code == 200
    assert (await http.get("/carts/nope", headers=as_customer(who))).status_code == 404
    assert (await http.post("/carts")).status_code == 401


async def test_concurrent_line_changes_never_lose_a_line(
    http: httpx.AsyncClient, shelf: Shelf
) -> None:
    who = customer()
    for _ in range(5):
        cart = await new_cart(http, who)
        answers = await asyncio.gather(
            put_line(http, who, cart["id"], shelf.mug, 2),
            put_line(http, who, cart["id"], shelf.tea, 3),
        )
        assert [a.status_code for a in answers] == [200, 200]
        read = (await http.get(f"/carts/{cart['id']}", headers=as_customer(who))).json()
        assert sorted((ln["sku"], ln["quantity"]) for ln in read["lines"]) == sorted(
            [(shelf.mug, 2), (shelf.tea, 3)]
        )


async def test_checkout_places_the_carts_order_and_closes_it_with_replay_and_conflicts(
    http: httpx.AsyncClient, shelf: Shelf
) -> None:
    who = customer()
    cart = await new_cart(http, who, [(shelf.mug, 2), (shelf.tea, 1)])
    key = uuid.uuid4().hex
    async with TopicTail(topics.ORDERS) as tail:
        placed = await checkout(http, who, cart["id"], checkout_body(shelf), key)
        assert placed.status_code == 202, placed.text
        order = placed.json()
        assert order["status"] == "pending" and order["customer_id"] == who
        # Priced by pricing exactly as POST /orders: 2 x 12.50 + 4.99, 20 % tax.
        assert [(ln["sku"], ln["quantity"]) for ln in order["lines"]] == [
            (shelf.mug, 2),
            (shelf.tea, 1),
        ]
        assert order["total"] == {"amount": 3599, "currency": "EUR"}
        await tail.wait_for(of_type("OrderPlaced", order["id"]))

    closed = (await http.get(f"/carts/{cart['id']}", headers=as_customer(who))).json()
    assert (closed["status"], closed["order_id"]) == ("checked_out", order["id"])
    fetched = await http.get(f"/orders/{order['id']}", headers=as_customer(who))
    assert fetched.json()["id"] == order["id"]

    again = await checkout(http, who, cart["id"], checkout_body(shelf), key)
    assert again.status_code == 200 and again.json()["id"] == order["id"]
    other_body = await checkout(http, who, cart["id"], checkout_body(shelf, "tok_other"), key)
    assert other_body.status_code == 409
    second = await checkout(http, who, cart["id"], checkout_body(shelf), uuid.uuid4().hex)
    assert second.status_code == 409 and "already checked out" in second.text
    changed = await put_line(http, who, cart["id"], shelf.mug, 1)
    assert changed.status_code == 409


async def test_checkout_refuses_an_empty_cart_and_a_missing_key(
    http: httpx.AsyncClient, shelf: Shelf
) -> None:
    who = customer()
    cart = await new_cart(http, who)
    empty = await checkout(http, who, cart["id"], checkout_body(shelf), uuid.uuid4().hex)
    assert empty.status_code == 422 and fields(empty) == ["lines"]
    no_key = await http.post(
        f"/carts/{cart['id']}/checkout", json=checkout_body(shelf), headers=as_customer(who)
    )
    assert no_key.status_code == 422 and fields(no_key) == ["Idempotency-Key"]


async def test_two_concurrent_checkouts_of_one_cart_place_one_order(
    http: httpx.AsyncClient, shelf: Shelf
) -> None:
    who = customer()
    cart = await new_cart(http, who, [(shelf.mug, 1)])
    answers = await asyncio.gather(
        *(checkout(http, who, cart["id"], checkout_body(shelf), uuid.uuid4().hex) for _ in range(3))
    )
    assert sorted(a.status_code for a in answers) == [202, 409, 409]
    [won] = [a.json() for a in answers if a.status_code == 202]
    listed = (await http.get("/orders", headers=as_customer(who))).json()["items"]
    assert [o["id"] for o in listed] == [won["id"]]
    closed = (await http.get(f"/carts/{cart['id']}", headers=as_customer(who))).json()
    assert closed["order_id"] == won["id"]


async def test_the_abandonment_sweep_reports_each_idle_cart_once_across_sweepers(
    http: httpx.AsyncClient, carts_app: FastAPI, shelf: Shelf
) -> None:
    uow = DatabaseUnitOfWork(carts_app.state.runtime.db, "orders", Store)
    # Whatever earlier tests left idle is reported now, so only this test's carts remain.
    await service.abandon_idle_carts(uow, datetime.now(UTC), idle_after_s=0, limit=10_000)
    who = customer()
    first = await new_cart(http, who, [(shelf.mug, 2)])
    second = await new_cart(http, who, [(shelf.tea, 1)])
    await new_cart(http, who)  # empty: never reported
    later = datetime.now(UTC) + timedelta(hours=2)

    # One sweeper holds the oldest cart; the other skips it and takes the next.
    async with uow() as holding:
        held = await holding.store.carts.mark_abandoned(later - timedelta(hours=1), later, 1)
        async with uow() as other:
            taken = await other.store.carts.mark_abandoned(later - timedelta(hours=1), later, 10)
    assert [c.id for c in held] == [first["id"]]
    assert [c.id for c in taken] == [second["id"]]

    # Cart changes start new idle periods; two sweepers at once report each cart once.
    assert (await put_line(http, who, first["id"], shelf.mug, 3)).status_code == 200
    assert (await put_line(http, who, second["id"], shelf.tea, 2)).status_code == 200
    ids = {first["id"], second["id"]}
    async with TopicTail(topics.ORDERS) as tail:
        counts = await asyncio.gather(
            *(service.abandon_idle_carts(uow, later, idle_after_s=3600, limit=1) for _ in range(4))
        )
        assert sum(counts) == 2
        assert await service.abandon_idle_carts(uow, later, idle_after_s=3600, limit=10) == 0
        events = await tail.wait_for(
            lambda e: e.get("type") == "CartAbandoned" and e.get("subject") in ids, count=2
        )
        await asyncio.sleep(1)
        await tail.poll()
        events = tail.events(lambda e: e.get("type") == "CartAbandoned" and e.get("subject") in ids)
    assert sorted(e["subject"] for e in events) == sorted(ids)
    by_cart = {e["subject"]: e for e in events}
    mugs = by_cart[first["id"]]
    assert mugs["_key"] == first["id"] and mugs["_topic"] == topics.ORDERS
    assert mugs["data"]["lines"] == [{"sku": shelf.mug, "quantity": 3}]
    assert mugs["data"]["subtotal"] == {"amount": 3750, "currency": "EUR"}
    assert mugs["data"]["email"] == f"{who}@example.com"
    read = (await http.get(f"/carts/{first['id']}", headers=as_customer(who))).json()
    assert read["abandoned_at"] is not None
