"""Inventory tables: stock per sku, one reservation per order, the stock movement audit."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

stock_items = Table(
    "stock_items",
    metadata,
    Column("sku", String(64), primary_key=True),
    Column("on_hand", BigInteger, nullable=False),
    Column("reserved", BigInteger, nullable=False, server_default="0"),
    Column("reorder_point", BigInteger, nullable=False, server_default="0"),
    # The current "at or below the reorder point" state was announced (StockLow once per crossing).
    Column("low_reported", Boolean, nullable=False, server_default="false"),
    Column("version", Integer, nullable=False, server_default="1"),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # The invariants live in the database too, so no code path (or race) can break them.
    CheckConstraint("on_hand >= 0", name="ck_stock_items_on_hand_non_negative"),
    CheckConstraint("reserved >= 0", name="ck_stock_items_reserved_non_negative"),
    CheckConstraint("reorder_point >= 0", name="ck_stock_items_reorder_point_non_negative"),
    CheckConstraint("on_hand - reserved >= 0", name="ck_stock_items_available_non_negative"),
)

reservations = Table(
    "reservations",
    metadata,
    # One row per order, whatever happened: the primary key makes OrderPlaced idempotent.
    Column("order_id", String(64), primary_key=True),
    Column("status", String(20), nullable=False),
    Column("lines", JSONB, nullable=False, server_default="[]"),
    Column("reason", String(100)),
    Column("expires_at", DateTime(timezone=True)),
    # The order's correlation id, so events caused by the expiry sweep stay traceable.
    Column("correlation_id", String(200)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint(
        "status IN ('reserved', 'committed', 'released', 'failed')",
        name="ck_reservations_status",
    ),
    # The expiry sweep only ever looks at live reservations.
    Index(
        "ix_reservations_reserved_expires_at",
        "expires_at",
        postgresql_where=text("status = 'reserved'"),
    ),
)

stock_movements = Table(
    "stock_movements",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("sku", String(64), nullable=False),
    Column("delta_on_hand", BigInteger, nullable=False),
    Column("delta_reserved", BigInteger, nullable=False),
    Column("on_hand", BigInteger, nullable=False),
    Column("reserved", BigInteger, nullable=False),
    Column("reason", String(100), nullable=False),
    Column("order_id", String(64)),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_stock_movements_sku_id", "sku", "id"),
)
