"""Refunds an operator asks for (issue 11): part or all of a capture, repeated, never more in
total than it took, the provider called after the commit, and an order's close giving back only
what is left."""

from dataclasses import replace

import pytest

from libs.events.common import Money
from libs.events.payments import PaymentRefunded
from libs.kit.errors import Conflict, Invalid, NotFound
from services.payments import service
from services.payments.domain import Refund, Trace
from tests.support.fakes import FakeTx
from tests.unit.payments.fakes import Harness


@pytest.fixture
def pay() -> Harness:
    return Harness()


def _asked(payment_id: str, amount: int, key: str, reason: str = "damaged") -> service.RefundAsked:
    return service.RefundAsked(
        payment_id=payment_id,
        amount=Money(amount=amount, currency="EUR"),
        reason=reason,
        idempotency_key=key,
        request_hash=f"{amount}:{reason}",
        trace=Trace("req-refund", None),
    )


async def _captured(pay: Harness, order_id: str = "o-1", amount: int = 1000) -> str:
    await pay.checkout(order_id, amount=amount)
    [capture] = pay.store.payments.of(order_id)
    assert capture.status == "captured"
    return capture.id


async def _ask(pay: Harness, asked: service.RefundAsked) -> service.RefundAnswer:
    tx = FakeTx(pay.store, pay.events)
    answer = await service.ask_refund(tx, asked, pay.wake)
    tx.commit()
    return answer


def _refunded_events(pay: Harness) -> list[PaymentRefunded]:
    return [e for e in pay.events.emitted if isinstance(e, PaymentRefunded)]


async def test_partial_refunds_add_up_and_the_payment_shows_what_was_given_back(
    pay: Harness,
) -> None:
    payment_id = await _captured(pay)

    first = await _ask(pay, _asked(payment_id, 300, "k-1"))
    assert first.refund.status == "pending" and not first.replayed
    assert pay.provider.refunds == []  # never inside the request's transaction
    await pay.run_charger()
    await _ask(pay, _asked(payment_id, 700, "k-2"))
    await pay.run_charger()

    payment = await pay.store.payments.get(payment_id)
    assert payment is not None
    assert (payment.status, payment.refunded) == ("refunded", 1000)
    events = _refunded_events(pay)
    assert [(e.amount.amount, e.fully_refunded) for e in events] == [(300, False), (700, True)]
    assert all(e.payment_id == payment_id and e.reason == "damaged" for e in events)
    listed = await pay.store.refunds.of_payment(payment_id, None, 10)
    assert [(r.amount, r.status) for r in listed] == [(300, "succeeded"), (700, "succeeded")]
    assert all(r.provider_ref and r.provider_ref.startswith("re_sbx_") for r in listed)


async def test_between_refunds_the_payment_is_partially_refunded(pay: Harness) -> None:
    payment_id = await _captured(pay)
    await _ask(pay, _asked(payment_id, 250, "k-1"))
    await pay.run_charger()
    payment = await pay.store.payments.get(payment_id)
    assert payment is not None and (payment.status, payment.refunded) == ("partially_refunded", 250)


async def test_more_than_is_left_is_refused_naming_the_amount_and_holds_nothing(
    pay: Harness,
) -> None:
    payment_id = await _captured(pay)
    await _ask(pay, _asked(payment_id, 600, "k-1"))  # pending: already holds 600

    with pytest.raises(Invalid) as refused:
        await _ask(pay, _asked(payment_id, 401, "k-2"))
    assert refused.value.errors[0].field == "amount.amount"
    assert "400" in refused.value.errors[0].message
    await _ask(pay, _asked(payment_id, 400, "k-3"))
    await pay.run_charger()
    payment = await pay.store.payments.get(payment_id)
    assert payment is not None and payment.refunded == 1000


async def test_the_same_key_and_body_answers_the_same_refund_another_body_conflicts(
    pay: Harness,
) -> None:
    payment_id = await _captured(pay)
    first = await _ask(pay, _asked(payment_id, 300, "k-1"))
    await pay.run_charger()
    again = await _ask(pay, _asked(payment_id, 300, "k-1"))

    assert again.replayed and again.refund.id == first.refund.id
    assert again.refund.status == "succeeded"
    with pytest.raises(Conflict):
        await _ask(pay, _asked(payment_id, 301, "k-1"))
    assert len(pay.provider.refunds) == 1
    assert len(_refunded_events(pay)) == 1


async def test_a_refund_the_provider_declines_fails_and_releases_its_hold(pay: Harness) -> None:
    payment_id = await _captured(pay)
    pay.provider.decline_refunds = True
    await _ask(pay, _asked(payment_id, 1000, "k-1"))
    await pay.run_charger()

    [refund] = await pay.store.refunds.of_payment(payment_id, None, 10)
    assert (refund.status, refund.failure_reason) == ("failed", "refund_refused")
    assert _refunded_events(pay) == []
    pay.provider.decline_refunds = False
    await _ask(pay, _asked(payment_id, 1000, "k-2"))  # the whole capture is refundable again
    await pay.run_charger()
    payment = await pay.store.payments.get(payment_id)
    assert payment is not None and payment.status == "refunded"


async def test_nothing_is_refunded_of_a_failed_or_unknown_payment(pay: Harness) -> None:
    await pay.checkout("o-1", token="tok_chargeDeclined")
    [failed] = pay.store.payments.of("o-1")
    with pytest.raises(Conflict):
        await _ask(pay, _asked(failed.id, 100, "k-1"))
    with pytest.raises(NotFound):
        await _ask(pay, _asked("no-such-payment", 100, "k-1"))


async def test_another_currency_is_refused_naming_it(pay: Harness) -> None:
    payment_id = await _captured(pay)
    asked = replace(_asked(payment_id, 100, "k-1"), amount=Money(amount=100, currency="USD"))
    with pytest.raises(Invalid) as refused:
        await _ask(pay, asked)
    assert refused.value.errors[0].field == "amount.currency"


async def test_a_cancellation_after_a_partial_refund_gives_back_only_the_rest(
    pay: Harness,
) -> None:
    payment_id = await _captured(pay)
    await _ask(pay, _asked(payment_id, 300, "k-1"))
    await pay.run_charger()

    await pay.cancel("o-1")
    await pay.run_charger()

    events = _refunded_events(pay)
    assert [(e.amount.amount, e.fully_refunded, e.reason) for e in events] == [
        (300, False, "damaged"),
        (700, True, "cancelled"),
    ]
    payment = await pay.store.payments.get(payment_id)
    assert payment is not None and (payment.status, payment.refunded) == ("refunded", 1000)
    [close_refund] = pay.store.payments.of("o-1", kind="refund")
    assert close_refund.amount == 700
    assert [r.amount for r in await pay.store.refunds.of_payment(payment_id, None, 10)] == [
        300,
        700,
    ]


async def test_a_cancellation_after_everything_was_refunded_is_answered_at_once(
    pay: Harness,
) -> None:
    payment_id = await _captured(pay)
    await _ask(pay, _asked(payment_id, 1000, "k-1"))
    await pay.run_charger()
    calls = len(pay.provider.refunds)

    await pay.cancel("o-1")
    await pay.run_charger()

    assert len(pay.provider.refunds) == calls  # nothing left to give back
    last = _refunded_events(pay)[-1]
    assert (last.order_id, last.amount.amount, last.fully_refunded) == ("o-1", 0, True)


async def test_an_operator_cannot_refund_what_a_close_is_giving_back(pay: Harness) -> None:
    payment_id = await _captured(pay)
    await pay.reject("o-1", "reservation_expired")  # its refund is owed, not made yet
    with pytest.raises(Invalid):
        await _ask(pay, _asked(payment_id, 1, "k-1"))
    await pay.run_charger()
    assert [e.amount.amount for e in _refunded_events(pay)] == [1000]


def test_a_refund_row_keeps_no_token() -> None:
    assert "token" not in Refund.__dataclass_fields__
