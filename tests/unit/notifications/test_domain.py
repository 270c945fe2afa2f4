"""Notification rules: recipients, dedupe keys, money text, signatures (v1 and Standard
Webhooks) and the retry schedule (4xx final, backoff up to the horizon)."""

import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest

from libs.kit.money import format_money
from services.notifications import domain
from services.notifications.domain import (
    customer_address,
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


def test_a_failed_delivery_backs_off_until_the_horizon_then_fails() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    attempt = partial(domain.after_attempt, horizon_s=3600, base_s=1, max_s=600)
    first = attempt(status_code=503, attempts_before=0, retry_from=None, now=start)
    assert (first.status, first.attempts, first.retry_from) == ("pending", 1, start)
    assert first.next_attempt_at == start + timedelta(seconds=1)
    later = start + timedelta(minutes=30)
    second = attempt(status_code=None, attempts_before=1, retry_from=start, now=later)
    assert second.next_attempt_at == later + timedelta(seconds=2)
    # The backoff would overshoot the horizon: the last retry falls on the horizon itself.
    near = start + timedelta(minutes=59)
    last = attempt(status_code=500, attempts_before=11, retry_from=start, now=near)
    assert (last.status, last.next_attempt_at) == ("pending", start + timedelta(hours=1))
    at_horizon = start + timedelta(hours=1)
    over = attempt(status_code=500, attempts_before=12, retry_from=start, now=at_horizon)
    assert (over.status, over.attempts, over.next_attempt_at) == ("failed", 13, None)
    ok = attempt(status_code=204, attempts_before=12, retry_from=start, now=near)
    assert (ok.status, ok.attempts) == ("delivered", 13)


def test_the_default_horizon_is_a_day() -> None:
    from services.notifications.settings import NotificationsSettings

    assert NotificationsSettings().webhook_retry_horizon_s == 24 * 3600


@pytest.mark.parametrize(
    ("status_code", "retried"),
    [
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (410, False),
        (422, False),
        (408, True),
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (301, True),
        (302, True),
        (None, True),
    ],
)
def test_a_4xx_answer_other_than_408_and_429_fails_at_once(
    status_code: int | None, retried: bool
) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    outcome = domain.after_attempt(
        status_code=status_code,
        attempts_before=0,
        retry_from=None,
        now=now,
        horizon_s=86400,
        base_s=1,
        max_s=3600,
    )
    assert outcome.status == ("pending" if retried else "failed")


def test_a_refused_target_fails_at_once() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    outcome = domain.after_attempt(
        status_code=None,
        refused=True,
        attempts_before=0,
        retry_from=None,
        now=now,
        horizon_s=86400,
        base_s=1,
        max_s=3600,
    )
    assert (outcome.status, outcome.next_attempt_at) == ("failed", None)


# The Standard Webhooks specification's test vector (also the standardwebhooks library's).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_standard_signature_matches_the_specification_vector() -> None:
    key = domain.signing_key(SPEC_SECRET)
    assert domain.standard_signature(key, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_standard_signature_matches_the_reference_library() -> None:
    from standardwebhooks.webhooks import Webhook

    for secret, reference in [
        (SPEC_SECRET, Webhook(SPEC_SECRET)),
        ("a-plain-secret-of-ours", Webhook(b"a-plain-secret-of-ours")),
        ("whsec_not base64!", Webhook(b"whsec_not base64!")),
    ]:
        signed_at = datetime.fromtimestamp(SPEC_TIMESTAMP, UTC)
        expected = reference.sign(SPEC_ID, signed_at, SPEC_BODY.decode())
        key = domain.signing_key(secret)
        assert domain.standard_signature(key, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == expected


def test_delivery_headers_carry_one_signature_per_active_secret_and_the_v1_one() -> None:
    headers = domain.delivery_headers("dlv-1", SPEC_TIMESTAMP, SPEC_BODY, ("old-secret", "new"))
    assert headers["webhook-id"] == "dlv-1"
    assert headers["webhook-timestamp"] == str(SPEC_TIMESTAMP)
    old, new = headers["webhook-signature"].split(" ")
    assert old == domain.standard_signature(b"old-secret", "dlv-1", SPEC_TIMESTAMP, SPEC_BODY)
    assert new == domain.standard_signature(b"new", "dlv-1", SPEC_TIMESTAMP, SPEC_BODY)
    assert headers["X-Backroom-Signature"] == signature("old-secret", SPEC_BODY)
    assert headers["X-Backroom-Delivery"] == "dlv-1"
    assert headers["Content-Type"] == "application/cloudevents+json"


def test_webhooks_may_subscribe_to_any_public_event_but_never_to_payment_instructions() -> None:
    assert "OrderConfirmed" in domain.WEBHOOK_EVENT_TYPES
    assert "PaymentCaptured" in domain.WEBHOOK_EVENT_TYPES
    assert "NotificationSent" in domain.WEBHOOK_EVENT_TYPES
    assert "PaymentInstructionIssued" not in domain.WEBHOOK_EVENT_TYPES
