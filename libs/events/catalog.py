"""Events produced by the catalog service on `backroom.catalog` (key = sku)."""

from typing import Any, Literal

from libs.events.common import WireModel

ProductStatus = Literal["active", "discontinued"]


class ProductCreated(WireModel):
    sku: str
    name: str
    description: str | None = None
    category: str
    attributes: dict[str, Any] = {}
    images: list[str] = []
    status: ProductStatus = "active"


class ProductUpdated(ProductCreated):
    changed: list[str] = []
