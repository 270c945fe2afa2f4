"""Dead letters through the gateway (issue 14 part 7): a record catalog cannot handle shows up in
`/catalog/dead-letters` with its event, headers and audit trail; a replay that fails again keeps
it open; `backroom dlq list --json` and `backroom dlq drop` reach it through the gateway; a
resolved one answers 409 to another replay or drop."""

import asyncio
import json
import os
import subprocess
import sys
import uuid
from typing import Any

import httpx

from libs.events.common import WireModel
from libs.events.registry import EVENT_TYPES
from tests.support.auth import admin, bearer
from tests.support.eventually import eventually
from tests.support.kafka import make_event, publish


class NotAPriceChange(WireModel):
    """Data no PriceChanged handler can validate: catalog dead-letters it at once."""

    bogus: str


async def cli(gateway_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, BACKROOM_ENV="dev")
    env.pop("BACKROOM_TOKEN", None)
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "libs.kit.cli", "dlq", "--gateway", gateway_url, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


async def test_a_dead_letter_is_listed_inspected_replayed_and_dropped(
    gateway: httpx.AsyncClient, gateway_url: str
) -> None:
    sku = f"DLQ-{uuid.uuid4().hex[:8].upper()}"
    topic = EVENT_TYPES["PriceChanged"][0]
    event = make_event("pricing", NotAPriceChange(bogus=sku), sku)
    event = event.model_copy(update={"type": "PriceChanged"})
    await publish(event, topic)

    async def listed() -> list[dict[str, Any]]:
        r = await gateway.get(
            "/catalog/dead-letters",
            params={"status": "open", "type": "PriceChanged", "limit": 200},
            headers=admin(),
        )
        assert r.status_code == 200, r.text
        return [d for d in r.json()["items"] if d["event_id"] == event.id]

    [entry] = await eventually(listed, timeout=60, what="catalog's dead letter listed")
    assert entry["consumer_group"] == "catalog"
    assert entry["topic"] == topic
    assert entry["error_type"] == "InvalidEventData"
    assert entry["subject"] == sku
    letter_id = entry["id"]

    r = await gateway.get(f"/catalog/dead-letters/{letter_id}", headers=admin())
    assert r.status_code == 200, r.text
    detail = r.json()
    assert detail["event"]["id"] == event.id
    assert {"name": "ce_type", "value": "PriceChanged"} in detail["headers"]

    # The data is still invalid: the replay fails again and the dead letter stays open.
    r = await gateway.post(f"/catalog/dead-letters/{letter_id}/replay", headers=admin())
    assert r.status_code == 200, r.text
    assert r.json()["outcome"] == "failed"
    assert r.json()["dead_letter"]["status"] == "open"
    assert r.json()["dead_letter"]["attempts"] == 2

    done = await cli(gateway_url, "list", "--service", "catalog", "--status", "open", "--json")
    assert done.returncode == 0, done.stderr
    assert letter_id in [e["id"] for e in json.loads(done.stdout) if e["service"] == "catalog"]

    done = await cli(gateway_url, "drop", "catalog", str(letter_id), "--reason", "e2e: bad data")
    assert done.returncode == 0, done.stderr
    r = await gateway.get(f"/catalog/dead-letters/{letter_id}", headers=admin())
    dropped = r.json()
    assert dropped["status"] == "dropped"
    assert dropped["note"] == "e2e: bad data"
    assert [(a["action"], a["outcome"]) for a in dropped["actions"]] == [
        ("replay", "failed"),
        ("drop", "dropped"),
    ]
    assert dropped["actions"][0]["actor"] == "ops-admin"
    assert dropped["actions"][1]["actor"] == "backroom-cli"

    for action, body in (("replay", None), ("drop", {"reason": "again"})):
        r = await gateway.post(
            f"/catalog/dead-letters/{letter_id}/{action}", json=body, headers=admin()
        )
        assert r.status_code == 409, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
    done = await cli(gateway_url, "replay", "catalog", str(letter_id))
    assert done.returncode == 1
    assert "409" in done.stderr


async def test_dead_letter_routes_refuse_bad_input_and_non_admins(
    gateway: httpx.AsyncClient,
) -> None:
    r = await gateway.get("/orders/dead-letters/999999999999", headers=admin())
    assert r.status_code == 404
    r = await gateway.get("/orders/dead-letters/abc", headers=admin())
    assert r.status_code == 422
    r = await gateway.get("/payments/dead-letters", params={"status": "lost"}, headers=admin())
    assert r.status_code == 422
    r = await gateway.get("/payments/dead-letters", params={"cursor": "!!"}, headers=admin())
    assert r.status_code == 400
    r = await gateway.post("/inventory/dead-letters/1/drop", json={}, headers=admin())
    assert r.status_code == 422
    assert "reason" in r.text
    r = await gateway.get("/pricing/dead-letters", headers=bearer("shopper-1"))
    assert r.status_code == 403
    r = await gateway.get("/notifications/dead-letters")
    assert r.status_code == 401
