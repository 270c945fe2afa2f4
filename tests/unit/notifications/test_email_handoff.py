"""Emails handed to this process's mailer already claimed (issue 10): the event's transaction
writes the email leased, the mailer sends it without a claim transaction of its own; a full
mailer, a rollback or a crash leave the email to be claimed from the database as before."""

import pytest

from libs.kit.worker import Handoff
from services.notifications import service
from services.notifications.domain import QueuedEmail
from services.notifications.service import Intake, Mailing
from tests.unit.notifications.fakes import FakeTemplates
from tests.unit.notifications.test_email_use_cases import NO_PAUSE, WAREHOUSE, World, order_event


class HandedWorld(World):
    """World with the mailer and the intake sharing a handoff, as notifications' main wires."""

    def __init__(self, capacity: int = 20, lease_s: float = 60.0) -> None:
        super().__init__(lease_s=lease_s)
        self.handoff: Handoff[QueuedEmail] = Handoff(capacity, self._wake_mailer)
        self.intake = Intake(
            FakeTemplates(),
            WAREHOUSE,
            self.clock,
            self._wake_mailer,
            self._wake_webhooks,
            emails=self.handoff,
            email_lease_s=lease_s,
        )
        self.mailing = Mailing(
            self.uow, self.mailer, self.clock, retry=NO_PAUSE, lease_s=lease_s, handoff=self.handoff
        )

    def row(self, order_id: str) -> tuple[bool, int]:
        [row] = [r for r in self.uow.store.notifications.rows.values() if r.order_id == order_id]
        return row.lease_until is not None, row.attempts


async def test_a_queued_email_is_written_claimed_and_sent_without_a_claim_transaction() -> None:
    world = HandedWorld()
    assert await world.consume(order_event("OrderConfirmed", "ord-1"))
    assert world.row("ord-1") == (True, 1)  # leased to this process in the event's transaction
    assert len(world.handoff) == 1 and world.mailer_woken == 1
    opened = world.uow.opened
    assert await world.send() == 1
    assert world.uow.opened == opened + 1  # only the outcome's transaction
    assert [m.to for m in world.mailer.sent] == ["ord-1@example.com"]
    assert await world.log("ord-1") == [("order_confirmed", "sent", None)]
    assert await world.send() == 0  # nothing left: not sent twice


async def test_a_full_mailer_gets_no_more_and_the_email_is_claimed_from_the_database() -> None:
    world = HandedWorld(capacity=1)
    await world.consume(order_event("OrderConfirmed", "ord-1"))
    await world.consume(order_event("OrderConfirmed", "ord-2", "ev-2"))
    assert world.row("ord-1") == (True, 1)
    assert world.row("ord-2") == (False, 0)  # queued for any mailer to claim
    assert len(world.handoff) == 1
    assert await world.send() == 1  # the handed one first
    assert await world.send() == 1  # then the other, by a claim
    assert sorted(m.to for m in world.mailer.sent) == ["ord-1@example.com", "ord-2@example.com"]
    assert world.row("ord-2") == (False, 1)


async def test_a_rolled_back_transaction_hands_nothing_over() -> None:
    world = HandedWorld()
    with pytest.raises(RuntimeError):
        async with world.uow() as tx:
            await service.take_event(tx, world.intake, order_event("OrderConfirmed", "ord-1"))
            raise RuntimeError("the event's transaction fails after queueing")
    assert len(world.handoff) == 0 and world.mailer_woken == 0


async def test_a_handed_email_whose_process_died_is_sent_once_by_a_claim_after_its_lease() -> None:
    world = HandedWorld(lease_s=60.0)
    await world.consume(order_event("OrderConfirmed", "ord-1"))
    # The process dies with the email in its handoff: another mailer (no handoff) sees the row
    # leased, so it leaves it alone until the lease has run out.
    other = Mailing(world.uow, world.mailer, world.clock, retry=NO_PAUSE, lease_s=60.0)
    assert await service.send_queued_emails(other) == 0
    world.clock.advance(61)
    assert await service.send_queued_emails(other) == 1
    assert [m.to for m in world.mailer.sent] == ["ord-1@example.com"]
    assert world.row("ord-1") == (False, 2)


async def test_a_handed_email_that_waited_half_its_lease_goes_back_to_be_claimed() -> None:
    world = HandedWorld(lease_s=60.0)
    await world.consume(order_event("OrderConfirmed", "ord-1"))
    world.clock.advance(31)  # the mailer was busy: too little lease is left to send it safely
    assert await world.send() == 1
    assert world.mailer.sent == []
    assert world.row("ord-1") == (True, 1)  # put back: claimable from now
    assert await world.send() == 1
    assert [m.to for m in world.mailer.sent] == ["ord-1@example.com"]
