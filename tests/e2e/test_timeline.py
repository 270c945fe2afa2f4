"""The saga inspector through the gateway (issue 14 part 5): a confirmed checkout's timeline shows
OrderPlaced ... OrderConfirmed in order with the reservation, the payment and the notification
that each service holds; a declined card's order shows the rejection and its compensation and
waits for nothing; `backroom trace` prints it, and says so for an order that does not exist."""

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.shop import new_product, place_order, settled
from tests.support.auth import admin, bearer
from tests.support.eventually import eventually

ROOT = Path(__file__).resolve().parents[2]
SAGA = ["OrderPlaced", "PaymentInstructionIssued", "StockReserved", "PaymentCaptured"]


async def timeline(gw: httpx.AsyncClient, order_id: str) -> dict[str, Any]:
    response = await gw.get(f"/orders/{order_id}/timeline", headers=admin())
    assert response.status_code == 200, response.text
    return dict(response.json())


def types(doc: dict[str, Any]) -> list[str]:
    return [e["type"] for e in doc["events"]]


def in_order(seen: list[str], expected: list[str]) -> bool:
    """`expected` appears in `seen` in this order (other events may come between)."""
    rest = iter(seen)
    return all(name in rest for name in expected)


async def test_a_confirmed_checkouts_timeline_shows_the_saga_and_each_services_records(
    gateway: httpx.AsyncClient,
) -> None:
    sku = await new_product(gateway, stock=5)
    placed = await place_order(gateway, "timeline-tess", [(sku, 2)])
    assert placed.status_code == 202, placed.text
    order_id = placed.json()["id"]
    assert (await settled(gateway, order_id))["status"] == "confirmed"

    async def complete() -> dict[str, Any]:
        doc = await timeline(gateway, order_id)
        assert in_order(types(doc), [*SAGA, "OrderConfirmed"]), types(doc)
        assert doc["services"]["notifications"]["notifications"], doc["services"]
        assert doc["services"]["inventory"]["reservation"]["status"] == "committed"
        return doc

    doc = await eventually(complete, timeout=30, what="the confirmed order's timeline")
    events = doc["events"]
    times = [e["time"] for e in events]
    assert times == sorted(times)
    directions = {e["type"]: e["direction"] for e in events}
    assert directions["OrderPlaced"] == "emitted" and directions["StockReserved"] == "consumed"
    assert {e["subject"] for e in events} == {order_id}
    assert doc["order"]["id"] == order_id and doc["order"]["status"] == "confirmed"
    [payment] = doc["services"]["payments"]["payments"]
    assert payment["order_id"] == order_id and payment["status"] == "captured"
    assert doc["dead_letters"] == []
    assert doc["waiting"]["for"] == "OrderShipped" and doc["waiting"]["overdue"] is False

    customer = await gateway.get(
        f"/orders/{order_id}/timeline", headers=bearer("timeline-tess", "customer")
    )
    assert customer.status_code == 403
    missing = await gateway.get("/orders/no-such-order/timeline", headers=admin())
    assert missing.status_code == 404


def trace(*args: str, gateway: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BACKROOM_GATEWAY_URL": gateway}
    return subprocess.run(
        [sys.executable, "-m", "libs.kit.cli", "trace", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )


async def test_a_rejected_orders_timeline_shows_the_compensation_and_waits_for_nothing(
    gateway: httpx.AsyncClient, gateway_url: str
) -> None:
    sku = await new_product(gateway, stock=5)
    placed = await place_order(gateway, "timeline-rex", [(sku, 1)], token="tok_chargeDeclined")
    assert placed.status_code == 202, placed.text
    order_id = placed.json()["id"]
    rejected = await settled(gateway, order_id)
    assert (rejected["status"], rejected["reason"]) == ("rejected", "payment_declined")

    async def compensated() -> dict[str, Any]:
        doc = await timeline(gateway, order_id)
        expected = ["OrderPlaced", "StockReserved", "PaymentFailed", "OrderRejected"]
        assert in_order(types(doc), [*expected, "StockReleased"]), types(doc)
        assert doc["services"]["inventory"]["reservation"]["status"] == "released"
        return doc

    doc = await eventually(compensated, timeout=30, what="the rejection's compensation")
    assert doc["waiting"] is None
    [rejection] = [e for e in doc["events"] if e["type"] == "OrderRejected"]
    assert "payment_declined" in rejection["summary"]
    [payment] = doc["services"]["payments"]["payments"]
    assert payment["status"] == "failed"

    done = await asyncio.to_thread(trace, order_id, gateway=gateway_url)
    assert done.returncode == 0, done.stderr
    print(done.stdout)  # the sample in the report
    assert f"order {order_id}  status=rejected (payment_declined)" in done.stdout
    lines = done.stdout.splitlines()
    placed_at = next(i for i, ln in enumerate(lines) if "-> OrderPlaced" in ln)
    rejected_at = next(i for i, ln in enumerate(lines) if "-> OrderRejected" in ln)
    assert placed_at < rejected_at
    assert "<- PaymentFailed" in done.stdout and "waiting: nothing (terminal)" in done.stdout

    as_json = await asyncio.to_thread(trace, order_id, "--json", gateway=gateway_url)
    assert as_json.returncode == 0, as_json.stderr
    assert '"OrderRejected"' in as_json.stdout

    unknown = await asyncio.to_thread(trace, "no-such-order", gateway=gateway_url)
    assert unknown.returncode == 1 and "no order no-such-order" in unknown.stderr
    unreachable = await asyncio.to_thread(
        trace, order_id, "--gateway", "http://127.0.0.1:9", gateway=gateway_url
    )
    assert unreachable.returncode == 1 and "unreachable" in unreachable.stderr
