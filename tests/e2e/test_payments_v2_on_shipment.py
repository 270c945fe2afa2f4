"""Capture policy on_shipment through the gateway (issue 11): payments restarted with
BACKROOM_CAPTURE_POLICY=on_shipment for this module (then back on the default). The order
confirms on the authorization; shipping captures the hold and an operator's partial refund gives
part of it back; a cancellation before shipping releases the hold and takes nothing."""

import subprocess
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conftest import LOCAL, ROOT, e2e_env
from tests.e2e.shop import new_product, order, payments, place_order, settled
from tests.support.auth import admin, bearer
from tests.support.eventually import eventually


def _payments_with(**settings: str) -> None:
    env = e2e_env() | settings
    for action in ("down", "up"):
        subprocess.run(
            ["bash", str(LOCAL / "services.sh"), action, "payments"], check=True, env=env, cwd=ROOT
        )


@pytest.fixture(scope="module", autouse=True)
def on_shipment(gateway_url: str) -> Iterator[None]:
    _payments_with(BACKROOM_CAPTURE_POLICY="on_shipment")
    try:
        yield
    finally:
        _payments_with()


async def _payment(gw: httpx.AsyncClient, order_id: str, status: str) -> dict[str, object]:
    async def probe() -> dict[str, object] | None:
        listed = await payments(gw, order_id)
        return listed[0] if listed and listed[0]["status"] == status else None

    return await eventually(probe, timeout=20, what=f"payment {status}")


async def test_authorized_then_captured_when_shipped_then_partly_refunded(
    gateway: httpx.AsyncClient,
) -> None:
    sku = await new_product(gateway, stock=5, price=2000)
    order_id = (await place_order(gateway, "ship-sue", [(sku, 1)])).json()["id"]
    confirmed = await settled(gateway, order_id)
    assert confirmed["status"] == "confirmed", confirmed
    held = await _payment(gateway, order_id, "authorized")
    assert held["provider_ref"] and str(held["provider_ref"]).startswith("auth_sbx_")

    shipped = await gateway.post(
        f"/orders/{order_id}/ship",
        json={"carrier": "DHL", "tracking_number": "JD0001"},
        headers=admin(),
    )
    assert shipped.status_code == 200, shipped.text
    captured = await _payment(gateway, order_id, "captured")
    assert captured["id"] == held["id"] and captured["amount"] == confirmed["total"]

    refund = await gateway.post(
        f"/payments/{captured['id']}/refunds",
        json={"amount": {"amount": 300, "currency": "EUR"}, "reason": "damaged box"},
        headers=admin() | {"Idempotency-Key": uuid.uuid4().hex},
    )
    assert refund.status_code == 201 and refund.json()["status"] == "succeeded", refund.text
    after = await _payment(gateway, order_id, "partially_refunded")
    assert after["refunded"] == {"amount": 300, "currency": "EUR"}
    assert (await order(gateway, order_id))["status"] == "shipped"


async def test_a_cancellation_before_shipping_releases_the_hold(
    gateway: httpx.AsyncClient,
) -> None:
    sku = await new_product(gateway, stock=5, price=900)
    order_id = (await place_order(gateway, "void-vic", [(sku, 1)])).json()["id"]
    assert (await settled(gateway, order_id))["status"] == "confirmed"
    await _payment(gateway, order_id, "authorized")

    cancel = await gateway.post(f"/orders/{order_id}/cancel", json={}, headers=bearer("void-vic"))
    assert cancel.status_code == 202, cancel.text

    async def cancelled() -> dict[str, object] | None:
        current = await order(gateway, order_id)
        return current if current["status"] == "cancelled" else None

    final = await eventually(cancelled, timeout=30, what="order cancelled")
    assert final["refunded"] is None  # nothing was taken
    voided = await _payment(gateway, order_id, "voided")
    assert voided["refunded"] == {"amount": 0, "currency": "EUR"}
