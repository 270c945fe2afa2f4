"""sales channels, listings, per-channel projections and the listing sync (issue 13)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _stamps() -> list[sa.Column[sa.DateTime]]:
    return [
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
    ]


def upgrade() -> None:
    op.create_table(
        "channels",
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.true(), nullable=False),
        *_stamps(),
        sa.PrimaryKeyConstraint("code"),
    )
    op.execute("INSERT INTO channels (code, name, kind) VALUES ('web', 'Web shop', 'web')")
    op.create_table(
        "listings",
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("published", sa.Boolean(), nullable=False),
        *_stamps(),
        sa.PrimaryKeyConstraint("channel", "sku"),
    )
    op.create_table(
        "channel_price_projection",
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("channel", "sku"),
    )
    op.create_table(
        "channel_stock_projection",
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("available", sa.Integer(), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("channel", "sku"),
    )
    op.create_table(
        "listing_sync",
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("dirty_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_state", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("channel", "sku"),
    )
    op.create_index(
        "ix_listing_sync_dirty",
        "listing_sync",
        ["dirty_since"],
        postgresql_where=sa.text("dirty_since IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_listing_sync_dirty", table_name="listing_sync")
    op.drop_table("listing_sync")
    op.drop_table("channel_stock_projection")
    op.drop_table("channel_price_projection")
    op.drop_table("listings")
    op.drop_table("channels")
