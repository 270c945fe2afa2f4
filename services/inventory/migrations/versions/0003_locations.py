"""locations, stock per location, channel caps, transfers (issue 13)

`locations` (a default `main`), `location_stock` per (sku, location) backfilled from every
`stock_items` row into `main` (stock_items stays the per-sku sum and lock row), `channel_caps`,
`stock_transfers` (one per Idempotency-Key); reservations gain `allocations` and `channel`,
stock_movements `location` and `ref`.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "locations",
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False, server_default="warehouse"),
        sa.Column("priority", sa.Integer(), nullable=False, server_default="100"),
        sa.Column("regions", postgresql.ARRAY(sa.Text()), nullable=False, server_default="{}"),
        sa.Column("active", sa.Boolean(), nullable=False, server_default="true"),
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
        sa.CheckConstraint("kind IN ('warehouse', 'store')", name="ck_locations_kind"),
        sa.PrimaryKeyConstraint("code"),
    )
    op.execute(
        "INSERT INTO locations (code, name, kind, priority) VALUES ('main', 'Main warehouse',"
        " 'warehouse', 0)"
    )
    op.create_table(
        "location_stock",
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("location", sa.String(length=32), nullable=False),
        sa.Column("on_hand", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("reserved", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("safety_stock", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("on_hand >= 0", name="ck_location_stock_on_hand_non_negative"),
        sa.CheckConstraint("reserved >= 0", name="ck_location_stock_reserved_non_negative"),
        sa.CheckConstraint("safety_stock >= 0", name="ck_location_stock_safety_non_negative"),
        sa.CheckConstraint("reserved <= on_hand", name="ck_location_stock_reserved_within"),
        sa.ForeignKeyConstraint(["sku"], ["stock_items.sku"], name="fk_location_stock_sku"),
        sa.ForeignKeyConstraint(
            ["location"], ["locations.code"], name="fk_location_stock_location"
        ),
        sa.PrimaryKeyConstraint("sku", "location"),
    )
    op.execute(
        "INSERT INTO location_stock (sku, location, on_hand, reserved, updated_at)"
        " SELECT sku, 'main', on_hand, reserved, updated_at FROM stock_items"
    )
    op.create_table(
        "channel_caps",
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("cap", sa.BigInteger(), nullable=False),
        sa.Column("used", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("cap >= 0", name="ck_channel_caps_cap_non_negative"),
        sa.CheckConstraint("used >= 0", name="ck_channel_caps_used_non_negative"),
        sa.ForeignKeyConstraint(["sku"], ["stock_items.sku"], name="fk_channel_caps_sku"),
        sa.PrimaryKeyConstraint("sku", "channel"),
    )
    op.create_table(
        "stock_transfers",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("from_location", sa.String(length=32), nullable=False),
        sa.Column("to_location", sa.String(length=32), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=100)),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key", name="uq_stock_transfers_idempotency_key"),
    )
    op.add_column(
        "reservations",
        sa.Column(
            "allocations",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="[]",
            nullable=False,
        ),
    )
    op.add_column("reservations", sa.Column("channel", sa.String(length=32)))
    op.add_column(
        "stock_movements",
        sa.Column("location", sa.String(length=32), nullable=False, server_default="main"),
    )
    op.add_column("stock_movements", sa.Column("ref", sa.String(length=100)))


def downgrade() -> None:
    op.drop_column("stock_movements", "ref")
    op.drop_column("stock_movements", "location")
    op.drop_column("reservations", "channel")
    op.drop_column("reservations", "allocations")
    op.drop_table("stock_transfers")
    op.drop_table("channel_caps")
    op.drop_table("location_stock")
    op.drop_table("locations")
