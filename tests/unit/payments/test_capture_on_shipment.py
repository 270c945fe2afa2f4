"""Capture policy on_shipment (issue 11): the money is authorized when the stock is reserved
(the order confirms on PaymentAuthorized), captured when the order ships, and the hold released
if the order closes first; an authorization that lapsed before shipment is declined, never
captured."""

import pytest

from libs.events.payments import (
    PaymentAuthorized,
    PaymentCaptured,
    PaymentFailed,
    PaymentRefunded,
    PaymentVoided,
)
from services.payments import service
from services.payments.domain import TOK_3DS, TOK_AUTH_EXPIRES
from tests.support.fakes import FakeTx
from tests.unit.payments.fakes import Harness


@pytest.fixture
def pay() -> Harness:
    return Harness(policy="on_shipment")


async def test_authorized_at_reservation_captured_when_the_order_ships(pay: Harness) -> None:
    await pay.checkout("o-1", amount=1500)

    [authorized] = pay.events.of_type(PaymentAuthorized)
    assert isinstance(authorized, PaymentAuthorized) and authorized.amount.amount == 1500
    [payment] = pay.store.payments.of("o-1")
    assert (payment.status, payment.provider_ref) == ("authorized", authorized.provider_ref)
    assert pay.events.of_type(PaymentCaptured) == []
    assert await pay.provider.sandbox.find_capture("o-1") is None  # held, not taken

    await pay.ship("o-1")
    await pay.run_charger()
    await pay.ship("o-1")  # a redelivered OrderShipped captures nothing more
    await pay.run_charger()

    [captured] = pay.events.of_type(PaymentCaptured)
    assert isinstance(captured, PaymentCaptured)
    assert (captured.payment_id, captured.amount.amount) == (authorized.payment_id, 1500)
    [payment] = pay.store.payments.of("o-1")
    assert (payment.status, payment.provider_ref) == ("captured", captured.provider_ref)
    # At the provider: one authorization and one capture of it, each once.
    entries = pay.provider.ledger.entries
    assert {k: (e.operation, e.attempts) for k, e in entries.items()} == {
        "o-1": ("authorize", 1),
        "capture:o-1": ("capture", 1),
    }


async def test_a_cancellation_before_shipping_releases_the_hold(pay: Harness) -> None:
    await pay.checkout("o-1")
    await pay.cancel("o-1")
    await pay.run_charger()

    [voided] = pay.events.of_type(PaymentVoided)
    assert isinstance(voided, PaymentVoided) and voided.reason == "cancelled"
    [payment] = pay.store.payments.of("o-1")
    assert payment.status == "voided"
    assert pay.events.of_type(PaymentRefunded) == []  # nothing was taken, nothing to give back
    await pay.ship("o-1")  # a late shipment captures nothing
    await pay.run_charger()
    assert pay.events.of_type(PaymentCaptured) == []


async def test_a_rejection_while_the_hold_is_captured_refunds_the_capture(pay: Harness) -> None:
    await pay.checkout("o-1")
    await pay.ship("o-1")
    [intent] = await pay.store.orders.claim_due(10, Harness.LEASE_S)  # the capture under way
    await pay.reject("o-1", "reservation_expired")
    pay.clock.advance(Harness.LEASE_S + 1)  # that claim "died": the next one captures again
    await pay.run_charger()

    assert intent.hold_ref is not None
    [captured] = pay.events.of_type(PaymentCaptured)
    [refunded] = pay.events.of_type(PaymentRefunded)
    assert isinstance(captured, PaymentCaptured) and isinstance(refunded, PaymentRefunded)
    assert refunded.amount == captured.amount


async def test_an_authorization_that_lapsed_before_shipment_is_declined(pay: Harness) -> None:
    await pay.checkout("o-1", token=TOK_AUTH_EXPIRES)
    assert len(pay.events.of_type(PaymentAuthorized)) == 1
    await pay.ship("o-1")
    await pay.run_charger()

    [failed] = pay.events.of_type(PaymentFailed)
    assert isinstance(failed, PaymentFailed) and failed.decline_code == "authorization_expired"
    assert pay.events.of_type(PaymentCaptured) == []
    [payment] = pay.store.payments.of("o-1")
    assert payment.status == "failed"


async def test_a_declined_authorization_fails_the_payment(pay: Harness) -> None:
    await pay.checkout("o-1", token="tok_chargeDeclined")
    [failed] = pay.events.of_type(PaymentFailed)
    assert isinstance(failed, PaymentFailed) and failed.decline_code == "card_declined"
    assert pay.events.of_type(PaymentAuthorized) == []


async def test_a_3ds_authorization_is_held_once_the_shopper_confirms(pay: Harness) -> None:
    await pay.checkout("o-1", token=TOK_3DS)
    [payment] = pay.store.payments.of("o-1")
    assert payment.status == "requires_action" and payment.provider_ref is not None
    sent = await pay.provider.sandbox.confirm_action(payment.provider_ref, succeeded=True)
    assert sent is not None
    event = pay.provider.parse_webhook(*sent)
    assert event.kind == "authorized"
    tx = FakeTx(pay.store, pay.events)
    assert await service.apply_provider_event(tx, "sandbox", event, pay.wake) == "authorized"
    tx.commit()

    [authorized] = pay.events.of_type(PaymentAuthorized)
    assert isinstance(authorized, PaymentAuthorized) and authorized.payment_id == payment.id
    await pay.ship("o-1")
    await pay.run_charger()
    assert len(pay.events.of_type(PaymentCaptured)) == 1


async def test_a_hold_past_its_lifetime_is_reported_once_and_the_cancellation_releases_it(
    pay: Harness,
) -> None:
    await pay.checkout("o-1")
    assert await service.lapse_holds(pay.uow, lifetime_s=3600) == 0  # not old yet
    pay.clock.advance(3601)

    assert await service.lapse_holds(pay.uow, lifetime_s=3600) == 1
    assert await service.lapse_holds(pay.uow, lifetime_s=3600) == 0  # reported once
    [failed] = pay.events.of_type(PaymentFailed)
    assert isinstance(failed, PaymentFailed)
    assert (failed.decline_code, failed.reason) == ("authorization_expired", "payment_declined")
    [payment] = pay.store.payments.of("o-1")
    assert failed.payment_id == payment.id

    await pay.cancel("o-1")  # what orders does upon it
    await pay.run_charger()
    assert len(pay.events.of_type(PaymentVoided)) == 1
    assert pay.store.payments.of("o-1")[0].status == "voided"
