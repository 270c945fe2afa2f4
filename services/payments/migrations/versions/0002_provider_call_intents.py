"""provider call intents on payment_orders

The provider is called outside our transactions: the order's row records the call it owes
(capture_status / refund_status 'pending'), how often it was claimed and until when the current
claim holds it; the outcome is recorded in a new transaction. Existing orders get their capture
and refund state from `payments`.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 10:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("payment_orders", sa.Column("refund_reason", sa.String(length=100)))
    op.add_column("payment_orders", sa.Column("capture_status", sa.String(length=10)))
    op.add_column("payment_orders", sa.Column("capture_ref", sa.String(length=100)))
    op.add_column("payment_orders", sa.Column("refund_status", sa.String(length=10)))
    op.add_column(
        "payment_orders",
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
    )
    op.add_column("payment_orders", sa.Column("lease_until", sa.DateTime(timezone=True)))
    op.add_column("payment_orders", sa.Column("correlation_id", sa.String(length=200)))
    op.add_column("payment_orders", sa.Column("causation_id", sa.String(length=200)))
    op.create_check_constraint(
        "ck_payment_orders_capture_status",
        "payment_orders",
        "capture_status IN ('pending', 'captured', 'failed', 'refunded')",
    )
    op.create_check_constraint(
        "ck_payment_orders_refund_status",
        "payment_orders",
        "refund_status IN ('pending', 'refunded', 'failed')",
    )
    op.create_index(
        "ix_payment_orders_due",
        "payment_orders",
        ["lease_until"],
        postgresql_where=sa.text("capture_status = 'pending' OR refund_status = 'pending'"),
    )
    # What the orders already went through, so that closing one later refunds its capture.
    op.execute(
        """UPDATE payment_orders o SET capture_status = p.status, capture_ref = p.provider_ref
           FROM payments p WHERE p.order_id = o.order_id AND p.kind = 'capture'"""
    )
    op.execute(
        """UPDATE payment_orders o SET refund_status = 'refunded'
           FROM payments p WHERE p.order_id = o.order_id AND p.kind = 'refund'"""
    )


def downgrade() -> None:
    op.drop_index("ix_payment_orders_due", table_name="payment_orders")
    op.drop_constraint("ck_payment_orders_refund_status", "payment_orders")
    op.drop_constraint("ck_payment_orders_capture_status", "payment_orders")
    for column in (
        "causation_id",
        "correlation_id",
        "lease_until",
        "attempts",
        "refund_status",
        "capture_ref",
        "capture_status",
        "refund_reason",
    ):
        op.drop_column("payment_orders", column)
