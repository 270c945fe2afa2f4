"""3-D Secure and `POST /payments/webhooks/{provider}` on the real PostgreSQL and Kafka (issue
11): the payment waits `requires_action` with its next action; the shopper's verdict, simulated
by the sandbox and delivered as its signed webhook, captures or declines it once; a webhook not
signed by the provider is refused and changes nothing; a dispute is announced."""

import json
import time
import uuid

from libs.events import topics
from services.payments.adapters import SANDBOX_SIGNATURE_HEADER
from services.payments.domain import TOK_3DS, sandbox_signature
from tests.integration.payments.conftest import Payments, new_customer, new_order_id
from tests.support.auth import admin, bearer
from tests.support.eventually import eventually
from tests.support.kafka import TopicTail, of_type
from tests.unit.payments.fakes import WEBHOOK_SECRET


async def _awaiting(payments: Payments) -> tuple[str, str, dict[str, object]]:
    order_id, customer = new_order_id(), new_customer()
    await payments.instruct(order_id, customer, 4200, token=TOK_3DS)
    await payments.reserve(order_id)

    async def waiting() -> dict[str, object] | None:
        listed = await payments.of_order(order_id, customer)
        return listed[0] if listed and listed[0]["status"] == "requires_action" else None

    payment = await eventually(waiting, what="payment awaiting the shopper")
    return order_id, customer, payment


def _event(event_type: str, **data: object) -> bytes:
    """A sandbox webhook body, as the sandbox sends it."""
    return json.dumps({"id": f"evt_{uuid.uuid4().hex}", "type": event_type, "data": data}).encode()


def _signed(body: bytes, secret: str = WEBHOOK_SECRET) -> dict[str, str]:
    return {
        SANDBOX_SIGNATURE_HEADER: sandbox_signature(secret, int(time.time()), body),
        "content-type": "application/json",
    }


async def test_3ds_waits_then_the_shoppers_confirmation_captures_once(
    payments_service: Payments,
) -> None:
    order_id, customer, payment = await _awaiting(payments_service)
    action = payment["next_action"]
    assert isinstance(action, dict) and action["type"] == "three_d_secure"
    assert action["client_secret"]
    ref = payment["provider_ref"]

    async with TopicTail(topics.PAYMENTS) as tail:
        confirmed = await payments_service.http.post(
            f"/payments/sandbox/actions/{ref}",
            json={"outcome": "succeeded"},
            headers=bearer(customer),
        )
        assert confirmed.status_code == 200, confirmed.text
        assert confirmed.json() == {"received": True, "outcome": "captured"}
        [captured] = await tail.wait_for(of_type("PaymentCaptured", order_id))

    assert captured["data"]["payment_id"] == payment["id"]
    assert captured["data"]["amount"] == {"amount": 4200, "currency": "EUR"}
    [after] = await payments_service.of_order(order_id, customer)
    assert (after["status"], after["next_action"]) == ("captured", None)
    again = await payments_service.http.post(
        f"/payments/sandbox/actions/{ref}", json={"outcome": "succeeded"}, headers=admin()
    )
    assert again.status_code == 409  # nothing awaits the shopper any more
    rows = [r for r in await payments_service.payment_rows(order_id) if r.kind == "capture"]
    assert len(rows) == 1


async def test_a_failed_confirmation_declines_and_the_same_webhook_twice_counts_once(
    payments_service: Payments,
) -> None:
    order_id, customer, payment = await _awaiting(payments_service)
    body = _event(
        "payment.failed",
        ref=payment["provider_ref"],
        order_id=order_id,
        amount=4200,
        currency="EUR",
        reason="authentication_failed",
    )

    async with TopicTail(topics.PAYMENTS) as tail:
        first = await payments_service.http.post(
            "/payments/webhooks/sandbox", content=body, headers=_signed(body)
        )
        second = await payments_service.http.post(
            "/payments/webhooks/sandbox", content=body, headers=_signed(body)
        )
        [failed] = await tail.wait_for(of_type("PaymentFailed", order_id))

    assert first.json()["outcome"] == "failed", first.text
    assert second.status_code == 200 and second.json()["outcome"] == "duplicate"
    assert failed["data"]["decline_code"] == "authentication_failed"
    [after] = await payments_service.of_order(order_id, customer)
    assert after["status"] == "failed"


async def test_webhooks_not_signed_by_the_provider_are_refused_and_change_nothing(
    payments_service: Payments,
) -> None:
    order_id, customer, payment = await _awaiting(payments_service)
    body = _event("payment.succeeded", ref=payment["provider_ref"], order_id=order_id)
    stale = {
        SANDBOX_SIGNATURE_HEADER: sandbox_signature(WEBHOOK_SECRET, int(time.time()) - 3600, body)
    }
    for headers in ({}, _signed(body, "whsec_forged_by_someone"), stale):
        refused = await payments_service.http.post(
            "/payments/webhooks/sandbox", content=body, headers=headers
        )
        assert refused.status_code == 400, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert [e["field"] for e in refused.json()["errors"]] == ["signature"]
    other = await payments_service.http.post(
        "/payments/webhooks/stripe", content=body, headers=_signed(body)
    )
    assert other.status_code == 404  # not this store's provider
    [after] = await payments_service.of_order(order_id, customer)
    assert after["status"] == "requires_action"


async def test_a_dispute_is_announced_on_the_payments_topic(payments_service: Payments) -> None:
    order_id, customer = new_order_id(), new_customer()
    async with TopicTail(topics.PAYMENTS) as tail:
        await payments_service.instruct(order_id, customer, 990)
        await payments_service.reserve(order_id)
        [captured] = await tail.wait_for(of_type("PaymentCaptured", order_id))
        body = _event(
            "payment.disputed",
            ref=captured["data"]["provider_ref"],
            amount=990,
            currency="EUR",
            reason="fraudulent",
        )
        answer = await payments_service.http.post(
            "/payments/webhooks/sandbox", content=body, headers=_signed(body)
        )
        assert answer.json()["outcome"] == "disputed", answer.text
        [disputed] = await tail.wait_for(of_type("PaymentDisputed", order_id))

    assert disputed["_key"] == order_id
    assert disputed["data"]["payment_id"] == captured["data"]["payment_id"]
    assert (disputed["data"]["reason"], disputed["data"]["provider"]) == ("fraudulent", "sandbox")


async def test_another_customer_cannot_confirm_a_payment(payments_service: Payments) -> None:
    _, _, payment = await _awaiting(payments_service)
    answer = await payments_service.http.post(
        f"/payments/sandbox/actions/{payment['provider_ref']}",
        json={"outcome": "succeeded"},
        headers=bearer(new_customer()),
    )
    assert answer.status_code == 404


async def test_a_refund_made_at_the_provider_shows_on_the_payment(
    payments_service: Payments,
) -> None:
    order_id, customer = new_order_id(), new_customer()
    async with TopicTail(topics.PAYMENTS) as tail:
        await payments_service.instruct(order_id, customer, 1000)
        await payments_service.reserve(order_id)
        [captured] = await tail.wait_for(of_type("PaymentCaptured", order_id))
        body = _event("payment.refunded", ref=captured["data"]["provider_ref"], amount=400)
        answer = await payments_service.http.post(
            "/payments/webhooks/sandbox", content=body, headers=_signed(body)
        )
        assert answer.json()["outcome"] == "refunded", answer.text
        [refunded] = await tail.wait_for(of_type("PaymentRefunded", order_id))

    assert (refunded["data"]["amount"]["amount"], refunded["data"]["fully_refunded"]) == (
        400,
        False,
    )
    [payment] = await payments_service.of_order(order_id, customer)
    assert (payment["status"], payment["refunded"]["amount"]) == ("partially_refunded", 400)
