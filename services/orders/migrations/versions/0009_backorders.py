"""backorders (issue 13)

`order_backorders`: the lines inventory promised from incoming stock, and when its
BackorderFilled came; shipments may be `awaiting_stock` (held until then).

Revision ID: 0009_backorders
Revises: 0007_returns
Create Date: 2026-12-02 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009_backorders"
# The merger re-chains this after channels' 0008.
down_revision: str | None = "0008_channels"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BEFORE = (
    "'pending', 'label_created', 'failed', 'cancelled', 'in_transit', 'out_for_delivery',"
    " 'delivered', 'returned', 'exception'"
)
_AFTER = f"{_BEFORE}, 'awaiting_stock'"


def upgrade() -> None:
    op.create_table(
        "order_backorders",
        sa.Column("order_id", sa.String(length=64), nullable=False),
        sa.Column(
            "lines",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column("filled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("order_id"),
    )
    op.drop_constraint("ck_shipments_status", "shipments", type_="check")
    op.create_check_constraint("ck_shipments_status", "shipments", f"status IN ({_AFTER})")


def downgrade() -> None:
    op.drop_constraint("ck_shipments_status", "shipments", type_="check")
    op.create_check_constraint("ck_shipments_status", "shipments", f"status IN ({_BEFORE})")
    op.drop_table("order_backorders")
