"""The saga as inventory plays it, on in-memory repositories: reserve all or nothing, commit,
release, cancel, and the expiry safety net; judged by stock, reservation state and events."""

from datetime import timedelta
from typing import TypeVar

import pytest
from pydantic import BaseModel

from libs.events.common import Line
from libs.events.inventory import (
    Allocation,
    ShortLine,
    StockCommitted,
    StockLevelChanged,
    StockLow,
    StockReleased,
    StockReservationFailed,
    StockReserved,
)
from services.inventory import service
from services.inventory.domain import Movement, ReservationStatus, StockLevel
from tests.support.fakes import FakeTx, MutableClock
from tests.unit.inventory.fakes import (
    START,
    TTL,
    AuditEntry,
    FakeExpiryTransactions,
    FakeStore,
    order_placed,
)

Tx = FakeTx[FakeStore]
E = TypeVar("E", bound=BaseModel)
GRACE_S = 60


@pytest.fixture
def clock() -> MutableClock:
    return MutableClock(START)


@pytest.fixture
def tx(clock: MutableClock) -> Tx:
    return FakeTx(FakeStore(clock))


async def place(
    tx: Tx, clock: MutableClock, order_id: str, lines: list[tuple[str, int]], ttl: timedelta = TTL
) -> ReservationStatus | None:
    order = order_placed(order_id, lines, clock() + ttl)
    return await service.reserve_for_order(
        tx, order, correlation_id=f"corr-{order_id}", clock=clock, grace_s=GRACE_S
    )


def counts(tx: Tx, sku: str) -> tuple[int, int, int]:
    level = tx.store.items.level(sku)
    return level.on_hand, level.reserved, level.available


def status(tx: Tx, order_id: str) -> tuple[ReservationStatus, str | None]:
    reservation = tx.store.reservations.rows[order_id]
    return reservation.status, reservation.reason


def of(tx: Tx, model: type[E]) -> list[E]:
    """The events of one type that `tx` emitted, typed."""
    return [e for e in tx.events.emitted if isinstance(e, model)]


def kinds(events: list[BaseModel]) -> list[str]:
    return [type(e).__name__ for e in events]


def lines(*pairs: tuple[str, int]) -> list[Line]:
    return [Line(sku=sku, quantity=quantity) for sku, quantity in pairs]


class TestReserve:
    async def test_every_line_available_reserves_every_line(
        self, tx: Tx, clock: MutableClock
    ) -> None:
        tx.store.items.put("a", 10)
        tx.store.items.put("b", 4)

        outcome = await place(tx, clock, "ord-1", [("b", 2), ("a", 2), ("b", 1)])

        assert outcome is ReservationStatus.RESERVED
        assert counts(tx, "a") == (10, 2, 8)
        assert counts(tx, "b") == (4, 3, 1)
        # The reservation first, then each sku's new level (one line per sku, in sku order).
        assert kinds(tx.events.emitted) == [
            "StockReserved",
            "StockLevelChanged",
            "StockLevelChanged",
        ]
        [reserved] = of(tx, StockReserved)
        assert reserved == StockReserved(
            order_id="ord-1",
            lines=lines(("a", 2), ("b", 3)),
            expires_at=START + TTL + timedelta(seconds=GRACE_S),
            # Issue 13: every unit from the default location.
            allocations=[
                Allocation(sku="a", location="main", quantity=2),
                Allocation(sku="b", location="main", quantity=3),
            ],
        )
        assert [(e.sku, e.reserved, e.available, e.reason) for e in of(tx, StockLevelChanged)] == [
            ("a", 2, 8, "reserved"),
            ("b", 3, 1, "reserved"),
        ]
        assert status(tx, "ord-1") == (ReservationStatus.RESERVED, None)
        assert tx.store.reservations.rows["ord-1"].correlation_id == "corr-ord-1"
        # One audit row per line, in line order, with its deltas and the level after the move.
        assert tx.store.movements.entries == [
            AuditEntry(Movement("a", 0, 2, 10, 2), "reserved", "ord-1"),
            AuditEntry(Movement("b", 0, 3, 4, 3), "reserved", "ord-1"),
        ]

    async def test_one_short_line_fails_the_order_and_holds_nothing(
        self, tx: Tx, clock: MutableClock
    ) -> None:
        tx.store.items.put("a", 10)
        tx.store.items.put("b", 1)

        outcome = await place(tx, clock, "ord-1", [("a", 4), ("b", 2), ("ghost", 1)])

        assert outcome is ReservationStatus.FAILED
        assert counts(tx, "a") == (10, 0, 10)
        assert counts(tx, "b") == (1, 0, 1)
        assert tx.events.emitted == [
            StockReservationFailed(
                order_id="ord-1",
                reason="out_of_stock",
                short_lines=[
                    ShortLine(sku="b", requested=2, available=1),
                    ShortLine(sku="ghost", requested=1, available=0),
                ],
            )
        ]
        assert status(tx, "ord-1") == (ReservationStatus.FAILED, "out_of_stock")
        assert tx.store.movements.entries == []

    async def test_a_duplicate_order_placed_is_a_no_op(self, tx: Tx, clock: MutableClock) -> None:
        tx.store.items.put("a", 10)
        await place(tx, clock, "ord-1", [("a", 3)])
        emitted = list(tx.events.emitted)

        again = await place(tx, clock, "ord-1", [("a", 3)])

        assert again is None
        assert counts(tx, "a") == (10, 3, 7)
        assert tx.events.emitted == emitted

    async def test_a_past_deadline_expires_a_grace_period_from_now(
        self, tx: Tx, clock: MutableClock
    ) -> None:
        tx.store.items.put("a", 10)

        await place(tx, clock, "ord-1", [("a", 1)], ttl=timedelta(minutes=-5))

        [reserved] = of(tx, StockReserved)
        assert reserved.expires_at == START + timedelta(seconds=GRACE_S)

    async def test_crossing_the_reorder_point_reports_low_stock_once(
        self, tx: Tx, clock: MutableClock
    ) -> None:
        tx.store.items.put("a", 10, reorder_point=5)

        await place(tx, clock, "ord-1", [("a", 4)])  # available 6
        await place(tx, clock, "ord-2", [("a", 2)])  # 4: crosses
        await place(tx, clock, "ord-3", [("a", 1)])  # 3: still low

        assert of(tx, StockLow) == [StockLow(sku="a", available=4, reorder_point=5)]


class TestCommit:
    async def test_a_confirmed_order_takes_its_units_out(self, tx: Tx, clock: MutableClock) -> None:
        tx.store.items.put("a", 10)
        await place(tx, clock, "ord-1", [("a", 4)])
        tx.events.emitted.clear()

        await service.commit_order(tx, "ord-1")

        assert counts(tx, "a") == (6, 0, 6)
        assert status(tx, "ord-1") == (ReservationStatus.COMMITTED, None)
        # Available stays 6: no StockLevelChanged (ADR 0008); StockCommitted carries the lines.
        assert tx.events.emitted == [StockCommitted(order_id="ord-1", lines=lines(("a", 4)))]
        # The audit still records the move.
        assert [
            (e.movement.delta_on_hand, e.movement.delta_reserved, e.reason)
            for e in tx.store.movements.of("a")
        ][-1] == (-4, -4, "committed")

    async def test_a_checkout_announces_each_level_once(self, tx: Tx, clock: MutableClock) -> None:
        tx.store.items.put("a", 10)
        tx.store.items.put("b", 5)

        await place(tx, clock, "ord-1", [("a", 4), ("b", 1)])
        await service.commit_order(tx, "ord-1")

        assert [(e.sku, e.available) for e in of(tx, StockLevelChanged)] == [("a", 6), ("b", 4)]
        assert kinds(tx.events.emitted)[-1] == "StockCommitted"

    async def test_a_commit_while_low_reports_nothing_more(
        self, tx: Tx, clock: MutableClock
    ) -> None:
        tx.store.items.put("a", 10, reorder_point=5)
        await place(tx, clock, "ord-1", [("a", 6)])  # available 4: crosses
        tx.events.emitted.clear()

        await service.commit_order(tx, "ord-1")
        await place(tx, clock, "ord-2", [("a", 1)])  # available 3: still the same crossing

        assert counts(tx, "a") == (4, 1, 3)
        assert of(tx, StockLow) == []
        assert tx.store.items.level("a").low_reported

    async def test_a_duplicate_confirmation_changes_nothing(
        self, tx: Tx, clock: MutableClock
    ) -> None:
        tx.store.items.put("a", 10)
        await place(tx, clock, "ord-1", [("a", 4)])
        await service.commit_order(tx, "ord-1")
        tx.events.emitted.clear()

        await service.commit_order(tx, "ord-1")

        assert counts(tx, "a") == (6, 0, 6)
        assert tx.events.emitted == []

    async def test_a_confirmation_without_a_reservation_changes_nothing(self, tx: Tx) -> None:
        await service.commit_order(tx, "ord-unknown")

        assert tx.events.emitted == []
        assert tx.store.reservations.rows == {}

    async def test_a_confirmation_after_a_release_is_ignored(
        self, tx: Tx, clock: MutableClock
    ) -> None:
        tx.store.items.put("a", 10)
        await place(tx, clock, "ord-1", [("a", 4)])
        await service.release_order(tx, "ord-1", "payment_declined")
        tx.events.emitted.clear()

        await service.commit_order(tx, "ord-1")

        assert counts(tx, "a") == (10, 0, 10)
        assert tx.events.emitted == []
        assert status(tx, "ord-1") == (ReservationStatus.RELEASED, "payment_declined")


class TestRelease:
    async def test_a_rejected_order_gives_its_units_back(self, tx: Tx, clock: MutableClock) -> None:
        tx.store.items.put("a", 10)
        await place(tx, clock, "ord-1", [("a", 4)])
        tx.events.emitted.clear()

        await service.release_order(tx, "ord-1", "payment_declined")

        assert counts(tx, "a") == (10, 0, 10)
        assert status(tx, "ord-1") == (ReservationStatus.RELEASED, "payment_declined")
        assert tx.events.emitted == [
            StockLevelChanged(sku="a", on_hand=10, reserved=0, available=10, reason="released"),
            StockReleased(order_id="ord-1", lines=lines(("a", 4)), reason="payment_declined"),
        ]

    async def test_a_failed_reservation_has_nothing_to_release(
        self, tx: Tx, clock: MutableClock
    ) -> None:
        tx.store.items.put("a", 1)
        await place(tx, clock, "ord-1", [("a", 5)])
        tx.events.emitted.clear()

        await service.release_order(tx, "ord-1", "out_of_stock")

        assert tx.events.emitted == []
        assert status(tx, "ord-1") == (ReservationStatus.FAILED, "out_of_stock")

    async def test_an_order_rejected_before_it_was_placed_never_reserves(
        self, tx: Tx, clock: MutableClock
    ) -> None:
        tx.store.items.put("a", 10)

        await service.release_order(tx, "ord-1", "reservation_expired")
        late = await place(tx, clock, "ord-1", [("a", 3)])  # replayed from the DLQ

        assert late is None
        assert counts(tx, "a") == (10, 0, 10)
        assert status(tx, "ord-1") == (ReservationStatus.RELEASED, "reservation_expired")
        assert tx.events.emitted == []


class TestCancel:
    async def test_cancelling_after_confirmation_restocks(
        self, tx: Tx, clock: MutableClock
    ) -> None:
        tx.store.items.put("a", 10)
        await place(tx, clock, "ord-1", [("a", 4)])
        await service.commit_order(tx, "ord-1")
        tx.events.emitted.clear()

        await service.cancel_order(tx, "ord-1")

        assert counts(tx, "a") == (10, 0, 10)
        assert status(tx, "ord-1") == (ReservationStatus.RELEASED, "cancelled")
        assert tx.events.emitted == [
            StockLevelChanged(sku="a", on_hand=10, reserved=0, available=10, reason="restocked"),
            StockReleased(order_id="ord-1", lines=lines(("a", 4)), reason="cancelled"),
        ]
        assert [e.movement.delta_on_hand for e in tx.store.movements.of("a")][-1] == 4

    async def test_cancelling_a_pending_order_releases_its_reservation(
        self, tx: Tx, clock: MutableClock
    ) -> None:
        tx.store.items.put("a", 10)
        await place(tx, clock, "ord-1", [("a", 4)])

        await service.cancel_order(tx, "ord-1")

        assert counts(tx, "a") == (10, 0, 10)
        assert tx.events.emitted[-2:] == [
            StockLevelChanged(sku="a", on_hand=10, reserved=0, available=10, reason="released"),
            StockReleased(order_id="ord-1", lines=lines(("a", 4)), reason="cancelled"),
        ]

    @pytest.mark.parametrize("placed", [True, False])
    async def test_a_cancellation_with_nothing_to_return_is_still_answered(
        self, tx: Tx, clock: MutableClock, placed: bool
    ) -> None:
        tx.store.items.put("a", 1)
        if placed:
            await place(tx, clock, "ord-1", [("a", 5)])  # fails: nothing held
        tx.events.emitted.clear()

        await service.cancel_order(tx, "ord-1")

        assert tx.events.emitted == [StockReleased(order_id="ord-1", lines=[], reason="cancelled")]
        assert counts(tx, "a") == (1, 0, 1)
        assert "ord-1" in tx.store.reservations.rows  # a late OrderPlaced reserves nothing

    async def test_cancelling_twice_restocks_once(self, tx: Tx, clock: MutableClock) -> None:
        tx.store.items.put("a", 10)
        await place(tx, clock, "ord-1", [("a", 4)])
        await service.commit_order(tx, "ord-1")
        await service.cancel_order(tx, "ord-1")

        await service.cancel_order(tx, "ord-1")

        assert counts(tx, "a") == (10, 0, 10)
        assert tx.events.emitted[-1] == StockReleased(
            order_id="ord-1", lines=[], reason="cancelled"
        )


class TestExpiry:
    """The safety net: reservations orders forgot are released a grace period after their
    deadline, each in its own transaction, with events in the order's own story."""

    @pytest.fixture
    def store(self, clock: MutableClock) -> FakeStore:
        store = FakeStore(clock)
        store.items.put("a", 10)
        return store

    async def reserve(self, store: FakeStore, clock: MutableClock, order_id: str, qty: int) -> None:
        await place(FakeTx(store), clock, order_id, [("a", qty)])

    async def sweep(
        self, store: FakeStore, clock: MutableClock, limit: int = 100
    ) -> tuple[list[str], FakeExpiryTransactions]:
        transactions = FakeExpiryTransactions(store)
        return await service.sweep_expired(transactions, clock, limit), transactions

    async def test_nothing_is_released_before_the_grace_period_runs_out(
        self, store: FakeStore, clock: MutableClock
    ) -> None:
        await self.reserve(store, clock, "ord-1", 4)
        clock.advance((TTL + timedelta(seconds=GRACE_S - 1)).total_seconds())

        released, transactions = await self.sweep(store, clock)

        assert released == []
        assert transactions.events.emitted == []
        assert store.items.level("a") == StockLevel(10, 4, 0)

    async def test_an_overdue_reservation_is_released_in_its_orders_story(
        self, store: FakeStore, clock: MutableClock
    ) -> None:
        await self.reserve(store, clock, "ord-1", 4)
        clock.advance((TTL + timedelta(seconds=GRACE_S)).total_seconds())

        released, transactions = await self.sweep(store, clock)

        assert released == ["ord-1"]
        assert store.items.level("a") == StockLevel(10, 0, 0)
        assert store.reservations.rows["ord-1"].status is ReservationStatus.RELEASED
        assert store.reservations.rows["ord-1"].reason == "expired"
        assert transactions.correlated == [
            (
                "corr-ord-1",
                StockLevelChanged(sku="a", on_hand=10, reserved=0, available=10, reason="released"),
            ),
            (
                "corr-ord-1",
                StockReleased(order_id="ord-1", lines=lines(("a", 4)), reason="expired"),
            ),
        ]
        again, _ = await self.sweep(store, clock)
        assert again == []

    async def test_one_transaction_per_released_order_oldest_first_up_to_the_limit(
        self, store: FakeStore, clock: MutableClock
    ) -> None:
        for order_id in ("ord-1", "ord-2", "ord-3"):
            await self.reserve(store, clock, order_id, 1)
            clock.advance(1)
        await place(FakeTx(store), clock, "ord-late", [("a", 1)], ttl=timedelta(hours=1))
        clock.advance((TTL + timedelta(seconds=GRACE_S)).total_seconds())

        first, batch = await self.sweep(store, clock, limit=2)
        rest, last = await self.sweep(store, clock)

        assert (first, rest) == (["ord-1", "ord-2"], ["ord-3"])
        assert len(batch.opened) == 2  # the limit stops it: no third transaction
        assert len(last.opened) == 2  # one for ord-3, one that found nothing
        # Each transaction's events belong to the one order it released.
        assert [{cid for cid, _ in tx.correlated} for tx in batch.opened] == [
            {"corr-ord-1"},
            {"corr-ord-2"},
        ]
        assert store.reservations.rows["ord-late"].status is ReservationStatus.RESERVED
        assert store.items.level("a") == StockLevel(10, 1, 0)

    async def test_a_reservation_that_cannot_be_released_does_not_spin_the_sweep(
        self, store: FakeStore, clock: MutableClock
    ) -> None:
        await self.reserve(store, clock, "ord-1", 4)
        del store.items.rows["a"]  # cannot happen today: nothing deletes stock rows
        clock.advance((TTL + timedelta(seconds=GRACE_S)).total_seconds())

        released, transactions = await self.sweep(store, clock)

        assert released == []
        assert len(transactions.opened) == 1
        assert transactions.events.emitted == []
        assert store.reservations.rows["ord-1"].status is ReservationStatus.RESERVED

    async def test_a_confirmation_after_expiry_takes_the_stock_again(
        self, store: FakeStore, clock: MutableClock
    ) -> None:
        await self.reserve(store, clock, "ord-1", 4)
        clock.advance((TTL + timedelta(seconds=GRACE_S)).total_seconds())
        await self.sweep(store, clock)
        tx = FakeTx(store)

        await service.commit_order(tx, "ord-1")

        assert store.items.level("a") == StockLevel(6, 0, 0)
        assert store.reservations.rows["ord-1"].status is ReservationStatus.COMMITTED
        assert store.reservations.rows["ord-1"].reason == "committed_after_expiry"
        # Unlike a plain commit, taking the units again lowers available: announced.
        assert tx.events.emitted == [
            StockLevelChanged(sku="a", on_hand=6, reserved=0, available=6, reason="committed"),
            StockCommitted(order_id="ord-1", lines=lines(("a", 4))),
        ]

    async def test_a_confirmation_after_expiry_never_oversells(
        self, store: FakeStore, clock: MutableClock
    ) -> None:
        await self.reserve(store, clock, "ord-1", 4)
        clock.advance((TTL + timedelta(seconds=GRACE_S)).total_seconds())
        await self.sweep(store, clock)
        await self.reserve(store, clock, "ord-2", 8)  # someone else takes the units
        tx = FakeTx(store)

        await service.commit_order(tx, "ord-1")

        assert tx.events.emitted == []
        assert store.items.level("a") == StockLevel(10, 8, 0)
        assert store.reservations.rows["ord-1"].status is ReservationStatus.RELEASED
