"""Webhook subscriptions (create, page, delete) and the notifications log (no database)."""

from typing import Any

import pytest

from libs.kit.errors import NotFound
from services.notifications import service
from services.notifications.service import Intake, Mailing, ReceivedEvent
from tests.support.fakes import MutableClock
from tests.unit.notifications.fakes import FakeMailer, FakeTemplates, guard, unit_of_work

SECRET = "a-long-enough-secret"


async def test_subscriptions_are_created_deduplicated_paged_and_deleted() -> None:
    uow = unit_of_work()
    async with uow() as tx:
        first = await service.create_subscription(
            tx,
            guard(),
            "https://hooks.example/0",
            ["OrderConfirmed", "OrderConfirmed", "StockLow"],
            SECRET,
        )
        second = await service.create_subscription(
            tx, guard(), "https://hooks.example/1", ["OrderPlaced"], SECRET
        )
    assert first.events == ("OrderConfirmed", "StockLow")
    async with uow() as tx:
        page = await service.list_subscriptions(tx, None, 1)
        assert [s.id for s in page] == [first.id, second.id]  # one more than asked: more to come
        rest = await service.list_subscriptions(tx, page[0].seq, 1)
        assert [s.id for s in rest] == [second.id]
        await service.delete_subscription(tx, first.id)
        assert [s.id for s in await service.list_subscriptions(tx, None, 10)] == [second.id]
        with pytest.raises(NotFound):
            await service.delete_subscription(tx, first.id)


async def test_the_log_lists_concluded_notifications_of_an_order_oldest_first() -> None:
    uow = unit_of_work()
    clock = MutableClock()
    intake = Intake(FakeTemplates(), "w@x", clock)
    mailer = FakeMailer()
    for event_type, order_id, extra in (
        ("OrderConfirmed", "ord-1", {"lines": [], "total": {"amount": 1, "currency": "EUR"}}),
        ("OrderRejected", "ord-2", {"reason": "invalid"}),
        ("OrderShipped", "ord-1", {"tracking": {}}),
        ("OrderCancelled", "ord-1", {"reason": "customer_request"}),
    ):
        data: dict[str, Any] = {"order_id": order_id, "customer_id": "c"} | extra
        async with uow() as tx:
            await service.take_event(
                tx, intake, ReceivedEvent(event_type, f"ev-{event_type}", "c", data, "{}")
            )
    await service.send_queued_emails(Mailing(uow, mailer, clock, batch_size=3))
    # The cancellation email is still queued (pending): not in the log.
    async with uow() as tx:
        page = await service.list_notifications(tx, "ord-1", None, 1)
        assert [e.template for e in page] == ["order_confirmed", "order_shipped"]
        rest = await service.list_notifications(tx, "ord-1", page[0].seq, 10)
        assert [(e.template, e.to, e.status) for e in rest] == [
            ("order_shipped", "c@customers.backroom.local", "sent")
        ]
        everything = await service.list_notifications(tx, None, None, 10)
    assert [e.order_id for e in everything] == ["ord-1", "ord-2", "ord-1"]
