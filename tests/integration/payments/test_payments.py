"""Payments against the real PostgreSQL and Kafka: charged once when both facts are known,
refunded or voided when the order closes, and the token gone once the charge is decided."""

import asyncio
import uuid
from typing import Any

import pytest

from libs.events import topics
from services.payments.domain import TOK_DECLINED, TOK_PROCESSING_ERROR, TOK_SLOW, TOK_VISA
from tests.integration.payments.conftest import Payments, new_customer, new_order_id
from tests.support.auth import admin, bearer
from tests.support.eventually import eventually
from tests.support.kafka import TopicTail, of_type, publish

SANDBOX_TOKENS = {TOK_VISA, TOK_DECLINED, TOK_PROCESSING_ERROR, TOK_SLOW}


async def _settled(payments: Payments, tail: TopicTail, *events: Any) -> None:
    """Wait until the service handled these events, then read what it published by then."""
    await eventually(lambda: payments.handled(*events), what="events handled")
    await asyncio.sleep(0)
    for _ in range(5):  # the relay publishes within its poll interval of a commit
        await tail.poll()


async def test_instruction_then_reservation_captures_once(payments_service: Payments) -> None:
    order_id, customer = new_order_id(), new_customer()
    async with TopicTail(topics.PAYMENTS) as tail:
        await payments_service.instruct(order_id, customer, 2599)
        await payments_service.reserve(order_id)

        [captured] = await tail.wait_for(of_type("PaymentCaptured", order_id))

    assert captured["_key"] == order_id
    assert captured["data"]["amount"] == {"amount": 2599, "currency": "EUR"}
    [payment] = await payments_service.of_order(order_id, customer)
    assert payment["status"] == "captured"
    assert payment["amount"] == {"amount": 2599, "currency": "EUR"}
    assert payment["provider_ref"] == captured["data"]["provider_ref"]
    assert payment["id"] == captured["data"]["payment_id"]
    assert (await payments_service.order_row(order_id)).token is None


async def test_reservation_then_instruction_captures_once(payments_service: Payments) -> None:
    order_id, customer = new_order_id(), new_customer()
    async with TopicTail(topics.PAYMENTS) as tail:
        reserved = await payments_service.reserve(order_id)
        await eventually(lambda: payments_service.handled(reserved), what="reservation seen")
        await payments_service.instruct(order_id, customer, 1200)

        await tail.wait_for(of_type("PaymentCaptured", order_id))

    [payment] = await payments_service.of_order(order_id, customer)
    assert payment["status"] == "captured"
    assert payment["amount"]["amount"] == 1200
    assert (await payments_service.order_row(order_id)).token is None


async def test_redelivered_and_reissued_facts_never_charge_twice(
    payments_service: Payments,
) -> None:
    order_id, customer = new_order_id(), new_customer()
    async with TopicTail(topics.PAYMENTS) as tail:
        instruction = await payments_service.instruct(order_id, customer, 700)
        reserved = await payments_service.reserve(order_id)
        await tail.wait_for(of_type("PaymentCaptured", order_id))

        # At-least-once redelivery (same event ids) and re-issued facts (new ids, same order).
        await publish(instruction, topics.PAYMENT_INSTRUCTIONS)
        await publish(reserved, topics.INVENTORY)
        again = [
            await payments_service.instruct(order_id, customer, 700),
            await payments_service.reserve(order_id),
        ]
        await _settled(payments_service, tail, *again)

        assert len(tail.events(of_type("PaymentCaptured", order_id))) == 1
    assert len(await payments_service.of_order(order_id, customer)) == 1
    assert len(await payments_service.payment_rows(order_id)) == 1
    [entry] = await payments_service.ledger(order_id)
    assert entry.attempts == 1 and entry.ref is not None


async def test_a_crash_after_the_provider_answered_is_harmless(payments_service: Payments) -> None:
    """The charger fails after the PSP captured but before our commit; once the claim's lease
    ends the capture is claimed again, the provider is asked what it did under the key (the
    order id) and that capture is recorded once."""
    order_id, customer = new_order_id(), new_customer()
    payments_service.provider.crash_once.add(order_id)
    async with TopicTail(topics.PAYMENTS) as tail:
        await payments_service.instruct(order_id, customer, 4100)
        await payments_service.reserve(order_id)
        [captured] = await tail.wait_for(of_type("PaymentCaptured", order_id))

    assert order_id not in payments_service.provider.crash_once  # the crash did happen
    [entry] = await payments_service.ledger(order_id)
    assert entry.attempts == 1
    assert captured["data"]["provider_ref"] == entry.ref
    assert len(await payments_service.payment_rows(order_id)) == 1


@pytest.mark.parametrize(
    ("first_fact", "close"),
    [("instruction", "cancellation"), ("reservation", "rejection")],
)
async def test_a_close_read_before_the_redelivered_capture_refunds_the_provider_capture(
    payments_service: Payments, first_fact: str, close: str
) -> None:
    """Found by `make faults` (crash-payments-capture-vs-cancel): the process dies after the PSP
    captured but before our commit, and the order's close is read before the capture is
    recorded (a redelivered fact then charges nothing: the order is closed). The owed capture's
    next claim must find the provider's capture, record it and refund it, not answer
    PaymentVoided (or nothing) and leave the money taken."""
    order_id, customer = new_order_id(), new_customer()
    release = asyncio.Event()
    payments_service.provider.crash_until[order_id] = release
    try:
        async with TopicTail(topics.PAYMENTS) as tail:
            facts = {
                "instruction": (
                    lambda: payments_service.instruct(order_id, customer, 2300),
                    topics.PAYMENT_INSTRUCTIONS,
                ),
                "reservation": (lambda: payments_service.reserve(order_id), topics.INVENTORY),
            }
            second_fact = "reservation" if first_fact == "instruction" else "instruction"
            first = await facts[first_fact][0]()
            await eventually(lambda: payments_service.handled(first), what="first fact")
            second = await facts[second_fact][0]()  # captures, then "dies" before the commit

            async def captured_at_provider_only() -> bool:
                entries = await payments_service.ledger(order_id)
                return any(e.ref for e in entries) and not await payments_service.payment_rows(
                    order_id
                )

            await eventually(captured_at_provider_only, what="the PSP captured, we did not commit")
            if close == "cancellation":
                closing = await payments_service.cancel(order_id, customer)
            else:
                closing = await payments_service.reject(order_id, customer, "reservation_expired")
            await eventually(lambda: payments_service.handled(closing), what="close handled")
            [refunded] = await tail.wait_for(of_type("PaymentRefunded", order_id))
            [captured] = tail.events(of_type("PaymentCaptured", order_id))

            release.set()
            await publish(second, facts[second_fact][1])  # the redelivery, after the close
            await _settled(payments_service, tail, second)
            assert len(tail.events(of_type("PaymentCaptured", order_id))) == 1
            assert tail.events(of_type("PaymentVoided", order_id)) == []
    finally:
        release.set()

    ledger = {e.idempotency_key: e for e in await payments_service.ledger(order_id)}
    assert ledger[order_id].ref == captured["data"]["provider_ref"]
    assert ledger[order_id].attempts == 1
    assert ledger[f"refund:{order_id}"].ref == refunded["data"]["provider_ref"]
    assert captured["data"]["amount"] == {"amount": 2300, "currency": "EUR"}
    assert refunded["data"]["reason"] == (
        "cancelled" if close == "cancellation" else "reservation_expired"
    )
    assert refunded["data"]["payment_id"] == captured["data"]["payment_id"]
    rows = await payments_service.payment_rows(order_id)
    assert sorted((r.kind, r.status, r.amount) for r in rows) == [
        ("capture", "refunded", 2300),
        ("refund", "refunded", 2300),
    ]


async def test_declined_card_fails_the_payment(payments_service: Payments) -> None:
    order_id, customer = new_order_id(), new_customer()
    async with TopicTail(topics.PAYMENTS) as tail:
        await payments_service.instruct(order_id, customer, 500, token="tok_chargeDeclined")
        await payments_service.reserve(order_id)
        [failed] = await tail.wait_for(of_type("PaymentFailed", order_id))

    assert failed["data"]["reason"] == "payment_declined"
    assert failed["data"]["decline_code"] == "card_declined"
    [payment] = await payments_service.of_order(order_id, customer)
    assert payment["status"] == "failed"
    assert payment["provider_ref"] is None
    assert (await payments_service.order_row(order_id)).token is None


async def test_a_card_number_is_refused_and_never_stored(payments_service: Payments) -> None:
    order_id, customer = new_order_id(), new_customer()
    card_number = "4000" + str(uuid.uuid4().int)[:12]
    async with TopicTail(topics.PAYMENTS) as tail:
        instruction = await payments_service.instruct(order_id, customer, 500, token=card_number)
        await eventually(lambda: payments_service.handled(instruction), what="instruction seen")
        assert (await payments_service.order_row(order_id)).token is None

        await payments_service.reserve(order_id)
        [failed] = await tail.wait_for(of_type("PaymentFailed", order_id))

    assert failed["data"]["decline_code"] == "invalid_token"
    assert await payments_service.ledger(order_id) == []  # the provider never saw it


async def test_processing_errors_are_retried_until_one_capture(payments_service: Payments) -> None:
    order_id, customer = new_order_id(), new_customer()
    async with TopicTail(topics.PAYMENTS) as tail:
        await payments_service.instruct(order_id, customer, 990, token="tok_processingError")
        await payments_service.reserve(order_id)
        await tail.wait_for(of_type("PaymentCaptured", order_id))

    [payment] = await payments_service.of_order(order_id, customer)
    assert payment["status"] == "captured"
    [entry] = await payments_service.ledger(order_id)
    assert entry.attempts == 3


async def test_rejection_after_capture_refunds_it(payments_service: Payments) -> None:
    order_id, customer = new_order_id(), new_customer()
    async with TopicTail(topics.PAYMENTS) as tail:
        await payments_service.instruct(order_id, customer, 3000)
        await payments_service.reserve(order_id)
        [captured] = await tail.wait_for(of_type("PaymentCaptured", order_id))

        rejection = await payments_service.reject(order_id, customer, "reservation_expired")
        [refunded] = await tail.wait_for(of_type("PaymentRefunded", order_id))

        await publish(rejection, topics.ORDERS)  # redelivered: no second refund
        later = await payments_service.reject(order_id, customer, "reservation_expired")
        await _settled(payments_service, tail, later)
        assert len(tail.events(of_type("PaymentRefunded", order_id))) == 1

    assert refunded["_key"] == order_id
    assert refunded["data"]["payment_id"] == captured["data"]["payment_id"]
    assert refunded["data"]["amount"] == {"amount": 3000, "currency": "EUR"}
    assert refunded["data"]["reason"] == "reservation_expired"
    [payment] = await payments_service.of_order(order_id, customer)
    assert payment["status"] == "refunded"
    assert payment["refunded_at"] is not None
    ledger = {e.idempotency_key: e for e in await payments_service.ledger(order_id)}
    assert ledger[f"refund:{order_id}"].capture_ref == captured["data"]["provider_ref"]
    assert ledger[f"refund:{order_id}"].ref == refunded["data"]["provider_ref"]


async def test_a_capture_that_loses_the_race_with_the_deadline_is_refunded(
    payments_service: Payments,
) -> None:
    """Orders rejects the order (deadline) while the provider is still authorising: the
    rejection closes the order at once (no lock is held over the call), and the capture's
    outcome records it and owes its refund."""
    order_id, customer = new_order_id(), new_customer()
    async with TopicTail(topics.PAYMENTS) as tail:
        await payments_service.instruct(order_id, customer, 2200, token=TOK_SLOW)
        await payments_service.reserve(order_id)
        await asyncio.wait_for(payments_service.provider.capture_started[order_id].wait(), 20)
        await payments_service.reject(order_id, customer, "reservation_expired")

        [captured] = await tail.wait_for(of_type("PaymentCaptured", order_id))
        [refunded] = await tail.wait_for(of_type("PaymentRefunded", order_id))

    assert refunded["data"]["payment_id"] == captured["data"]["payment_id"]
    assert refunded["data"]["reason"] == "reservation_expired"
    [payment] = await payments_service.of_order(order_id, customer)
    assert payment["status"] == "refunded"


async def test_rejection_before_capture_means_never_capture(payments_service: Payments) -> None:
    order_id, customer = new_order_id(), new_customer()
    async with TopicTail(topics.PAYMENTS) as tail:
        await payments_service.instruct(order_id, customer, 800)
        await payments_service.reject(order_id, customer, "out_of_stock")
        late = await payments_service.reserve(order_id)
        await _settled(payments_service, tail, late)

        assert [e["type"] for e in tail.events(lambda e: e.get("subject") == order_id)] == []
    assert await payments_service.of_order(order_id, customer) == []
    assert (await payments_service.order_row(order_id)).token is None


async def test_cancellation_before_capture_voids_and_a_later_reservation_charges_nothing(
    payments_service: Payments,
) -> None:
    order_id, customer = new_order_id(), new_customer()
    async with TopicTail(topics.PAYMENTS) as tail:
        await payments_service.instruct(order_id, customer, 1500)
        await payments_service.cancel(order_id, customer)
        [voided] = await tail.wait_for(of_type("PaymentVoided", order_id))

        late = await payments_service.reserve(order_id)
        await _settled(payments_service, tail, late)
        assert tail.events(of_type("PaymentCaptured", order_id)) == []

    assert voided["_key"] == order_id
    assert voided["data"]["reason"] == "cancelled"
    assert await payments_service.of_order(order_id, customer) == []
    assert (await payments_service.order_row(order_id)).token is None


async def test_cancellation_after_capture_refunds(payments_service: Payments) -> None:
    order_id, customer = new_order_id(), new_customer()
    async with TopicTail(topics.PAYMENTS) as tail:
        await payments_service.instruct(order_id, customer, 1800)
        await payments_service.reserve(order_id)
        await tail.wait_for(of_type("PaymentCaptured", order_id))
        await payments_service.cancel(order_id, customer)
        [refunded] = await tail.wait_for(of_type("PaymentRefunded", order_id))
        assert tail.events(of_type("PaymentVoided", order_id)) == []

    assert refunded["data"]["reason"] == "cancelled"
    [payment] = await payments_service.of_order(order_id, customer)
    assert payment["status"] == "refunded"


async def test_who_sees_which_payments(payments_service: Payments) -> None:
    order_id, customer, other = new_order_id(), new_customer(), new_customer()
    async with TopicTail(topics.PAYMENTS) as tail:
        await payments_service.instruct(order_id, customer, 650)
        await payments_service.reserve(order_id)
        await tail.wait_for(of_type("PaymentCaptured", order_id))

    someone_else = await payments_service.listing(bearer(other), order_id=order_id)
    assert someone_else.status_code == 404
    assert someone_else.headers["content-type"].startswith("application/problem+json")

    as_admin = await payments_service.listing(admin(), order_id=order_id)
    assert as_admin.status_code == 200
    assert [p["order_id"] for p in as_admin.json()["items"]] == [order_id]

    own = await payments_service.listing(bearer(customer))
    assert [p["order_id"] for p in own.json()["items"]] == [order_id]
    assert (await payments_service.listing(bearer(other))).json()["items"] == []

    assert (await payments_service.listing({}, order_id=order_id)).status_code == 401
    unknown = await payments_service.listing(bearer(customer), order_id=new_order_id())
    assert unknown.status_code == 200 and unknown.json()["items"] == []


async def test_pages_follow_the_cursor(payments_service: Payments) -> None:
    customer = new_customer()
    orders = [new_order_id() for _ in range(3)]
    async with TopicTail(topics.PAYMENTS) as tail:
        for order_id in orders:
            await payments_service.instruct(order_id, customer, 100)
            await payments_service.reserve(order_id)
        for order_id in orders:
            await tail.wait_for(of_type("PaymentCaptured", order_id))

    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await payments_service.listing(bearer(customer), **params)).json()
        assert len(page["items"]) <= 2
        seen += [p["order_id"] for p in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(orders)

    bad = await payments_service.listing(bearer(customer), cursor="not-a-cursor")
    assert bad.status_code == 400
    too_many = await payments_service.listing(bearer(customer), limit=201)
    assert too_many.status_code == 422 and "limit" in too_many.text


async def test_the_token_never_reaches_a_public_topic_or_a_log(payments_service: Payments) -> None:
    """Runs last in this module: checks everything the tests above made the service do, for the
    tokens only these tests used (the card number above, and this well-formed unknown token)."""
    order_id, customer = new_order_id(), new_customer()
    unique_token = f"tok_neverLogged{uuid.uuid4().hex}"
    async with TopicTail(*topics.PUBLIC_TOPICS) as tail:
        await payments_service.instruct(order_id, customer, 100, token=unique_token)
        await payments_service.reserve(order_id)
        [failed] = await tail.wait_for(of_type("PaymentFailed", order_id))
        published = [r.value.decode(errors="replace") for r in tail.records]
    assert failed["data"]["decline_code"] == "invalid_token"

    assert any(order_id in line for line in payments_service.logs.lines)  # the recorder works
    secrets = {t for t in payments_service.tokens_used if t not in SANDBOX_TOKENS}
    assert unique_token in secrets and len(secrets) >= 2
    for secret in secrets:
        assert not any(secret in value for value in published), secret
        assert not any(secret in line for line in payments_service.logs.lines), secret
