"""Catalog tables and repositories: products, and the price and stock projections of other services' facts."""

from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    Row,
    Select,
    String,
    Table,
    Text,
    bindparam,
    case,
    func,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from libs.events.common import Money
from libs.kit.db import DbSession
from services.catalog.domain import (
    DEFAULT_CHANNEL,
    Availability,
    Channel,
    DirtyListing,
    ListingState,
    NewProduct,
    Offer,
    Product,
    ProductView,
)

metadata = MetaData()

products = Table(
    "products",
    metadata,
    Column("sku", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("description", Text),
    Column("category", String(100), nullable=False),
    Column("attributes", JSONB, nullable=False, server_default="{}"),
    Column("images", JSONB, nullable=False, server_default="[]"),
    Column("status", String(20), nullable=False, server_default="active"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_products_category_sku", "category", "sku"),
)

# Projections: kept apart from products because prices or stock may arrive before the product.
price_projection = Table(
    "price_projection",
    metadata,
    Column("sku", String(64), primary_key=True),
    Column("amount", BigInteger),
    Column("currency", String(3)),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

stock_projection = Table(
    "stock_projection",
    metadata,
    Column("sku", String(64), primary_key=True),
    Column("available", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# The public read of a product: its row with the projections it may already have.
_VIEW = (
    select(
        products,
        price_projection.c.amount.label("price_amount"),
        price_projection.c.currency.label("price_currency"),
        stock_projection.c.available.label("available"),
    )
    .select_from(products)
    .outerjoin(price_projection, price_projection.c.sku == products.c.sku)
    .outerjoin(stock_projection, stock_projection.c.sku == products.c.sku)
)


def _product(row: Row[Any]) -> Product:
    return Product(
        sku=row.sku,
        name=row.name,
        description=row.description,
        category=row.category,
        attributes=row.attributes,
        images=row.images,
        status=row.status,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _view(row: Row[Any]) -> ProductView:
    price = (
        Money(amount=row.price_amount, currency=row.price_currency)
        if row.price_amount is not None and row.price_currency
        else None
    )
    return ProductView(
        product=_product(row), price=price, availability=Availability.from_available(row.available)
    )


# The ON CONFLICT writes are text: SQLAlchemy 2.0 never caches PostgreSQL's insert construct
# (inherit_cache=False), so it compiled these hot statements again on every execution, while a
# text constant is compiled once. JSON binds take their column's type, so they serialise as before.
ADD_PRODUCT = text(
    "INSERT INTO products (sku, name, category, description, attributes, images)"
    " VALUES (:sku, :name, :category, :description, :attributes, :images)"
    " ON CONFLICT DO NOTHING"
    " RETURNING sku"
).bindparams(
    bindparam("attributes", type_=products.c.attributes.type),
    bindparam("images", type_=products.c.images.type),
)


class Products:
    """The products catalog owns, read with their projections."""

    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def add(self, new: NewProduct) -> bool:
        inserted = await self.session.scalar(ADD_PRODUCT, asdict(new))
        return inserted is not None

    async def lock(self, sku: str) -> Product | None:
        query = select(products).where(products.c.sku == sku).with_for_update()
        row = (await self.session.execute(query)).first()
        return _product(row) if row is not None else None

    async def change(self, sku: str, changes: dict[str, Any]) -> None:
        await self.session.execute(
            update(products).where(products.c.sku == sku).values(**changes, updated_at=func.now())
        )

    async def view(self, sku: str) -> ProductView | None:
        row = (await self.session.execute(_VIEW.where(products.c.sku == sku))).first()
        return _view(row) if row is not None else None

    async def search(
        self, *, q: str | None, category: str | None, after_sku: str | None, limit: int
    ) -> list[ProductView]:
        query = _VIEW.order_by(products.c.sku).limit(limit)
        if q:
            pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            query = query.where(
                or_(
                    products.c.name.ilike(pattern),
                    products.c.description.ilike(pattern),
                    products.c.sku.ilike(pattern),
                )
            )
        if category:
            query = query.where(products.c.category == category)
        if after_sku:
            query = query.where(products.c.sku > after_sku)
        return [_view(row) for row in (await self.session.execute(query)).all()]


RECORD_PRICE = text(
    "INSERT INTO price_projection (sku, amount, currency) VALUES (:sku, :amount, :currency)"
    " ON CONFLICT (sku) DO UPDATE"
    " SET amount = EXCLUDED.amount, currency = EXCLUDED.currency, updated_at = now()"
)

RECORD_STOCK = text(
    "INSERT INTO stock_projection (sku, available) VALUES (:sku, :available)"
    " ON CONFLICT (sku) DO UPDATE SET available = EXCLUDED.available, updated_at = now()"
)


class Projections:
    """Price and stock projections: one upsert per fact, the latest one processed wins."""

    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def record_price(self, sku: str, price: Money | None) -> None:
        await self.session.execute(
            RECORD_PRICE,
            {
                "sku": sku,
                "amount": price.amount if price else None,
                "currency": price.currency if price else None,
            },
        )

    async def record_stock(self, sku: str, available: int) -> None:
        await self.session.execute(RECORD_STOCK, {"sku": sku, "available": available})


class Store:
    """Catalog's repositories on one session (the `CatalogStore` its use cases need)."""

    def __init__(self, session: DbSession) -> None:
        self.products = Products(session)
        self.projections = Projections(session)
        # Issue 13 (defined at the end of the module).
        self.channels = Channels(session)
        self.listings = Listings(session)
        self.offers = Offers(session)
        self.channel_projections = ChannelProjections(session)
        self.sync = ListingSync(session)


# --- channels and listings (issue 13) ---

channels = Table(
    "channels",
    metadata,
    Column("code", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("active", Boolean, nullable=False, server_default=true()),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

listings = Table(
    "listings",
    metadata,
    Column("channel", String(32), primary_key=True),
    Column("sku", String(64), primary_key=True),
    Column("published", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# A channel's own price list (PriceChanged.channel); a null amount means it was removed there,
# and the channel sells at the base price again.
channel_price_projection = Table(
    "channel_price_projection",
    metadata,
    Column("channel", String(32), primary_key=True),
    Column("sku", String(64), primary_key=True),
    Column("amount", BigInteger),
    Column("currency", String(3)),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# What a capped channel may still sell (StockLevelChanged.channels); uncapped ones sell the pool.
channel_stock_projection = Table(
    "channel_stock_projection",
    metadata,
    Column("channel", String(32), primary_key=True),
    Column("sku", String(64), primary_key=True),
    Column("available", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# One row per (channel, sku) ever marked: dirty since the first change not yet published, the
# version and state of the last ListingChanged.
listing_sync = Table(
    "listing_sync",
    metadata,
    Column("channel", String(32), primary_key=True),
    Column("sku", String(64), primary_key=True),
    Column("dirty_since", DateTime(timezone=True)),
    Column("version", Integer, nullable=False, server_default="0"),
    Column("last_state", JSONB),
    Column("published_at", DateTime(timezone=True)),
    Index(
        "ix_listing_sync_dirty",
        "dirty_since",
        postgresql_where=text("dirty_since IS NOT NULL"),
    ),
)


def _channel(row: Row[Any]) -> Channel:
    return Channel(
        code=row.code,
        name=row.name,
        kind=row.kind,
        active=row.active,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


UPSERT_CHANNEL = text(
    "INSERT INTO channels (code, name, kind, active) VALUES (:code, :name, :kind, :active)"
    " ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind,"
    " active = EXCLUDED.active, updated_at = now()"
)


class Channels:
    """The sales channels catalog lists products on."""

    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def get(self, code: str) -> Channel | None:
        row = (await self.session.execute(select(channels).where(channels.c.code == code))).first()
        return _channel(row) if row is not None else None

    async def lock(self, code: str) -> Channel | None:
        query = select(channels).where(channels.c.code == code).with_for_update()
        row = (await self.session.execute(query)).first()
        return _channel(row) if row is not None else None

    async def put(self, code: str, name: str, kind: str, active: bool) -> None:
        values = {"code": code, "name": name, "kind": kind, "active": active}
        await self.session.execute(UPSERT_CHANNEL, values)

    async def all(self) -> list[Channel]:
        rows = (await self.session.execute(select(channels).order_by(channels.c.code))).all()
        return [_channel(row) for row in rows]


PUT_LISTING = text(
    "INSERT INTO listings (channel, sku, published) VALUES (:channel, :sku, :published)"
    " ON CONFLICT (channel, sku) DO UPDATE SET published = EXCLUDED.published, updated_at = now()"
)


def _offers(channel: str) -> Select[Any]:
    """Every product as `channel` offers it: its listing's word (else the default rule), the
    channel's own price (else the base price), its capped availability (else the pool's), and
    when any of these last changed. Bound values only, so the statement is compiled once."""
    listing = listings.alias("l")
    own_price = channel_price_projection.alias("cp")
    capped = channel_stock_projection.alias("cs")
    on_channel = bindparam("offer_channel", channel, type_=String(32))
    has_own_price = own_price.c.amount.is_not(None)
    return (
        select(
            products,
            func.coalesce(
                listing.c.published, bindparam("offer_default", channel == DEFAULT_CHANNEL)
            ).label("published"),
            case((has_own_price, own_price.c.amount), else_=price_projection.c.amount).label(
                "price_amount"
            ),
            case((has_own_price, own_price.c.currency), else_=price_projection.c.currency).label(
                "price_currency"
            ),
            func.coalesce(capped.c.available, stock_projection.c.available).label("available"),
            func.greatest(
                products.c.updated_at,
                listing.c.updated_at,
                own_price.c.updated_at,
                price_projection.c.updated_at,
                capped.c.updated_at,
                stock_projection.c.updated_at,
            ).label("offer_updated_at"),
        )
        .select_from(products)
        .outerjoin(listing, (listing.c.sku == products.c.sku) & (listing.c.channel == on_channel))
        .outerjoin(
            own_price, (own_price.c.sku == products.c.sku) & (own_price.c.channel == on_channel)
        )
        .outerjoin(capped, (capped.c.sku == products.c.sku) & (capped.c.channel == on_channel))
        .outerjoin(price_projection, price_projection.c.sku == products.c.sku)
        .outerjoin(stock_projection, stock_projection.c.sku == products.c.sku)
    )


def _offer(channel: str, row: Row[Any]) -> Offer:
    return Offer(
        channel=channel,
        view=_view(row),
        published=bool(row.published),
        updated_at=row.offer_updated_at,
    )


class Offers:
    """Products as one channel offers them (reads, export, the listing sync's state)."""

    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def get(self, channel: str, sku: str) -> Offer | None:
        query = _offers(channel).where(products.c.sku == sku)
        row = (await self.session.execute(query)).first()
        return _offer(channel, row) if row is not None else None

    async def search(
        self,
        channel: str,
        *,
        q: str | None = None,
        category: str | None = None,
        after_sku: str | None = None,
        limit: int,
    ) -> list[Offer]:
        """Up to `limit` products published on `channel`, in sku order after `after_sku`."""
        query = _offers(channel)
        published = query.selected_columns.published
        query = query.where(published.is_(True)).order_by(products.c.sku).limit(limit)
        if q:
            pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            query = query.where(
                or_(
                    products.c.name.ilike(pattern),
                    products.c.description.ilike(pattern),
                    products.c.sku.ilike(pattern),
                )
            )
        if category:
            query = query.where(products.c.category == category)
        if after_sku:
            query = query.where(products.c.sku > after_sku)
        return [_offer(channel, row) for row in (await self.session.execute(query)).all()]


class Listings:
    """Listing rows: an admin's word on whether a product is published on a channel."""

    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def put(self, channel: str, sku: str, published: bool) -> None:
        await self.session.execute(
            PUT_LISTING, {"channel": channel, "sku": sku, "published": published}
        )


RECORD_CHANNEL_PRICE = text(
    "INSERT INTO channel_price_projection (channel, sku, amount, currency)"
    " VALUES (:channel, :sku, :amount, :currency)"
    " ON CONFLICT (channel, sku) DO UPDATE"
    " SET amount = EXCLUDED.amount, currency = EXCLUDED.currency, updated_at = now()"
)
DROP_UNCAPPED = text(
    "DELETE FROM channel_stock_projection WHERE sku = :sku AND NOT (channel = ANY(:channels))"
).bindparams(bindparam("channels", type_=ARRAY(String(32))))
RECORD_CHANNEL_STOCK = text(
    "INSERT INTO channel_stock_projection (channel, sku, available)"
    " SELECT c, :sku, a FROM unnest(CAST(:channels AS varchar[]), CAST(:availables AS int[]))"
    " AS t(c, a) ORDER BY c"
    " ON CONFLICT (channel, sku) DO UPDATE SET available = EXCLUDED.available, updated_at = now()"
).bindparams(
    bindparam("channels", type_=ARRAY(String(32))), bindparam("availables", type_=ARRAY(Integer))
)


class ChannelProjections:
    """Per-channel prices and capped availability, as pricing and inventory report them."""

    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def record_price(self, channel: str, sku: str, price: Money | None) -> None:
        await self.session.execute(
            RECORD_CHANNEL_PRICE,
            {
                "channel": channel,
                "sku": sku,
                "amount": price.amount if price else None,
                "currency": price.currency if price else None,
            },
        )

    async def record_stock(self, sku: str, capped: dict[str, int]) -> None:
        """The capped channels of `sku` are exactly these now (a cap removed drops its row)."""
        codes = sorted(capped)
        await self.session.execute(DROP_UNCAPPED, {"sku": sku, "channels": codes})
        if codes:
            await self.session.execute(
                RECORD_CHANNEL_STOCK,
                {"sku": sku, "channels": codes, "availables": [capped[c] for c in codes]},
            )


# The first change of a burst starts the clock: a row already dirty is left as it is (not even
# rewritten), so later changes never push the publication back. Channels in code order, so two
# transactions marking the same sku lock its rows in the same order.
MARK_ONE = text(
    "INSERT INTO listing_sync (channel, sku, dirty_since) VALUES (:channel, :sku, now())"
    " ON CONFLICT (channel, sku) DO UPDATE SET dirty_since = now()"
    " WHERE listing_sync.dirty_since IS NULL"
)
MARK_ALL = text(
    "INSERT INTO listing_sync (channel, sku, dirty_since)"
    " SELECT code, :sku, now() FROM channels WHERE active ORDER BY code"
    " ON CONFLICT (channel, sku) DO UPDATE SET dirty_since = now()"
    " WHERE listing_sync.dirty_since IS NULL"
)
CLAIM_DIRTY = text(
    "SELECT channel, sku, version, last_state FROM listing_sync"
    " WHERE dirty_since IS NOT NULL AND dirty_since <= :cutoff"
    " ORDER BY dirty_since LIMIT :limit FOR UPDATE SKIP LOCKED"
)
SYNCED = text(
    "UPDATE listing_sync SET dirty_since = NULL, version = :version,"
    " last_state = COALESCE(:state, last_state),"
    " published_at = CASE WHEN :published THEN now() ELSE published_at END"
    " WHERE channel = :channel AND sku = :sku"
).bindparams(
    bindparam("state", type_=JSONB(none_as_null=True)), bindparam("published", type_=Boolean)
)


class ListingSync:
    """Which (channel, sku) changed since their last ListingChanged, and what that said."""

    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def mark(self, channel: str, sku: str) -> None:
        await self.session.execute(MARK_ONE, {"channel": channel, "sku": sku})

    async def mark_all(self, sku: str) -> None:
        await self.session.execute(MARK_ALL, {"sku": sku})

    async def claim(self, cutoff: datetime, limit: int) -> list[DirtyListing]:
        """Up to `limit` rows dirty since `cutoff` or before, locked (others' skipped)."""
        rows = (await self.session.execute(CLAIM_DIRTY, {"cutoff": cutoff, "limit": limit})).all()
        return [
            DirtyListing(
                channel=row.channel,
                sku=row.sku,
                version=row.version,
                last=ListingState.from_json(row.last_state) if row.last_state else None,
            )
            for row in rows
        ]

    async def synced(
        self, channel: str, sku: str, version: int, state: ListingState | None
    ) -> None:
        """Clear the mark; with a state, it is the one just published as `version`."""
        await self.session.execute(
            SYNCED,
            {
                "channel": channel,
                "sku": sku,
                "version": version,
                "state": state.as_json() if state else None,
                "published": state is not None,
            },
        )
