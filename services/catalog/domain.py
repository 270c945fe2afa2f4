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


# --- channels and listings (issue 13) ---

CHANNEL_CODE_PATTERN = r"^[a-z0-9][a-z0-9-]{0,31}$"
CHANNEL_KINDS = ("web", "marketplace", "pos", "social")
# Every product is on the web shop unless a listing says otherwise; elsewhere only when listed.
DEFAULT_CHANNEL = "web"
LISTING_FIELDS = ("published", "price", "available", "status", "name")


@dataclass(frozen=True)
class Channel:
    code: str
    name: str
    kind: str
    active: bool
    created_at: datetime
    updated_at: datetime


def channel_changes(current: Channel | None, name: str, kind: str, active: bool) -> list[str]:
    """Which fields a PUT changes (all of them for a new channel)."""
    if current is None:
        return ["active", "kind", "name"]
    wanted = {"name": name, "kind": kind, "active": active}
    return sorted(k for k, v in wanted.items() if getattr(current, k) != v)


def published_on(channel: str, listed: bool | None) -> bool:
    """A product's visibility on a channel: the listing's word, else only the web shop shows it."""
    return listed if listed is not None else channel == DEFAULT_CHANNEL


@dataclass(frozen=True)
class ListingState:
    """What a channel offers of one sku: the state ListingChanged carries, compared field by
    field with the last one published."""

    name: str
    status: str
    published: bool
    price: Money | None
    available: int

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "published": self.published,
            "price": self.price.model_dump() if self.price else None,
            "available": self.available,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ListingState":
        price = data.get("price")
        return cls(
            name=data["name"],
            status=data["status"],
            published=data["published"],
            price=Money(**price) if price else None,
            available=data["available"],
        )


@dataclass(frozen=True)
class Listing:
    """A product's listing on one channel as an admin reads it."""

    channel: str
    sku: str
    published: bool
    price: Money | None
    available: int
    updated_at: datetime | None


@dataclass(frozen=True)
class SyncDecision:
    """What the sync worker does with one dirty (channel, sku): publish (with these changed
    fields), or only clear the mark."""

    publish: bool
    changed: list[str]


def listing_sync_decision(last: ListingState | None, now: ListingState | None) -> SyncDecision:
    """Publish only what differs from the last published state. A sku never published there
    that is not published now (or a product that does not exist) is nobody's news; an
    unpublished sku is announced once (`published: false`), then stays quiet until it changes."""
    if now is None:
        return SyncDecision(False, [])
    if last is None:
        return SyncDecision(now.published, list(LISTING_FIELDS) if now.published else [])
    if not now.published and not last.published:
        return SyncDecision(False, [])
    old, new = last.as_json(), now.as_json()
    changed = [f for f in LISTING_FIELDS if old[f] != new[f]]
    return SyncDecision(bool(changed), changed)


EXPORT_COLUMNS = ("sku", "name", "status", "price_amount", "currency", "available", "updated_at")


def csv_row(values: list[Any]) -> str:
    """One RFC 4180 record (CRLF-terminated): a field holding a comma, quote, CR or LF is quoted,
    quotes doubled; None is the empty field."""
    out = []
    for value in values:
        text = "" if value is None else str(value)
        if any(c in text for c in (",", '"', "\r", "\n")):
            text = '"' + text.replace('"', '""') + '"'
        out.append(text)
    return ",".join(out) + "\r\n"


@dataclass(frozen=True)
class Offer:
    """A product as one channel offers it: its channel price and availability in `view`."""

    channel: str
    view: ProductView
    published: bool
    updated_at: datetime

    @property
    def state(self) -> ListingState:
        product = self.view.product
        return ListingState(
            name=product.name,
            status=product.status,
            published=self.published,
            price=self.view.price,
            available=self.view.availability.available,
        )


@dataclass(frozen=True)
class DirtyListing:
    """A (channel, sku) changed since its last ListingChanged (`version`, `last`)."""

    channel: str
    sku: str
    version: int
    last: ListingState | None
