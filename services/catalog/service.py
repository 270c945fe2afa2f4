"""Catalog use cases: create, update, read and search products; apply price and stock facts."""

from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from libs.events import topics
from libs.events.catalog import (
    ChannelChanged,
    ChannelKind,
    ListingChanged,
    ProductCreated,
    ProductUpdated,
)
from libs.events.common import Money
from libs.kit.errors import Conflict, FieldError, Invalid, NotFound
from libs.kit.uow import Tx, UnitOfWork
from services.catalog.domain import (
    Channel,
    DirtyListing,
    Listing,
    ListingState,
    NewProduct,
    Offer,
    Product,
    ProductPage,
    ProductView,
    changed_fields,
    channel_changes,
    listing_sync_decision,
    weight_problems,
)


class ProductRepository(Protocol):
    async def add(self, new: NewProduct) -> bool:
        """Insert the product; False (and nothing written) when its sku already exists."""
        ...

    async def lock(self, sku: str) -> Product | None:
        """The product, locked until the transaction ends."""
        ...

    async def change(self, sku: str, changes: dict[str, Any]) -> None:
        """Write these fields and stamp the product as updated now."""
        ...

    async def view(self, sku: str) -> ProductView | None: ...

    async def search(
        self, *, q: str | None, category: str | None, after_sku: str | None, limit: int
    ) -> list[ProductView]:
        """Up to `limit` products in sku order, after `after_sku`, matching text and category."""
        ...


class ProjectionRepository(Protocol):
    """Prices and stock reported by pricing and inventory, kept whether or not the product
    exists yet (either may arrive before it); the latest report wins."""

    async def record_price(self, sku: str, price: Money | None) -> None: ...

    async def record_stock(self, sku: str, available: int) -> None: ...


class CatalogStore(Protocol):
    @property
    def products(self) -> ProductRepository: ...

    @property
    def projections(self) -> ProjectionRepository: ...

    # Issue 13 (the protocols are at the end of the module).
    @property
    def channels(self) -> "ChannelRepository": ...

    @property
    def listings(self) -> "ListingRepository": ...

    @property
    def offers(self) -> "OfferRepository": ...

    @property
    def channel_projections(self) -> "ChannelProjectionRepository": ...

    @property
    def sync(self) -> "ListingSyncRepository": ...


async def create_product(tx: Tx[CatalogStore], new: NewProduct) -> ProductView:
    refuse_bad_weight(new.attributes)
    if not await tx.store.products.add(new):
        raise Conflict(f"product {new.sku} already exists")
    await tx.store.sync.mark_all(new.sku)
    view = await get_product(tx, new.sku)
    await tx.events.emit(ProductCreated(**_event_fields(view.product)), subject=new.sku)
    return view


async def update_product(tx: Tx[CatalogStore], sku: str, patch: dict[str, Any]) -> ProductView:
    """Apply a partial update; ProductUpdated names the fields that really changed (no event,
    and no write, when nothing did)."""
    current = await tx.store.products.lock(sku)
    if current is None:
        raise NotFound(f"product {sku}")
    refuse_bad_weight(patch.get("attributes") or {})
    changes = changed_fields(current, patch)
    if changes:
        await tx.store.products.change(sku, changes)
        if LISTED_PRODUCT_FIELDS & changes.keys():
            await tx.store.sync.mark_all(sku)
    view = await get_product(tx, sku)
    if changes:
        event = ProductUpdated(**_event_fields(view.product), changed=sorted(changes))
        await tx.events.emit(event, subject=sku)
    return view


async def get_product(tx: Tx[CatalogStore], sku: str) -> ProductView:
    view = await tx.store.products.view(sku)
    if view is None:
        raise NotFound(f"product {sku}")
    return view


async def list_products(
    tx: Tx[CatalogStore],
    *,
    q: str | None,
    category: str | None,
    after_sku: str | None,
    limit: int,
) -> ProductPage:
    """One page ordered by sku; one product more is read than asked, to know if there is more."""
    found = await tx.store.products.search(
        q=q, category=category, after_sku=after_sku, limit=limit + 1
    )
    return ProductPage(items=found[:limit], more=len(found) > limit)


async def record_price(
    tx: Tx[CatalogStore], sku: str, price: Money | None, channel: str | None = None
) -> None:
    """A base price (every channel without its own sells at it) or one channel's own price."""
    if channel is None:
        await tx.store.projections.record_price(sku, price)
        await tx.store.sync.mark_all(sku)
    else:
        await tx.store.channel_projections.record_price(channel, sku, price)
        await tx.store.sync.mark(channel, sku)


async def record_stock(
    tx: Tx[CatalogStore], sku: str, available: int, capped: dict[str, int] | None = None
) -> None:
    """The pool's availability, and what each capped channel may sell (exactly these now)."""
    await tx.store.projections.record_stock(sku, available)
    await tx.store.channel_projections.record_stock(sku, capped or {})
    await tx.store.sync.mark_all(sku)


def _event_fields(product: Product) -> dict[str, Any]:
    fields = asdict(product)
    del fields["created_at"], fields["updated_at"]
    return fields


# --- shipping rates (issue 12) ---


def refuse_bad_weight(attributes: dict[str, Any]) -> None:
    """422 naming `attributes.weight.unit` / `.value` when the weight is not one pricing can
    rate shipping by."""
    problems = weight_problems(attributes)
    if problems:
        errors = [FieldError(field, message) for field, message in problems]
        raise Invalid("; ".join(f"{e.field}: {e.message}" for e in errors), errors)


# --- channels and listings (issue 13) ---

# The product fields a channel's listing carries (ListingChanged.name, .status).
LISTED_PRODUCT_FIELDS = frozenset({"name", "status"})


class ChannelRepository(Protocol):
    async def get(self, code: str) -> Channel | None: ...

    async def lock(self, code: str) -> Channel | None: ...

    async def put(self, code: str, name: str, kind: str, active: bool) -> None: ...

    async def all(self) -> list[Channel]: ...


class ListingRepository(Protocol):
    async def put(self, channel: str, sku: str, published: bool) -> None: ...


class OfferRepository(Protocol):
    async def get(self, channel: str, sku: str) -> Offer | None:
        """The product as `channel` offers it, published or not."""
        ...

    async def search(
        self,
        channel: str,
        *,
        q: str | None = None,
        category: str | None = None,
        after_sku: str | None = None,
        limit: int,
    ) -> list[Offer]:
        """Products published on `channel`, in sku order after `after_sku`."""
        ...


class ChannelProjectionRepository(Protocol):
    async def record_price(self, channel: str, sku: str, price: Money | None) -> None: ...

    async def record_stock(self, sku: str, capped: dict[str, int]) -> None: ...


class ListingSyncRepository(Protocol):
    async def mark(self, channel: str, sku: str) -> None:
        """(channel, sku) changed: dirty from now, unless it is dirty already."""
        ...

    async def mark_all(self, sku: str) -> None:
        """`sku` changed on every active channel."""
        ...

    async def claim(self, cutoff: datetime, limit: int) -> list[DirtyListing]: ...

    async def synced(
        self, channel: str, sku: str, version: int, state: ListingState | None
    ) -> None: ...


class ListingTopics(Protocol):
    """Creates a channel's listing topic (outside any transaction, in the background)."""

    def ensure_soon(self, channel: str) -> None: ...


@dataclass(frozen=True)
class ChannelPut:
    channel: Channel
    created: bool


async def put_channel(
    tx: Tx[CatalogStore],
    listing_topics: ListingTopics,
    code: str,
    name: str,
    kind: ChannelKind,
    active: bool = True,
) -> ChannelPut:
    """Create or change a channel; ChannelChanged only when something changed. Its listing
    topic is created after the commit."""
    current = await tx.store.channels.lock(code)
    changed = channel_changes(current, name, kind, active)
    if changed:
        await tx.store.channels.put(code, name, kind, active)
        await tx.events.emit(
            ChannelChanged(code=code, name=name, kind=kind, active=active),
            subject=code,
        )
    if current is None:
        tx.on_commit(lambda: listing_topics.ensure_soon(code))
    return ChannelPut(await get_channel(tx, code), created=current is None)


async def get_channel(tx: Tx[CatalogStore], code: str) -> Channel:
    channel = await tx.store.channels.get(code)
    if channel is None:
        raise NotFound(f"channel {code}")
    return channel


async def list_channels(tx: Tx[CatalogStore]) -> list[Channel]:
    return await tx.store.channels.all()


async def channel_of_query(tx: Tx[CatalogStore], code: str) -> Channel:
    """A `?channel=` that names no channel is a 422 naming `channel`."""
    channel = await tx.store.channels.get(code)
    if channel is None:
        raise Invalid.field("channel", f"unknown channel {code!r}")
    return channel


def _listing(offer: Offer) -> Listing:
    return Listing(
        channel=offer.channel,
        sku=offer.view.product.sku,
        published=offer.published,
        price=offer.view.price,
        available=offer.view.availability.available,
        updated_at=offer.updated_at,
    )


async def put_listing(tx: Tx[CatalogStore], sku: str, channel: str, published: bool) -> Listing:
    """Publish or unpublish a product on a channel (404 unknown sku or channel, 409 when the
    channel is inactive); the channel's subscribers hear of it through the listing sync."""
    found = await tx.store.channels.get(channel)
    if found is None:
        raise NotFound(f"channel {channel}")
    if not found.active:
        raise Conflict(f"channel {channel} is inactive")
    if await tx.store.products.lock(sku) is None:
        raise NotFound(f"product {sku}")
    await tx.store.listings.put(channel, sku, published)
    await tx.store.sync.mark(channel, sku)
    offer = await tx.store.offers.get(channel, sku)
    assert offer is not None
    return _listing(offer)


async def listings_of(tx: Tx[CatalogStore], sku: str) -> list[Listing]:
    """The product's listing on every channel (the default rule where no row says otherwise)."""
    if await tx.store.products.view(sku) is None:
        raise NotFound(f"product {sku}")
    found = []
    for channel in await tx.store.channels.all():
        offer = await tx.store.offers.get(channel.code, sku)
        if offer is not None:
            found.append(_listing(offer))
    return found


async def get_offer(tx: Tx[CatalogStore], channel: str, sku: str) -> ProductView:
    """`GET /catalog/products/{sku}?channel=`: 404 unless published there."""
    await channel_of_query(tx, channel)
    offer = await tx.store.offers.get(channel, sku)
    if offer is None or not offer.published:
        raise NotFound(f"product {sku} on channel {channel}")
    return offer.view


async def list_offers(
    tx: Tx[CatalogStore],
    channel: str,
    *,
    q: str | None,
    category: str | None,
    after_sku: str | None,
    limit: int,
) -> ProductPage:
    await channel_of_query(tx, channel)
    found = await tx.store.offers.search(
        channel, q=q, category=category, after_sku=after_sku, limit=limit + 1
    )
    return ProductPage(items=[o.view for o in found[:limit]], more=len(found) > limit)


async def export_offers(
    uow: UnitOfWork[CatalogStore], channel: str, page_size: int
) -> AsyncIterator[list[Offer]]:
    """The channel's published listing in sku order, one page per short transaction (no
    transaction stays open while a slow client reads): each sku comes exactly once, as it was
    when its page was read."""
    after: str | None = None
    while True:
        async with uow() as tx:
            page = await tx.store.offers.search(channel, after_sku=after, limit=page_size)
        if page:
            yield page
        if len(page) < page_size:
            return
        after = page[-1].view.product.sku


async def sync_listings(
    uow: UnitOfWork[CatalogStore], now: datetime, delay_s: float, batch_size: int
) -> int:
    """One pass of the listing sync: every (channel, sku) dirty for `delay_s` or more (claimed
    with SKIP LOCKED, so replicas share) gets one ListingChanged on its channel's topic if what
    the channel offers differs from the last one published, and its mark cleared. Returns how
    many were claimed."""
    async with uow() as tx:
        due = await tx.store.sync.claim(now - timedelta(seconds=delay_s), batch_size)
        for dirty in due:
            offer = await tx.store.offers.get(dirty.channel, dirty.sku)
            state = offer.state if offer is not None else None
            decision = listing_sync_decision(dirty.last, state)
            if not decision.publish or state is None:
                await tx.store.sync.synced(dirty.channel, dirty.sku, dirty.version, None)
                continue
            version = dirty.version + 1
            event = ListingChanged(
                channel=dirty.channel,
                sku=dirty.sku,
                name=state.name,
                status=state.status,
                published=state.published,
                price=state.price,
                available=state.available,
                changed=decision.changed,
                version=version,
                as_of=now,
            )
            await tx.events.emit(event, subject=dirty.sku, topic=topics.listings(dirty.channel))
            await tx.store.sync.synced(dirty.channel, dirty.sku, version, state)
    return len(due)
