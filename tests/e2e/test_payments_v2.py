"""Issue 11 through the gateway on the sandbox: a card that needs 3-D Secure waits with its next
action until the shopper confirms; an operator's partial refund shows on the order and a later
cancellation gives back only the rest; a provider webhook is public but must be signed."""

import json
import time
import uuid

import httpx

from services.payments.adapters import SANDBOX_SIGNATURE_HEADER
from services.payments.domain import TOK_3DS, sandbox_signature
from tests.e2e.conftest import E2E_SETTINGS
from tests.e2e.shop import new_product, order, payments, place_order, settled
from tests.support.auth import admin, bearer
from tests.support.eventually import eventually
from tests.support.kafka import TopicTail, of_type

SECRET = E2E_SETTINGS["BACKROOM_SANDBOX_WEBHOOK_SECRET"]


async def test_a_3ds_card_waits_for_the_shopper_then_the_order_is_confirmed(
    gateway: httpx.AsyncClient,
) -> None:
    sku = await new_product(gateway, stock=5, price=1000)
    placed = await place_order(gateway, "secure-sam", [(sku, 1)], token=TOK_3DS)
    assert placed.status_code == 202, placed.text
    order_id = placed.json()["id"]

    async def awaiting() -> dict[str, object] | None:
        listed = await payments(gateway, order_id)
        return listed[0] if listed and listed[0]["status"] == "requires_action" else None

    payment = await eventually(awaiting, timeout=8, what="payment awaiting 3-D Secure")
    action = payment["next_action"]
    assert isinstance(action, dict) and action["type"] == "three_d_secure"
    assert action["client_secret"]
    assert (await order(gateway, order_id))["status"] == "pending"

    confirmed = await gateway.post(
        f"/payments/sandbox/actions/{payment['provider_ref']}",
        json={"outcome": "succeeded"},
        headers=bearer("secure-sam"),
    )
    assert confirmed.status_code == 200, confirmed.text

    final = await settled(gateway, order_id)
    assert final["status"] == "confirmed", final
    [captured] = await payments(gateway, order_id)
    assert (captured["id"], captured["status"]) == (payment["id"], "captured")


async def test_a_partial_refund_shows_on_the_order_and_a_cancellation_returns_the_rest(
    gateway: httpx.AsyncClient,
) -> None:
    sku = await new_product(gateway, stock=5, price=2500)
    placed = await place_order(gateway, "refund-rita", [(sku, 1)])
    order_id = placed.json()["id"]
    confirmed = await settled(gateway, order_id)
    assert confirmed["status"] == "confirmed", confirmed
    total = confirmed["total"]
    [payment] = await payments(gateway, order_id)

    refund = await gateway.post(
        f"/payments/{payment['id']}/refunds",
        json={"amount": {"amount": 500, "currency": total["currency"]}, "reason": "late delivery"},
        headers=admin() | {"Idempotency-Key": uuid.uuid4().hex},
    )
    assert refund.status_code == 201, refund.text
    assert refund.json()["status"] == "succeeded"

    async def refunded(amount: int) -> dict[str, object] | None:
        current = await order(gateway, order_id)
        shown = current["refunded"]
        return current if shown and shown["amount"] == amount else None

    partly = await eventually(lambda: refunded(500), what="refund shown on the order")
    assert partly["status"] == "confirmed"  # a partial refund ends nothing

    cancel = await gateway.post(
        f"/orders/{order_id}/cancel", json={}, headers=bearer("refund-rita")
    )
    assert cancel.status_code == 202, cancel.text

    async def cancelled() -> dict[str, object] | None:
        current = await order(gateway, order_id)
        return current if current["status"] == "cancelled" else None

    final = await eventually(cancelled, timeout=30, what="order cancelled")
    assert final["refunded"] == total
    [after] = await payments(gateway, order_id)
    assert (after["status"], after["refunded"]) == ("refunded", total)
    listed = await gateway.get(f"/payments/{payment['id']}/refunds", headers=bearer("refund-rita"))
    assert [r["amount"]["amount"] for r in listed.json()["items"]] == [500, total["amount"] - 500]


async def test_a_provider_webhook_is_public_but_must_be_signed(
    gateway: httpx.AsyncClient, event_stream: TopicTail
) -> None:
    sku = await new_product(gateway, stock=5, price=700)
    order_id = (await place_order(gateway, "dispute-dan", [(sku, 1)])).json()["id"]
    assert (await settled(gateway, order_id))["status"] == "confirmed"
    [payment] = await payments(gateway, order_id)
    body = json.dumps(
        {
            "id": f"evt_{uuid.uuid4().hex}",
            "type": "payment.disputed",
            "data": {"ref": payment["provider_ref"], "amount": 840, "reason": "fraudulent"},
        }
    ).encode()

    forged = await gateway.post(
        "/payments/webhooks/sandbox",
        content=body,
        headers={
            SANDBOX_SIGNATURE_HEADER: sandbox_signature("whsec_guess", int(time.time()), body)
        },
    )
    assert forged.status_code == 400, forged.text
    signed = await gateway.post(
        "/payments/webhooks/sandbox",
        content=body,
        headers={
            SANDBOX_SIGNATURE_HEADER: sandbox_signature(SECRET, int(time.time()), body),
            "content-type": "application/json",
        },
    )
    assert signed.status_code == 200, signed.text
    assert signed.json()["outcome"] == "disputed"
    [disputed] = await event_stream.wait_for(of_type("PaymentDisputed", order_id))
    assert disputed["data"]["payment_id"] == payment["id"]
    assert disputed["data"]["reason"] == "fraudulent"
