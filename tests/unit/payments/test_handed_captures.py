"""Captures claimed by the event's own transaction and handed to this process's charger (issue
10): charged once without a claim transaction; a charger with no room, or a process that died
holding the claim, leave the capture to a claim from the database, which asks the provider
first (the handed call may have reached it)."""

import asyncio

from libs.events.payments import PaymentCaptured
from tests.unit.payments.fakes import Harness


def claims(pay: Harness) -> int:
    """Transactions the charger opened that joined no event's story: its claims."""
    return sum(1 for t in pay.uow.traces if t.correlation_id is None)


async def test_a_capture_made_owed_by_an_event_is_charged_without_a_claim_transaction() -> None:
    pay = Harness(handed=True)
    await pay.instruct("o-1")
    await pay.reserve("o-1")
    assert pay.wakes == 1  # the charger was told once the event committed
    assert await pay.charger.step() == 0  # the worker steps once: nothing more is due
    await pay.charger.idle()
    assert pay.emitted("o-1") == ["PaymentCaptured"]
    assert pay.provider.captures == ["o-1"] and pay.provider.lookups == []
    assert claims(pay) == 0
    assert pay.store.orders.rows["o-1"].attempts == 1


async def test_a_charger_without_room_leaves_the_capture_to_be_claimed() -> None:
    pay = Harness(concurrency=1, handed=True)
    release = pay.provider.hold["slow"] = asyncio.Event()
    await pay.instruct("slow")
    await pay.reserve("slow")
    await pay.charger.step()  # takes the handed capture: the only slot is busy
    await asyncio.wait_for(pay.provider.started["slow"].wait(), 1)
    await pay.instruct("o-1")
    await pay.reserve("o-1")
    assert pay.store.orders.leases.get("o-1") is None  # owed, unclaimed
    release.set()
    await pay.charger.idle()
    await pay.run_charger()
    assert pay.emitted("o-1") == ["PaymentCaptured"] and pay.emitted("slow") == ["PaymentCaptured"]
    assert claims(pay) >= 1


async def test_a_handed_capture_whose_process_died_is_claimed_after_its_lease_and_charged_once() -> (
    None
):
    pay = Harness(handed=True)
    await pay.instruct("o-1")
    await pay.reserve("o-1")
    # This process dies with the capture handed but not made: a new one (nothing handed) finds
    # the row claimed until the lease ends, then claims it again.
    survivor = Harness()
    survivor.store, survivor.uow, survivor.provider = pay.store, pay.uow, pay.provider
    survivor.charger.uow, survivor.charger.provider = pay.uow, pay.provider
    await survivor.run_charger()
    assert survivor.provider.captures == []
    pay.clock.advance(Harness.LEASE_S + 1)
    await survivor.run_charger()
    assert pay.events.of_type(PaymentCaptured) and len(pay.events.of_type(PaymentCaptured)) == 1
    assert pay.provider.lookups == ["o-1"]  # a second claim asks first what the first did
    assert pay.store.orders.rows["o-1"].attempts == 2
