"""Payments decisions: charge exactly once when both facts are known; refund or void on close."""

from dataclasses import replace

import pytest

from services.payments.domain import (
    CaptureDecision,
    CloseDecision,
    OrderPayment,
    accepts_instruction,
    capture_may_be_unrecorded,
    decide_capture,
    decide_close,
    storable_token,
)

READY = OrderPayment(
    order_id="o-1", amount=1000, currency="EUR", has_token=True, stock_reserved=True
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
        replace(READY, capture_status="captured"),
        replace(READY, capture_status="failed"),
        replace(READY, capture_status="refunded"),
    ],
)
def test_never_charges_a_closed_or_already_decided_order(state: OrderPayment) -> None:
    assert decide_capture(state) is CaptureDecision.NOTHING


def test_declines_without_the_provider_when_there_is_no_usable_token_or_amount() -> None:
    assert decide_capture(replace(READY, has_token=False)) is CaptureDecision.DECLINE_INVALID_TOKEN
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


def test_rejection_refunds_a_capture() -> None:
    captured = replace(READY, capture_status="captured")
    assert decide_close(captured, cancellation=False) is CloseDecision.REFUND
    assert decide_close(captured, cancellation=True) is CloseDecision.REFUND


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


@pytest.mark.parametrize(
    "state",
    [
        READY,  # both facts known, the capture's own commit lost
        replace(READY, stock_reserved=False),  # the reservation was the fact rolled back
        OrderPayment(order_id="o-1", stock_reserved=True),  # the instruction was
    ],
)
def test_closing_asks_the_provider_when_a_capture_may_be_unrecorded(state: OrderPayment) -> None:
    assert capture_may_be_unrecorded(state)


@pytest.mark.parametrize(
    "state",
    [
        OrderPayment(order_id="o-1"),  # neither fact: nothing can have been captured
        replace(READY, capture_status="captured"),
        replace(READY, capture_status="failed"),
        replace(READY, capture_status="refunded"),
    ],
)
def test_closing_trusts_the_record_otherwise(state: OrderPayment) -> None:
    assert not capture_may_be_unrecorded(state)
