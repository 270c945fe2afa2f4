"""The sandbox PSP: fixed answers per test token, idempotent on its key, never a card number."""

import asyncio
from collections.abc import Awaitable

import pytest

from libs.kit.retry import RetryPolicy
from services.payments.adapters import SandboxProvider
from services.payments.domain import ProviderResult, TransientProviderError
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
