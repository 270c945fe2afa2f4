"""3-D Secure and the provider's webhooks on fakes (issue 11): a payment that needs the shopper's
confirmation waits, `requires_action` with its next action; the provider's verdict, delivered by
a signed webhook once or many times, captures or declines it exactly once; a dispute is
announced."""

import pytest

from libs.events.common import Money
from libs.events.payments import (
    PaymentCaptured,
    PaymentDisputed,
    PaymentFailed,
    PaymentRefunded,
    PaymentVoided,
)
from libs.kit.errors import Unavailable
from services.payments import service
from services.payments.domain import TOK_3DS, NextAction, ProviderEvent, Trace
from tests.support.fakes import FakeTx
from tests.unit.payments.fakes import Harness


@pytest.fixture
def pay() -> Harness:
    return Harness()


async def _awaiting(pay: Harness, order_id: str = "o-1") -> str:
    await pay.checkout(order_id, token=TOK_3DS)
    [payment] = pay.store.payments.of(order_id)
    assert payment.status == "requires_action" and payment.provider_ref is not None
    return payment.provider_ref


async def _verdict(pay: Harness, ref: str, succeeded: bool) -> str:
    sent = await pay.provider.sandbox.confirm_action(ref, succeeded=succeeded)
    assert sent is not None
    event = pay.provider.parse_webhook(*sent)
    return await _deliver(pay, event)


async def _deliver(pay: Harness, event: ProviderEvent) -> str:
    tx = FakeTx(pay.store, pay.events)
    outcome = await service.apply_provider_event(tx, "sandbox", event, pay.wake)
    tx.commit()
    return outcome


async def test_a_payment_needing_3ds_waits_with_its_next_action_and_moves_no_money(
    pay: Harness,
) -> None:
    await _awaiting(pay)
    [payment] = pay.store.payments.of("o-1")
    assert payment.next_action is not None and payment.next_action.type == "three_d_secure"
    assert payment.next_action.client_secret
    assert pay.events.of_type(PaymentCaptured) == [] and pay.events.of_type(PaymentFailed) == []
    assert pay.store.orders.rows["o-1"].token is None  # decided: the token is gone
    assert await pay.provider.sandbox.find_capture("o-1") is None


async def test_the_shoppers_confirmation_captures_once_however_often_it_is_delivered(
    pay: Harness,
) -> None:
    ref = await _awaiting(pay)
    sent = await pay.provider.sandbox.confirm_action(ref, succeeded=True)
    assert sent is not None
    event = pay.provider.parse_webhook(*sent)

    assert await _deliver(pay, event) == "captured"
    assert await _deliver(pay, event) == "duplicate"

    [captured] = pay.events.of_type(PaymentCaptured)
    [payment] = pay.store.payments.of("o-1")
    assert isinstance(captured, PaymentCaptured)
    assert (captured.payment_id, captured.provider_ref) == (payment.id, ref)
    assert (payment.status, payment.next_action) == ("captured", None)


async def test_a_failed_confirmation_declines_the_payment(pay: Harness) -> None:
    ref = await _awaiting(pay)
    assert await _verdict(pay, ref, succeeded=False) == "failed"
    [failed] = pay.events.of_type(PaymentFailed)
    assert isinstance(failed, PaymentFailed)
    assert (failed.reason, failed.decline_code) == ("payment_declined", "authentication_failed")
    [payment] = pay.store.payments.of("o-1")
    assert payment.status == "failed" and payment.id == failed.payment_id


async def test_a_cancellation_while_awaiting_is_voided_and_a_late_confirmation_refunded(
    pay: Harness,
) -> None:
    ref = await _awaiting(pay)
    await pay.cancel("o-1")
    assert len(pay.events.of_type(PaymentVoided)) == 1

    assert await _verdict(pay, ref, succeeded=True) == "captured"
    await pay.run_charger()

    [refunded] = pay.events.of_type(PaymentRefunded)
    assert isinstance(refunded, PaymentRefunded) and refunded.amount.amount == 1000
    assert len(pay.events.of_type(PaymentVoided)) == 1  # answered once, at the close


async def test_a_dispute_is_announced_for_the_payment(pay: Harness) -> None:
    await pay.checkout("o-1")
    [payment] = pay.store.payments.of("o-1")
    assert payment.provider_ref is not None
    dispute = ProviderEvent(
        id="evt_d1",
        kind="disputed",
        provider_type="payment.disputed",
        ref=payment.provider_ref,
        amount=1000,
        currency="eur",
        reason="fraudulent",
    )
    assert await _deliver(pay, dispute) == "disputed"
    assert await _deliver(pay, dispute) == "duplicate"
    [disputed] = pay.events.of_type(PaymentDisputed)
    assert isinstance(disputed, PaymentDisputed)
    assert (disputed.order_id, disputed.payment_id, disputed.reason) == (
        "o-1",
        payment.id,
        "fraudulent",
    )
    assert (disputed.amount.amount, disputed.amount.currency, disputed.provider) == (
        1000,
        "EUR",
        "sandbox",
    )


async def test_events_about_nothing_awaiting_change_nothing(pay: Harness) -> None:
    await pay.checkout("o-1")  # captured at once: the provider echoes its success
    [payment] = pay.store.payments.of("o-1")
    echo = ProviderEvent(
        id="evt_1",
        kind="succeeded",
        provider_type="payment.succeeded",
        order_id="o-1",
        ref=payment.provider_ref,
    )
    unknown = ProviderEvent(
        id="evt_2", kind="succeeded", provider_type="payment.succeeded", order_id="nope", ref="x"
    )
    stray = ProviderEvent(id="evt_3", kind="disputed", provider_type="payment.disputed", ref="x")
    assert [await _deliver(pay, e) for e in (echo, unknown, stray)] == ["ignored"] * 3
    assert len(pay.events.of_type(PaymentCaptured)) == 1
    assert "nope" not in pay.store.orders.rows


def test_the_next_actions_client_secret_is_never_in_a_log_line() -> None:
    action = NextAction("three_d_secure", client_secret="pi_1_secret_x")
    assert "pi_1_secret_x" not in repr(action)


async def test_a_verdict_that_overtakes_the_providers_answer_is_asked_for_again(
    pay: Harness,
) -> None:
    """The shopper confirmed before payments recorded `requires_action` (its call is still under
    way): dropping the verdict would leave the money taken and the order to expire. The webhook
    is refused as not yet possible (the provider delivers it again) and counts once it fits."""
    await pay.instruct("o-1", token=TOK_3DS)
    await pay.reserve("o-1")
    [intent] = await pay.store.orders.claim_due(10, Harness.LEASE_S)  # the call is under way
    answer = await pay.provider.capture("o-1", intent.amount, intent.currency, TOK_3DS)
    assert answer.ref is not None
    sent = await pay.provider.sandbox.confirm_action(answer.ref, succeeded=True)
    assert sent is not None
    event = pay.provider.parse_webhook(*sent)

    with pytest.raises(Unavailable):
        await _deliver(pay, event)
    pay.clock.advance(Harness.LEASE_S + 1)  # that claim "died": the next one asks again
    await pay.run_charger()
    # The sandbox answers the replayed call with the confirmed capture: recorded as captured.
    [captured] = pay.events.of_type(PaymentCaptured)
    assert isinstance(captured, PaymentCaptured) and captured.provider_ref == answer.ref
    assert await _deliver(pay, event) in ("ignored", "duplicate")
    assert len(pay.events.of_type(PaymentCaptured)) == 1


def _refunded_at_provider(event_id: str, ref: str, total: int) -> ProviderEvent:
    return ProviderEvent(
        id=event_id, kind="refunded", provider_type="charge.refunded", ref=ref, amount=total
    )


async def test_a_refund_made_at_the_provider_is_recorded_and_our_own_echo_is_not(
    pay: Harness,
) -> None:
    await pay.checkout("o-1")
    [payment] = pay.store.payments.of("o-1")
    assert payment.provider_ref is not None
    ref = payment.provider_ref
    tx = FakeTx(pay.store, pay.events)
    await service.ask_refund(
        tx,
        service.RefundAsked(
            payment_id=payment.id,
            amount=Money(amount=300, currency="EUR"),
            reason="damaged",
            idempotency_key="k-1",
            request_hash="h",
            trace=Trace(None, None),
        ),
        pay.wake,
    )
    tx.commit()
    await pay.run_charger()

    # The provider's echo of our own refund: its total is what we refunded.
    assert await _deliver(pay, _refunded_at_provider("evt_r1", ref, 300)) == "ignored"
    # Someone refunded 200 more in the provider's dashboard, then the rest.
    assert await _deliver(pay, _refunded_at_provider("evt_r2", ref, 500)) == "refunded"
    assert await _deliver(pay, _refunded_at_provider("evt_r2", ref, 500)) == "duplicate"
    assert await _deliver(pay, _refunded_at_provider("evt_r3", ref, 1000)) == "refunded"

    events = pay.events.of_type(PaymentRefunded)
    assert [
        (e.amount.amount, e.fully_refunded) for e in events if isinstance(e, PaymentRefunded)
    ] == [
        (300, False),
        (200, False),
        (500, True),
    ]
    after = await pay.store.payments.get(payment.id)
    assert after is not None and (after.status, after.refunded) == ("refunded", 1000)
    listed = await pay.store.refunds.of_payment(payment.id, None, 10)
    assert [r.reason for r in listed] == ["damaged", "refunded at sandbox", "refunded at sandbox"]
