"""Catalog tables: products, plus the price and stock projections fed by other services' events."""

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB

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
