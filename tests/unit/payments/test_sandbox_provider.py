"""The sandbox PSP: fixed answers per test token, idempotent on its key, never a card number."""

import asyncio
import time
from collections.abc import Awaitable

import pytest

from libs.kit.retry import RetryPolicy
from services.payments.adapters import SANDBOX_SIGNATURE_HEADER, SandboxProvider
from services.payments.domain import (
    ProviderResult,
    TransientProviderError,
    WebhookRejected,
    sandbox_signature,
)
from tests.unit.payments.fakes import MemoryLedger


@pytest.fixture
def ledger() -> MemoryLedger:
    return MemoryLedger()


@pytest.fixture
def sandbox(ledger: MemoryLedger) -> SandboxProvider:
    return SandboxProvider(ledger, slow_s=0.01)


async def test_tok_visa_succeeds_and_a_replay_returns_the_same_capture(
    sandbox: SandboxProvider, ledger: MemoryLedger
) -> None:
    first = await sandbox.capture("order-1", 1250, "EUR", "tok_visa")
    again = await sandbox.capture("order-1", 1250, "EUR", "tok_visa")

    assert first.ok and first.ref is not None and first.ref.startswith("ch_sbx_")
    assert again == first
    assert len(ledger.entries) == 1
    assert ledger.entries["order-1"].attempts == 1  # the replay moved no money


async def test_find_capture_reports_only_money_that_moved(sandbox: SandboxProvider) -> None:
    captured = await sandbox.capture("order-1", 1250, "EUR", "tok_visa")
    await sandbox.capture("order-2", 500, "EUR", "tok_chargeDeclined")
    with pytest.raises(TransientProviderError):
        await sandbox.capture("order-3", 500, "EUR", "tok_processingError")

    found = await sandbox.find_capture("order-1")
    assert found is not None
    assert (found.ref, found.amount, found.currency) == (captured.ref, 1250, "EUR")
    assert await sandbox.find_capture("order-2") is None  # declined
    assert await sandbox.find_capture("order-3") is None  # only a transient failure so far
    assert await sandbox.find_capture("order-4") is None  # never seen
    assert await sandbox.find_capture("refund:order-1") is None


async def test_another_key_is_another_capture(sandbox: SandboxProvider) -> None:
    one = await sandbox.capture("order-1", 100, "EUR", "tok_visa")
    two = await sandbox.capture("order-2", 100, "EUR", "tok_visa")
    assert one.ref != two.ref


async def test_tok_charge_declined_is_declined_for_good(sandbox: SandboxProvider) -> None:
    first = await sandbox.capture("order-1", 100, "EUR", "tok_chargeDeclined")
    again = await sandbox.capture("order-1", 100, "EUR", "tok_chargeDeclined")
    assert not first.ok and first.decline_reason == "card_declined"
    assert again == first


async def test_tok_processing_error_fails_twice_then_succeeds_on_the_same_key(
    sandbox: SandboxProvider, ledger: MemoryLedger
) -> None:
    for _ in range(2):
        with pytest.raises(TransientProviderError):
            await sandbox.capture("order-1", 100, "EUR", "tok_processingError")
    third = await sandbox.capture("order-1", 100, "EUR", "tok_processingError")
    replay = await sandbox.capture("order-1", 100, "EUR", "tok_processingError")

    assert third.ok
    assert replay == third
    assert ledger.entries["order-1"].attempts == 3


async def test_processing_error_counts_attempts_per_key(sandbox: SandboxProvider) -> None:
    with pytest.raises(TransientProviderError):
        await sandbox.capture("order-1", 100, "EUR", "tok_processingError")
    with pytest.raises(TransientProviderError):
        await sandbox.capture("order-2", 100, "EUR", "tok_processingError")


@pytest.mark.parametrize(
    "token",
    [
        "4242424242424242",
        "tok_4242 4242 4242 4242",
        "visa",
        "tok_",
        "tok_" + "a" * 61,
        "tok_with-dash",
        "tok_unknownButWellFormed",
    ],
)
async def test_anything_but_a_known_test_token_is_an_invalid_token(
    sandbox: SandboxProvider, token: str
) -> None:
    result = await sandbox.capture("order-1", 100, "EUR", token)
    assert not result.ok and result.decline_reason == "invalid_token"


async def test_the_ledger_never_keeps_the_token(
    sandbox: SandboxProvider, ledger: MemoryLedger
) -> None:
    await sandbox.capture("order-1", 100, "EUR", "tok_visa")
    assert "tok_visa" not in repr(ledger.entries)


async def test_tok_slow_authorization_succeeds_after_the_configured_delay(
    ledger: MemoryLedger,
) -> None:
    sandbox = SandboxProvider(ledger, slow_s=0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await sandbox.capture("order-1", 100, "EUR", "tok_slowAuthorization")
    slow = loop.time() - started
    started = loop.time()
    replay = await sandbox.capture("order-1", 100, "EUR", "tok_slowAuthorization")

    assert result.ok and replay == result
    assert slow >= 0.2
    assert loop.time() - started < 0.2  # a decided key answers at once


async def test_refund_gives_back_a_known_capture_once(
    sandbox: SandboxProvider, ledger: MemoryLedger
) -> None:
    capture = await sandbox.capture("order-1", 900, "EUR", "tok_visa")
    assert capture.ref is not None

    refund = await sandbox.refund("refund:order-1", capture.ref, 900)
    replay = await sandbox.refund("refund:order-1", capture.ref, 900)

    assert refund.ok and refund.ref is not None and refund.ref.startswith("re_sbx_")
    assert replay == refund
    assert ledger.entries["refund:order-1"].attempts == 1
    assert ledger.entries["refund:order-1"].capture_ref == capture.ref


async def test_refund_of_an_unknown_capture_or_too_much_is_declined(
    sandbox: SandboxProvider,
) -> None:
    capture = await sandbox.capture("order-1", 900, "EUR", "tok_visa")
    assert capture.ref is not None

    unknown = await sandbox.refund("refund:x", "ch_sbx_nope", 900)
    too_much = await sandbox.refund("refund:order-1", capture.ref, 901)

    assert unknown.decline_reason == "unknown_capture"
    assert too_much.decline_reason == "invalid_amount"


async def test_the_retry_policy_reaches_the_capture_on_the_same_key(
    sandbox: SandboxProvider, ledger: MemoryLedger
) -> None:
    policy = RetryPolicy(attempts=2, initial_s=0.0)

    def call() -> Awaitable[ProviderResult]:
        return sandbox.capture("order-1", 100, "EUR", "tok_processingError")

    with pytest.raises(TransientProviderError):
        await policy.run("test", call, retry_on=(TransientProviderError,))
    # A later claim continues where the provider left off: the third attempt succeeds.
    result = await policy.run("test", call, retry_on=(TransientProviderError,))
    assert result.ok
    assert ledger.entries["order-1"].attempts == 3


# --- issue 11: holds, voids, partial refunds, 3-D Secure, webhooks -----------------------------

SECRET = "whsec_sandbox_test_0123456789abcdef"
SUCCEEDED = b'{"id":"e","type":"payment.succeeded","data":{}}'


@pytest.fixture
def signing_sandbox(ledger: MemoryLedger) -> SandboxProvider:
    return SandboxProvider(ledger, slow_s=0.0, webhook_secret=SECRET)


async def test_partial_refunds_add_up_to_at_most_the_capture(sandbox: SandboxProvider) -> None:
    capture = await sandbox.capture("order-1", 1000, "EUR", "tok_visa")
    assert capture.ref is not None

    first = await sandbox.refund("refund:1", capture.ref, 300)
    second = await sandbox.refund("refund:2", capture.ref, 600)
    too_much = await sandbox.refund("refund:3", capture.ref, 101)
    rest = await sandbox.refund("refund:4", capture.ref, 100)

    assert first.ok and second.ok and rest.ok
    assert too_much.decline_reason == "invalid_amount"
    assert await sandbox.refund("refund:5", capture.ref, 1) == ProviderResult.declined(
        "invalid_amount"
    )
    # A replay of a refund that went through is its first answer, not a new refund.
    assert await sandbox.refund("refund:1", capture.ref, 300) == first


async def test_an_authorization_is_captured_in_part_once_and_then_closed(
    sandbox: SandboxProvider,
) -> None:
    hold = await sandbox.authorize("order-1", 1000, "EUR", "tok_visa")
    assert hold.ok and hold.ref is not None and hold.ref.startswith("auth_sbx_")
    assert await sandbox.find_capture("order-1") is None  # a hold is not a capture

    captured = await sandbox.capture_authorized("capture:order-1", hold.ref, 700)
    again = await sandbox.capture_authorized("capture:order-1", hold.ref, 700)
    other = await sandbox.capture_authorized("capture:order-1:b", hold.ref, 300)
    void = await sandbox.void("void:order-1", hold.ref)

    assert captured.ok and again == captured
    assert other.decline_reason == "authorization_closed"
    assert void.decline_reason == "authorization_captured"
    assert captured.ref is not None
    refund = await sandbox.refund("refund:order-1", captured.ref, 700)
    assert refund.ok


async def test_more_than_the_hold_is_never_captured(sandbox: SandboxProvider) -> None:
    hold = await sandbox.authorize("order-1", 1000, "EUR", "tok_visa")
    assert hold.ref is not None
    result = await sandbox.capture_authorized("capture:order-1", hold.ref, 1001)
    assert result.decline_reason == "invalid_amount"


async def test_a_voided_hold_cannot_be_captured(sandbox: SandboxProvider) -> None:
    hold = await sandbox.authorize("order-1", 1000, "EUR", "tok_visa")
    assert hold.ref is not None
    void = await sandbox.void("void:order-1", hold.ref)
    late = await sandbox.capture_authorized("capture:order-1", hold.ref, 1000)
    assert void.ok
    assert late.decline_reason == "authorization_closed"
    unknown = await sandbox.void("void:x", "auth_sbx_unknown")
    assert unknown.decline_reason == "unknown_authorization"


async def test_tok_authorization_expires_holds_but_its_capture_is_declined(
    sandbox: SandboxProvider,
) -> None:
    hold = await sandbox.authorize("order-1", 1000, "EUR", "tok_authorizationExpires")
    assert hold.ok and hold.ref is not None
    late = await sandbox.capture_authorized("capture:order-1", hold.ref, 1000)
    assert late.decline_reason == "authorization_expired"


async def test_tok_refund_fails_captures_but_every_refund_is_declined(
    sandbox: SandboxProvider,
) -> None:
    capture = await sandbox.capture("order-1", 1000, "EUR", "tok_refundFails")
    assert capture.ok and capture.ref is not None
    refund = await sandbox.refund("refund:order-1", capture.ref, 1000)
    assert refund.decline_reason == "refund_failed"


async def test_tok_three_d_secure_waits_for_the_shopper_and_its_webhook_brings_the_verdict(
    signing_sandbox: SandboxProvider,
) -> None:
    pending = await signing_sandbox.capture("order-1", 1000, "EUR", "tok_threeDSecureRequired")
    replay = await signing_sandbox.capture("order-1", 1000, "EUR", "tok_threeDSecureRequired")

    assert not pending.ok and pending.awaits_action and pending.decline_reason is None
    assert pending.ref is not None and pending.next_action is not None
    assert pending.next_action.client_secret and pending.ref in pending.next_action.client_secret
    assert "secret" not in repr(pending.next_action)
    assert replay == pending
    assert await signing_sandbox.find_capture("order-1") is None  # no money moved yet

    sent = await signing_sandbox.confirm_action(pending.ref, succeeded=True, order_id="order-1")
    assert sent is not None
    body, headers = sent
    event = signing_sandbox.parse_webhook(body, headers)
    assert (event.kind, event.order_id, event.ref, event.amount) == (
        "succeeded",
        "order-1",
        pending.ref,
        1000,
    )
    found = await signing_sandbox.find_capture("order-1")
    assert found is not None and found.ref == pending.ref
    assert await signing_sandbox.capture("order-1", 1000, "EUR", "tok_threeDSecureRequired") == (
        ProviderResult.succeeded(pending.ref)
    )
    # Confirmed once: a second verdict finds nothing awaiting.
    assert await signing_sandbox.confirm_action(pending.ref, succeeded=False, order_id="x") is None


async def test_a_failed_three_d_secure_declines_the_payment(
    signing_sandbox: SandboxProvider,
) -> None:
    pending = await signing_sandbox.capture("order-1", 1000, "EUR", "tok_threeDSecureRequired")
    assert pending.ref is not None
    sent = await signing_sandbox.confirm_action(pending.ref, succeeded=False, order_id="order-1")
    assert sent is not None
    event = signing_sandbox.parse_webhook(*sent)
    assert (event.kind, event.ref, event.reason) == ("failed", pending.ref, "authentication_failed")
    again = await signing_sandbox.capture("order-1", 1000, "EUR", "tok_threeDSecureRequired")
    assert again.decline_reason == "authentication_failed"


def _signed(payload: bytes, secret: str = SECRET, at: int | None = None) -> dict[str, str]:
    return {SANDBOX_SIGNATURE_HEADER: sandbox_signature(secret, at or int(time.time()), payload)}


@pytest.mark.parametrize(
    ("what", "payload", "headers"),
    [
        ("no header", SUCCEEDED, {}),
        (
            "another secret",
            SUCCEEDED,
            _signed(SUCCEEDED, "whsec_other"),
        ),
        (
            "stale",
            SUCCEEDED,
            _signed(SUCCEEDED, at=1_000_000_000),
        ),
        (
            "tampered",
            b'{"id":"e","type":"payment.refunded","data":{}}',
            _signed(SUCCEEDED),
        ),
        ("garbage header", b"{}", {SANDBOX_SIGNATURE_HEADER: "t=abc,v1=00"}),
        ("not an event", b"[1, 2]", _signed(b"[1, 2]")),
    ],
)
def test_webhooks_not_signed_by_the_sandbox_are_rejected(
    signing_sandbox: SandboxProvider, what: str, payload: bytes, headers: dict[str, str]
) -> None:
    with pytest.raises(WebhookRejected):
        signing_sandbox.parse_webhook(payload, headers)


def test_without_a_webhook_secret_every_webhook_is_rejected(sandbox: SandboxProvider) -> None:
    payload = SUCCEEDED
    with pytest.raises(WebhookRejected):
        sandbox.parse_webhook(payload, _signed(payload))


def test_a_signed_webhook_of_a_type_payments_does_not_act_on_is_ignored(
    signing_sandbox: SandboxProvider,
) -> None:
    payload = b'{"id":"evt_1","type":"payment.dunno","data":{"ref":"ch_1","amount":true}}'
    event = signing_sandbox.parse_webhook(payload, _signed(payload))
    assert (event.id, event.kind, event.ref, event.amount) == ("evt_1", "ignored", "ch_1", None)


async def test_a_lost_answer_charges_once_and_the_next_ask_finds_the_capture(
    ledger: MemoryLedger,
) -> None:
    sandbox = SandboxProvider(ledger, slow_s=0.0, lost_answer_share=1.0, lost_answer_calls=2)
    for _ in range(2):
        with pytest.raises(TransientProviderError):
            await sandbox.capture("order-1", 700, "EUR", "tok_visa")
    # Charged on the first call already, whatever the caller heard:
    found = await sandbox.find_capture("order-1")
    answered = await sandbox.capture("order-1", 700, "EUR", "tok_visa")
    assert found is not None and answered.ok and answered.ref == found.ref
    assert ledger.entries["order-1"].attempts == 1


async def test_lost_answers_hit_the_chosen_share_of_keys_only(ledger: MemoryLedger) -> None:
    sandbox = SandboxProvider(ledger, slow_s=0.0, lost_answer_share=0.5)
    lost = 0
    for i in range(200):
        try:
            await sandbox.capture(f"order-{i}", 100, "EUR", "tok_visa")
        except TransientProviderError:
            lost += 1
    assert 60 < lost < 140
    declined = await sandbox.capture("order-x", 100, "EUR", "tok_chargeDeclined")
    assert declined.decline_reason == "card_declined"  # no money moved: nothing to lose
