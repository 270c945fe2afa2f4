"""The checkout saga as inventory sees it: order events in on `backroom.orders`, stock facts out."""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from libs.events import topics
from services.inventory import handlers
from tests.integration.inventory.conftest import (
    Inventory,
    cancellation_requested,
    new_order_id,
    new_sku,
    order_confirmed,
    order_placed,
    order_rejected,
    send,
    settings_at,
)
from tests.support.auth import admin
from tests.support.eventually import eventually
from tests.support.kafka import TopicTail, of_type, publish


def counts(item: dict[str, Any]) -> tuple[int, int, int]:
    return item["on_hand"], item["reserved"], item["available"]


async def reserve(inventory: Inventory, tail: TopicTail, lines: list[tuple[str, int]]) -> str:
    order_id = new_order_id()
    await send(order_placed(order_id, lines), order_id)
    await tail.wait_for(of_type("StockReserved", order_id))
    return order_id


async def test_placed_order_reserves_every_line(inventory: Inventory) -> None:
    a, b, order_id = new_sku(), new_sku(), new_order_id()
    await inventory.set_stock(a, 10)
    await inventory.set_stock(b, 3)
    deadline = datetime.now(UTC) + timedelta(minutes=15)

    async with TopicTail(topics.INVENTORY) as tail:
        await send(order_placed(order_id, [(b, 3), (a, 2)], deadline), order_id)
        [reserved] = await tail.wait_for(of_type("StockReserved", order_id))
        await tail.wait_for(lambda e: e["type"] == "StockLevelChanged" and e["subject"] == b)

    assert reserved["_key"] == order_id
    # One line per sku, in sku order (the lock order).
    assert reserved["data"]["lines"] == sorted(
        [{"sku": a, "quantity": 2}, {"sku": b, "quantity": 3}], key=lambda line: str(line["sku"])
    )
    # Our safety net runs out a grace period after the order's own deadline.
    assert datetime.fromisoformat(reserved["data"]["expires_at"]) == deadline + timedelta(
        seconds=60
    )
    assert counts(await inventory.item(a)) == (10, 2, 8)
    assert counts(await inventory.item(b)) == (3, 3, 0)
    assert (await inventory.reservation(order_id))["status"] == "reserved"


async def test_a_short_line_fails_the_whole_order_and_touches_no_stock(
    inventory: Inventory,
) -> None:
    a, b, ghost, order_id = new_sku(), new_sku(), new_sku(), new_order_id()
    await inventory.set_stock(a, 10)
    await inventory.set_stock(b, 1)

    async with TopicTail(topics.INVENTORY) as tail:
        await send(order_placed(order_id, [(a, 4), (b, 2), (ghost, 1)]), order_id)
        [failed] = await tail.wait_for(of_type("StockReservationFailed", order_id))

    assert failed["data"]["reason"] == "out_of_stock"
    assert sorted(failed["data"]["short_lines"], key=lambda line: str(line["sku"])) == sorted(
        [
            {"sku": b, "requested": 2, "available": 1},
            {"sku": ghost, "requested": 1, "available": 0},
        ],
        key=lambda line: str(line["sku"]),
    )
    assert counts(await inventory.item(a)) == (10, 0, 10)
    assert counts(await inventory.item(b)) == (1, 0, 1)
    assert (await inventory.reservation(order_id))["status"] == "failed"
    assert not tail.events(of_type("StockReserved", order_id))


async def test_confirmed_order_takes_the_units_out(inventory: Inventory) -> None:
    sku = new_sku()
    await inventory.set_stock(sku, 10)

    async with TopicTail(topics.INVENTORY) as tail:
        order_id = await reserve(inventory, tail, [(sku, 4)])
        await send(order_confirmed(order_id, [(sku, 4)]), order_id)
        [committed] = await tail.wait_for(of_type("StockCommitted", order_id))

    assert committed["data"]["lines"] == [{"sku": sku, "quantity": 4}]
    assert counts(await inventory.item(sku)) == (6, 0, 6)
    assert (await inventory.reservation(order_id))["status"] == "committed"


async def test_rejected_order_gives_its_units_back(inventory: Inventory) -> None:
    sku = new_sku()
    await inventory.set_stock(sku, 10)

    async with TopicTail(topics.INVENTORY) as tail:
        order_id = await reserve(inventory, tail, [(sku, 4)])
        await send(order_rejected(order_id, "payment_declined"), order_id)
        [released] = await tail.wait_for(of_type("StockReleased", order_id))

    assert released["data"]["reason"] == "payment_declined"
    assert released["data"]["lines"] == [{"sku": sku, "quantity": 4}]
    assert counts(await inventory.item(sku)) == (10, 0, 10)
    assert (await inventory.reservation(order_id))["status"] == "released"


async def test_cancelling_a_committed_order_restocks(inventory: Inventory) -> None:
    sku = new_sku()
    await inventory.set_stock(sku, 10)

    async with TopicTail(topics.INVENTORY) as tail:
        order_id = await reserve(inventory, tail, [(sku, 4)])
        await send(order_confirmed(order_id, [(sku, 4)]), order_id)
        await tail.wait_for(of_type("StockCommitted", order_id))
        assert counts(await inventory.item(sku)) == (6, 0, 6)
        await send(cancellation_requested(order_id, "confirmed"), order_id)
        [released] = await tail.wait_for(of_type("StockReleased", order_id))

    assert (released["data"]["reason"], released["data"]["lines"]) == (
        "cancelled",
        [{"sku": sku, "quantity": 4}],
    )
    assert counts(await inventory.item(sku)) == (10, 0, 10)


async def test_cancelling_a_pending_order_releases_its_reservation(inventory: Inventory) -> None:
    sku = new_sku()
    await inventory.set_stock(sku, 10)

    async with TopicTail(topics.INVENTORY) as tail:
        order_id = await reserve(inventory, tail, [(sku, 4)])
        await send(cancellation_requested(order_id, "pending"), order_id)
        [released] = await tail.wait_for(of_type("StockReleased", order_id))

    assert released["data"]["lines"] == [{"sku": sku, "quantity": 4}]
    assert counts(await inventory.item(sku)) == (10, 0, 10)


async def test_cancellation_with_nothing_to_return_is_still_answered(inventory: Inventory) -> None:
    sku, order_id = new_sku(), new_order_id()
    await inventory.set_stock(sku, 1)

    async with TopicTail(topics.INVENTORY) as tail:
        await send(order_placed(order_id, [(sku, 5)]), order_id)
        await tail.wait_for(of_type("StockReservationFailed", order_id))
        await send(cancellation_requested(order_id, "pending"), order_id)
        [released] = await tail.wait_for(of_type("StockReleased", order_id))

    assert (released["data"]["reason"], released["data"]["lines"]) == ("cancelled", [])
    assert counts(await inventory.item(sku)) == (1, 0, 1)


async def test_the_same_order_placed_twice_reserves_once(inventory: Inventory) -> None:
    sku, order_id = new_sku(), new_order_id()
    await inventory.set_stock(sku, 10)
    placed = order_placed(order_id, [(sku, 3)])

    async with TopicTail(topics.INVENTORY) as tail:
        first = await send(placed, order_id)
        await publish(first, topics.ORDERS, key=order_id)  # redelivery: same event id
        await send(placed, order_id)  # a second event for the same order: new id
        await tail.wait_for(of_type("StockReserved", order_id))
        # A marker on the same key arrives after both duplicates were handled.
        await send(order_rejected(order_id, "payment_declined"), order_id)
        await tail.wait_for(of_type("StockReleased", order_id))

    assert len(tail.events(of_type("StockReserved", order_id))) == 1
    assert counts(await inventory.item(sku)) == (10, 0, 10)


async def test_late_events_do_not_move_a_settled_reservation(inventory: Inventory) -> None:
    sku = new_sku()
    await inventory.set_stock(sku, 10)

    async with TopicTail(topics.INVENTORY) as tail:
        order_id = await reserve(inventory, tail, [(sku, 4)])
        await send(order_rejected(order_id, "payment_declined"), order_id)
        await send(order_confirmed(order_id, [(sku, 4)]), order_id)  # too late: ignored
        await send(order_rejected(order_id, "payment_declined"), order_id)  # duplicate
        await send(cancellation_requested(order_id, "rejected"), order_id)  # the marker
        await tail.wait_for(lambda e: e["subject"] == order_id and e["type"] == "StockReleased", 2)

    assert not tail.events(of_type("StockCommitted", order_id))
    assert [e["data"]["reason"] for e in tail.events(of_type("StockReleased", order_id))] == [
        "payment_declined",
        "cancelled",
    ]
    assert counts(await inventory.item(sku)) == (10, 0, 10)


async def test_twenty_orders_racing_for_five_units_reserve_exactly_five(
    inventory: Inventory,
) -> None:
    sku = new_sku()
    await inventory.set_stock(sku, 5)
    orders = [new_order_id() for _ in range(20)]

    async with TopicTail(topics.INVENTORY) as tail:
        await asyncio.gather(*(send(order_placed(o, [(sku, 1)]), o) for o in orders))
        outcomes = await tail.wait_for(
            lambda e: e["subject"] in orders
            and e["type"] in ("StockReserved", "StockReservationFailed"),
            count=20,
        )

    assert sum(e["type"] == "StockReserved" for e in outcomes) == 5
    assert sum(e["type"] == "StockReservationFailed" for e in outcomes) == 15
    assert counts(await inventory.item(sku)) == (5, 5, 0)


async def test_reservation_crossing_the_reorder_point_reports_low_stock_once(
    inventory: Inventory,
) -> None:
    sku = new_sku()
    await inventory.set_stock(sku, 10, reorder_point=5)

    async with TopicTail(topics.INVENTORY) as tail:
        first = await reserve(inventory, tail, [(sku, 4)])  # available 6
        await reserve(inventory, tail, [(sku, 2)])  # 4: crosses
        await reserve(inventory, tail, [(sku, 1)])  # 3: still low
        await send(order_rejected(first, "payment_declined"), first)  # 7: re-armed
        await tail.wait_for(of_type("StockReleased", first))
        await reserve(inventory, tail, [(sku, 3)])  # 4: crosses again
        await tail.wait_for(of_type("StockLow", sku), count=2)
        await tail.poll()

    lows = tail.events(of_type("StockLow", sku))
    assert [e["data"]["available"] for e in lows] == [4, 4]


async def reserve_forgotten(inventory: Inventory, tail: TopicTail, sku: str, qty: int) -> str:
    """An order whose deadline already passed (orders forgot it): our safety net runs out a grace
    period from now, so sweeping at that moment touches nothing the real sweeper would not."""
    order_id = new_order_id()
    deadline = datetime.now(UTC) - timedelta(minutes=1)
    await send(order_placed(order_id, [(sku, qty)], deadline), order_id)
    await tail.wait_for(of_type("StockReserved", order_id))
    return order_id


async def expire(inventory: Inventory, order_id: str) -> list[str]:
    """Run the expiry sweep on a clock just past the reservation's expiry."""
    expires_at = datetime.fromisoformat((await inventory.reservation(order_id))["expires_at"])
    return await handlers.sweep_expired_reservations(
        inventory.runtime.db, settings_at(expires_at + timedelta(seconds=1))
    )


async def test_expiry_sweep_releases_a_forgotten_reservation(inventory: Inventory) -> None:
    sku = new_sku()
    await inventory.set_stock(sku, 10)

    async with TopicTail(topics.INVENTORY) as tail:
        order_id = await reserve_forgotten(inventory, tail, sku, 4)
        expires_at = datetime.fromisoformat((await inventory.reservation(order_id))["expires_at"])
        early = await handlers.sweep_expired_reservations(
            inventory.runtime.db, settings_at(expires_at - timedelta(seconds=1))
        )
        assert order_id not in early
        assert counts(await inventory.item(sku)) == (10, 4, 6)
        swept = await expire(inventory, order_id)
        [released] = await tail.wait_for(of_type("StockReleased", order_id))

    assert order_id in swept
    assert (released["data"]["reason"], released["data"]["lines"]) == (
        "expired",
        [{"sku": sku, "quantity": 4}],
    )
    assert counts(await inventory.item(sku)) == (10, 0, 10)
    reservation = await inventory.reservation(order_id)
    assert (reservation["status"], reservation["reason"]) == ("released", "expired")
    assert order_id not in await expire(inventory, order_id)  # a second sweep finds nothing


async def test_confirmation_after_expiry_takes_the_stock_again_if_it_is_there(
    inventory: Inventory,
) -> None:
    sku = new_sku()
    await inventory.set_stock(sku, 10)

    async with TopicTail(topics.INVENTORY) as tail:
        order_id = await reserve_forgotten(inventory, tail, sku, 4)
        await expire(inventory, order_id)
        await send(order_confirmed(order_id, [(sku, 4)]), order_id)
        await tail.wait_for(of_type("StockCommitted", order_id))

    assert counts(await inventory.item(sku)) == (6, 0, 6)
    assert (await inventory.reservation(order_id))["status"] == "committed"


async def test_confirmation_after_expiry_never_oversells(inventory: Inventory) -> None:
    sku = new_sku()
    await inventory.set_stock(sku, 4)

    async with TopicTail(topics.INVENTORY) as tail:
        late = await reserve_forgotten(inventory, tail, sku, 4)
        await expire(inventory, late)
        await reserve(inventory, tail, [(sku, 4)])  # someone else takes the units back
        await send(order_confirmed(late, [(sku, 4)]), late)
        await send(cancellation_requested(late, "confirmed"), late)  # marker: same key, after
        [answer] = await tail.wait_for(
            lambda e: e["subject"] == late and e["data"].get("reason") == "cancelled"
        )

    assert answer["data"]["lines"] == []
    assert not tail.events(of_type("StockCommitted", late))
    assert counts(await inventory.item(sku)) == (4, 4, 0)


async def test_an_order_closed_before_it_was_placed_never_reserves(inventory: Inventory) -> None:
    sku, order_id = new_sku(), new_order_id()
    await inventory.set_stock(sku, 10)

    async with TopicTail(topics.INVENTORY) as tail:
        # OrderPlaced was parked on the DLQ and is replayed after the order was rejected.
        await send(order_rejected(order_id, "reservation_expired"), order_id)
        await send(order_placed(order_id, [(sku, 3)]), order_id)
        await send(cancellation_requested(order_id, "rejected"), order_id)  # marker
        await tail.wait_for(of_type("StockReleased", order_id))

    assert not tail.events(of_type("StockReserved", order_id))
    assert counts(await inventory.item(sku)) == (10, 0, 10)
    assert (await inventory.reservation(order_id))["status"] == "released"


async def test_on_hand_cannot_be_set_below_what_orders_hold(inventory: Inventory) -> None:
    sku = new_sku()
    await inventory.set_stock(sku, 10)
    async with TopicTail(topics.INVENTORY) as tail:
        await reserve(inventory, tail, [(sku, 4)])

    below = await inventory.http.put(
        f"/inventory/items/{sku}", json={"on_hand": 3}, headers=admin()
    )
    exactly = await inventory.http.put(
        f"/inventory/items/{sku}", json={"on_hand": 4}, headers=admin()
    )

    assert below.status_code == 409
    assert "reserved" in below.json()["detail"]
    assert (exactly.status_code, counts(exactly.json())) == (200, (4, 4, 0))


async def test_stock_items_and_reservations_read_back_consistently(inventory: Inventory) -> None:
    """Every level change is visible through the API as soon as its event is out."""
    sku = new_sku()
    await inventory.set_stock(sku, 2)
    async with TopicTail(topics.INVENTORY) as tail:
        order_id = await reserve(inventory, tail, [(sku, 2)])

    async def reserved_everything() -> bool:
        return counts(await inventory.item(sku)) == (2, 2, 0)

    await eventually(reserved_everything, what="the reservation to show")
    assert (await inventory.reservation(order_id))["lines"] == [{"sku": sku, "quantity": 2}]


async def test_the_service_runs_the_expiry_sweeper_in_the_background(inventory: Inventory) -> None:
    tasks = {task.get_name(): task for task in inventory.runtime.extra_tasks}
    assert "reservation-expiry" in tasks
    assert not tasks["reservation-expiry"].done()
