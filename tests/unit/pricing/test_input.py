"""Rule and quote input validation: bad input is refused, naming the field the client wrote."""

from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from libs.kit.problems import field_name
from services.pricing.api import PriceIn, PromotionRuleIn, QuoteIn, VolumeRuleIn, parse_rule


def fields_of(body: dict[str, Any]) -> set[str]:
    with pytest.raises(RequestValidationError) as caught:
        parse_rule(body)
    return {field_name(tuple(e["loc"])) for e in caught.value.errors()}


PROMO = {
    "kind": "promotion",
    "skus": ["SKU-1"],
    "percent_off": 10,
    "starts_at": "2026-06-01T02:00:00+02:00",
    "ends_at": "2026-06-02T00:00:00Z",
}


def test_volume_rule_is_echoed_with_tiers_in_quantity_order() -> None:
    rule = parse_rule(
        {
            "kind": "volume",
            "sku": "SKU-1",
            "tiers": [
                {"min_quantity": 50, "percent_off": 10},
                {"min_quantity": 10, "percent_off": 12.5},
            ],
        }
    )
    assert isinstance(rule, VolumeRuleIn)
    assert rule.model_dump(mode="json")["tiers"] == [
        {"min_quantity": 10, "percent_off": 12.5},
        {"min_quantity": 50, "percent_off": 10},
    ]


def test_promotion_times_are_stored_in_utc() -> None:
    rule = parse_rule(PROMO)
    assert isinstance(rule, PromotionRuleIn)
    dumped = rule.model_dump(mode="json", exclude_none=True)
    assert dumped["starts_at"] == "2026-06-01T00:00:00Z"
    assert "category" not in dumped


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"sku": "S", "tiers": []}, "kind"),
        ({"kind": "bulk"}, "kind"),
        ({"kind": "volume", "sku": "S", "tiers": []}, "tiers"),
        (
            {"kind": "volume", "sku": "S", "tiers": [{"min_quantity": 0, "percent_off": 5}]},
            "tiers[0].min_quantity",
        ),
        (
            {"kind": "volume", "sku": "S", "tiers": [{"min_quantity": 5, "percent_off": 0}]},
            "tiers[0].percent_off",
        ),
        (
            {"kind": "volume", "sku": "S", "tiers": [{"min_quantity": 5, "percent_off": 100.5}]},
            "tiers[0].percent_off",
        ),
        (
            {"kind": "volume", "sku": "S", "tiers": [{"min_quantity": 5, "percent_off": 1.234}]},
            "tiers[0].percent_off",
        ),
        (
            {
                "kind": "volume",
                "sku": "S",
                "tiers": [
                    {"min_quantity": 5, "percent_off": 1},
                    {"min_quantity": 5, "percent_off": 2},
                ],
            },
            "tiers",
        ),
        (
            {"kind": "volume", "sku": "bad sku!", "tiers": [{"min_quantity": 1, "percent_off": 1}]},
            "sku",
        ),
        (
            {
                "kind": "volume",
                "sku": "S",
                "tiers": [{"min_quantity": 1, "percent_off": 1}],
                "x": 1,
            },
            "x",
        ),
        ({**PROMO, "ends_at": PROMO["starts_at"]}, "ends_at"),
        ({**PROMO, "starts_at": "2026-06-01T00:00:00"}, "starts_at"),  # no offset: not RFC 3339
        ({**PROMO, "starts_at": "tomorrow"}, "starts_at"),
        ({**PROMO, "category": "tools"}, "skus"),  # both targets
        ({k: v for k, v in PROMO.items() if k != "skus"}, "category"),  # neither
        ({**PROMO, "skus": []}, "skus"),
        ({"kind": "customer_group", "group": "vip", "sku": "S", "amount": -1}, "amount"),
        ({"kind": "customer_group", "group": "", "sku": "S", "amount": 1}, "group"),
        ({"kind": "customer_group", "group": "vip", "sku": "S"}, "amount"),
    ],
)
def test_bad_rules_name_the_field(body: dict[str, Any], field: str) -> None:
    assert field in fields_of(body)


@pytest.mark.parametrize(
    "body",
    [
        {"amount": -1, "currency": "EUR"},
        {"amount": 1, "currency": "eur"},
        {"amount": 1, "currency": "EURO"},
        {"amount": 1.5, "currency": "EUR"},
        {"amount": 1},
    ],
)
def test_bad_prices_are_refused(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        PriceIn.model_validate(body)


@pytest.mark.parametrize(
    "body",
    [
        {"lines": [], "region": "DE"},
        {"lines": [{"sku": "S", "quantity": 0}], "region": "DE"},
        {"lines": [{"sku": "S", "quantity": 10_001}], "region": "DE"},
        {"lines": [{"sku": f"S{i}", "quantity": 1} for i in range(101)], "region": "DE"},
        {"lines": [{"sku": "S", "quantity": 1}]},
        {"lines": [{"sku": "S", "quantity": 1}], "region": "x" * 33},
    ],
)
def test_bad_quote_requests_are_refused(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        QuoteIn.model_validate(body)
