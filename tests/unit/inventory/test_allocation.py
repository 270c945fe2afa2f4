"""Issue 13's allocator: which locations a reservation takes each line from, by strategy, with or
without splitting lines, never the safety stock or an inactive location, within channel caps."""

from services.inventory.domain import (
    Allocation,
    AllocationPolicy,
    Availability,
    ChannelCap,
    ChannelView,
    Refused,
    Shelf,
    ShortLine,
    Strategy,
    allocate,
    announces,
    availability,
    pool_available,
)

PRIORITY = AllocationPolicy()
NO_SPLIT = AllocationPolicy(split=False)
REGION = AllocationPolicy(Strategy.REGION)


def shelf(location: str, on_hand: int, priority: int, **extra: object) -> Shelf:
    return Shelf(location, on_hand, 0, priority=priority, **extra)  # type: ignore[arg-type]


def picks(result: list[Allocation] | Refused) -> list[tuple[str, str, int]]:
    assert not isinstance(result, Refused), result
    return [(a.sku, a.location, a.quantity) for a in result]


class TestPriority:
    def test_the_preferred_location_serves_first(self) -> None:
        shelves = {"mug": [shelf("b", 5, 2), shelf("a", 5, 1)]}

        assert picks(allocate([("mug", 3)], shelves, PRIORITY, None)) == [("mug", "a", 3)]

    def test_equal_priorities_go_by_code(self) -> None:
        shelves = {"mug": [shelf("b", 5, 1), shelf("a", 5, 1)]}

        assert picks(allocate([("mug", 3)], shelves, PRIORITY, None)) == [("mug", "a", 3)]

    def test_an_empty_first_location_is_skipped(self) -> None:
        shelves = {"mug": [shelf("a", 0, 1), shelf("b", 4, 2)]}

        assert picks(allocate([("mug", 4)], shelves, PRIORITY, None)) == [("mug", "b", 4)]

    def test_with_split_a_line_takes_from_several_locations_in_order(self) -> None:
        shelves = {"mug": [shelf("a", 2, 1), shelf("b", 2, 2), shelf("c", 9, 3)]}

        assert picks(allocate([("mug", 5)], shelves, PRIORITY, None)) == [
            ("mug", "a", 2),
            ("mug", "b", 2),
            ("mug", "c", 1),
        ]


class TestRegion:
    def test_locations_serving_the_region_come_first(self) -> None:
        shelves = {
            "mug": [shelf("a", 5, 1, regions=("US",)), shelf("b", 5, 9, regions=("DE", "AT"))]
        }

        assert picks(allocate([("mug", 2)], shelves, REGION, "DE")) == [("mug", "b", 2)]
        # Another region falls back to priority.
        assert picks(allocate([("mug", 2)], shelves, REGION, "FR")) == [("mug", "a", 2)]

    def test_then_the_others_when_the_region_runs_short(self) -> None:
        shelves = {"mug": [shelf("a", 5, 1), shelf("b", 2, 9, regions=("DE",))]}

        assert picks(allocate([("mug", 4)], shelves, REGION, "DE")) == [
            ("mug", "b", 2),
            ("mug", "a", 2),
        ]


class TestNoSplit:
    def test_a_line_comes_from_one_location_or_fails(self) -> None:
        shelves = {"mug": [shelf("a", 3, 1), shelf("b", 3, 2)]}

        refused = allocate([("mug", 4)], shelves, NO_SPLIT, None)

        assert isinstance(refused, Refused)
        # What one location could give, not the sum.
        assert refused.short == [ShortLine("mug", 4, 3)]
        assert picks(allocate([("mug", 3)], shelves, NO_SPLIT, None)) == [("mug", "a", 3)]

    def test_one_location_for_the_whole_order_when_one_can(self) -> None:
        shelves = {
            "cup": [shelf("a", 5, 1), shelf("b", 5, 2)],
            "mug": [shelf("a", 1, 1), shelf("b", 5, 2)],
        }

        assert picks(allocate([("cup", 2), ("mug", 2)], shelves, NO_SPLIT, None)) == [
            ("cup", "b", 2),
            ("mug", "b", 2),
        ]

    def test_otherwise_each_line_from_its_best_location(self) -> None:
        shelves = {"cup": [shelf("a", 5, 1)], "mug": [shelf("a", 1, 1), shelf("b", 5, 2)]}

        assert picks(allocate([("cup", 2), ("mug", 2)], shelves, NO_SPLIT, None)) == [
            ("cup", "a", 2),
            ("mug", "b", 2),
        ]


class TestWhatMayBeTaken:
    def test_the_safety_stock_is_never_allocated(self) -> None:
        shelves = {"mug": [Shelf("a", 10, 2, safety_stock=5, priority=1), shelf("b", 1, 2)]}

        assert picks(allocate([("mug", 4)], shelves, PRIORITY, None)) == [
            ("mug", "a", 3),
            ("mug", "b", 1),
        ]
        refused = allocate([("mug", 5)], shelves, PRIORITY, None)
        assert isinstance(refused, Refused)
        assert refused.short == [ShortLine("mug", 5, 4)]

    def test_an_inactive_location_is_never_allocated_from(self) -> None:
        shelves = {"mug": [shelf("a", 10, 1, active=False), shelf("b", 2, 2)]}

        assert picks(allocate([("mug", 2)], shelves, PRIORITY, None)) == [("mug", "b", 2)]
        assert isinstance(allocate([("mug", 3)], shelves, PRIORITY, None), Refused)

    def test_all_or_nothing_names_every_short_line(self) -> None:
        shelves = {"cup": [shelf("a", 1, 1)], "mug": [shelf("a", 9, 1)], "pot": [shelf("a", 0, 1)]}

        refused = allocate([("cup", 2), ("mug", 1), ("pot", 1)], shelves, PRIORITY, None)

        assert isinstance(refused, Refused)
        assert refused.sku == "cup"
        assert refused.short == [ShortLine("cup", 2, 1), ShortLine("pot", 1, 0)]

    def test_an_unknown_sku_is_short_with_nothing_available(self) -> None:
        refused = allocate([("ghost", 1)], {}, PRIORITY, None)

        assert isinstance(refused, Refused)
        assert refused.short == [ShortLine("ghost", 1, 0)]


class TestCaps:
    def test_a_capped_channel_takes_at_most_its_room(self) -> None:
        shelves = {"mug": [shelf("a", 10, 1)]}

        refused = allocate([("mug", 3)], shelves, PRIORITY, None, {"mug": 2})

        assert isinstance(refused, Refused)
        # What the channel could still take.
        assert refused.short == [ShortLine("mug", 3, 2)]
        [taken] = allocate([("mug", 2)], shelves, PRIORITY, None, {"mug": 2})  # type: ignore[misc]
        assert taken == Allocation("mug", "a", 2, capped=True)

    def test_the_pool_still_limits_a_capped_channel(self) -> None:
        refused = allocate([("mug", 3)], {"mug": [shelf("a", 2, 1)]}, PRIORITY, None, {"mug": 9})

        assert isinstance(refused, Refused)
        assert refused.short == [ShortLine("mug", 3, 2)]

    def test_uncapped_skus_are_not_counted(self) -> None:
        result = allocate([("mug", 1)], {"mug": [shelf("a", 2, 1)]}, PRIORITY, None, {"cup": 1})

        assert not isinstance(result, Refused)
        assert [a.capped for a in result] == [False]


class TestAvailability:
    def test_the_sum_with_split_the_largest_location_without(self) -> None:
        shelves = [
            shelf("a", 3, 1),
            Shelf("b", 5, 1, safety_stock=1),
            shelf("c", 9, 1, active=False),
        ]

        assert pool_available(shelves, split=True) == 3 + 3
        assert pool_available(shelves, split=False) == 3

    def test_one_location_without_safety_stock_is_v1(self) -> None:
        assert availability([Shelf("main", 10, 4)], [], split=True) == Availability(6)

    def test_a_channel_sees_the_least_of_its_room_and_the_pool(self) -> None:
        caps = [ChannelCap("shop", cap=5, used=1), ChannelCap("amazon", cap=3, used=4)]

        assert availability([Shelf("main", 10, 7)], caps, split=True) == Availability(
            3, (ChannelView("amazon", 3, 4, 0), ChannelView("shop", 5, 1, 3))
        )

    def test_a_channel_s_change_alone_is_announced(self) -> None:
        before = Availability(3, (ChannelView("shop", 5, 1, 3),))

        assert not announces(before, before)
        assert announces(before, Availability(3, (ChannelView("shop", 5, 3, 2),)))
        assert announces(before, Availability(3, ()))
        assert announces(None, before)
