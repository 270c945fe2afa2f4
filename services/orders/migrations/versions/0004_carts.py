"""carts and their lines

`carts` (open or checked_out, the order that checked one out, the idle period's abandonment) and
`cart_lines` (one row per sku, in the order first added, with the catalog price last seen).

Revision ID: 0004_carts
Revises: 0003_shipping
Create Date: 2026-12-01 19:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_carts"
down_revision: str | None = "0003_shipping"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "carts",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.Column("revision", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("order_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("abandoned_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('open', 'checked_out')", name="ck_carts_status"),
        sa.CheckConstraint(
            "(status = 'checked_out') = (order_id IS NOT NULL)",
            name="ck_carts_order_when_checked_out",
        ),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_carts_open_idle",
        "carts",
        ["updated_at"],
        unique=False,
        postgresql_where=sa.text("status = 'open' AND abandoned_at IS NULL"),
    )
    op.create_table(
        "cart_lines",
        sa.Column("cart_id", sa.String(length=64), nullable=False),
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("position", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("seen_price", sa.BigInteger(), nullable=True),
        sa.Column("seen_currency", sa.String(length=3), nullable=True),
        sa.CheckConstraint("quantity > 0", name="ck_cart_lines_quantity_positive"),
        sa.ForeignKeyConstraint(["cart_id"], ["carts.id"]),
        sa.PrimaryKeyConstraint("cart_id", "sku"),
    )


def downgrade() -> None:
    op.drop_table("cart_lines")
    op.drop_index("ix_carts_open_idle", table_name="carts")
    op.drop_table("carts")
