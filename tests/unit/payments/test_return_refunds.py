"""Refunds of returns (issue 12) on fakes: ReturnReceived owes a refund of the return's share,
made by the charger after the commit, once per return however often the event comes, carried on
PaymentRefunded with the return's id; nothing for a 0 share; a decline leaves it to an operator."""

import pytest

from libs.events.common import Money
from libs.events.payments import PaymentRefunded
from services.payments import service
from services.payments.domain import Refund, Trace
from tests.support.fakes import FakeTx
from tests.unit.payments.fakes import Harness


@pytest.fixture
def pay() -> Harness:
    return Harness()


async def _received(
    pay: Harness, return_id: str, amount: int, order_id: str = "o-1"
) -> Refund | None:
    tx = FakeTx(pay.store, pay.events)
    made = await service.refund_return(
        tx,
        order_id,
        return_id,
        Money(amount=amount, currency="EUR"),
        trace=Trace("req-receive", f"evt-{return_id}"),
        wake=pay.wake,
    )
    tx.commit()
    return made


def _refunded(pay: Harness) -> list[PaymentRefunded]:
    return [e for e in pay.events.emitted if isinstance(e, PaymentRefunded)]


async def test_a_received_return_is_refunded_its_share_after_the_commit(pay: Harness) -> None:
    await pay.checkout("o-1", amount=3599)
    made = await _received(pay, "r-1", 3000)
    assert made is not None and made.status == "pending"
    assert pay.provider.refunds == []  # never inside the event's transaction
    await pay.run_charger()

    [event] = _refunded(pay)
    assert (event.return_id, event.amount.amount, event.fully_refunded) == ("r-1", 3000, False)
    [capture] = pay.store.payments.of("o-1")
    assert (capture.status, capture.refunded) == ("partially_refunded", 3000)
    [refund] = await pay.store.refunds.of_payment(capture.id, None, 10)
    assert (refund.amount, refund.reason, refund.status) == (3000, "return", "succeeded")


async def test_a_redelivered_return_is_refunded_once(pay: Harness) -> None:
    await pay.checkout("o-1", amount=3599)
    await _received(pay, "r-1", 3000)
    assert await _received(pay, "r-1", 3000) is None
    await pay.run_charger()
    assert await _received(pay, "r-1", 3000) is None
    await pay.run_charger()

    assert [e.amount.amount for e in _refunded(pay)] == [3000]
    assert len(pay.provider.refunds) == 1


async def test_returns_of_an_order_never_refund_more_than_its_capture(pay: Harness) -> None:
    await pay.checkout("o-1", amount=1000)
    await _received(pay, "r-1", 700)
    await _received(pay, "r-2", 700)  # only 300 is left
    assert await _received(pay, "r-3", 100) is None  # nothing is
    await pay.run_charger()

    assert sorted((e.return_id, e.amount.amount) for e in _refunded(pay)) == [
        ("r-1", 700),
        ("r-2", 300),
    ]
    [capture] = pay.store.payments.of("o-1")
    assert (capture.status, capture.refunded) == ("refunded", 1000)


async def test_a_zero_share_or_an_order_without_capture_refunds_nothing(pay: Harness) -> None:
    await pay.checkout("o-1", amount=1000)
    assert await _received(pay, "r-0", 0) is None
    assert await _received(pay, "r-x", 500, order_id="never-paid") is None
    await pay.run_charger()
    assert _refunded(pay) == []


async def test_a_declined_refund_of_a_return_is_left_for_an_operator(pay: Harness) -> None:
    await pay.checkout("o-1", amount=1000)
    pay.provider.decline_refunds = True
    await _received(pay, "r-1", 400)
    await pay.run_charger()

    assert _refunded(pay) == []
    [capture] = pay.store.payments.of("o-1")
    assert (capture.status, capture.refunded) == ("captured", 0)
    [refund] = await pay.store.refunds.of_payment(capture.id, None, 10)
    assert refund.status == "failed"
