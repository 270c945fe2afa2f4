"""Inventory rules without infrastructure: availability, the low-stock crossing, reservation steps."""

from datetime import UTC, datetime, timedelta

import pytest

from services.inventory.domain import (
    EXPIRED,
    MAX_QUANTITY,
    OrderOutcome,
    Refused,
    ReservationStatus,
    ShortLine,
    Step,
    StockDelta,
    StockLevel,
    StockMove,
    StockRuleViolation,
    announces_level,
    low_stock_signal,
    merge_lines,
    next_step,
    plan_move,
    reservation_expiry,
    settled_reason,
    short_lines,
)

R = ReservationStatus


class TestAvailability:
    def test_available_is_on_hand_minus_reserved(self) -> None:
        assert StockLevel(on_hand=10, reserved=3, reorder_point=0).available == 7

    def test_setting_on_hand_keeps_reorder_point_unless_given(self) -> None:
        level = StockLevel(on_hand=10, reserved=3, reorder_point=2)
        assert level.set_on_hand(4) == StockLevel(on_hand=4, reserved=3, reorder_point=2)
        assert level.set_on_hand(4, reorder_point=0).reorder_point == 0

    def test_on_hand_may_equal_but_not_go_below_reserved(self) -> None:
        level = StockLevel(on_hand=10, reserved=3, reorder_point=0)
        assert level.set_on_hand(3).available == 0
        with pytest.raises(StockRuleViolation, match="reserved"):
            level.set_on_hand(2)

    @pytest.mark.parametrize(("delta", "on_hand"), [(5, 15), (-7, 3), (-1, 9)])
    def test_adjustments_that_keep_available_non_negative(self, delta: int, on_hand: int) -> None:
        assert StockLevel(on_hand=10, reserved=3, reorder_point=0).adjust(delta).on_hand == on_hand

    def test_adjustment_cannot_take_reserved_units(self) -> None:
        with pytest.raises(StockRuleViolation, match="available"):
            StockLevel(on_hand=10, reserved=3, reorder_point=0).adjust(-8)


class TestLevelAnnouncement:
    """StockLevelChanged only when available moves (ADR 0008)."""

    @pytest.mark.parametrize(
        ("move", "announced"),
        [
            (StockMove.RESERVE, True),
            (StockMove.COMMIT, False),  # reserved -> shipped: StockCommitted says it
            (StockMove.UNRESERVE, True),
            (StockMove.RESTOCK, True),
            (StockMove.RETAKE, True),
        ],
    )
    def test_each_move_of_an_order(self, move: StockMove, announced: bool) -> None:
        before = StockLevel(on_hand=10, reserved=4, reorder_point=0)
        d_on_hand, d_reserved = move.deltas(4)
        after = StockLevel(before.on_hand + d_on_hand, before.reserved + d_reserved, 0)
        assert announces_level(before, after) is announced

    def test_operator_changes_are_announced_when_available_moves(self) -> None:
        level = StockLevel(on_hand=10, reserved=4, reorder_point=2)
        assert announces_level(level, level.adjust(-1))
        assert announces_level(level, level.set_on_hand(4))
        assert not announces_level(level, level.adjust(0))
        assert not announces_level(level, level.set_on_hand(10, reorder_point=8))

    def test_a_new_sku_is_announced_even_at_zero(self) -> None:
        assert announces_level(None, StockLevel(on_hand=0, reserved=0, reorder_point=0))


class TestLowStockCrossing:
    def test_first_time_at_or_below_reorder_point_emits(self) -> None:
        signal = low_stock_signal(available=3, reorder_point=3, low_reported=False)
        assert (signal.emit, signal.low) == (True, True)

    def test_staying_low_does_not_emit_again(self) -> None:
        signal = low_stock_signal(available=1, reorder_point=3, low_reported=True)
        assert (signal.emit, signal.low) == (False, True)

    def test_above_reorder_point_rearms(self) -> None:
        signal = low_stock_signal(available=4, reorder_point=3, low_reported=True)
        assert (signal.emit, signal.low) == (False, False)

    def test_a_sequence_of_levels_emits_once_per_crossing(self) -> None:
        reported, emitted = False, []
        for available in [10, 5, 3, 2, 0, 2, 4, 8, 3, 1, 9]:
            signal = low_stock_signal(available, reorder_point=3, low_reported=reported)
            reported = signal.low
            if signal.emit:
                emitted.append(available)
        assert emitted == [3, 3]


class TestReservationSteps:
    @pytest.mark.parametrize(
        ("outcome", "step"),
        [
            (OrderOutcome.CONFIRMED, Step(R.COMMITTED, StockMove.COMMIT)),
            (OrderOutcome.REJECTED, Step(R.RELEASED, StockMove.UNRESERVE)),
            (OrderOutcome.CANCELLED, Step(R.RELEASED, StockMove.UNRESERVE)),
        ],
    )
    def test_a_live_reservation_can_be_committed_or_released(
        self, outcome: OrderOutcome, step: Step
    ) -> None:
        assert next_step(R.RESERVED, None, outcome) == step

    def test_cancelling_a_committed_order_restocks(self) -> None:
        assert next_step(R.COMMITTED, None, OrderOutcome.CANCELLED) == Step(
            R.RELEASED, StockMove.RESTOCK
        )

    def test_confirmation_after_our_expiry_retakes_the_stock(self) -> None:
        assert next_step(R.RELEASED, EXPIRED, OrderOutcome.CONFIRMED) == Step(
            R.COMMITTED, StockMove.RETAKE
        )

    @pytest.mark.parametrize(
        ("status", "reason", "outcome"),
        [
            (R.COMMITTED, None, OrderOutcome.CONFIRMED),  # duplicate confirmation
            (R.COMMITTED, None, OrderOutcome.REJECTED),  # a committed order is never rejected
            (R.RELEASED, "payment_declined", OrderOutcome.CONFIRMED),
            (R.RELEASED, "cancelled", OrderOutcome.CONFIRMED),
            (R.RELEASED, EXPIRED, OrderOutcome.REJECTED),  # already given back
            (R.RELEASED, "cancelled", OrderOutcome.CANCELLED),
            (R.FAILED, "out_of_stock", OrderOutcome.CONFIRMED),
            (R.FAILED, "out_of_stock", OrderOutcome.REJECTED),
            (R.FAILED, "out_of_stock", OrderOutcome.CANCELLED),
        ],
    )
    def test_late_duplicate_or_moot_events_change_nothing(
        self, status: ReservationStatus, reason: str | None, outcome: OrderOutcome
    ) -> None:
        assert next_step(status, reason, outcome) is None

    @pytest.mark.parametrize(
        ("move", "deltas", "conditional"),
        [
            (StockMove.RESERVE, (0, 4), True),
            (StockMove.COMMIT, (-4, -4), False),
            (StockMove.UNRESERVE, (0, -4), False),
            (StockMove.RESTOCK, (4, 0), False),
            (StockMove.RETAKE, (-4, 0), True),
        ],
    )
    def test_moves(self, move: StockMove, deltas: tuple[int, int], conditional: bool) -> None:
        assert move.deltas(4) == deltas
        assert move.needs_available is conditional

    def test_commit_keeps_available_and_release_gives_it_back(self) -> None:
        level = StockLevel(on_hand=10, reserved=0, reorder_point=0)
        for move, available in [
            (StockMove.RESERVE, 6),
            (StockMove.COMMIT, 6),
            (StockMove.RESTOCK, 10),
            (StockMove.RESERVE, 6),
            (StockMove.UNRESERVE, 10),
        ]:
            d_on_hand, d_reserved = move.deltas(4)
            level = StockLevel(level.on_hand + d_on_hand, level.reserved + d_reserved, 0)
            assert level.available == available


class TestAllOrNothing:
    levels = {"a": StockLevel(10, 2, 0), "b": StockLevel(3, 0, 0)}

    def test_every_line_moves_when_every_line_can(self) -> None:
        assert plan_move([("a", 8), ("b", 3)], self.levels, StockMove.RESERVE) == [
            StockDelta("a", 0, 8),
            StockDelta("b", 0, 3),
        ]

    def test_one_short_line_refuses_them_all_and_reports_the_short_ones(self) -> None:
        assert plan_move([("a", 9), ("b", 1), ("ghost", 1)], self.levels, StockMove.RESERVE) == (
            Refused("a", [ShortLine("a", 9, 8), ShortLine("ghost", 1, 0)])
        )

    def test_moves_that_consume_nothing_ignore_availability(self) -> None:
        assert plan_move([("b", 5)], self.levels, StockMove.RESTOCK) == [StockDelta("b", 5, 0)]
        assert isinstance(plan_move([("b", 5)], self.levels, StockMove.RETAKE), Refused)

    def test_an_unknown_sku_or_an_absurd_quantity_never_moves(self) -> None:
        assert plan_move([("ghost", 1)], self.levels, StockMove.RESTOCK) == Refused(
            "ghost", [ShortLine("ghost", 1, 0)]
        )
        refused = plan_move([("a", MAX_QUANTITY + 1)], self.levels, StockMove.UNRESERVE)
        assert isinstance(refused, Refused) and refused.sku == "a"

    @pytest.mark.parametrize(
        ("step", "reason", "kept"),
        [
            (Step(R.RELEASED, StockMove.UNRESERVE), "payment_declined", "payment_declined"),
            (Step(R.COMMITTED, StockMove.COMMIT), None, None),
            (Step(R.COMMITTED, StockMove.RETAKE), None, "committed_after_expiry"),
        ],
    )
    def test_the_reason_a_settled_reservation_keeps(
        self, step: Step, reason: str | None, kept: str | None
    ) -> None:
        assert settled_reason(step, reason) == kept

    def test_each_move_names_its_level_change(self) -> None:
        assert [m.reason for m in StockMove] == [
            "reserved",
            "committed",
            "released",
            "restocked",
            "committed",
        ]


class TestLines:
    def test_merged_per_sku_and_sorted(self) -> None:
        assert merge_lines([("b", 1), ("a", 2), ("b", 3)]) == [("a", 2), ("b", 4)]

    def test_short_lines_report_what_cannot_be_served(self) -> None:
        lines = [("a", 2), ("b", 5), ("ghost", 1)]
        assert short_lines(lines, {"a": 9, "b": 4}, failed_sku="b") == [
            ShortLine("b", 5, 4),
            ShortLine("ghost", 1, 0),  # unknown sku: nothing available
        ]

    def test_the_refused_line_is_reported_even_if_stock_came_back(self) -> None:
        assert short_lines([("a", 2)], {"a": 3}, failed_sku="a") == [ShortLine("a", 2, 3)]


class TestExpiry:
    now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

    def test_safety_net_runs_out_after_the_orders_deadline(self) -> None:
        deadline = self.now + timedelta(minutes=15)
        assert reservation_expiry(deadline, self.now, 60) == deadline + timedelta(seconds=60)

    def test_a_past_deadline_counts_from_now(self) -> None:
        deadline = self.now - timedelta(minutes=5)
        assert reservation_expiry(deadline, self.now, 60) == self.now + timedelta(seconds=60)
