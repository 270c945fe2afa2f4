"""suppliers, purchase orders, receipts, backorders (issue 13)

`suppliers` and `supplier_items` (one supplier item per sku), `purchase_orders` (one open
automatic draft per sku: a partial unique index), `purchase_receipts` (Idempotency-Key per
purchase order), `sku_supply` (backorder policy, units on order, units promised to waiting
backorders) and `backorders`.

Revision ID: 0004
Revises: 0002
Create Date: 2026-12-02 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
# After locations (0003): a receipt adds stock at a location.
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PO_STATUSES = "'draft', 'sent', 'partially_received', 'received', 'cancelled'"
_OPEN_PO = "'draft', 'sent', 'partially_received'"


def _now() -> sa.TextClause:
    return sa.text("now()")


def upgrade() -> None:
    op.create_table(
        "suppliers",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.Column("lead_time_days", sa.Integer(), nullable=False),
        sa.Column("location", sa.String(length=64), server_default="main", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.CheckConstraint("lead_time_days >= 0", name="ck_suppliers_lead_time_non_negative"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "supplier_items",
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("supplier_id", sa.String(length=64), nullable=False),
        sa.Column("position", sa.Integer(), server_default="0", nullable=False),
        sa.Column("reorder_quantity", sa.BigInteger(), nullable=False),
        sa.Column("lead_time_days", sa.Integer(), nullable=True),
        sa.Column("unit_cost_amount", sa.BigInteger(), nullable=True),
        sa.Column("unit_cost_currency", sa.String(length=3), nullable=True),
        sa.CheckConstraint(
            "reorder_quantity > 0", name="ck_supplier_items_reorder_quantity_positive"
        ),
        sa.ForeignKeyConstraint(["supplier_id"], ["suppliers.id"]),
        sa.PrimaryKeyConstraint("sku"),
    )
    op.create_index(
        "ix_supplier_items_supplier", "supplier_items", ["supplier_id", "position"], unique=False
    )
    op.create_table(
        "purchase_orders",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("supplier_id", sa.String(length=64), nullable=False),
        sa.Column("location", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("lines", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("expected_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.String(length=30), nullable=False),
        sa.Column("reorder_sku", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.CheckConstraint(f"status IN ({_PO_STATUSES})", name="ck_purchase_orders_status"),
        sa.ForeignKeyConstraint(["supplier_id"], ["suppliers.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_purchase_orders_created", "purchase_orders", ["created_at", "id"], unique=False
    )
    op.create_index(
        "ix_purchase_orders_lines",
        "purchase_orders",
        ["lines"],
        unique=False,
        postgresql_using="gin",
    )
    op.create_index(
        "ux_purchase_orders_open_reorder_sku",
        "purchase_orders",
        ["reorder_sku"],
        unique=True,
        postgresql_where=sa.text(f"status IN ({_OPEN_PO}) AND reorder_sku IS NOT NULL"),
    )
    op.create_table(
        "purchase_receipts",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("purchase_order_id", sa.String(length=64), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("location", sa.String(length=64), nullable=False),
        sa.Column("lines", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.ForeignKeyConstraint(["purchase_order_id"], ["purchase_orders.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ux_purchase_receipts_key",
        "purchase_receipts",
        ["purchase_order_id", "idempotency_key"],
        unique=True,
    )
    op.create_table(
        "sku_supply",
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("backorders_allowed", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("backorder_expected_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("on_order", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("waiting", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.CheckConstraint("on_order >= 0", name="ck_sku_supply_on_order_non_negative"),
        sa.CheckConstraint("waiting >= 0", name="ck_sku_supply_waiting_non_negative"),
        sa.PrimaryKeyConstraint("sku"),
    )
    op.create_table(
        "backorders",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("order_id", sa.String(length=64), nullable=False),
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("expected_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.CheckConstraint(
            "status IN ('waiting', 'filled', 'cancelled')", name="ck_backorders_status"
        ),
        sa.CheckConstraint("quantity > 0", name="ck_backorders_quantity_positive"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_backorders_order", "backorders", ["order_id"], unique=False)
    op.create_index(
        "ix_backorders_waiting_sku",
        "backorders",
        ["sku", "id"],
        unique=False,
        postgresql_where=sa.text("status = 'waiting'"),
    )


def downgrade() -> None:
    op.drop_table("backorders")
    op.drop_table("sku_supply")
    op.drop_table("purchase_receipts")
    op.drop_table("purchase_orders")
    op.drop_table("supplier_items")
    op.drop_table("suppliers")
