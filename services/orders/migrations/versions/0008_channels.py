"""sales channels

`orders.channel` (the sales channel an order came through, `web` for every order before) with its
index for the channel filter; `channels`: catalog's ChannelChanged projection (issue 13).

Revision ID: 0008_channels
Revises: 0007_returns
Create Date: 2026-12-02 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_channels"
down_revision: str | None = "0007_returns"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A constant default: PostgreSQL adds the column without rewriting the table.
    op.add_column(
        "orders",
        sa.Column("channel", sa.String(length=64), server_default=sa.text("'web'"), nullable=False),
    )
    op.create_index(
        "ix_orders_channel_created", "orders", ["channel", "created_at", "id"], unique=False
    )
    op.create_table(
        "channels",
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("code"),
    )


def downgrade() -> None:
    op.drop_table("channels")
    op.drop_index("ix_orders_channel_created", table_name="orders")
    op.drop_column("orders", "channel")
