"""The saga inspector's rules and use case (issue 14 part 5): what a live order waits for in
each status, events in the order they happened, and the timeline assembled from the journal,
the other services' records and the dead letters, with a silent service reported, not fatal."""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import httpx
import pytest

from libs.kit.cli import render_timeline
from libs.kit.db import DbSession
from libs.kit.errors import NotFound
from services.orders import service
from services.orders.adapters import HttpServiceRecords, is_about
from services.orders.db import OrderEvents
from services.orders.domain import (
    HistoryEntry,
    JournalEntry,
    OrderStatus,
    event_summary,
    timeline_order,
    waiting_for,
)
from tests.support.statements import RecordingSession, assert_cacheable
from tests.unit.orders.fakes import World

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
DEADLINE = T0 + timedelta(minutes=15)


def entry(
    event_type: str,
    at: datetime,
    seq: int = 0,
    direction: str = "consumed",
    data: dict[str, Any] | None = None,
) -> JournalEntry:
    return JournalEntry(
        seq=seq,
        direction="consumed" if direction == "consumed" else "emitted",
        id=f"ev-{event_type}-{seq}",
        type=event_type,
        topic="backroom.inventory",
        source="inventory",
        time=at,
        subject="o-1",
        correlationid="req-1",
        causationid=None,
        data=data or {},
    )


def waits(
    status: OrderStatus,
    events: list[JournalEntry] = [],  # noqa: B006 - never mutated
    *,
    cancelling: bool = False,
    now: datetime = T0 + timedelta(minutes=1),
    history: tuple[HistoryEntry, ...] = (),
) -> tuple[str, str, datetime, datetime | None, bool] | None:
    waiting = waiting_for(
        status=status,
        cancellation_requested=cancelling,
        created_at=T0,
        reservation_deadline=DEADLINE,
        history=history,
        events=events,
        now=now,
    )
    if waiting is None:
        return None
    return (waiting.waiting_for, waiting.source, waiting.since, waiting.deadline, waiting.overdue)


def test_a_new_pending_order_waits_for_inventory_since_it_was_placed() -> None:
    assert waits(OrderStatus.PENDING) == ("StockReserved", "inventory", T0, DEADLINE, False)


def test_a_reserved_pending_order_waits_for_payments_since_the_reservation() -> None:
    reserved = entry("StockReserved", T0 + timedelta(seconds=2))
    assert waits(OrderStatus.PENDING, [reserved]) == (
        "PaymentCaptured",
        "payments",
        reserved.time,
        DEADLINE,
        False,
    )


def test_a_pending_order_past_its_deadline_is_overdue() -> None:
    late = DEADLINE + timedelta(seconds=1)
    assert waits(OrderStatus.PENDING, now=late) == (
        "StockReserved",
        "inventory",
        T0,
        DEADLINE,
        True,
    )
    assert waits(OrderStatus.PENDING, now=DEADLINE) == (
        "StockReserved",
        "inventory",
        T0,
        DEADLINE,
        False,
    )


def test_a_cancellation_waits_for_the_half_not_yet_answered() -> None:
    asked = entry("OrderCancellationRequested", T0 + timedelta(seconds=5), 1, "emitted")
    released = entry("StockReleased", T0 + timedelta(seconds=6), 2)
    refunded = entry("PaymentRefunded", T0 + timedelta(seconds=7), 3)
    for status in (OrderStatus.PENDING, OrderStatus.CONFIRMED):
        assert waits(status, [asked], cancelling=True) == (
            "StockReleased",
            "inventory",
            asked.time,
            None,
            False,
        )
        assert waits(status, [asked, released], cancelling=True) == (
            "PaymentRefunded",
            "payments",
            asked.time,
            None,
            False,
        )
        assert waits(status, [asked, released, refunded], cancelling=True) == (
            "OrderCancelled",
            "orders",
            refunded.time,
            None,
            False,
        )


def test_a_confirmed_order_waits_for_its_shipment_and_a_shipped_one_for_delivery() -> None:
    confirmed_at, shipped_at = T0 + timedelta(seconds=3), T0 + timedelta(hours=2)
    history = (
        HistoryEntry(OrderStatus.PENDING, None, T0),
        HistoryEntry(OrderStatus.CONFIRMED, None, confirmed_at),
        HistoryEntry(OrderStatus.SHIPPED, None, shipped_at),
    )
    assert waits(OrderStatus.CONFIRMED, history=history[:2]) == (
        "OrderShipped",
        "orders",
        confirmed_at,
        None,
        False,
    )
    assert waits(OrderStatus.SHIPPED, history=history) == (
        "OrderDelivered",
        "carrier",
        shipped_at,
        None,
        False,
    )


@pytest.mark.parametrize(
    "status", [OrderStatus.REJECTED, OrderStatus.CANCELLED, OrderStatus.DELIVERED]
)
def test_a_terminal_order_waits_for_nothing(status: OrderStatus) -> None:
    assert waits(status) is None
    assert waits(status, cancelling=True) is None


def test_events_are_in_time_order_then_journal_order() -> None:
    same = T0 + timedelta(seconds=1)
    later = entry("PaymentCaptured", T0 + timedelta(seconds=2), seq=1)
    second = entry("StockReserved", same, seq=3)
    first = entry("OrderPlaced", same, seq=2, direction="emitted")
    assert [e.type for e in timeline_order([later, second, first])] == [
        "OrderPlaced",
        "StockReserved",
        "PaymentCaptured",
    ]


def test_a_summary_names_the_telling_fields_and_never_dumps_the_payload() -> None:
    data = {
        "order_id": "o-1",
        "reason": "payment_declined",
        "total": {"amount": 1234, "currency": "EUR"},
        "lines": [{"sku": "A"}, {"sku": "B"}],
        "shipping_address": {"city": "Paris"},
    }
    assert (
        event_summary("OrderRejected", data) == "reason=payment_declined, total=EUR 1234, lines=2"
    )
    assert event_summary("OrderPlaced", {}) == "OrderPlaced"


class FakeRecords:
    def __init__(self, world: World) -> None:
        self.world = world
        self.open_during_read: int | None = None

    async def for_order(self, order_id: str) -> dict[str, Any]:
        self.open_during_read = self.world.uow.open
        return {
            "inventory": {"reservation": {"order_id": order_id, "status": "committed"}},
            "payments": {"error": "payments did not answer within 3 s"},
        }


async def test_the_timeline_joins_journal_records_dead_letters_and_waiting() -> None:
    world = World()
    order_id = await world.placed()
    placed_at = world.clock()
    world.store.journal.add(
        order_id, entry("StockReserved", placed_at + timedelta(seconds=1), seq=2)
    )
    world.store.journal.add(order_id, entry("OrderPlaced", placed_at, seq=1, direction="emitted"))
    records = FakeRecords(world)

    async def letters(asked: str) -> list[dict[str, Any]]:
        return [{"event_id": "ev-9", "key": asked}]

    timeline = await service.order_timeline(world.uow, order_id, records, letters, world.clock)

    assert timeline.order.id == order_id
    assert [e.type for e in timeline.events] == ["OrderPlaced", "StockReserved"]
    assert timeline.services["payments"] == {"error": "payments did not answer within 3 s"}
    assert timeline.services["inventory"]["reservation"]["status"] == "committed"
    assert timeline.dead_letters == [{"event_id": "ev-9", "key": order_id}]
    assert timeline.waiting is not None and timeline.waiting.waiting_for == "PaymentCaptured"
    assert records.open_during_read == 0  # the other services are asked outside a transaction


async def test_unreadable_dead_letters_are_reported_and_an_unknown_order_is_not_found() -> None:
    world = World()
    order_id = await world.placed()

    async def down(_: str) -> list[dict[str, Any]]:
        raise OSError("kafka down")

    timeline = await service.order_timeline(world.uow, order_id, FakeRecords(world), down)
    assert timeline.dead_letters == {"error": "dead letters unreadable: OSError"}
    with pytest.raises(NotFound):
        await service.order_timeline(world.uow, "no-such-order", FakeRecords(world), down)


async def test_a_service_that_fails_or_hangs_is_an_error_for_that_service_only() -> None:
    never = asyncio.Event()
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "inventory":
            return httpx.Response(200, json={"order_id": "o-1", "status": "held"})
        if request.url.host == "payments":
            await never.wait()  # never answers
        return httpx.Response(503, json={"title": "down"})

    records = HttpServiceRecords(
        "http://inventory",
        "http://payments",
        "http://notifications",
        lambda: "svc-token",
        timeout_s=0.05,
        transport=httpx.MockTransport(handler),
    )
    found = await records.for_order("o-1")
    assert found["inventory"] == {"reservation": {"order_id": "o-1", "status": "held"}}
    assert found["payments"] == {"error": "payments did not answer within 0.05 s"}
    assert found["notifications"] == {"error": "notifications answered 503"}
    assert {r.headers["Authorization"] for r in seen} == {"Bearer svc-token"}


async def test_payments_records_include_each_payments_refunds() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/payments":
            assert request.url.params["order_id"] == "o-1"
            return httpx.Response(200, json={"items": [{"id": "p-1", "status": "refunded"}]})
        if request.url.path == "/payments/p-1/refunds":
            return httpx.Response(200, json={"items": [{"id": "r-1", "payment_id": "p-1"}]})
        return httpx.Response(404, json={})

    records = HttpServiceRecords(
        "http://inventory",
        "http://payments",
        "http://notifications",
        lambda: None,
        transport=httpx.MockTransport(handler),
    )
    found = await records.for_order("o-1")
    assert found["payments"]["refunds"] == [{"id": "r-1", "payment_id": "p-1"}]
    assert found["inventory"] == {"reservation": None}


def test_a_dead_letter_is_about_an_order_by_key_subject_or_data() -> None:
    assert is_about({"key": "o-1"}, "o-1")
    assert is_about({"key": None, "event": {"subject": "o-1"}}, "o-1")
    assert is_about({"key": "sku-1", "event": {"data": {"order_id": "o-1"}}}, "o-1")
    assert not is_about({"key": "o-2", "event": {"subject": "o-2", "data": {}}}, "o-1")


def test_trace_renders_one_line_per_event_and_the_waiting_line() -> None:
    text = render_timeline(
        {
            "order": {"id": "o-1", "status": "rejected", "reason": "payment_declined"},
            "events": [
                {
                    "time": "t1",
                    "direction": "emitted",
                    "type": "OrderPlaced",
                    "topic": "backroom.orders",
                    "source": "orders",
                    "summary": "total=EUR 1",
                },
                {
                    "time": "t2",
                    "direction": "consumed",
                    "type": "PaymentFailed",
                    "topic": "backroom.payments",
                    "source": "payments",
                    "summary": "decline_code=card_declined",
                },
            ],
            "services": {"payments": {"error": "payments unreachable: ConnectError"}},
            "dead_letters": [],
            "waiting": None,
        }
    )
    assert "status=rejected (payment_declined)" in text
    assert "-> OrderPlaced" in text and "<- PaymentFailed" in text
    assert "payments: ERROR payments unreachable" in text
    assert "dead letters (0):" in text and "waiting: nothing (terminal)" in text


async def test_a_consumed_event_is_journaled_with_one_cacheable_statement() -> None:
    session = RecordingSession()
    await OrderEvents(cast(DbSession, session)).record_consumed(
        "o-1", "ev-1", "StockReserved", "backroom.inventory", '{"id": "ev-1"}'
    )
    [sent] = session.sent
    assert_cacheable(sent)
    assert sent.params["order_id"] == "o-1" and sent.params["event_type"] == "StockReserved"
