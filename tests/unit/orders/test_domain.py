"""The order status machine, the cancellation handshake, the deadline and request identity."""

from datetime import UTC, datetime, timedelta
from itertools import product

import pytest

from libs.kit.idempotency import request_hash
from services.orders import domain
from services.orders.domain import IllegalTransition, Order, OrderStatus

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
DEADLINE = NOW + timedelta(minutes=15)
S = OrderStatus

ALLOWED_MOVES = {
    (S.PENDING, S.CONFIRMED),
    (S.PENDING, S.REJECTED),
    (S.PENDING, S.CANCELLED),
    (S.CONFIRMED, S.SHIPPED),
    (S.CONFIRMED, S.CANCELLED),
    (S.SHIPPED, S.DELIVERED),
}


def order(status: OrderStatus = S.PENDING, **kw: object) -> Order:
    return Order(status=status, reservation_deadline=DEADLINE, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("current", "target"), list(product(S, S)))
def test_every_move_is_allowed_or_refused_as_the_contract_says(
    current: OrderStatus, target: OrderStatus
) -> None:
    if (current, target) in ALLOWED_MOVES:
        assert order(current).moved_to(target).status is target
    else:
        with pytest.raises(IllegalTransition):
            order(current).moved_to(target)


@pytest.mark.parametrize("terminal", [S.REJECTED, S.CANCELLED, S.DELIVERED])
def test_terminal_orders_never_change(terminal: OrderStatus) -> None:
    done = order(terminal, cancellation_requested=True)
    assert domain.payment_captured(done, NOW) is None
    assert domain.reject(done, "out_of_stock") is None
    assert domain.expire(done, DEADLINE + timedelta(hours=1)) is None
    assert domain.cancellation_stock_returned(done) is None
    assert domain.cancellation_payment_returned(done) is None
    with pytest.raises(IllegalTransition):
        domain.request_cancellation(done)
    with pytest.raises(IllegalTransition):
        domain.ship(done)
    with pytest.raises(IllegalTransition):
        domain.deliver(done)


def test_capture_in_time_confirms() -> None:
    confirmed = domain.payment_captured(order(stock_reserved=True), NOW)
    assert confirmed is not None
    assert confirmed.status is S.CONFIRMED
    assert confirmed.reason is None


def test_capture_exactly_at_the_deadline_still_confirms() -> None:
    confirmed = domain.payment_captured(order(stock_reserved=True), DEADLINE)
    assert confirmed is not None and confirmed.status is S.CONFIRMED


def test_a_capture_that_overtakes_its_stock_reserved_waits_for_it_to_confirm() -> None:
    paid = domain.payment_captured(order(), NOW)
    assert paid is not None and (paid.status, paid.paid) == (S.PENDING, True)
    assert domain.payment_captured(paid, NOW) is None  # a redelivery changes nothing more
    confirmed = domain.note_stock_reserved(paid)
    assert confirmed is not None
    assert (confirmed.status, confirmed.stock_reserved) == (S.CONFIRMED, True)


def test_stock_reserved_alone_only_notes_the_reservation() -> None:
    reserved = domain.note_stock_reserved(order())
    assert reserved is not None and (reserved.status, reserved.stock_reserved) == (S.PENDING, True)


def test_a_paid_order_being_cancelled_is_not_confirmed_by_its_late_stock_reserved() -> None:
    paid = domain.payment_captured(order(), NOW)
    assert paid is not None
    cancelling = domain.request_cancellation(paid)
    reserved = domain.note_stock_reserved(cancelling)
    assert reserved is not None and reserved.status is S.PENDING


def test_capture_after_the_deadline_rejects_instead_of_confirming() -> None:
    late = domain.payment_captured(order(), DEADLINE + timedelta(seconds=1))
    assert late is not None
    assert (late.status, late.reason) == (S.REJECTED, "reservation_expired")


def test_capture_while_cancellation_is_requested_does_not_confirm() -> None:
    cancelling = domain.request_cancellation(order())
    assert domain.payment_captured(cancelling, NOW) is None


def test_duplicate_capture_changes_nothing() -> None:
    assert domain.payment_captured(order(S.CONFIRMED), NOW) is None


@pytest.mark.parametrize("reason", ["out_of_stock", "payment_declined", "reservation_expired"])
def test_pending_order_is_rejected_with_the_reason(reason: str) -> None:
    rejected = domain.reject(order(), reason)
    assert rejected is not None
    assert (rejected.status, rejected.reason) == (S.REJECTED, reason)


@pytest.mark.parametrize("status", [S.CONFIRMED, S.SHIPPED])
def test_late_rejection_does_not_touch_a_confirmed_order(status: OrderStatus) -> None:
    assert domain.reject(order(status), "payment_declined") is None


def test_unknown_rejection_reason_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        domain.reject(order(), "bored")


def test_stock_reserved_is_noted_once_and_only_on_pending_orders() -> None:
    noted = domain.note_stock_reserved(order())
    assert noted is not None and noted.stock_reserved and noted.status is S.PENDING
    assert domain.note_stock_reserved(noted) is None
    assert domain.note_stock_reserved(order(S.REJECTED)) is None


@pytest.mark.parametrize("status", [S.PENDING, S.CONFIRMED])
def test_cancellation_is_recorded_and_repeating_it_changes_nothing(status: OrderStatus) -> None:
    requested = domain.request_cancellation(order(status), "changed_my_mind")
    assert requested.cancellation_requested
    assert requested.cancellation_reason == "changed_my_mind"
    assert requested.status is status  # nothing is cancelled until both answers are in
    assert domain.request_cancellation(requested, "other") == requested


@pytest.mark.parametrize("status", [S.SHIPPED, S.DELIVERED, S.REJECTED, S.CANCELLED])
def test_cancellation_is_refused_once_shipped_or_closed(status: OrderStatus) -> None:
    with pytest.raises(IllegalTransition):
        domain.request_cancellation(order(status))


@pytest.mark.parametrize("status", [S.PENDING, S.CONFIRMED])
@pytest.mark.parametrize("stock_first", [True, False])
def test_cancellation_needs_both_answers_in_either_order(
    status: OrderStatus, stock_first: bool
) -> None:
    requested = domain.request_cancellation(order(status))
    first, second = (
        (domain.cancellation_stock_returned, domain.cancellation_payment_returned)
        if stock_first
        else (domain.cancellation_payment_returned, domain.cancellation_stock_returned)
    )
    half = first(requested)
    assert half is not None and half.status is status
    assert first(half) is None  # the same answer again is a duplicate
    done = second(half)
    assert done is not None
    assert (done.status, done.reason) == (S.CANCELLED, "customer_request")


def test_answers_without_a_cancellation_request_are_ignored() -> None:
    assert domain.cancellation_stock_returned(order(S.CONFIRMED)) is None
    assert domain.cancellation_payment_returned(order()) is None


def test_a_rejection_that_arrives_first_wins_over_the_cancellation() -> None:
    requested = domain.request_cancellation(order())
    rejected = domain.reject(requested, "out_of_stock")
    assert rejected is not None and rejected.status is S.REJECTED
    assert domain.cancellation_stock_returned(rejected) is None
    assert domain.cancellation_payment_returned(rejected) is None


def test_shipping_needs_a_confirmed_order_not_being_cancelled() -> None:
    assert domain.ship(order(S.CONFIRMED)).status is S.SHIPPED
    with pytest.raises(IllegalTransition):
        domain.ship(order())
    with pytest.raises(IllegalTransition, match="being cancelled"):
        domain.ship(domain.request_cancellation(order(S.CONFIRMED)))


def test_delivery_needs_a_shipped_order() -> None:
    assert domain.deliver(order(S.SHIPPED)).status is S.DELIVERED
    with pytest.raises(IllegalTransition):
        domain.deliver(order(S.CONFIRMED))


def test_only_pending_orders_past_the_deadline_expire() -> None:
    later = DEADLINE + timedelta(seconds=1)
    assert domain.expire(order(), DEADLINE) is None
    expired = domain.expire(order(), later)
    assert expired is not None
    assert (expired.status, expired.reason) == (S.REJECTED, "reservation_expired")
    assert domain.expire(order(S.CONFIRMED), later) is None


def test_request_hash_ignores_key_order_and_spacing_but_not_content() -> None:
    body = {"lines": [{"sku": "A", "quantity": 1}], "region": "FR", "payment": {"token": "tok_a"}}
    same = {"payment": {"token": "tok_a"}, "region": "FR", "lines": [{"quantity": 1, "sku": "A"}]}
    other = body | {"region": "DE"}
    assert request_hash(body) == request_hash(same)
    assert request_hash(body) != request_hash(other)
    assert len(request_hash(body)) == 64


def test_same_key_same_body_is_a_replay_and_another_body_a_conflict() -> None:
    stored = request_hash({"a": 1})
    assert domain.is_replay(stored, request_hash({"a": 1}))
    assert not domain.is_replay(stored, request_hash({"a": 2}))


def test_first_duplicate_points_at_the_repeated_line() -> None:
    assert domain.first_duplicate(["A", "B", "C"]) is None
    assert domain.first_duplicate(["A", "B", "A", "B"]) == 2
