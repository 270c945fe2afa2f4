"""Catalog tables and repositories: products, and the price and stock projections of other services' facts."""

from dataclasses import asdict
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    Row,
    String,
    Table,
    Text,
    bindparam,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB

from libs.events.common import Money
from libs.kit.db import DbSession
from services.catalog.domain import Availability, NewProduct, Product, ProductView

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
