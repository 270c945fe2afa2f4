"""Payments decisions: charge exactly once when both facts are known; refund or void on close."""

from dataclasses import replace

import pytest

from services.payments.domain import (
    CaptureBalance,
    CaptureDecision,
    CloseDecision,
    Intent,
    OrderPayment,
    Trace,
    accepts_instruction,
    after_capture,
    close,
    decide_capture,
    must_look_up_first,
    owe_capture,
    owe_refund,
    refund_problem,
    status_after_refunds,
    storable_token,
)

READY = OrderPayment(
    order_id="o-1", amount=1000, currency="EUR", token="tok_visa", stock_reserved=True
)


def test_charges_when_instruction_and_reservation_are_both_known() -> None:
    assert decide_capture(READY) is CaptureDecision.CAPTURE


@pytest.mark.parametrize(
    "state",
    [
        OrderPayment(order_id="o-1"),
        replace(READY, stock_reserved=False),  # instruction first, stock not yet
        OrderPayment(order_id="o-1", stock_reserved=True),  # stock first, instruction not yet
    ],
)
def test_waits_for_the_missing_fact(state: OrderPayment) -> None:
    assert decide_capture(state) is CaptureDecision.WAIT


@pytest.mark.parametrize(
    "state",
    [
        replace(READY, closed_reason="rejected"),
        replace(READY, closed_reason="cancelled"),
        replace(READY, capture_status="pending"),
        replace(READY, capture_status="captured"),
        replace(READY, capture_status="failed"),
        replace(READY, capture_status="refunded"),
    ],
)
def test_never_charges_a_closed_or_already_decided_order(state: OrderPayment) -> None:
    assert decide_capture(state) is CaptureDecision.NOTHING


def test_declines_without_the_provider_when_there_is_no_usable_token_or_amount() -> None:
    assert decide_capture(replace(READY, token=None)) is CaptureDecision.DECLINE_INVALID_TOKEN
    assert decide_capture(replace(READY, amount=0)) is CaptureDecision.DECLINE_INVALID_AMOUNT


def test_only_the_first_instruction_of_an_open_order_counts() -> None:
    assert accepts_instruction(OrderPayment(order_id="o-1", stock_reserved=True))
    assert not accepts_instruction(READY)
    assert not accepts_instruction(OrderPayment(order_id="o-1", closed_reason="cancelled"))


@pytest.mark.parametrize("token", ["4242424242424242", "tok 4242-4242-4242-4242", "x" * 101, ""])
def test_card_numbers_and_oversized_tokens_are_never_kept(token: str) -> None:
    assert storable_token(token) is None


def test_test_tokens_are_kept_until_the_charge_is_decided() -> None:
    assert storable_token("tok_visa") == "tok_visa"


def decide_close(state: OrderPayment, *, cancellation: bool) -> CloseDecision:
    return close(state, cancellation=cancellation, reason="out_of_stock")[1]


def test_rejection_refunds_a_capture() -> None:
    captured = replace(READY, capture_status="captured")
    assert decide_close(captured, cancellation=False) is CloseDecision.REFUND
    assert decide_close(captured, cancellation=True) is CloseDecision.REFUND
    closed, _ = close(captured, cancellation=False, reason="reservation_expired")
    assert closed.refund_reason == "reservation_expired"
    # What is owed is what is left of the capture (refunds an operator made keep the rest).
    owed = owe_refund(closed, 700)
    assert (owed.refund_status, owed.refund_amount, owed.attempts) == ("pending", 700, 0)


def test_a_close_after_refunds_gave_everything_back_owes_nothing() -> None:
    closed, decision = close(
        replace(READY, capture_status="captured"), cancellation=True, reason="cancelled"
    )
    assert decision is CloseDecision.REFUND
    owed = owe_refund(closed, 0)
    assert (owed.refund_status, owed.refund_amount) == ("refunded", 0)


def _capture(amount: int = 1000, reserved: int = 0) -> CaptureBalance:
    return CaptureBalance(
        payment_id="pay-1",
        order_id="o-1",
        customer_id="c-1",
        amount=amount,
        currency="EUR",
        status="captured",
        provider_ref="ch_1",
        refunded=0,
        reserved=reserved,
    )


@pytest.mark.parametrize(
    ("capture", "amount", "currency", "problem"),
    [
        (_capture(), 1000, "EUR", None),
        (_capture(reserved=400), 600, "EUR", None),
        (_capture(reserved=400), 601, "EUR", "amount.amount"),
        (_capture(), 0, "EUR", "amount.amount"),
        (_capture(), -5, "EUR", "amount.amount"),
        (_capture(), 100, "USD", "amount.currency"),
        (replace(_capture(), status="failed", provider_ref=None), 100, "EUR", "state"),
    ],
)
def test_a_refund_gives_back_at_most_what_is_left_in_the_payments_currency(
    capture: CaptureBalance, amount: int, currency: str, problem: str | None
) -> None:
    found = refund_problem(capture, amount, currency)
    if problem is None:
        assert found is None
    else:
        assert found is not None and (found.field or "state") == problem


def test_a_refund_is_partial_until_everything_is_given_back() -> None:
    assert status_after_refunds(1000, 999) == "partially_refunded"
    assert status_after_refunds(1000, 1000) == "refunded"


def test_rejection_without_capture_does_nothing() -> None:
    assert decide_close(READY, cancellation=False) is CloseDecision.NOTHING
    failed = replace(READY, capture_status="failed")
    assert decide_close(failed, cancellation=False) is CloseDecision.NOTHING


def test_cancellation_without_capture_is_voided() -> None:
    assert decide_close(OrderPayment(order_id="o-1"), cancellation=True) is CloseDecision.VOID
    failed = replace(READY, capture_status="failed")
    assert decide_close(failed, cancellation=True) is CloseDecision.VOID


def test_closing_twice_answers_once() -> None:
    refunded = replace(READY, capture_status="refunded", closed_reason="rejected")
    assert decide_close(refunded, cancellation=False) is CloseDecision.NOTHING
    assert decide_close(refunded, cancellation=True) is CloseDecision.NOTHING
    voided = OrderPayment(order_id="o-1", closed_reason="cancelled")
    assert decide_close(voided, cancellation=True) is CloseDecision.NOTHING
    refunding = replace(READY, capture_status="captured", refund_status="pending")
    assert decide_close(refunding, cancellation=True) is CloseDecision.NOTHING


def test_closing_erases_the_token_and_keeps_the_first_reason() -> None:
    closed, _ = close(READY, cancellation=False, reason="out_of_stock")
    again, _ = close(closed, cancellation=True, reason="customer_request")
    assert closed.token is None
    assert (again.closed_reason, again.refund_reason) == ("rejected", "out_of_stock")


def test_a_close_withdraws_a_capture_no_claim_took_and_awaits_one_that_was() -> None:
    owed = owe_capture(READY)
    withdrawn, decision = close(owed, cancellation=True, reason="customer_request")
    assert decision is CloseDecision.VOID and withdrawn.capture_status is None
    claimed = replace(owed, attempts=1)
    waiting, decision = close(claimed, cancellation=True, reason="customer_request")
    assert decision is CloseDecision.AWAIT_CAPTURE and waiting.capture_status == "pending"


def test_a_capture_outcome_for_a_closed_order_refunds_or_voids() -> None:
    rejected = replace(READY, closed_reason="rejected")
    cancelled = replace(READY, closed_reason="cancelled")
    assert after_capture(rejected, moved=True) is CloseDecision.REFUND
    assert after_capture(cancelled, moved=True) is CloseDecision.REFUND
    assert after_capture(cancelled, moved=False) is CloseDecision.VOID
    assert after_capture(rejected, moved=False) is CloseDecision.NOTHING
    assert after_capture(READY, moved=True) is CloseDecision.NOTHING


def _intent(attempts: int, closed: bool) -> Intent:
    return Intent("o-1", "capture", attempts, 100, "EUR", "tok_visa", closed, None, Trace())


def test_the_provider_is_asked_first_on_a_reclaim_or_for_a_closed_order() -> None:
    assert not must_look_up_first(_intent(1, closed=False))
    assert must_look_up_first(_intent(2, closed=False))
    assert must_look_up_first(_intent(1, closed=True))
