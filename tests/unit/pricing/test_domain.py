"""Pricing math: half-up rounding, tier selection, promotion windows, group prices, best discount,
tax after discount, and when a base price change is a fact worth publishing."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from libs.events.common import Money
from services.pricing.domain import (
    Discount,
    GroupPriceRule,
    LineToPrice,
    PromotionRule,
    Rule,
    Tier,
    VolumeRule,
    best_discount,
    candidate_discounts,
    first_foreign_currency,
    line_problem,
    percent_of,
    price_change,
    price_line,
    round_half_up,
    rule_from_definition,
    tax_on,
    totals,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
NOBODY: frozenset[str] = frozenset()


def line(
    sku: str = "SKU-1", quantity: int = 1, unit_price: int = 1000, category: str = "tools"
) -> LineToPrice:
    return LineToPrice(sku, quantity, unit_price, "EUR", category)


def volume(sku: str = "SKU-1", *tiers: tuple[int, str], rule_id: str = "vol") -> VolumeRule:
    return VolumeRule(rule_id, sku, tuple(Tier(q, Decimal(p)) for q, p in tiers))


def promotion(
    percent: str = "10",
    *,
    skus: tuple[str, ...] = ("SKU-1",),
    category: str | None = None,
    starts: datetime = NOW - timedelta(days=1),
    ends: datetime = NOW + timedelta(days=1),
    rule_id: str = "promo",
) -> PromotionRule:
    return PromotionRule(
        rule_id, Decimal(percent), starts, ends, frozenset(() if category else skus), category
    )


# ---- rounding ----


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0),
        ("0.4999", 0),
        ("0.5", 1),  # half a minor unit rounds up...
        ("1.5", 2),
        ("2.5", 3),  # ...also from an even neighbour (not banker's rounding)
        ("2.4999999", 2),
        ("99.5", 100),
        ("100.5000001", 101),
    ],
)
def test_round_half_up_rounds_halves_up(value: str, expected: int) -> None:
    assert round_half_up(Decimal(value)) == expected


@pytest.mark.parametrize(
    ("amount", "percent", "expected"),
    [
        (10, "5", 1),  # 0.5 -> 1
        (30, "5", 2),  # 1.5 -> 2
        (50, "5", 3),  # 2.5 -> 3
        (29, "5", 1),  # 1.45 -> 1
        (4, "12.5", 1),  # 0.5 -> 1
        (100, "33.33", 33),
        (1005, "10", 101),  # 100.5 -> 101
        (999, "100", 999),
        (1, "0.01", 0),
        (0, "50", 0),
    ],
)
def test_percent_of_rounds_half_up_to_a_minor_unit(
    amount: int, percent: str, expected: int
) -> None:
    assert percent_of(amount, Decimal(percent)) == expected


@pytest.mark.parametrize(
    ("net", "rate_bps", "expected"),
    [
        (5000, 1, 1),  # 0.5 -> 1
        (4999, 1, 0),  # 0.4999 -> 0
        (1, 2000, 0),  # 0.2 -> 0
        (3, 2000, 1),  # 0.6 -> 1
        (25, 2000, 5),
        (1999, 1900, 380),  # 379.81 -> 380
        (1234, 0, 0),
        (1234, 10000, 1234),
    ],
)
def test_tax_on_uses_basis_points_and_half_up(net: int, rate_bps: int, expected: int) -> None:
    assert tax_on(net, rate_bps) == expected


# ---- volume tiers ----


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        (1, None),
        (9, None),
        (10, "5"),
        (49, "5"),
        (50, "10"),
        (99, "10"),
        (100, "15"),
        (10_000, "15"),
    ],
)
def test_volume_rule_takes_the_highest_tier_reached(quantity: int, expected: str | None) -> None:
    rule = volume("SKU-1", (50, "10"), (10, "5"), (100, "15"))  # order of tiers does not matter
    percent = rule.percent_for(quantity)
    assert percent == (Decimal(expected) if expected else None)


def test_volume_discount_applies_only_to_its_own_sku() -> None:
    rule = volume("OTHER", (1, "50"))
    assert candidate_discounts(line(quantity=10), [rule], groups=NOBODY, now=NOW) == []


def test_volume_discount_is_a_percentage_of_the_line_gross() -> None:
    rule = volume("SKU-1", (10, "5"))
    found = candidate_discounts(line(quantity=12, unit_price=999), [rule], groups=NOBODY, now=NOW)
    assert found == [Discount(599, "vol", "volume")]  # 5 % of 11988 = 599.4 -> 599


# ---- promotions ----


@pytest.mark.parametrize(
    ("now", "active"),
    [
        (NOW - timedelta(microseconds=1), False),  # not started yet
        (NOW, True),  # starts_at is inclusive
        (NOW + timedelta(hours=1), True),
        (NOW + timedelta(days=1) - timedelta(microseconds=1), True),
        (NOW + timedelta(days=1), False),  # ends_at is exclusive
    ],
)
def test_promotion_window_is_half_open(now: datetime, active: bool) -> None:
    rule = promotion("10", starts=NOW, ends=NOW + timedelta(days=1))
    found = candidate_discounts(line(), [rule], groups=NOBODY, now=now)
    assert bool(found) is active


def test_promotion_by_sku_list_covers_listed_skus_only() -> None:
    rule = promotion("10", skus=("SKU-1", "SKU-2"))
    assert candidate_discounts(line("SKU-2"), [rule], groups=NOBODY, now=NOW)
    assert not candidate_discounts(line("SKU-3"), [rule], groups=NOBODY, now=NOW)


def test_promotion_by_category_covers_every_sku_of_that_category() -> None:
    rule = promotion("20", category="tools")
    assert candidate_discounts(line("ANY", category="tools"), [rule], groups=NOBODY, now=NOW) == [
        Discount(200, "promo", "promotion")
    ]
    assert not candidate_discounts(line("ANY", category="garden"), [rule], groups=NOBODY, now=NOW)


# ---- customer group prices ----


def test_group_price_discount_is_the_unit_difference_times_quantity() -> None:
    rule = GroupPriceRule("grp", "wholesale", "SKU-1", 800)
    found = candidate_discounts(
        line(quantity=3, unit_price=1000), [rule], groups=frozenset({"wholesale"}), now=NOW
    )
    assert found == [Discount(600, "grp", "customer_group")]


def test_group_price_needs_membership() -> None:
    rule = GroupPriceRule("grp", "wholesale", "SKU-1", 800)
    assert not candidate_discounts(line(), [rule], groups=frozenset({"retail"}), now=NOW)
    assert not candidate_discounts(line(), [rule], groups=NOBODY, now=NOW)


@pytest.mark.parametrize("group_amount", [1000, 1200])
def test_group_price_at_or_above_base_is_no_discount(group_amount: int) -> None:
    rule = GroupPriceRule("grp", "vip", "SKU-1", group_amount)
    assert not candidate_discounts(
        line(unit_price=1000), [rule], groups=frozenset({"vip"}), now=NOW
    )


def test_group_price_of_zero_makes_the_line_free() -> None:
    rule = GroupPriceRule("grp", "staff", "SKU-1", 0)
    priced = price_line(
        line(quantity=2, unit_price=500),
        [rule],
        groups=frozenset({"staff"}),
        now=NOW,
        rate_bps=2000,
    )
    assert (priced.discount, priced.tax, priced.total) == (1000, 0, 0)


# ---- best single discount ----


def test_best_discount_is_the_largest_and_discounts_never_stack() -> None:
    rules: list[Rule] = [
        volume("SKU-1", (10, "5")),  # 5 % of 10000 = 500
        promotion("8"),  # 800
        GroupPriceRule("grp", "vip", "SKU-1", 930),  # 70 * 10 = 700
    ]
    priced = price_line(
        line(quantity=10, unit_price=1000),
        rules,
        groups=frozenset({"vip"}),
        now=NOW,
        rate_bps=0,
    )
    assert priced.discount == 800
    assert priced.applied == Discount(800, "promo", "promotion")


def test_best_discount_prefers_group_then_volume_then_promotion_on_a_tie() -> None:
    tie = [
        Discount(100, "p", "promotion"),
        Discount(100, "v", "volume"),
        Discount(100, "g", "customer_group"),
    ]
    assert best_discount(tie) == Discount(100, "g", "customer_group")
    assert best_discount(tie[:2]) == Discount(100, "v", "volume")
    assert best_discount([]) is None


def test_best_of_two_promotions_wins() -> None:
    rules = [promotion("10", rule_id="a"), promotion("15", category="tools", rule_id="b")]
    priced = price_line(line(), rules, groups=NOBODY, now=NOW, rate_bps=0)
    assert priced.applied == Discount(150, "b", "promotion")


def test_a_discount_that_rounds_to_nothing_is_not_applied() -> None:
    priced = price_line(
        line(unit_price=9), [promotion("5")], groups=NOBODY, now=NOW, rate_bps=0
    )  # 0.45 -> 0
    assert (priced.discount, priced.applied) == (0, None)


# ---- tax, totals ----


def test_tax_is_charged_after_discount_and_total_adds_up() -> None:
    priced = price_line(
        line(quantity=12, unit_price=1999),
        [volume("SKU-1", (10, "5"))],
        groups=NOBODY,
        now=NOW,
        rate_bps=2000,
    )
    # gross 23988; 5 % = 1199.4 -> 1199; net 22789; 20 % = 4557.8 -> 4558
    assert (priced.gross, priced.discount, priced.tax) == (23988, 1199, 4558)
    assert priced.total == 23988 - 1199 + 4558


def test_line_without_rules_pays_gross_plus_tax() -> None:
    priced = price_line(line(quantity=3, unit_price=333), [], groups=NOBODY, now=NOW, rate_bps=1950)
    # 999 * 19.5 % = 194.805 -> 195
    assert (priced.gross, priced.discount, priced.tax, priced.total) == (999, 0, 195, 1194)


def test_quote_totals_are_sums_of_the_rounded_lines() -> None:
    lines = [
        price_line(line("A", 1, 5), [], groups=NOBODY, now=NOW, rate_bps=1000),  # tax 0.5 -> 1
        price_line(line("B", 1, 5), [], groups=NOBODY, now=NOW, rate_bps=1000),  # tax 0.5 -> 1
    ]
    sums = totals(lines)
    # Per-line rounding: 2 cents of tax, not round(1.0) = 1 on the summed net.
    assert (sums.subtotal, sums.discount, sums.tax, sums.total) == (10, 0, 2, 12)


# ---- what can be quoted ----


def test_line_problem_names_why_a_sku_cannot_be_quoted() -> None:
    assert line_problem(known_product=False, status=None, has_price=True) == "unknown sku"
    assert line_problem(known_product=True, status="discontinued", has_price=True) == "discontinued"
    assert "no price" in str(line_problem(known_product=True, status="active", has_price=False))
    assert line_problem(known_product=True, status="active", has_price=True) is None


def test_first_foreign_currency() -> None:
    assert first_foreign_currency(["EUR", "EUR"]) is None
    assert first_foreign_currency(["EUR", "EUR", "USD", "GBP"]) == 2


# ---- price changes ----


def test_setting_the_same_price_again_is_not_a_change() -> None:
    same = Money(amount=1999, currency="EUR")
    assert price_change(same, Money(amount=1999, currency="EUR"), "SKU-1") is None


@pytest.mark.parametrize(
    "new", [Money(amount=2099, currency="EUR"), Money(amount=1999, currency="USD")]
)
def test_a_new_amount_or_currency_is_a_change_carrying_the_previous_price(new: Money) -> None:
    previous = Money(amount=1999, currency="EUR")
    change = price_change(previous, new, "SKU-1")
    assert change is not None
    assert (change.sku, change.price, change.previous) == ("SKU-1", new, previous)


def test_a_first_price_is_a_change_without_previous() -> None:
    change = price_change(None, Money(amount=0, currency="EUR"), "SKU-1")
    assert change is not None and change.previous is None


# ---- stored definitions ----


def test_rules_are_rebuilt_exactly_from_their_json_definitions() -> None:
    tiered = rule_from_definition(
        "r1",
        {"kind": "volume", "sku": "S", "tiers": [{"min_quantity": 10, "percent_off": 12.35}]},
    )
    assert tiered == VolumeRule("r1", "S", (Tier(10, Decimal("12.35")),))
    promo = rule_from_definition(
        "r2",
        {
            "kind": "promotion",
            "category": "tools",
            "percent_off": 5,
            "starts_at": "2026-06-01T00:00:00Z",
            "ends_at": "2026-07-01T00:00:00Z",
        },
    )
    assert promo == PromotionRule(
        "r2",
        Decimal(5),
        datetime(2026, 6, 1, tzinfo=UTC),
        datetime(2026, 7, 1, tzinfo=UTC),
        frozenset(),
        "tools",
    )
    group = rule_from_definition(
        "r3", {"kind": "customer_group", "group": "vip", "sku": "S", "amount": 500}
    )
    assert group == GroupPriceRule("r3", "vip", "S", 500)
    with pytest.raises(ValueError):
        rule_from_definition("r4", {"kind": "bogus"})
