"""Catalog rules: what a product is, which fields may change, and what availability means."""

from dataclasses import dataclass
from typing import Any

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


def changed_fields(current: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """The subset of a patch that really changes the product."""
    return {k: v for k, v in patch.items() if k in MUTABLE_FIELDS and current.get(k) != v}
