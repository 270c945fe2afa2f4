"""Issue 13's use cases on in-memory repositories: stock per location, reservations that name
their locations (and commit, release and restock exactly there), channel caps, transfers and
receipts; judged by counts per location, reservations and events."""

import pytest

from libs.events.inventory import (
    Allocation,
    StockLevelChanged,
    StockReservationFailed,
    StockReserved,
)
from libs.kit.errors import Conflict, NotFound
from services.inventory import service
from services.inventory.domain import AllocationPolicy, ReservationStatus, Strategy
from tests.support.fakes import FakeTx, MutableClock
from tests.unit.inventory.fakes import START, TTL, FakeStore, order_on

Tx = FakeTx[FakeStore]


@pytest.fixture
def tx() -> Tx:
    store = FakeStore(MutableClock(START))
    store.locations.add("north", priority=200, regions=("DE",))
    return FakeTx(store)


async def place(tx: Tx, order_id: str, lines: list[tuple[str, int]], **on: str) -> object:
    return await service.reserve_for_order(
        tx,
        order_on(order_id, lines, START + TTL, **on),
        correlation_id=None,
        clock=lambda: START,
        grace_s=60,
    )


def at(tx: Tx, sku: str, location: str) -> tuple[int, int]:
    return tx.store.items.at(sku, location)


def sums(tx: Tx, sku: str) -> tuple[int, int]:
    level = tx.store.items.level(sku)
    return level.on_hand, level.reserved


class TestReservationsNameTheirLocations:
    async def test_the_second_location_serves_when_the_first_is_empty(self, tx: Tx) -> None:
        tx.store.items.put_at("mug", "main", 0)
        tx.store.items.put_at("mug", "north", 5)

        assert await place(tx, "o1", [("mug", 2)]) is ReservationStatus.RESERVED

        [reserved] = tx.events.of_type(StockReserved)
        assert reserved.allocations == [Allocation(sku="mug", location="north", quantity=2)]  # type: ignore[attr-defined]
        assert at(tx, "mug", "north") == (5, 2)
        assert sums(tx, "mug") == (5, 2)
        shown = await service.get_reservation(tx, "o1")
        assert [(a.location, a.quantity) for a in shown.allocations] == [("north", 2)]

    async def test_commit_takes_units_off_the_shelves_they_were_reserved_at(self, tx: Tx) -> None:
        tx.store.items.put_at("mug", "main", 1)
        tx.store.items.put_at("mug", "north", 5)
        await place(tx, "o1", [("mug", 3)])

        await service.commit_order(tx, "o1")

        assert at(tx, "mug", "main") == (0, 0)
        assert at(tx, "mug", "north") == (3, 0)
        assert sums(tx, "mug") == (3, 0)

    async def test_a_cancelled_commit_restocks_where_the_units_came_from(self, tx: Tx) -> None:
        tx.store.items.put_at("mug", "main", 1)
        tx.store.items.put_at("mug", "north", 5)
        await place(tx, "o1", [("mug", 3)])
        await service.commit_order(tx, "o1")

        await service.cancel_order(tx, "o1")

        assert at(tx, "mug", "main") == (1, 0)
        assert at(tx, "mug", "north") == (5, 0)

    async def test_a_release_gives_back_exactly_the_allocations(self, tx: Tx) -> None:
        tx.store.items.put_at("mug", "main", 2)
        tx.store.items.put_at("mug", "north", 5)
        await place(tx, "o1", [("mug", 4)])
        assert (at(tx, "mug", "main"), at(tx, "mug", "north")) == ((2, 2), (5, 2))

        await service.release_order(tx, "o1", "payment_failed")

        assert (at(tx, "mug", "main"), at(tx, "mug", "north")) == ((2, 0), (5, 0))

    async def test_a_reservation_from_before_locations_acts_on_the_default(self, tx: Tx) -> None:
        tx.store.items.put("mug", 5, reserved=2)
        await tx.store.reservations.create("old", [("mug", 2)], START + TTL, None)

        await service.commit_order(tx, "old")

        assert at(tx, "mug", "main") == (3, 0)

    async def test_region_strategy_prefers_the_location_serving_the_region(self) -> None:
        store = FakeStore(MutableClock(START), AllocationPolicy(Strategy.REGION))
        store.locations.add("north", priority=200, regions=("DE",))
        tx = FakeTx(store)
        tx.store.items.put_at("mug", "main", 5)
        tx.store.items.put_at("mug", "north", 5)

        await place(tx, "de", [("mug", 1)], region="DE")
        await place(tx, "fr", [("mug", 1)], region="FR")

        assert at(tx, "mug", "north") == (5, 1)
        assert at(tx, "mug", "main") == (5, 1)

    async def test_without_split_the_pool_is_the_largest_location(self) -> None:
        tx = FakeTx(FakeStore(MutableClock(START), AllocationPolicy(split=False)))
        tx.store.locations.add("north")
        tx.store.items.put_at("mug", "main", 2)
        tx.store.items.put_at("mug", "north", 3)

        assert await place(tx, "o1", [("mug", 4)]) is ReservationStatus.FAILED
        [failed] = tx.events.of_type(StockReservationFailed)
        assert [(s.sku, s.available) for s in failed.short_lines] == [("mug", 3)]  # type: ignore[attr-defined]
        assert (await service.get_item(tx, "mug")).locations
        assert service.availability_of(tx, await service.get_item(tx, "mug")).available == 3


class TestStockPerLocation:
    async def test_setting_stock_at_a_location_creates_the_sku_there(self, tx: Tx) -> None:
        item, created = await service.set_location_stock(tx, "mug", "north", 7, 2)

        assert created
        assert [(s.location, s.on_hand, s.safety_stock) for s in item.locations] == [
            ("north", 7, 2)
        ]
        [level] = tx.events.of_type(StockLevelChanged)
        assert level.available == 5  # type: ignore[attr-defined]

    async def test_an_unknown_location_is_not_found(self, tx: Tx) -> None:
        with pytest.raises(NotFound):
            await service.set_location_stock(tx, "mug", "nowhere", 7, None)

    async def test_v1_writes_act_on_the_default_location(self, tx: Tx) -> None:
        tx.store.items.put_at("mug", "north", 4)

        await service.set_stock(tx, "mug", 6, None)
        item = await service.adjust_stock(tx, "mug", -1, "damage")

        assert at(tx, "mug", "main") == (5, 0)
        assert at(tx, "mug", "north") == (4, 0)
        assert item.level.on_hand == 9

    async def test_on_hand_may_not_drop_below_what_is_reserved_there(self, tx: Tx) -> None:
        tx.store.items.put_at("mug", "north", 4, reserved=3)

        with pytest.raises(Conflict):
            await service.set_location_stock(tx, "mug", "north", 2, None)

    async def test_a_receipt_adds_to_a_location_and_is_audited_with_its_ref(self, tx: Tx) -> None:
        tx.store.items.put("mug", 2)

        item = await service.receive_stock(tx, "mug", "north", 5, "po_receipt", "po-1")

        assert at(tx, "mug", "north") == (5, 0)
        assert item.level.on_hand == 7
        [entry] = tx.store.movements.entries
        assert (entry.movement.location, entry.movement.delta_on_hand, entry.reason, entry.ref) == (
            "north",
            5,
            "po_receipt",
            "po-1",
        )
        [level] = tx.events.of_type(StockLevelChanged)
        assert level.available == 7  # type: ignore[attr-defined]

    async def test_a_receipt_for_a_new_sku_creates_it(self, tx: Tx) -> None:
        item = await service.receive_stock(tx, "new", "north", 3, "po_receipt", None)

        assert item.level.on_hand == 3
        with pytest.raises(NotFound):
            await service.receive_stock(tx, "new", "nowhere", 3, "po_receipt", None)


class TestTransfers:
    async def test_only_allocatable_units_move_and_a_retry_moves_once(self, tx: Tx) -> None:
        tx.store.items.put_at("mug", "main", 10, reserved=3)

        moved, replayed = await service.transfer_stock(
            tx, "mug", "main", "north", 7, None, "k1", "h"
        )
        again, replayed_again = await service.transfer_stock(
            tx, "mug", "main", "north", 7, None, "k1", "h"
        )

        assert (replayed, replayed_again, again.id) == (False, True, moved.id)
        assert at(tx, "mug", "main") == (3, 3)
        assert at(tx, "mug", "north") == (7, 0)
        assert sums(tx, "mug") == (10, 3)
        assert [
            (e.movement.location, e.movement.delta_on_hand, e.ref)
            for e in tx.store.movements.entries
        ] == [
            ("main", -7, moved.id),
            ("north", 7, moved.id),
        ]

    async def test_more_than_allocatable_is_a_conflict(self, tx: Tx) -> None:
        tx.store.items.put_at("mug", "main", 10, reserved=3)

        with pytest.raises(Conflict):
            await service.transfer_stock(tx, "mug", "main", "north", 8, None, "k1", "h")

    async def test_the_same_key_with_another_body_is_a_conflict(self, tx: Tx) -> None:
        tx.store.items.put_at("mug", "main", 10)
        await service.transfer_stock(tx, "mug", "main", "north", 1, None, "k1", "h1")

        with pytest.raises(Conflict):
            await service.transfer_stock(tx, "mug", "main", "north", 2, None, "k1", "h2")


class TestChannelCaps:
    async def test_a_capped_channel_is_refused_beyond_its_cap(self, tx: Tx) -> None:
        tx.store.items.put("mug", 10)
        await service.set_channel_cap(tx, "mug", "amazon", 3)

        assert await place(tx, "a1", [("mug", 2)], channel="amazon") is ReservationStatus.RESERVED
        assert await place(tx, "a2", [("mug", 2)], channel="amazon") is ReservationStatus.FAILED
        # The shared pool still sells to uncapped channels.
        assert await place(tx, "w1", [("mug", 5)], channel="web") is ReservationStatus.RESERVED

        [failed] = tx.events.of_type(StockReservationFailed)
        assert [(s.requested, s.available) for s in failed.short_lines] == [(2, 1)]  # type: ignore[attr-defined]
        item = await service.get_item(tx, "mug")
        view = service.availability_of(tx, item)
        assert (
            view.available,
            [(c.channel, c.cap, c.used, c.available) for c in view.channels],
        ) == (
            3,
            [("amazon", 3, 2, 1)],
        )

    async def test_a_release_gives_units_back_a_commit_keeps_them(self, tx: Tx) -> None:
        tx.store.items.put("mug", 10)
        await service.set_channel_cap(tx, "mug", "amazon", 3)
        await place(tx, "a1", [("mug", 2)], channel="amazon")
        await place(tx, "a2", [("mug", 1)], channel="amazon")

        await service.commit_order(tx, "a1")
        await service.release_order(tx, "a2", "payment_failed")

        assert tx.store.items.caps[("mug", "amazon")] == [3, 2]
        await service.cancel_order(tx, "a1")
        assert tx.store.items.caps[("mug", "amazon")] == [3, 0]

    async def test_a_cap_put_is_announced_with_the_channels(self, tx: Tx) -> None:
        tx.store.items.put("mug", 10)

        await service.set_channel_cap(tx, "mug", "amazon", 4)
        await service.set_channel_cap(tx, "mug", "amazon", 4)

        [level] = tx.events.of_type(StockLevelChanged)
        assert level.available == 10  # type: ignore[attr-defined]
        assert [(c.channel, c.cap, c.used, c.available) for c in level.channels] == [  # type: ignore[attr-defined]
            ("amazon", 4, 0, 4)
        ]

    async def test_reservations_announce_the_channel_share(self, tx: Tx) -> None:
        tx.store.items.put("mug", 10)
        await service.set_channel_cap(tx, "mug", "amazon", 4)

        await place(tx, "a1", [("mug", 1)], channel="amazon")

        last = tx.events.of_type(StockLevelChanged)[-1]
        assert (last.available, [c.available for c in last.channels]) == (9, [3])  # type: ignore[attr-defined]


class TestLocations:
    async def test_switching_a_location_off_announces_what_its_skus_lose(self, tx: Tx) -> None:
        tx.store.items.put_at("mug", "main", 2)
        tx.store.items.put_at("mug", "north", 5)

        location, created = await service.put_location(
            tx, "north", "North", None, None, None, False
        )

        assert (location.active, location.priority, created) == (False, 200, False)
        [level] = tx.events.of_type(StockLevelChanged)
        assert level.available == 2  # type: ignore[attr-defined]
        assert await place(tx, "o1", [("mug", 3)]) is ReservationStatus.FAILED

    async def test_a_new_location_gets_the_defaults(self, tx: Tx) -> None:
        location, created = await service.put_location(
            tx, "shop-1", "Shop", "store", None, None, None
        )

        assert created
        assert (location.kind, location.priority, location.regions, location.active) == (
            "store",
            100,
            (),
            True,
        )
        page, more = await service.list_locations(tx, None, 2)
        assert ([x.code for x in page], more) == (["main", "north"], True)
