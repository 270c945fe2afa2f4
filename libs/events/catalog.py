"""Events produced by the catalog service on `backroom.catalog` (key = sku)."""

from datetime import datetime
from typing import Any, Literal

from libs.events.common import Money, WireModel

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


# --- channels and listings (issue 13) ---

ChannelKind = Literal["web", "marketplace", "pos", "social"]


class ChannelChanged(WireModel):
    """A sales channel was configured or changed. Key = channel code."""

    code: str
    name: str
    kind: ChannelKind
    active: bool = True


class ListingChanged(WireModel):
    """What a channel offers of one sku now, after one or more changes (coalesced: a burst of
    changes within the sync delay becomes one event). Published on the channel's own topic,
    `backroom.listings.<channel>`. Key = sku."""

    channel: str
    sku: str
    name: str
    status: str
    published: bool
    price: Money | None = None
    available: int = 0
    # Which of published, price, available, status, name changed since the last event.
    changed: list[str] = []
    # Monotonic per (channel, sku): a subscriber keeps the highest it has seen.
    version: int
    as_of: datetime
