"""Tracing across HTTP, the database and Kafka (issue 14 part 4): one checkout through the gateway
is ONE trace, from orders' POST /orders server span through the quote to pricing and every
service's event handlers, with every parent link resolving. The e2e system traces to files
(tests/e2e/conftest.py: tracing_env)."""

import asyncio
import os
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from libs.kit.tracing import EVENT_SUBJECT, read_spans
from tests.e2e.conftest import TRACE_DIR, tracing_env
from tests.e2e.shop import new_product, notifications, place_order, settled
from tests.support.eventually import eventually

# The services one checkout touches: the quote (pricing), the reservation (inventory), the
# capture (payments), the confirmation (orders) and its email (notifications).
TOUCHED = ("orders", "pricing", "inventory", "payments", "notifications")

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("BACKROOM_E2E_GATEWAY")) or not tracing_env(),
    reason="needs the e2e system's trace files",
)


def _spans(trace_dir: Path) -> list[dict[str, Any]]:
    spans: list[dict[str, Any]] = []
    for path in sorted(trace_dir.glob("*.jsonl")):
        spans += read_spans(path)
    return spans


def _service(span: dict[str, Any]) -> str:
    name = str(span["resource"]["attributes"]["service.name"])
    return name.removeprefix("backroom-")


class Checkout:
    """What the trace files say about one order."""

    def __init__(self, spans: list[dict[str, Any]], order_id: str) -> None:
        mine = [s for s in spans if (s.get("attributes") or {}).get(EVENT_SUBJECT) == order_id]
        self.trace_ids = {s["context"]["trace_id"] for s in mine}
        self.event_spans = mine
        trace_id = next(iter(self.trace_ids)) if len(self.trace_ids) == 1 else None
        self.spans = [s for s in spans if s["context"]["trace_id"] == trace_id]
        ids = {s["context"]["span_id"] for s in self.spans}
        self.roots = [s for s in self.spans if s.get("parent_id") is None]
        self.orphans = [s for s in self.spans if s.get("parent_id") and s["parent_id"] not in ids]
        self.services = {_service(s) for s in self.spans}
        self.handled = {
            (_service(s), s["attributes"].get("cloudevents.event_type"))
            for s in self.spans
            if s["name"].endswith(" process")
        }

    def complete(self) -> bool:
        return (
            len(self.trace_ids) == 1
            and len(self.roots) == 1
            and not self.orphans
            and set(TOUCHED) <= self.services
            and ("notifications", "OrderConfirmed") in self.handled
        )

    def summary(self) -> str:
        kinds = Counter(f"{_service(s)}: {s['name']}" for s in self.spans)
        return (
            f"trace ids {sorted(self.trace_ids)}, roots {[r['name'] for r in self.roots]},"
            f" orphans {[(o['name'], _service(o)) for o in self.orphans]},"
            f" services {sorted(self.services)}, spans {dict(kinds)}"
        )


async def test_one_checkout_is_one_trace_across_every_service_it_touched(
    gateway: httpx.AsyncClient,
) -> None:
    sku = await new_product(gateway, stock=5, price=990)
    placed = await place_order(gateway, "traced-tara", [(sku, 1)])
    assert placed.status_code == 202, placed.text
    order_id = placed.json()["id"]
    confirmed = await settled(gateway, order_id)
    assert confirmed["status"] == "confirmed", confirmed

    async def emailed() -> bool:
        return any(n["status"] == "sent" for n in await notifications(gateway, order_id))

    await eventually(emailed, timeout=30, what=f"order {order_id}'s email sent")
    deadline = time.monotonic() + 30

    # Spans reach the files in batches (every half second): read until the trace is whole.
    checkout = Checkout(_spans(TRACE_DIR), order_id)
    while not checkout.complete() and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        checkout = Checkout(_spans(TRACE_DIR), order_id)

    assert checkout.event_spans, f"no span names order {order_id} in {TRACE_DIR}"
    assert len(checkout.trace_ids) == 1, checkout.summary()
    [root] = checkout.roots
    assert (_service(root), root["kind"]) == ("orders", "SpanKind.SERVER"), checkout.summary()
    assert root["attributes"].get("http.route") == "/orders", root
    assert not checkout.orphans, checkout.summary()
    assert set(TOUCHED) <= checkout.services, checkout.summary()
    # The quote: orders' httpx client span, pricing's server span below it.
    assert any(
        _service(s) == "pricing" and s["kind"] == "SpanKind.SERVER" for s in checkout.spans
    ), checkout.summary()
    # Each hop over Kafka: the handler spans of the saga, all in this trace.
    for hop in (
        ("inventory", "OrderPlaced"),
        ("orders", "PaymentCaptured"),
        ("notifications", "OrderConfirmed"),
    ):
        assert hop in checkout.handled, checkout.summary()
    assert any(s == "payments" for s, _ in checkout.handled), checkout.summary()
    # The database is traced too: statements run inside the request and the handlers.
    assert any(
        "db.system" in s["attributes"] or "db.system.name" in s["attributes"]
        for s in checkout.spans
    ), checkout.summary()


async def test_a_traceparent_sent_through_the_gateway_is_the_parent_of_the_server_span(
    gateway: httpx.AsyncClient,
) -> None:
    trace_id, parent_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    response = await gateway.get(
        "/catalog/products", headers={"traceparent": f"00-{trace_id}-{parent_id}-01"}
    )
    assert response.status_code == 200, response.text

    async def server_spans() -> list[dict[str, Any]]:
        return [
            s
            for s in _spans(TRACE_DIR)
            if s["context"]["trace_id"] == f"0x{trace_id}" and s["kind"] == "SpanKind.SERVER"
        ]

    # Spans reach the files in batches: wait for it to be written.
    [span] = await eventually(server_spans, timeout=30, interval=0.5, what="the server span")
    assert _service(span) == "catalog"
    assert span["parent_id"] == f"0x{parent_id}"
