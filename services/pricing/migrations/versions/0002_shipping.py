"""shipping methods, product weights, free-shipping rules

`shipping_methods` (per region, rates by weight or order value, at most one default per region);
`products.weight_g` (from catalog's attributes.weight); rules of kind `free_shipping`.

Revision ID: 0002_shipping
Revises: 0001
Create Date: 2026-12-01 19:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002_shipping"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "shipping_methods",
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("region", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("rate_by", sa.String(length=20), nullable=False),
        sa.Column("bands", postgresql.JSON(astext_type=sa.Text()), nullable=False),
        sa.Column("free_over", sa.BigInteger(), nullable=True),
        sa.Column("is_default", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "rate_by IN ('weight', 'order_value')", name="ck_shipping_methods_rate_by"
        ),
        sa.CheckConstraint(
            "free_over IS NULL OR free_over >= 0", name="ck_shipping_methods_free_over"
        ),
        sa.CheckConstraint("NOT is_default OR active", name="ck_shipping_methods_default_active"),
        sa.PrimaryKeyConstraint("code"),
    )
    op.create_index(
        "ix_shipping_methods_region", "shipping_methods", ["region", "code"], unique=False
    )
    op.create_index(
        "uq_shipping_methods_region_default",
        "shipping_methods",
        ["region"],
        unique=True,
        postgresql_where=sa.text("is_default"),
    )
    op.add_column(
        "products", sa.Column("weight_g", sa.BigInteger(), server_default="0", nullable=False)
    )
    for name in ("ck_rules_kind", "ck_rules_sku", "ck_rules_promotion_window"):
        op.drop_constraint(name, "rules", type_="check")
    op.create_check_constraint(
        "ck_rules_kind",
        "rules",
        "kind IN ('volume', 'promotion', 'customer_group', 'free_shipping')",
    )
    op.create_check_constraint(
        "ck_rules_sku", "rules", "kind IN ('promotion', 'free_shipping') OR sku IS NOT NULL"
    )
    op.create_check_constraint(
        "ck_rules_promotion_window",
        "rules",
        "kind NOT IN ('promotion', 'free_shipping') OR ends_at > starts_at",
    )


def downgrade() -> None:
    op.execute("DELETE FROM rules WHERE kind = 'free_shipping'")
    for name in ("ck_rules_kind", "ck_rules_sku", "ck_rules_promotion_window"):
        op.drop_constraint(name, "rules", type_="check")
    op.create_check_constraint(
        "ck_rules_kind", "rules", "kind IN ('volume', 'promotion', 'customer_group')"
    )
    op.create_check_constraint("ck_rules_sku", "rules", "kind = 'promotion' OR sku IS NOT NULL")
    op.create_check_constraint(
        "ck_rules_promotion_window", "rules", "kind <> 'promotion' OR ends_at > starts_at"
    )
    op.drop_column("products", "weight_g")
    op.drop_index(
        "uq_shipping_methods_region_default",
        table_name="shipping_methods",
        postgresql_where=sa.text("is_default"),
    )
    op.drop_index("ix_shipping_methods_region", table_name="shipping_methods")
    op.drop_table("shipping_methods")
