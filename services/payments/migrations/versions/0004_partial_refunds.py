"""refunds an operator asks for, partial refunds and the provider of each payment

`refunds` holds every refund of a capture (an operator's, owed to the provider while pending,
and the one an order's close made); a capture row keeps what refunds gave back and what refunds
under way hold, checked never to pass what it took; `partially_refunded` joins the statuses;
each payment names its provider; an order's close refunds what is left (`refund_amount`).
Existing refunds are listed too.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 17:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("payment_orders", sa.Column("refund_amount", sa.BigInteger()))
    op.alter_column("payments", "status", type_=sa.String(length=20))
    op.drop_constraint("ck_payments_status", "payments", type_="check")
    op.create_check_constraint(
        "ck_payments_status",
        "payments",
        "status IN ('captured', 'failed', 'refunded', 'partially_refunded')",
    )
    op.add_column(
        "payments",
        sa.Column("refunded_amount", sa.BigInteger(), server_default="0", nullable=False),
    )
    op.add_column(
        "payments",
        sa.Column("refund_reserved", sa.BigInteger(), server_default="0", nullable=False),
    )
    op.add_column(
        "payments",
        sa.Column("provider", sa.String(length=20), server_default="sandbox", nullable=False),
    )
    # Captures refunded before: refunded in full.
    op.execute(
        "UPDATE payments SET refunded_amount = amount, refund_reserved = amount"
        " WHERE kind = 'capture' AND status = 'refunded'"
    )
    op.create_check_constraint(
        "ck_payments_refunds_within_capture",
        "payments",
        "0 <= refunded_amount AND refunded_amount <= refund_reserved AND refund_reserved <= amount",
    )
    op.create_table(
        "refunds",
        sa.Column("id", sa.String(length=36), primary_key=True),
        sa.Column("payment_id", sa.String(length=36), nullable=False),
        sa.Column("order_id", sa.String(length=100), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("capture_ref", sa.String(length=100), nullable=False),
        sa.Column("provider_ref", sa.String(length=100)),
        sa.Column("failure_reason", sa.String(length=100)),
        sa.Column("idempotency_key", sa.String(length=200)),
        sa.Column("request_hash", sa.String(length=64)),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True)),
        sa.Column("correlation_id", sa.String(length=200)),
        sa.Column("causation_id", sa.String(length=200)),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.UniqueConstraint("payment_id", "idempotency_key", name="uq_refunds_payment_key"),
        sa.CheckConstraint(
            "status IN ('pending', 'succeeded', 'failed')", name="ck_refunds_status"
        ),
        sa.CheckConstraint("amount >= 0", name="ck_refunds_amount"),
    )
    op.create_index("ix_refunds_payment_created", "refunds", ["payment_id", "created_at", "id"])
    op.create_index(
        "ix_refunds_due",
        "refunds",
        ["lease_until"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.execute(
        """INSERT INTO refunds (id, payment_id, order_id, amount, currency, reason, status,
                               capture_ref, provider_ref, created_at, updated_at)
           SELECT r.id, c.id, r.order_id, r.amount, r.currency,
                  coalesce(o.refund_reason, 'cancelled'), 'succeeded', c.provider_ref,
                  r.provider_ref, r.created_at, r.created_at
           FROM payments r
           JOIN payments c ON c.order_id = r.order_id AND c.kind = 'capture'
           LEFT JOIN payment_orders o ON o.order_id = r.order_id
           WHERE r.kind = 'refund'"""
    )


def downgrade() -> None:
    op.drop_index("ix_refunds_due", table_name="refunds")
    op.drop_index("ix_refunds_payment_created", table_name="refunds")
    op.drop_table("refunds")
    op.drop_constraint("ck_payments_refunds_within_capture", "payments", type_="check")
    op.drop_column("payments", "provider")
    op.drop_column("payments", "refund_reserved")
    op.drop_column("payments", "refunded_amount")
    op.drop_constraint("ck_payments_status", "payments", type_="check")
    op.execute("UPDATE payments SET status = 'refunded' WHERE status = 'partially_refunded'")
    op.create_check_constraint(
        "ck_payments_status", "payments", "status IN ('captured', 'failed', 'refunded')"
    )
    op.alter_column("payments", "status", type_=sa.String(length=10))
    op.drop_column("payment_orders", "refund_amount")
