"""Issue 14, parts 1-2: the API and the event catalog documented at the gateway, and the documented
API honoured: schemathesis, all checks, over the gateway's /openapi.json."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx

from libs.events import topics
from libs.events.registry import EVENT_TYPES
from tests.support.auth import admin
from tests.support.kafka import TopicTail, of_type

ROOT = Path(__file__).resolve().parents[2]
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
# Bounded: a few examples per operation keeps the run well under two minutes on two cores.
MAX_EXAMPLES = os.environ.get("BACKROOM_SCHEMATHESIS_EXAMPLES", "3")


async def test_the_gateway_serves_one_openapi_document_for_every_prefix(
    gateway: httpx.AsyncClient,
) -> None:
    response = await gateway.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    doc = response.json()
    assert doc["openapi"].startswith("3.1")
    prefixes = {path.split("/")[1] for path in doc["paths"]}
    assert prefixes == {"catalog", "inventory", "pricing", "orders", "carts", "payments"} | {
        "notifications"
    }
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    place = doc["paths"]["/orders"]["post"]
    assert place["security"] == [{"bearer": []}]
    assert {"401", "403", "409", "422", "429"} <= set(place["responses"])
    assert set(place["responses"]["401"]["content"]) == {"application/problem+json"}


async def test_the_docs_page_loads_swagger_ui_from_the_gateway_itself(
    gateway: httpx.AsyncClient,
) -> None:
    page = await gateway.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in page.text
    assert "http://" not in page.text and "https://" not in page.text, "no CDN"
    for asset, kind in (
        ("/docs/assets/swagger-ui-bundle.js", "application/javascript"),
        ("/docs/assets/swagger-ui-standalone-preset.js", "application/javascript"),
        ("/docs/assets/swagger-ui.css", "text/css"),
    ):
        assert asset in page.text
        response = await gateway.get(asset)
        assert response.status_code == 200, asset
        assert response.headers["content-type"].startswith(kind), asset
        assert len(response.content) > 1000, asset


async def test_the_gateway_serves_the_event_catalog_and_its_page(
    gateway: httpx.AsyncClient,
) -> None:
    response = await gateway.get("/asyncapi.json")
    assert response.status_code == 200
    doc = response.json()
    assert doc["asyncapi"] == "3.0.0"
    assert set(doc["components"]["messages"]) == set(EVENT_TYPES)
    addresses = {channel["address"] for channel in doc["channels"].values()}
    assert set(topics.ALL_TOPICS) <= addresses
    page = await gateway.get("/asyncapi")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "OrderPlaced" in page.text and topics.ORDERS in page.text


async def test_an_emitted_events_dataschema_resolves_through_the_gateway(
    gateway: httpx.AsyncClient, event_stream: TopicTail
) -> None:
    sku = f"E2E-DOC-{uuid.uuid4().hex[:8].upper()}"
    created = await gateway.post(
        "/catalog/products",
        json={"sku": sku, "name": "Documented mug", "category": "e2e"},
        headers=admin(),
    )
    assert created.status_code == 201, created.text
    [event] = await event_stream.wait_for(of_type("ProductCreated", sku))
    assert event["dataschema"] == "/schemas/events/ProductCreated.json"
    schema = await gateway.get(event["dataschema"])
    assert schema.status_code == 200
    body = schema.json()
    assert body["title"] == "ProductCreated"
    assert set(body["required"]) <= set(event["data"])


# schemathesis.toml (read from the repository root) says what the document cannot: cursors
# are the server's, and which operations' 422 depends on stored data, the token or the network.
def test_schemathesis_finds_nothing_with_all_checks(gateway_url: str) -> None:
    token = admin()["Authorization"]
    command = [
        str(SCHEMATHESIS),
        "run",
        f"{gateway_url}/openapi.json",
        "--url",
        gateway_url,
        "--checks",
        "all",
        "--max-examples",
        MAX_EXAMPLES,
        "--generation-deterministic",
        "--header",
        f"Authorization: {token}",
        "--request-timeout",
        "20",
        "--no-color",
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, cwd=ROOT, check=False
    )
    report = os.environ.get("BACKROOM_SCHEMATHESIS_REPORT")
    if report:
        Path(report).write_text(result.stdout + result.stderr)
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-3000:]
