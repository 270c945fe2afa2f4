"""`POST /payments/{id}/refunds` and `GET /payments/{id}/refunds` on the real PostgreSQL and
Kafka (issue 11): an operator's partial and repeated refunds, never more than was captured even
when asked at once, idempotent on the key, each a PaymentRefunded with its amount."""

import asyncio
import uuid
from typing import Any

import httpx

from libs.events import topics
from tests.integration.payments.conftest import Payments, new_customer, new_order_id
from tests.support.auth import admin, bearer
from tests.support.kafka import TopicTail, of_type


async def _captured(payments: Payments, amount: int = 1000) -> tuple[str, str, str]:
    order_id, customer = new_order_id(), new_customer()
    async with TopicTail(topics.PAYMENTS) as tail:
        await payments.instruct(order_id, customer, amount)
        await payments.reserve(order_id)
        [captured] = await tail.wait_for(of_type("PaymentCaptured", order_id))
    return order_id, customer, captured["data"]["payment_id"]


async def _refund(
    payments: Payments,
    payment_id: str,
    amount: Any,
    key: str | None = None,
    reason: Any = "damaged in transit",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    sent = dict(headers if headers is not None else admin())
    if key is not None:
        sent["Idempotency-Key"] = key
    return await payments.http.post(
        f"/payments/{payment_id}/refunds",
        json={"amount": amount, "reason": reason},
        headers=sent,
    )


def _eur(amount: int) -> dict[str, Any]:
    return {"amount": amount, "currency": "EUR"}


async def test_partial_refunds_are_made_at_once_and_listed(payments_service: Payments) -> None:
    order_id, customer, payment_id = await _captured(payments_service)

    async with TopicTail(topics.PAYMENTS) as tail:
        first = await _refund(payments_service, payment_id, _eur(300), "k-1")
        second = await _refund(payments_service, payment_id, _eur(200), "k-2")
        events = await tail.wait_for(of_type("PaymentRefunded", order_id), count=2)

    assert first.status_code == 201, first.text
    assert second.status_code == 201, second.text
    body = first.json()
    assert body["status"] == "succeeded"
    assert (body["payment_id"], body["order_id"], body["amount"]) == (
        payment_id,
        order_id,
        _eur(300),
    )
    assert body["provider_ref"].startswith("re_sbx_")
    assert sorted((e["data"]["amount"]["amount"], e["data"]["fully_refunded"]) for e in events) == [
        (200, False),
        (300, False),
    ]
    assert {e["data"]["refund_id"] for e in events} == {body["id"], second.json()["id"]}

    [payment] = await payments_service.of_order(order_id, customer)
    assert (payment["status"], payment["refunded"], payment["provider"]) == (
        "partially_refunded",
        _eur(500),
        "sandbox",
    )
    listed = await payments_service.http.get(
        f"/payments/{payment_id}/refunds", headers=bearer(customer)
    )
    assert listed.status_code == 200, listed.text
    assert [(r["amount"]["amount"], r["status"]) for r in listed.json()["items"]] == [
        (300, "succeeded"),
        (200, "succeeded"),
    ]


async def test_refunds_asked_at_once_never_add_up_to_more_than_the_capture(
    payments_service: Payments,
) -> None:
    order_id, customer, payment_id = await _captured(payments_service, amount=1000)

    answers = await asyncio.gather(
        *(_refund(payments_service, payment_id, _eur(300), f"k-{i}") for i in range(5))
    )

    made = [a for a in answers if a.status_code == 201]
    refused = [a for a in answers if a.status_code == 422]
    assert len(made) == 3 and len(refused) == 2, [a.text for a in answers]
    for answer in refused:
        [error] = answer.json()["errors"]
        assert error["field"] == "amount.amount"
    [payment] = await payments_service.of_order(order_id, customer)
    assert payment["refunded"] == _eur(900)
    rows = await payments_service.payment_rows(order_id)
    [capture] = [r for r in rows if r.kind == "capture"]
    assert (capture.refunded_amount, capture.refund_reserved) == (900, 900)


async def test_the_same_key_answers_the_same_refund_and_another_body_is_a_conflict(
    payments_service: Payments,
) -> None:
    _, _, payment_id = await _captured(payments_service)
    key = f"k-{uuid.uuid4().hex}"

    first = await _refund(payments_service, payment_id, _eur(100), key)
    replay = await _refund(payments_service, payment_id, _eur(100), key)
    other = await _refund(payments_service, payment_id, _eur(101), key)

    assert first.status_code == 201
    assert replay.status_code == 200 and replay.json()["id"] == first.json()["id"]
    assert other.status_code == 409
    assert other.headers["content-type"].startswith("application/problem+json")


async def test_bad_refund_requests_are_refused_naming_the_field(payments_service: Payments) -> None:
    order_id, customer, payment_id = await _captured(payments_service)
    cases: list[tuple[httpx.Response, int, str]] = [
        (await _refund(payments_service, payment_id, _eur(100)), 422, "Idempotency-Key"),
        (await _refund(payments_service, payment_id, _eur(0), "k"), 422, "amount.amount"),
        (await _refund(payments_service, payment_id, _eur(1001), "k"), 422, "amount.amount"),
        (
            await _refund(payments_service, payment_id, {"amount": 1, "currency": "EUX"}, "k"),
            422,
            "amount.currency",
        ),
        (
            await _refund(payments_service, payment_id, {"amount": 1, "currency": "USD"}, "k"),
            422,
            "amount.currency",
        ),
        (await _refund(payments_service, payment_id, _eur(1), "k", reason=""), 422, "reason"),
        (await _refund(payments_service, payment_id, "ten", "k"), 422, "amount"),
    ]
    for response, status, field in cases:
        assert response.status_code == status, response.text
        assert field in [e["field"] for e in response.json()["errors"]], response.text

    customer_try = await _refund(
        payments_service, payment_id, _eur(1), "k", headers=bearer(customer)
    )
    assert customer_try.status_code == 403
    unknown = await _refund(payments_service, str(uuid.uuid4()), _eur(1), "k")
    assert unknown.status_code == 404
    [payment] = await payments_service.of_order(order_id, customer)
    assert payment["refunded"] == _eur(0)  # none of them held or moved anything


async def test_a_customer_sees_only_their_own_payments_refunds(payments_service: Payments) -> None:
    _, customer, payment_id = await _captured(payments_service)
    own = await payments_service.http.get(f"/payments/{payment_id}", headers=bearer(customer))
    other = await payments_service.http.get(
        f"/payments/{payment_id}/refunds", headers=bearer(new_customer())
    )
    assert own.status_code == 200 and own.json()["id"] == payment_id
    assert other.status_code == 404


async def test_a_cancellation_after_a_partial_refund_gives_back_the_rest(
    payments_service: Payments,
) -> None:
    order_id, customer, payment_id = await _captured(payments_service, amount=1000)
    made = await _refund(payments_service, payment_id, _eur(400), "k-1")
    assert made.status_code == 201 and made.json()["status"] == "succeeded"

    async with TopicTail(topics.PAYMENTS) as tail:
        await payments_service.cancel(order_id, customer)
        [closing] = await tail.wait_for(
            lambda e: of_type("PaymentRefunded", order_id)(e) and e["data"]["reason"] == "cancelled"
        )

    assert (closing["data"]["amount"]["amount"], closing["data"]["fully_refunded"]) == (600, True)
    [payment] = await payments_service.of_order(order_id, customer)
    assert (payment["status"], payment["refunded"]) == ("refunded", _eur(1000))
    listed = await payments_service.http.get(f"/payments/{payment_id}/refunds", headers=admin())
    assert [r["amount"]["amount"] for r in listed.json()["items"]] == [400, 600]
