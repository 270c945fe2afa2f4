"""Return rules (issue 12): each unit's share of its line as charged, with remainders falling so
that every unit of a line refunds exactly its total; the window after delivery; what is still
returnable; what a receipt may record; the shipping policy; when a return completes."""

from datetime import UTC, datetime, timedelta

import pytest

from libs.events.common import Money, PricedLine
from services.orders import domain
from services.orders.domain import (
    OrderReturn,
    OrderStatus,
    ReceivedLine,
    ReturnLine,
    ReturnNotAllowed,
    ReturnStatus,
)

DELIVERED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def eur(amount: int) -> Money:
    return Money(amount=amount, currency="EUR")


def line(sku: str, quantity: int, total: int) -> PricedLine:
    return PricedLine(
        sku=sku,
        quantity=quantity,
        unit_price=eur(total // quantity),
        discount=eur(0),
        tax=eur(0),
        total=eur(total),
    )


def a_return(
    status: ReturnStatus,
    lines: tuple[ReturnLine, ...],
    received: tuple[ReceivedLine, ...] = (),
    refund: int | None = None,
) -> OrderReturn:
    return OrderReturn(
        id=f"r-{status}-{len(lines)}",
        order_id="o-1",
        status=status,
        lines=lines,
        requested_at=DELIVERED,
        received=received,
        refund=None if refund is None else eur(refund),
    )


# --- the share of a line as charged -------------------------------------------------------------


def test_each_unit_gets_its_cumulative_share_and_the_remainder_falls_on_the_later_units() -> None:
    # 1199 over 3 units: 399.67 each; floor of the cumulative shares 399, 799, 1199.
    shares = [domain.charged_share(1199, 3, before, 1) for before in range(3)]
    assert shares == [399, 400, 400]


@pytest.mark.parametrize("total", [0, 1, 2, 999, 1000, 1199, 4501, 10**9 + 7])
@pytest.mark.parametrize("quantity", [1, 2, 3, 7])
def test_returning_every_unit_in_any_split_refunds_exactly_the_line_total(
    total: int, quantity: int
) -> None:
    assert domain.charged_share(total, quantity, 0, quantity) == total
    one_by_one = sum(domain.charged_share(total, quantity, b, 1) for b in range(quantity))
    assert one_by_one == total
    first = quantity // 2
    split = domain.charged_share(total, quantity, 0, first) + domain.charged_share(
        total, quantity, first, quantity - first
    )
    assert split == total


def test_a_share_never_goes_beyond_the_units_of_the_line() -> None:
    assert domain.charged_share(1000, 2, 2, 1) == 0
    assert domain.charged_share(1000, 2, 1, 5) == 500
    assert domain.charged_share(1000, 2, 0, 0) == 0


def test_the_refund_of_received_units_is_their_share_whatever_their_condition() -> None:
    lines = (line("A", 2, 2400), line("B", 1, 840))
    received = [ReceivedLine("A", 1, "resellable"), ReceivedLine("A", 1, "damaged")]
    assert domain.refund_for_received(lines, {}, received, left_to_refund=10_000) == 2400
    # Another return received one unit of A before: one more unit is the rest of A's total.
    late = [ReceivedLine("A", 1, "damaged")]
    assert domain.refund_for_received(lines, {"A": 1}, late, left_to_refund=10_000) == 1200


def test_the_refund_never_exceeds_what_is_left_unrefunded_of_the_order() -> None:
    lines = (line("A", 2, 2400),)
    received = [ReceivedLine("A", 2, "resellable")]
    assert domain.refund_for_received(lines, {}, received, left_to_refund=1000) == 1000
    assert domain.refund_for_received(lines, {}, received, left_to_refund=-5) == 0


# --- the window ---------------------------------------------------------------------------------


def test_a_delivered_order_may_be_returned_until_the_window_closes() -> None:
    last_moment = DELIVERED + timedelta(days=30)
    domain.check_return_window(OrderStatus.DELIVERED, DELIVERED, last_moment, 30)
    with pytest.raises(ReturnNotAllowed, match="window"):
        domain.check_return_window(
            OrderStatus.DELIVERED, DELIVERED, last_moment + timedelta(seconds=1), 30
        )


@pytest.mark.parametrize(
    "status", [OrderStatus.CONFIRMED, OrderStatus.SHIPPED, OrderStatus.CANCELLED]
)
def test_only_a_delivered_order_may_be_returned(status: OrderStatus) -> None:
    with pytest.raises(ReturnNotAllowed, match="delivered"):
        domain.check_return_window(status, None, DELIVERED, 30)


# --- returnable quantities ----------------------------------------------------------------------


def test_what_is_returnable_is_ordered_minus_what_returns_hold() -> None:
    lines = (line("A", 3, 3000), line("B", 1, 500))
    asked = a_return(ReturnStatus.REQUESTED, (ReturnLine("A", 2, "damaged"),))
    # Received: only what arrived counts (one of two asked); the other may be asked again.
    partly = a_return(
        ReturnStatus.RECEIVED,
        (ReturnLine("B", 1, "other"),),
        received=(),
    )
    assert domain.returnable(lines, (asked, partly)) == {"A": 1, "B": 1}
    done = a_return(
        ReturnStatus.COMPLETED,
        (ReturnLine("A", 1, "other"),),
        received=(ReceivedLine("A", 1, "damaged"),),
    )
    assert domain.returnable(lines, (asked, done)) == {"A": 0, "B": 1}


def test_requested_lines_are_checked_and_the_fault_is_named() -> None:
    left = {"A": 2, "B": 1}

    def problem(*lines: ReturnLine) -> str | None:
        found = domain.return_line_problem(list(lines), left)
        return None if found is None else found.field

    assert problem(ReturnLine("A", 2, "damaged"), ReturnLine("B", 1, "other")) is None
    assert problem(ReturnLine("A", 3, "damaged")) == "lines[0].quantity"
    assert problem(ReturnLine("B", 1, "other"), ReturnLine("Z", 1, "other")) == "lines[1].sku"
    assert problem(ReturnLine("A", 1, "because I say so")) == "lines[0].reason"
    assert problem(ReturnLine("A", 1, "other"), ReturnLine("A", 1, "other")) == "lines[1].sku"


def test_a_receipt_names_skus_of_the_return_and_at_most_the_units_requested() -> None:
    asked = (ReturnLine("A", 2, "damaged"),)

    def problem(*lines: ReceivedLine) -> str | None:
        found = domain.received_line_problem(list(lines), asked)
        return None if found is None else found.field

    assert problem(ReceivedLine("A", 1, "resellable"), ReceivedLine("A", 1, "damaged")) is None
    assert problem(ReceivedLine("A", 1, "resellable")) is None  # fewer arrived
    assert problem(ReceivedLine("A", 2, "resellable"), ReceivedLine("A", 1, "damaged")) == (
        "lines[1].quantity"
    )
    assert problem(ReceivedLine("B", 1, "resellable")) == "lines[0].sku"
    assert problem(ReceivedLine("A", 1, "broken")) == "lines[0].condition"
    assert problem(ReceivedLine("A", 1, "damaged"), ReceivedLine("A", 1, "damaged")) == (
        "lines[1].sku"
    )


# --- shipping -----------------------------------------------------------------------------------


def test_shipping_is_refunded_only_by_policy_and_once_every_unit_is_back() -> None:
    lines = (line("A", 2, 2000), line("B", 1, 500))
    everything = {"A": 2, "B": 1}
    assert domain.shipping_refund("never", 490, lines, {}, everything) == 0
    assert domain.shipping_refund("when_all_returned", 490, lines, {}, everything) == 490
    assert domain.shipping_refund("when_all_returned", 490, lines, {}, {"A": 2}) == 0
    assert domain.shipping_refund("when_all_returned", 490, lines, {"B": 1}, {"A": 2}) == 490
    assert domain.shipping_refund("when_all_returned", 0, lines, {}, everything) == 0


# --- completion ---------------------------------------------------------------------------------


def test_a_received_return_completes_when_stock_and_refund_are_both_done_once() -> None:
    received = a_return(ReturnStatus.RECEIVED, (ReturnLine("A", 1, "other"),), refund=100)
    stocked = domain.return_settled(received, stock=True, refund=False)
    assert stocked is not None and stocked.status is ReturnStatus.RECEIVED
    assert domain.return_settled(stocked, stock=True, refund=False) is None  # a duplicate
    done = domain.return_settled(stocked, stock=False, refund=True)
    assert done is not None and done.status is ReturnStatus.COMPLETED
    assert domain.return_settled(done, stock=False, refund=True) is None
    asked = a_return(ReturnStatus.REQUESTED, (ReturnLine("A", 1, "other"),))
    assert domain.return_settled(asked, stock=True, refund=False) is None
