"""In-memory catalog repositories: the same answers as services/catalog/db.py, without PostgreSQL."""

from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

from libs.events.common import Money
from services.catalog.domain import (
    Availability,
    Channel,
    DirtyListing,
    ListingState,
    NewProduct,
    Offer,
    Product,
    ProductView,
    published_on,
)
from tests.support.fakes import MutableClock


@dataclass
class FakeProjections:
    prices: dict[str, Money | None] = field(default_factory=dict)
    stock: dict[str, int] = field(default_factory=dict)

    async def record_price(self, sku: str, price: Money | None) -> None:
        self.prices[sku] = price

    async def record_stock(self, sku: str, available: int) -> None:
        self.stock[sku] = available


@dataclass
class FakeProducts:
    projections: FakeProjections
    clock: MutableClock
    rows: dict[str, Product] = field(default_factory=dict)

    async def add(self, new: NewProduct) -> bool:
        if new.sku in self.rows:
            return False
        now = self.clock()
        self.rows[new.sku] = Product(**asdict(new), status="active", created_at=now, updated_at=now)
        return True

    async def lock(self, sku: str) -> Product | None:
        return self.rows.get(sku)

    async def change(self, sku: str, changes: dict[str, Any]) -> None:
        self.rows[sku] = replace(self.rows[sku], **changes, updated_at=self.clock())

    async def view(self, sku: str) -> ProductView | None:
        product = self.rows.get(sku)
        return self._view(product) if product else None

    async def search(
        self, *, q: str | None, category: str | None, after_sku: str | None, limit: int
    ) -> list[ProductView]:
        def matches(p: Product) -> bool:
            text = q.lower() if q else None
            return (
                (
                    text is None
                    or any(text in (s or "").lower() for s in (p.name, p.description, p.sku))
                )
                and (category is None or p.category == category)
                and (after_sku is None or p.sku > after_sku)
            )

        found = sorted((p for p in self.rows.values() if matches(p)), key=lambda p: p.sku)
        return [self._view(p) for p in found[:limit]]

    def _view(self, product: Product) -> ProductView:
        # The projections answer whatever was reported (a price row may hold a null price).
        return ProductView(
            product=product,
            price=self.projections.prices.get(product.sku),
            availability=Availability.from_available(self.projections.stock.get(product.sku)),
        )


class FakeStore:
    def __init__(self, clock: MutableClock | None = None) -> None:
        self.clock = clock or MutableClock()
        self.projections = FakeProjections()
        self.products = FakeProducts(self.projections, self.clock)
        # Issue 13.
        self.channels = FakeChannels(self.clock)
        self.listings = FakeListings()
        self.channel_projections = FakeChannelProjections()
        self.offers = FakeOffers(self)
        self.sync = FakeSync(self)


# --- channels and listings (issue 13) ---


@dataclass
class FakeChannels:
    clock: MutableClock
    rows: dict[str, Channel] = field(default_factory=dict)

    def __post_init__(self) -> None:
        now = self.clock()
        self.rows["web"] = Channel("web", "Web shop", "web", True, now, now)

    async def get(self, code: str) -> Channel | None:
        return self.rows.get(code)

    async def lock(self, code: str) -> Channel | None:
        return self.rows.get(code)

    async def put(self, code: str, name: str, kind: str, active: bool) -> None:
        now = self.clock()
        created = self.rows[code].created_at if code in self.rows else now
        self.rows[code] = Channel(code, name, kind, active, created, now)

    async def all(self) -> list[Channel]:
        return [self.rows[c] for c in sorted(self.rows)]


@dataclass
class FakeListings:
    rows: dict[tuple[str, str], bool] = field(default_factory=dict)

    async def put(self, channel: str, sku: str, published: bool) -> None:
        self.rows[(channel, sku)] = published


@dataclass
class FakeChannelProjections:
    prices: dict[tuple[str, str], Money | None] = field(default_factory=dict)
    capped: dict[str, dict[str, int]] = field(default_factory=dict)

    async def record_price(self, channel: str, sku: str, price: Money | None) -> None:
        self.prices[(channel, sku)] = price

    async def record_stock(self, sku: str, capped: dict[str, int]) -> None:
        self.capped[sku] = dict(capped)


class FakeOffers:
    def __init__(self, store: "FakeStore") -> None:
        self.store = store

    async def get(self, channel: str, sku: str) -> Offer | None:
        product = self.store.products.rows.get(sku)
        if product is None:
            return None
        own = self.store.channel_projections.prices.get((channel, sku))
        price = own if own is not None else self.store.projections.prices.get(sku)
        capped = self.store.channel_projections.capped.get(sku, {})
        available = capped.get(channel, self.store.projections.stock.get(sku))
        view = ProductView(product, price, Availability.from_available(available))
        published = published_on(channel, self.store.listings.rows.get((channel, sku)))
        return Offer(channel, view, published, product.updated_at)

    async def search(
        self,
        channel: str,
        *,
        q: str | None = None,
        category: str | None = None,
        after_sku: str | None = None,
        limit: int,
    ) -> list[Offer]:
        found = []
        for view in await self.store.products.search(
            q=q, category=category, after_sku=after_sku, limit=10**6
        ):
            offer = await self.get(channel, view.product.sku)
            if offer is not None and offer.published:
                found.append(offer)
        return found[:limit]


@dataclass
class SyncRow:
    dirty_since: datetime | None = None
    version: int = 0
    last: ListingState | None = None


class FakeSync:
    def __init__(self, store: "FakeStore") -> None:
        self.store = store
        self.rows: dict[tuple[str, str], SyncRow] = {}

    async def mark(self, channel: str, sku: str) -> None:
        row = self.rows.setdefault((channel, sku), SyncRow())
        if row.dirty_since is None:
            row.dirty_since = self.store.clock()

    async def mark_all(self, sku: str) -> None:
        for channel in await self.store.channels.all():
            if channel.active:
                await self.mark(channel.code, sku)

    async def claim(self, cutoff: datetime, limit: int) -> list[DirtyListing]:
        due = sorted(
            (r.dirty_since, key)
            for key, r in self.rows.items()
            if r.dirty_since is not None and r.dirty_since <= cutoff
        )[:limit]
        return [
            DirtyListing(key[0], key[1], self.rows[key].version, self.rows[key].last)
            for _, key in due
        ]

    async def synced(
        self, channel: str, sku: str, version: int, state: ListingState | None
    ) -> None:
        row = self.rows[(channel, sku)]
        row.dirty_since = None
        row.version = version
        if state is not None:
            row.last = state
