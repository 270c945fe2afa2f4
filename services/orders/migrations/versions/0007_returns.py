"""returns of delivered orders

`order_returns`: one row per return of an order (requested lines, what was received and in which
condition, the refund, the two halves a completion waits for), with the customer's
Idempotency-Key unique per order.

Revision ID: 0007_returns
Revises: 0006_invoices
Create Date: 2026-12-01 19:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007_returns"
down_revision: str | None = "0006_invoices"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "order_returns",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("order_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("lines", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "received",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("refund", sa.BigInteger(), nullable=True),
        sa.Column("stock_done", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("refund_done", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('requested', 'received', 'completed')", name="ck_order_returns_status"
        ),
        sa.CheckConstraint("refund IS NULL OR refund >= 0", name="ck_order_returns_refund"),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("order_id", "idempotency_key", name="uq_order_returns_key"),
    )
    op.create_index(
        "ix_order_returns_order", "order_returns", ["order_id", "requested_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_order_returns_order", table_name="order_returns")
    op.drop_table("order_returns")
