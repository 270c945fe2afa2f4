"""channel price lists

`channel_prices`: a sku's price in one sales channel's list (issue 13); a sku without a row there
sells at its base price in that channel.

Revision ID: 0003_channel_prices
Revises: 0002_shipping
Create Date: 2026-12-02 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_channel_prices"
down_revision: str | None = "0002_shipping"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "channel_prices",
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("amount >= 0", name="ck_channel_prices_amount_not_negative"),
        sa.PrimaryKeyConstraint("channel", "sku"),
    )


def downgrade() -> None:
    op.drop_table("channel_prices")
