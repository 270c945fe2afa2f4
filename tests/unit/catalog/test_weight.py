"""Product weights (issue 12): `attributes.weight` is `{"value": number > 0, "unit": g|kg|lb|oz}`,
optional, and every problem with it names its field."""

from typing import Any

import pytest

from services.catalog.domain import weight_problems


@pytest.mark.parametrize(
    "attributes",
    [
        {},
        {"color": "black"},
        {"weight": {"value": 250, "unit": "g"}},
        {"weight": {"value": 0.35, "unit": "kg"}},
        {"weight": {"value": 2, "unit": "lb"}},
        {"weight": {"value": 12.5, "unit": "oz"}},
    ],
)
def test_absent_or_well_formed_weights_pass(attributes: dict[str, Any]) -> None:
    assert weight_problems(attributes) == []


@pytest.mark.parametrize(
    ("weight", "fields"),
    [
        ({"value": 1, "unit": "stone"}, ["attributes.weight.unit"]),
        ({"value": 1}, ["attributes.weight.unit"]),
        ({"value": 0, "unit": "g"}, ["attributes.weight.value"]),
        ({"value": -3, "unit": "kg"}, ["attributes.weight.value"]),
        ({"value": "1", "unit": "kg"}, ["attributes.weight.value"]),
        ({"value": True, "unit": "kg"}, ["attributes.weight.value"]),
        ({"value": 100_001, "unit": "kg"}, ["attributes.weight.value"]),
        ({"unit": "g"}, ["attributes.weight.value"]),
        ({}, ["attributes.weight.unit", "attributes.weight.value"]),
        ({"value": 1, "unit": "g", "per": "box"}, ["attributes.weight.per"]),
        (250, ["attributes.weight"]),
    ],
)
def test_bad_weights_name_the_field(weight: Any, fields: list[str]) -> None:
    assert [field for field, _ in weight_problems({"weight": weight})] == fields
