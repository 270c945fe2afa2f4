"""Which event types the notifications consumer looks at (no database: a fake one)."""

import asyncio

from services.notifications.service import WebhookInterest
from tests.support.fakes import FakeUnitOfWork
from tests.unit.notifications.fakes import FakeStore, FakeSubscriptions


class SlowSubscriptions(FakeSubscriptions):
    """Answers the subscriptions read with `types`, once `release` is set."""

    def __init__(self, types: list[str]) -> None:
        super().__init__()
        self.types = types
        self.release = asyncio.Event()
        self.reading = asyncio.Event()

    async def listed_types(self) -> frozenset[str]:
        self.reading.set()
        await self.release.wait()
        return frozenset(self.types)


def slow_database(types: list[str]) -> tuple[FakeUnitOfWork[FakeStore], SlowSubscriptions]:
    subscriptions = SlowSubscriptions(types)
    store = FakeStore.empty()
    store.subscriptions = subscriptions
    return FakeUnitOfWork(store), subscriptions


async def test_until_read_every_type_counts_then_only_email_and_subscribed_ones() -> None:
    interest = WebhookInterest(refresh_s=1.0)
    assert interest("StockLevelChanged") and interest("PaymentCaptured")
    uow, db = slow_database(["PaymentCaptured"])
    db.release.set()
    await interest.refresh(uow)
    assert interest("PaymentCaptured")
    assert interest("OrderConfirmed")  # an email
    assert not interest("StockLevelChanged")


async def test_a_subscription_made_during_a_read_is_not_forgotten() -> None:
    interest = WebhookInterest(refresh_s=1.0)
    uow, db = slow_database([])
    db.release.set()
    await interest.refresh(uow)
    # The read sees the database before the new subscription's commit.
    uow, db = slow_database([])
    reading = asyncio.create_task(interest.refresh(uow))
    await db.reading.wait()
    interest.widen(["StockLevelChanged"])
    db.release.set()
    await reading
    assert interest("StockLevelChanged")


async def test_a_sent_email_wakes_the_webhook_worker_only_while_a_subscription_lists_it() -> None:
    interest = WebhookInterest(refresh_s=1.0)
    woken: list[str] = []
    wake = interest.wake_if_listed("NotificationSent", lambda: woken.append("webhooks"))
    wake()  # nothing read yet: every type may be listed
    assert woken == ["webhooks"]
    uow, db = slow_database(["OrderConfirmed"])
    db.release.set()
    await interest.refresh(uow)
    wake()
    assert woken == ["webhooks"]  # no subscription lists NotificationSent: no wasted pass
    interest.widen(["NotificationSent"])  # one is made through this process
    wake()
    assert woken == ["webhooks", "webhooks"]


async def test_a_widening_survives_a_read_that_began_before_its_subscription_committed() -> None:
    # The route widens before its commit. A refresh that starts after the widening but reads a
    # snapshot without the subscription must not drop the type: an event consumed then would
    # be skipped for good (seen in CI: a PaymentCaptured never delivered).
    now = [100.0]
    interest = WebhookInterest(refresh_s=1.0, clock=lambda: now[0])
    uow, db = slow_database([])
    db.release.set()
    await interest.refresh(uow)
    interest.widen(["PaymentCaptured"])  # the subscription's transaction is still open
    now[0] += 0.5
    uow, db = slow_database([])  # this read's snapshot does not have it yet
    db.release.set()
    await interest.refresh(uow)
    assert interest("PaymentCaptured")
    now[0] += WebhookInterest.WIDENED_GRACE_S + 1  # long after: the reads decide again
    uow, db = slow_database([])
    db.release.set()
    await interest.refresh(uow)
    assert not interest("PaymentCaptured")
