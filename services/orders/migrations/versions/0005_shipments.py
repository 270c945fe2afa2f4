"""shipments: the labels bought for an order and their tracking

One row per shipment: `pending` from the transaction that confirms the order (unique per order
for that automatic one), claimed by the label worker with a lease, then the carrier's tracking
number, label (the sandbox's PDF as bytes, or the carrier's URL) and status.

Revision ID: 0005_shipments
Revises: 0004_carts
Create Date: 2026-12-01 19:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_shipments"
down_revision: str | None = "0004_carts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATUSES = (
    "'pending', 'label_created', 'failed', 'cancelled', 'in_transit', 'out_for_delivery',"
    " 'delivered', 'returned', 'exception'"
)


def upgrade() -> None:
    op.create_table(
        "shipments",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("order_id", sa.String(64), sa.ForeignKey("orders.id"), nullable=False),
        sa.Column("carrier", sa.String(20)),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("automatic", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.Column("tracking_number", sa.String(100)),
        sa.Column("carrier_ref", sa.String(200)),
        sa.Column("label_pdf", sa.LargeBinary()),
        sa.Column("label_url", sa.String(2000)),
        sa.Column("tracking_url", sa.String(2000)),
        sa.Column("failure_reason", sa.String(500)),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("lease_until", sa.DateTime(timezone=True)),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint(f"status IN ({_STATUSES})", name="ck_shipments_status"),
    )
    op.create_index("ix_shipments_order", "shipments", ["order_id", "created_at"])
    op.create_index(
        "ux_shipments_automatic",
        "shipments",
        ["order_id"],
        unique=True,
        postgresql_where=sa.text("automatic"),
    )
    op.create_index(
        "ux_shipments_tracking",
        "shipments",
        ["carrier", "tracking_number"],
        unique=True,
        postgresql_where=sa.text("tracking_number IS NOT NULL"),
    )
    op.create_index(
        "ix_shipments_pending",
        "shipments",
        ["lease_until"],
        postgresql_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_table("shipments")
