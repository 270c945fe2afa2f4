"""Orders in-process on the real PostgreSQL and Kafka, with the real pricing service serving HTTP
on a free port (orders calls it over the network, as in production)."""

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from libs.events import topics
from libs.events.catalog import ProductCreated
from services.orders.main import create_app
from services.orders.settings import OrdersSettings
from services.pricing.main import create_app as create_pricing_app
from services.pricing.settings import PricingSettings
from tests.support.auth import admin, bearer
from tests.support.eventually import eventually
from tests.support.kafka import make_event, publish
from tests.support.service import running


@dataclass(frozen=True)
class Priced:
    """What pricing knows for these tests: two skus with prices and a region with 20 % tax."""

    url: str
    mug: str
    tea: str
    region: str


@pytest.fixture(scope="module")
async def pricing(migrated_databases: None) -> AsyncIterator[Priced]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_pricing_app(PricingSettings()), log_level="warning", lifespan="on", ws="none"
        )
    )
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await eventually(lambda: _started(server), what="pricing started")
        url = f"http://127.0.0.1:{port}"
        priced = Priced(
            url,
            f"MUG-{uuid.uuid4().hex[:10]}",
            f"TEA-{uuid.uuid4().hex[:10]}",
            f"R-{uuid.uuid4().hex[:10]}",
        )
        await _seed(priced)
        yield priced
    finally:
        server.should_exit = True
        await serving
        sock.close()


async def _started(server: uvicorn.Server) -> bool:
    return server.started


async def _seed(priced: Priced) -> None:
    """Announce the products as catalog would, price them, tax the region; wait for a quote."""
    async with httpx.AsyncClient(base_url=priced.url) as http:
        for sku, amount in ((priced.mug, 1250), (priced.tea, 499)):
            event = make_event(
                "catalog", ProductCreated(sku=sku, name=sku, category="kitchen"), subject=sku
            )
            await publish(event, topics.CATALOG)
            response = await http.put(
                f"/pricing/prices/{sku}",
                json={"amount": amount, "currency": "EUR"},
                headers=admin(),
            )
            assert response.status_code == 200, response.text
        response = await http.put(
            f"/pricing/tax-rates/{priced.region}", json={"rate_bps": 2000}, headers=admin()
        )
        assert response.status_code == 200, response.text

        async def quotable() -> bool:
            lines = [{"sku": priced.mug, "quantity": 1}, {"sku": priced.tea, "quantity": 1}]
            response = await http.post(
                "/pricing/quotes",
                json={"lines": lines, "region": priced.region},
                headers=bearer("seed"),
            )
            return response.status_code == 201

        await eventually(quotable, timeout=30, what="pricing learned the products")


@pytest.fixture(scope="module")
def app(pricing: Priced) -> FastAPI:
    return create_app(OrdersSettings(pricing_url=pricing.url, relay_poll_interval_s=0.5))


@pytest.fixture(scope="module")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with running(app) as http:
        yield http
