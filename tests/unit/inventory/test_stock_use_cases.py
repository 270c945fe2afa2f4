"""Operators' stock use cases on in-memory repositories: set, adjust, read, and what they announce."""

import pytest

from libs.events.inventory import StockLevelChanged, StockLow
from libs.kit.errors import Conflict, NotFound
from services.inventory import service
from services.inventory.domain import Movement, StockLevel
from tests.support.fakes import FakeTx, MutableClock
from tests.unit.inventory.fakes import START, AuditEntry, FakeStore, order_placed

Tx = FakeTx[FakeStore]


@pytest.fixture
def tx() -> Tx:
    return FakeTx(FakeStore(MutableClock(START)))


def levels(tx: Tx) -> list[tuple[str, int, int, int, str]]:
    return [
        (e.sku, e.on_hand, e.reserved, e.available, e.reason)
        for e in tx.events.emitted
        if isinstance(e, StockLevelChanged)
    ]


def lows(tx: Tx) -> list[tuple[str, int, int]]:
    return [
        (e.sku, e.available, e.reorder_point) for e in tx.events.emitted if isinstance(e, StockLow)
    ]


class TestSetStock:
    async def test_a_new_sku_is_created_counted_and_announced(self, tx: Tx) -> None:
        item, created = await service.set_stock(tx, "mug", 12, 2)

        assert created
        assert item.level == StockLevel(on_hand=12, reserved=0, reorder_point=2)
        assert tx.store.items.level("mug") == item.level
        assert levels(tx) == [("mug", 12, 0, 12, "set")]
        assert lows(tx) == []
        assert tx.store.movements.entries == [
            AuditEntry(Movement("mug", 12, 0, 12, 0), "set", None)
        ]

    async def test_an_existing_sku_is_recounted_keeping_its_reorder_point(self, tx: Tx) -> None:
        tx.store.items.put("mug", 12, reorder_point=2)

        item, created = await service.set_stock(tx, "mug", 8, None)

        assert not created
        assert item.level == StockLevel(on_hand=8, reserved=0, reorder_point=2)
        assert levels(tx) == [("mug", 8, 0, 8, "set")]
        # The audit records the change, not the new count.
        assert tx.store.movements.of("mug") == [
            AuditEntry(Movement("mug", -4, 0, 8, 0), "set", None)
        ]

    async def test_a_new_reorder_point_alone_is_a_change_but_not_a_new_level(self, tx: Tx) -> None:
        tx.store.items.put("mug", 12, reorder_point=2)

        item, _ = await service.set_stock(tx, "mug", 12, 20)

        assert item.level.reorder_point == 20
        assert tx.store.items.level("mug").reorder_point == 20
        assert levels(tx) == []  # available is still 12 (ADR 0008)
        assert lows(tx) == [("mug", 12, 20)]  # the new point puts it at/below: announced once
        assert tx.store.movements.of("mug") == [
            AuditEntry(Movement("mug", 0, 0, 12, 0), "set", None)
        ]

    async def test_a_new_count_with_units_reserved_is_announced(self, tx: Tx) -> None:
        tx.store.items.put("mug", 10, reserved=4)

        await service.set_stock(tx, "mug", 7, None)

        assert levels(tx) == [("mug", 7, 4, 3, "set")]

    async def test_a_new_sku_at_zero_is_announced(self, tx: Tx) -> None:
        await service.set_stock(tx, "mug", 0, None)

        assert levels(tx) == [("mug", 0, 0, 0, "set")]

    async def test_the_same_count_again_changes_and_announces_nothing(self, tx: Tx) -> None:
        before = tx.store.items.put("mug", 12, reorder_point=2)

        item, created = await service.set_stock(tx, "mug", 12, 2)

        assert (item.level, created) == (before.level, False)
        assert tx.events.emitted == []
        assert tx.store.movements.entries == []

    async def test_on_hand_may_not_drop_below_what_orders_hold(self, tx: Tx) -> None:
        tx.store.items.put("mug", 10, reserved=4)

        with pytest.raises(Conflict, match="reserved"):
            await service.set_stock(tx, "mug", 3, None)
        item, _ = await service.set_stock(tx, "mug", 4, None)

        assert (item.level.on_hand, item.level.reserved, item.level.available) == (4, 4, 0)
        assert levels(tx) == [("mug", 4, 4, 0, "set")]  # only the accepted change

    async def test_creating_at_the_reorder_point_reports_low_stock(self, tx: Tx) -> None:
        await service.set_stock(tx, "mug", 3, 3)

        assert lows(tx) == [("mug", 3, 3)]
        assert tx.store.items.level("mug").low_reported


class TestAdjustStock:
    async def test_restock_and_write_off(self, tx: Tx) -> None:
        tx.store.items.put("mug", 5)

        restocked = await service.adjust_stock(tx, "mug", 10, "restock")
        damaged = await service.adjust_stock(tx, "mug", -3, "damage")

        assert restocked.level.on_hand == 15
        assert damaged.level.available == 12
        assert levels(tx) == [("mug", 15, 0, 15, "restock"), ("mug", 12, 0, 12, "damage")]
        assert [(e.movement.delta_on_hand, e.reason) for e in tx.store.movements.of("mug")] == [
            (10, "restock"),
            (-3, "damage"),
        ]

    async def test_a_zero_adjustment_is_audited_but_announces_no_level(self, tx: Tx) -> None:
        # The API refuses delta 0 (422); the use case still must not announce a level that
        # did not move.
        tx.store.items.put("mug", 10, reserved=3)

        item = await service.adjust_stock(tx, "mug", 0, "count_correction")

        assert item.level == StockLevel(10, 3, 0)
        assert tx.events.emitted == []
        assert [(e.movement.delta_on_hand, e.reason) for e in tx.store.movements.of("mug")] == [
            (0, "count_correction")
        ]

    async def test_an_adjustment_never_takes_reserved_units(self, tx: Tx) -> None:
        tx.store.items.put("mug", 10, reserved=3)

        with pytest.raises(Conflict, match="available"):
            await service.adjust_stock(tx, "mug", -8, "damage")

        assert tx.store.items.level("mug") == StockLevel(10, 3, 0)
        assert tx.events.emitted == []
        assert tx.store.movements.entries == []

    async def test_an_unknown_sku_is_not_found(self, tx: Tx) -> None:
        with pytest.raises(NotFound, match="stock item ghost"):
            await service.adjust_stock(tx, "ghost", 1, "restock")
        assert "ghost" not in tx.store.items.rows

    async def test_low_stock_is_announced_once_per_crossing(self, tx: Tx) -> None:
        await service.set_stock(tx, "mug", 10, 4)
        for delta in (-3, -3, -2, 5, -4):  # available 7, 4 (low), 2, 7 (re-armed), 3 (low)
            await service.adjust_stock(tx, "mug", delta, "count_correction")

        assert [available for _, _, _, available, _ in levels(tx)] == [10, 7, 4, 2, 7, 3]
        assert lows(tx) == [("mug", 4, 4), ("mug", 3, 4)]
        assert tx.store.items.level("mug").low_reported


class TestReads:
    async def test_an_item_reads_back_as_stored(self, tx: Tx) -> None:
        stored = tx.store.items.put("mug", 10, reserved=3, reorder_point=2)

        read = await service.get_item(tx, "mug")
        assert (read.sku, read.level) == (stored.sku, stored.level)
        # Issue 13: all of it at the default location.
        assert [(s.location, s.on_hand, s.reserved) for s in read.locations] == [("main", 10, 3)]
        assert (await service.get_item(tx, "mug")).level.available == 7

    async def test_an_unknown_item_is_not_found(self, tx: Tx) -> None:
        with pytest.raises(NotFound, match="stock item ghost not found"):
            await service.get_item(tx, "ghost")

    async def test_a_reservation_reads_back_with_its_lines(self, tx: Tx) -> None:
        tx.store.items.put("mug", 10)
        order = order_placed("ord-1", [("mug", 2)], START)
        await service.reserve_for_order(
            tx, order, correlation_id="c-1", clock=lambda: START, grace_s=60
        )

        reservation = await service.get_reservation(tx, "ord-1")

        assert (reservation.status, reservation.lines) == ("reserved", (("mug", 2),))

    async def test_an_unknown_reservation_is_not_found(self, tx: Tx) -> None:
        with pytest.raises(NotFound, match="reservation for order nope not found"):
            await service.get_reservation(tx, "nope")
