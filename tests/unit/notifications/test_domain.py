"""Notification rules: recipients, dedupe keys, money text, signatures and the retry schedule."""

import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest

from services.notifications import domain
from services.notifications.domain import (
    customer_address,
    format_money,
    plan_email,
    retry_delay,
    signature,
    verify_signature,
)

WAREHOUSE = "warehouse@backroom.local"


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        (1234, "EUR", "EUR 12.34"),
        (5, "EUR", "EUR 0.05"),
        (0, "EUR", "EUR 0.00"),
        (100000, "USD", "USD 1000.00"),
        (-250, "EUR", "EUR -2.50"),
        (1500, "JPY", "JPY 1500"),
        (1234, "KWD", "KWD 1.234"),
    ],
)
def test_money_is_written_with_the_currency_and_its_decimals(
    amount: int, currency: str, text: str
) -> None:
    assert format_money(amount, currency) == text


def test_the_customer_gets_the_events_email_or_a_mailbox_named_after_them() -> None:
    assert customer_address("alice", "alice@example.com") == "alice@example.com"
    assert customer_address("alice", None) == "alice@customers.backroom.local"
    # A customer id is a JWT subject, not an address: whatever cannot stand in one is replaced.
    assert customer_address("a b<c>", None) == "a-b-c-@customers.backroom.local"


def test_one_email_per_order_and_template() -> None:
    data = {"order_id": "o-1", "customer_id": "bob", "reason": "out_of_stock"}
    first = plan_email("OrderRejected", data, "event-1", WAREHOUSE)
    again = plan_email("OrderRejected", data, "event-2", WAREHOUSE)
    cancelled = plan_email(
        "OrderCancelled", data | {"reason": "customer_request"}, "event-3", WAREHOUSE
    )
    assert first is not None and again is not None and cancelled is not None
    assert first.dedupe_key == again.dedupe_key == "o-1:order_rejected"
    assert cancelled.dedupe_key == "o-1:order_cancelled"
    assert first.to == "bob@customers.backroom.local"
    assert first.subject == first.order_id == "o-1"


def test_each_low_stock_crossing_is_its_own_alert_to_the_warehouse() -> None:
    data = {"sku": "MUG-1", "available": 2, "reorder_point": 5}
    first = plan_email("StockLow", data, "crossing-1", WAREHOUSE)
    later = plan_email("StockLow", data, "crossing-2", WAREHOUSE)
    assert first is not None and later is not None
    assert first.dedupe_key == "MUG-1:crossing-1:low_stock"
    assert later.dedupe_key != first.dedupe_key
    assert first.to == WAREHOUSE
    assert first.subject == first.sku == "MUG-1"
    assert first.order_id is None


def test_message_id_is_deterministic_and_a_valid_msg_id() -> None:
    email = plan_email("OrderShipped", {"order_id": "o-9", "customer_id": "c"}, "e", WAREHOUSE)
    assert email is not None
    assert email.message_id == "<o-9/order_shipped@backroom>"
    assert domain.message_id("MUG-1:ev:low_stock") == "<MUG-1/ev/low_stock@backroom>"


def test_events_without_an_email_plan_none() -> None:
    assert plan_email("PaymentCaptured", {"order_id": "o"}, "e", WAREHOUSE) is None


def test_only_the_email_event_types_can_plan_an_email() -> None:
    # The consumer skips events of other types when no webhook wants them.
    for event_type in set(domain.WEBHOOK_EVENT_TYPES) - domain.EMAIL_EVENT_TYPES:
        assert plan_email(event_type, {}, "e", WAREHOUSE) is None, event_type


@pytest.mark.parametrize(
    ("reason", "phrase"),
    [
        ("out_of_stock", "out of stock"),
        ("payment_declined", "declined"),
        ("reservation_expired", "in time"),
        ("invalid", "invalid"),
        ("something_new", "could not complete"),
    ],
)
def test_rejection_reasons_read_as_sentences(reason: str, phrase: str) -> None:
    assert phrase in domain.rejection_reason(reason)


def test_tracking_lists_known_details_first() -> None:
    lines = domain.describe_tracking(
        {"url": "https://t.example/1", "carrier": "DHL", "eta": "2026-12-01", "number": "JD01"}
    )
    assert lines == [
        "Carrier: DHL",
        "Tracking number: JD01",
        "Track your parcel: https://t.example/1",
        "Eta: 2026-12-01",
    ]


def test_signature_is_the_hex_hmac_sha256_of_the_exact_body() -> None:
    body = b'{"id":"1","type":"OrderConfirmed"}'
    expected = hmac.new(b"s3cret-s3cret-s3cret", body, hashlib.sha256).hexdigest()
    assert signature("s3cret-s3cret-s3cret", body) == f"sha256={expected}"
    assert verify_signature("s3cret-s3cret-s3cret", body, f"sha256={expected}")
    assert not verify_signature("s3cret-s3cret-s3cret", body + b" ", f"sha256={expected}")
    assert not verify_signature("another-secret-value", body, f"sha256={expected}")


def test_backoff_doubles_from_the_base_and_is_capped() -> None:
    delays = [retry_delay(n, base_s=1, max_s=300).total_seconds() for n in range(1, 12)]
    assert delays == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert retry_delay(10_000, base_s=1, max_s=300) == timedelta(minutes=5)


def test_a_delivery_is_retried_until_max_attempts_then_failed() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    attempt = partial(domain.after_attempt, now=now, max_attempts=3, base_s=1, max_s=300)
    first = attempt(succeeded=False, attempts_before=0)
    assert (first.status, first.attempts) == ("pending", 1)
    assert first.next_attempt_at == now + timedelta(seconds=1)
    second = attempt(succeeded=False, attempts_before=1)
    assert second.next_attempt_at == now + timedelta(seconds=2)
    third = attempt(succeeded=False, attempts_before=2)
    assert (third.status, third.attempts, third.next_attempt_at) == ("failed", 3, None)
    ok = attempt(succeeded=True, attempts_before=2)
    assert (ok.status, ok.attempts) == ("delivered", 3)


def test_webhooks_may_subscribe_to_any_public_event_but_never_to_payment_instructions() -> None:
    assert "OrderConfirmed" in domain.WEBHOOK_EVENT_TYPES
    assert "PaymentCaptured" in domain.WEBHOOK_EVENT_TYPES
    assert "NotificationSent" in domain.WEBHOOK_EVENT_TYPES
    assert "PaymentInstructionIssued" not in domain.WEBHOOK_EVENT_TYPES
