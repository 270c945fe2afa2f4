"""orders remember a payment that came before their StockReserved

`paid`: the capture (or authorization) was applied while the order still waited for its
StockReserved (the two come on different topics); the StockReserved then confirms the order,
with its backordered lines known.

Revision ID: 0012_paid
Revises: 0011_timeline
Create Date: 2026-12-02 06:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_paid"
down_revision: str | None = "0011_timeline"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "orders", sa.Column("paid", sa.Boolean(), server_default=sa.text("false"), nullable=False)
    )


def downgrade() -> None:
    op.drop_column("orders", "paid")
