"""Payments use cases on fakes: charged once, refunded or voided on close, whatever crashes.

The charge is owed in the event's transaction and made by the charger outside it; crashes and
races between a capture and a close keep the money right."""

import asyncio

import pytest

from libs.events.payments import PaymentCaptured, PaymentFailed, PaymentRefunded, PaymentVoided
from libs.kit.errors import NotFound
from libs.kit.retry import RetryPolicy
from services.payments import service
from services.payments.domain import TOK_DECLINED, TOK_PROCESSING_ERROR, Trace
from tests.unit.payments.fakes import Harness


@pytest.fixture
def pay() -> Harness:
    return Harness()


def _one(pay: Harness, model: type) -> object:
    [event] = pay.events.of_type(model)
    return event


# --- the charge ------------------------------------------------------------------------------


async def test_instruction_then_reservation_owes_a_capture_that_the_charger_makes(
    pay: Harness,
) -> None:
    await pay.instruct("o-1", amount=2599)
    assert not pay.store.orders.owed("o-1") and pay.wakes == 0
    await pay.reserve("o-1")

    # Decided in the event's transaction, carried out after its commit: nothing emitted yet.
    assert pay.store.orders.owed("o-1") and pay.wakes == 1
    assert pay.events.emitted == [] and pay.provider.captures == []

    await pay.run_charger()
    captured = _one(pay, PaymentCaptured)
    assert isinstance(captured, PaymentCaptured)
    [payment] = pay.store.payments.of("o-1")
    assert (payment.status, payment.amount, payment.provider_ref) == (
        "captured",
        2599,
        captured.provider_ref,
    )
    assert captured.payment_id == payment.id
    assert pay.store.orders.rows["o-1"].token is None
    assert not pay.store.orders.owed("o-1")


async def test_reservation_then_instruction_captures_once(pay: Harness) -> None:
    await pay.reserve("o-1")
    await pay.instruct("o-1", amount=1200)
    await pay.run_charger()

    assert pay.emitted("o-1") == ["PaymentCaptured"]
    assert [p.amount for p in pay.store.payments.of("o-1")] == [1200]


async def test_the_outcome_joins_the_story_of_the_event_that_decided_the_charge(
    pay: Harness,
) -> None:
    await pay.checkout("o-1")
    assert Trace(correlation_id="req-1", causation_id="res-o-1") in pay.uow.traces


async def test_redelivered_and_reissued_facts_never_charge_twice(pay: Harness) -> None:
    await pay.checkout("o-1")
    await pay.instruct("o-1")
    await pay.reserve("o-1")
    await pay.run_charger()

    assert pay.emitted("o-1") == ["PaymentCaptured"]
    assert len(pay.store.payments.of("o-1")) == 1
    assert pay.provider.captures == ["o-1"]
    assert pay.provider.ledger.entries["o-1"].attempts == 1


async def test_a_declined_card_fails_the_payment_and_erases_the_token(pay: Harness) -> None:
    await pay.checkout("o-1", token=TOK_DECLINED)

    failed = _one(pay, PaymentFailed)
    assert isinstance(failed, PaymentFailed)
    assert (failed.reason, failed.decline_code) == ("payment_declined", "card_declined")
    [payment] = pay.store.payments.of("o-1")
    assert (payment.status, payment.provider_ref, payment.id) == ("failed", None, failed.payment_id)
    assert pay.store.orders.rows["o-1"].token is None


async def test_a_card_number_is_never_stored_nor_sent_to_the_provider(pay: Harness) -> None:
    await pay.instruct("o-1", token="4242 4242 4242 4242")
    assert pay.store.orders.rows["o-1"].token is None
    await pay.reserve("o-1")
    await pay.run_charger()

    failed = _one(pay, PaymentFailed)
    assert isinstance(failed, PaymentFailed) and failed.decline_code == "invalid_token"
    assert pay.provider.captures == []


async def test_a_non_positive_amount_is_declined_without_the_provider(pay: Harness) -> None:
    await pay.checkout("o-1", amount=0)
    failed = _one(pay, PaymentFailed)
    assert isinstance(failed, PaymentFailed) and failed.decline_code == "invalid_amount"
    assert pay.provider.captures == []


async def test_processing_errors_are_retried_with_the_same_key_until_one_capture(
    pay: Harness,
) -> None:
    await pay.checkout("o-1", token=TOK_PROCESSING_ERROR)

    assert pay.emitted("o-1") == ["PaymentCaptured"]
    assert pay.provider.ledger.entries["o-1"].attempts == 3


async def test_transient_errors_past_the_policy_leave_the_capture_owed_until_its_lease_ends() -> (
    None
):
    pay = Harness(retry=RetryPolicy(attempts=1, initial_s=0.0))
    await pay.checkout("o-1", token=TOK_PROCESSING_ERROR)

    assert pay.events.emitted == [] and pay.store.orders.owed("o-1")
    assert pay.store.payments.of("o-1") == []  # never recorded as failed
    await pay.run_charger()
    assert len(pay.provider.captures) == 1  # the lease holds it back

    for _ in range(2):
        pay.clock.advance(Harness.LEASE_S)
        await pay.run_charger()
    assert pay.emitted("o-1") == ["PaymentCaptured"]
    assert pay.provider.ledger.entries["o-1"].attempts == 3


async def test_a_crash_after_the_provider_captured_is_recovered_from_the_provider(
    pay: Harness,
) -> None:
    pay.provider.crash_after.add("o-1")
    await pay.checkout("o-1")
    assert pay.events.emitted == [] and pay.store.orders.owed("o-1")  # nothing recorded

    pay.clock.advance(Harness.LEASE_S)
    await pay.run_charger()  # the re-claim asks the provider what it did under the key

    assert pay.provider.lookups == ["o-1"]
    captured = _one(pay, PaymentCaptured)
    assert isinstance(captured, PaymentCaptured)
    assert captured.provider_ref == pay.provider.ledger.entries["o-1"].ref
    assert pay.provider.ledger.entries["o-1"].attempts == 1  # the money moved once
    assert len(pay.store.payments.of("o-1")) == 1


async def test_a_slow_capture_delays_no_other_order() -> None:
    pay = Harness(concurrency=4)
    release = pay.provider.hold["slow"] = asyncio.Event()
    await pay.instruct("slow")
    await pay.reserve("slow")
    await pay.charger.step()
    await asyncio.wait_for(pay.provider.started["slow"].wait(), 1)

    for i in range(10):
        await pay.instruct(f"o-{i}")
        await pay.reserve(f"o-{i}")
    while len(pay.events.of_type(PaymentCaptured)) < 10:
        await pay.charger.step()
        await asyncio.sleep(0)

    assert "slow" not in pay.emitted("slow") and pay.emitted("slow") == []
    release.set()
    await pay.charger.idle()
    assert pay.emitted("slow") == ["PaymentCaptured"]


# --- closing an order ------------------------------------------------------------------------


async def test_rejection_before_the_charge_means_never_charge(pay: Harness) -> None:
    await pay.instruct("o-1")
    await pay.reject("o-1", "out_of_stock")
    await pay.reserve("o-1")
    await pay.run_charger()

    assert pay.events.emitted == [] and pay.provider.captures == []
    assert pay.store.orders.rows["o-1"].token is None


async def test_a_close_withdraws_a_capture_no_claim_has_taken_yet(pay: Harness) -> None:
    await pay.instruct("o-1")
    await pay.reserve("o-1")
    await pay.reject("o-1", "reservation_expired")
    await pay.run_charger()

    assert pay.events.emitted == [] and pay.provider.captures == []
    assert not pay.store.orders.owed("o-1")


async def test_cancellation_before_any_capture_is_voided(pay: Harness) -> None:
    await pay.instruct("o-1")
    await pay.cancel("o-1")
    await pay.reserve("o-1")
    await pay.run_charger()

    voided = _one(pay, PaymentVoided)
    assert isinstance(voided, PaymentVoided) and voided.reason == "cancelled"
    assert pay.emitted("o-1") == ["PaymentVoided"] and pay.provider.captures == []


async def test_cancellation_of_an_owed_but_unclaimed_capture_is_voided(pay: Harness) -> None:
    await pay.instruct("o-1")
    await pay.reserve("o-1")
    await pay.cancel("o-1")
    await pay.run_charger()

    assert pay.emitted("o-1") == ["PaymentVoided"] and pay.provider.captures == []


async def test_cancellation_after_the_capture_refunds_it(pay: Harness) -> None:
    await pay.checkout("o-1", amount=1800)
    await pay.cancel("o-1")
    assert pay.emitted("o-1") == ["PaymentCaptured"]  # the refund is owed, not made yet
    await pay.run_charger()

    refunded = _one(pay, PaymentRefunded)
    captured = _one(pay, PaymentCaptured)
    assert isinstance(refunded, PaymentRefunded) and isinstance(captured, PaymentCaptured)
    assert refunded.reason == "cancelled" and refunded.amount.amount == 1800
    assert refunded.payment_id == captured.payment_id
    assert pay.emitted("o-1") == ["PaymentCaptured", "PaymentRefunded"]
    [capture] = pay.store.payments.of("o-1")
    [refund] = pay.store.payments.of("o-1", "refund")
    assert capture.status == "refunded" and capture.refunded_at is not None
    assert (refund.id, refund.provider_ref) == (refunded.refund_id, refunded.provider_ref)
    assert pay.provider.refunds == ["refund:o-1"]
    assert Trace(correlation_id="req-1", causation_id="close-o-1") in pay.uow.traces


async def test_rejection_after_the_capture_refunds_it_once(pay: Harness) -> None:
    await pay.checkout("o-1")
    await pay.reject("o-1", "reservation_expired")
    await pay.run_charger()
    await pay.reject("o-1", "reservation_expired")  # redelivered
    await pay.cancel("o-1")  # and a late cancellation
    await pay.run_charger()

    refunded = _one(pay, PaymentRefunded)
    assert isinstance(refunded, PaymentRefunded) and refunded.reason == "reservation_expired"
    assert pay.emitted("o-1") == ["PaymentCaptured", "PaymentRefunded"]
    assert pay.provider.refunds == ["refund:o-1"]


async def test_a_capture_that_loses_the_race_with_a_rejection_is_refunded(pay: Harness) -> None:
    await pay.instruct("o-1", amount=2200)
    await pay.reserve("o-1")
    release = pay.provider.hold["o-1"] = asyncio.Event()
    await pay.charger.step()
    await asyncio.wait_for(pay.provider.started["o-1"].wait(), 1)

    await pay.reject("o-1", "reservation_expired")  # while the provider is capturing
    assert pay.events.emitted == []
    release.set()
    await pay.run_charger()

    captured, refunded = _one(pay, PaymentCaptured), _one(pay, PaymentRefunded)
    assert isinstance(captured, PaymentCaptured) and isinstance(refunded, PaymentRefunded)
    assert refunded.payment_id == captured.payment_id
    assert refunded.reason == "reservation_expired"
    assert [p.status for p in pay.store.payments.of("o-1")] == ["refunded"]


async def test_a_declined_capture_racing_a_cancellation_answers_it_voided(pay: Harness) -> None:
    await pay.instruct("o-1", token=TOK_DECLINED)
    await pay.reserve("o-1")
    release = pay.provider.hold["o-1"] = asyncio.Event()
    await pay.charger.step()
    await asyncio.wait_for(pay.provider.started["o-1"].wait(), 1)
    await pay.cancel("o-1")
    release.set()
    await pay.run_charger()

    assert pay.emitted("o-1") == ["PaymentFailed", "PaymentVoided"]


@pytest.mark.parametrize("cancellation", [True, False])
async def test_a_close_read_before_a_crashed_capture_is_recovered_refunds_it(
    pay: Harness, cancellation: bool
) -> None:
    """The process dies after the PSP captured and before our commit, the order closes before
    the capture is claimed again: the re-claim finds the capture, records it and refunds it."""
    pay.provider.crash_after.add("o-1")
    await pay.checkout("o-1", amount=2300)
    if cancellation:
        await pay.cancel("o-1")
    else:
        await pay.reject("o-1", "reservation_expired")
    assert pay.events.emitted == []

    pay.clock.advance(Harness.LEASE_S)
    await pay.run_charger()

    assert pay.emitted("o-1") == ["PaymentCaptured", "PaymentRefunded"]
    refunded = _one(pay, PaymentRefunded)
    assert isinstance(refunded, PaymentRefunded)
    assert refunded.reason == ("cancelled" if cancellation else "reservation_expired")
    assert pay.provider.captures == ["o-1"]  # never charged again after the close
    assert pay.provider.ledger.entries["o-1"].attempts == 1


async def test_a_claimed_capture_the_provider_never_made_is_dropped_when_the_order_closes(
    pay: Harness,
) -> None:
    """The process died after its claim and before the provider call; the order is then
    cancelled: the re-claim asks the provider, finds nothing, and answers PaymentVoided."""
    await pay.instruct("o-1")
    await pay.reserve("o-1")
    [intent] = await service.claim_intents(pay.uow, 10, Harness.LEASE_S)  # ... and "died"
    await pay.cancel("o-1")
    assert pay.events.emitted == []

    pay.clock.advance(Harness.LEASE_S)
    await pay.run_charger()

    assert intent.attempts == 1
    assert pay.emitted("o-1") == ["PaymentVoided"]
    assert pay.provider.lookups == ["o-1"] and pay.provider.captures == []
    assert not pay.store.orders.owed("o-1") and pay.store.payments.of("o-1") == []


async def test_a_capture_that_lands_after_it_was_dropped_is_recorded_and_refunded(
    pay: Harness,
) -> None:
    """A claim whose lease ran out while its call was still on the way: another claim dropped
    the capture (the order had closed, the provider knew nothing yet), then the call landed."""
    await pay.instruct("o-1")
    await pay.reserve("o-1")
    [late] = await service.claim_intents(pay.uow, 10, Harness.LEASE_S)
    await pay.cancel("o-1")
    pay.clock.advance(Harness.LEASE_S)
    await pay.run_charger()  # dropped: PaymentVoided
    await service.charge(pay.uow, pay.provider, pay.charger.retry, late, pay.wake)
    await pay.run_charger()

    assert pay.emitted("o-1") == ["PaymentVoided", "PaymentCaptured", "PaymentRefunded"]
    assert [p.status for p in pay.store.payments.of("o-1")] == ["refunded"]


async def test_a_crash_after_the_provider_refunded_refunds_once(pay: Harness) -> None:
    await pay.checkout("o-1")
    pay.provider.crash_after.add("refund:o-1")
    await pay.cancel("o-1")
    await pay.run_charger()
    assert pay.emitted("o-1") == ["PaymentCaptured"]

    pay.clock.advance(Harness.LEASE_S)
    await pay.run_charger()
    assert pay.emitted("o-1") == ["PaymentCaptured", "PaymentRefunded"]
    assert pay.provider.ledger.entries["refund:o-1"].attempts == 1
    assert len(pay.store.payments.of("o-1", "refund")) == 1


async def test_a_declined_refund_is_left_for_an_operator(pay: Harness) -> None:
    await pay.checkout("o-1")
    pay.provider.decline_refunds = True
    await pay.reject("o-1", "reservation_expired")
    await pay.run_charger()
    pay.clock.advance(Harness.LEASE_S)
    await pay.run_charger()

    assert pay.emitted("o-1") == ["PaymentCaptured"]
    assert pay.store.orders.rows["o-1"].refund_status == "failed"
    assert pay.provider.refunds == ["refund:o-1"]  # not retried for ever
    assert [p.status for p in pay.store.payments.of("o-1")] == ["captured"]


async def test_the_token_never_reaches_an_event_or_a_repr(pay: Harness) -> None:
    await pay.instruct("o-1", token="tok_secretOne")
    await pay.reserve("o-1")
    [intent] = await service.claim_intents(pay.uow, 10, Harness.LEASE_S)
    assert "tok_secretOne" not in repr(intent)
    assert "tok_secretOne" not in repr(pay.store.orders.rows["o-1"])
    pay.clock.advance(Harness.LEASE_S)
    await pay.run_charger()
    assert not any("tok_secretOne" in e.model_dump_json() for e in pay.events.emitted)


# --- reads -----------------------------------------------------------------------------------


async def test_a_customer_lists_their_own_payments_an_admin_everyones(pay: Harness) -> None:
    await pay.checkout("o-1", customer="alice")
    await pay.checkout("o-2", customer="alice", token=TOK_DECLINED)
    await pay.checkout("o-3", customer="bob")

    own = await service.list_payments(
        pay.store, caller="alice", is_admin=False, order_id=None, after=None, limit=10
    )
    assert [p.order_id for p in own.items] == ["o-2", "o-1"] and not own.more
    assert [p.status for p in own.items] == ["failed", "captured"]

    everyone = await service.list_payments(
        pay.store, caller="root", is_admin=True, order_id="o-3", after=None, limit=10
    )
    assert [p.customer_id for p in everyone.items] == ["bob"]

    with pytest.raises(NotFound):
        await service.list_payments(
            pay.store, caller="bob", is_admin=False, order_id="o-1", after=None, limit=10
        )
    unknown = await service.list_payments(
        pay.store, caller="bob", is_admin=False, order_id="o-9", after=None, limit=10
    )
    assert unknown.items == []


async def test_a_page_says_whether_there_is_more_and_continues_after_a_position(
    pay: Harness,
) -> None:
    for i in range(3):
        await pay.checkout(f"o-{i}", customer="alice")

    first = await service.list_payments(
        pay.store, caller="alice", is_admin=False, order_id=None, after=None, limit=2
    )
    assert len(first.items) == 2 and first.more
    last = first.items[-1]
    rest = await service.list_payments(
        pay.store,
        caller="alice",
        is_admin=False,
        order_id=None,
        after=(last.created_at, last.id),
        limit=2,
    )
    assert [p.order_id for p in rest.items] == ["o-0"] and not rest.more


async def test_a_refund_shows_as_its_capture_refunded(pay: Harness) -> None:
    await pay.checkout("o-1", customer="alice")
    await pay.cancel("o-1", customer="alice")
    await pay.run_charger()
    page = await service.list_payments(
        pay.store, caller="alice", is_admin=False, order_id="o-1", after=None, limit=10
    )
    assert [(p.status, p.refunded_at is not None) for p in page.items] == [("refunded", True)]


async def test_the_charger_makes_at_most_its_concurrency_of_calls_at_once() -> None:
    pay = Harness(concurrency=2)
    for i in range(3):
        pay.provider.hold[f"o-{i}"] = asyncio.Event()
        await pay.instruct(f"o-{i}")
        await pay.reserve(f"o-{i}")

    assert await pay.charger.step() == 2  # full: more may be due
    await asyncio.sleep(0)
    assert len(pay.provider.captures) == 2
    for held in pay.provider.hold.values():
        held.set()
    await pay.run_charger()
    assert len(pay.events.of_type(PaymentCaptured)) == 3
    assert await pay.charger.step() == 0
