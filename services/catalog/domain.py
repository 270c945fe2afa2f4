"""Catalog rules: what a product is, which fields may change, and what availability means."""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from libs.events.common import Money

PRODUCT_STATUSES = ("active", "discontinued")
SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
MUTABLE_FIELDS = ("name", "description", "category", "attributes", "images", "status")


@dataclass(frozen=True)
class Availability:
    available: int
    in_stock: bool

    @classmethod
    def from_available(cls, available: int | None) -> "Availability":
        """Unknown stock (no inventory event seen yet) reads as none available."""
        count = max(available or 0, 0)
        return cls(available=count, in_stock=count > 0)


@dataclass(frozen=True)
class NewProduct:
    """What an admin gives to create a product (already validated)."""

    sku: str
    name: str
    category: str
    description: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    images: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Product:
    """A product as the catalog owns it (without what other services project onto it)."""

    sku: str
    name: str
    description: str | None
    category: str
    attributes: dict[str, Any]
    images: list[str]
    status: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class ProductView:
    """A product as the public reads it: with the price and stock other services reported."""

    product: Product
    price: Money | None
    availability: Availability


@dataclass(frozen=True)
class ProductPage:
    """One page of products in sku order; `more` says whether another page follows."""

    items: list[ProductView]
    more: bool


def changed_fields(current: Product, patch: dict[str, Any]) -> dict[str, Any]:
    """The subset of a patch that really changes the product."""
    return {k: v for k, v in patch.items() if k in MUTABLE_FIELDS and getattr(current, k) != v}


# --- shipping rates (issue 12) ---

WEIGHT_UNITS = ("g", "kg", "lb", "oz")
# 100 t in grams: far above any parcel, far inside every sum pricing makes of weights.
MAX_WEIGHT_G = 100_000_000
_GRAMS_PER_UNIT = {"g": 1.0, "kg": 1000.0, "lb": 453.59237, "oz": 28.349523125}


def weight_problems(attributes: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, message) for each thing wrong with `attributes.weight`, which shipping rates read:
    `{"value": <number > 0>, "unit": "g"|"kg"|"lb"|"oz"}`; no weight at all is fine."""
    if "weight" not in attributes:
        return []
    weight = attributes["weight"]
    if not isinstance(weight, dict):
        return [("attributes.weight", 'must be an object {"value": number > 0, "unit": "g"}')]
    problems = [
        (f"attributes.weight.{key}", "unknown field: a weight has value and unit")
        for key in weight
        if key not in ("value", "unit")
    ]
    unit = weight.get("unit")
    if unit not in WEIGHT_UNITS:
        problems.append(("attributes.weight.unit", f"must be one of {', '.join(WEIGHT_UNITS)}"))
    value = weight.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        problems.append(("attributes.weight.value", "must be a number greater than 0"))
    elif unit in _GRAMS_PER_UNIT and value * _GRAMS_PER_UNIT[unit] > MAX_WEIGHT_G:
        problems.append(("attributes.weight.value", "must be at most 100 t"))
    return problems
