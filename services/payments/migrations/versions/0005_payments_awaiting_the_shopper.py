"""payments awaiting the shopper (3-D Secure)

A capture the provider answers with a next action is `requires_action` on the order's row and
on its payment, which keeps that action (`next_action`: type, client secret, redirect URL) for
the frontend until the provider's webhook brings the verdict.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 18:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CAPTURE = "'pending', 'captured', 'failed', 'refunded'"
_CAPTURE_NOW = "'pending', 'requires_action', 'captured', 'failed', 'refunded'"
_PAYMENT = "'captured', 'failed', 'refunded', 'partially_refunded'"


def upgrade() -> None:
    op.alter_column("payment_orders", "capture_status", type_=sa.String(length=20))
    op.drop_constraint("ck_payment_orders_capture_status", "payment_orders", type_="check")
    op.create_check_constraint(
        "ck_payment_orders_capture_status",
        "payment_orders",
        f"capture_status IN ({_CAPTURE_NOW})",
    )
    op.drop_constraint("ck_payments_status", "payments", type_="check")
    op.create_check_constraint(
        "ck_payments_status", "payments", f"status IN ('requires_action', {_PAYMENT})"
    )
    op.add_column("payments", sa.Column("next_action", postgresql.JSONB()))


def downgrade() -> None:
    op.drop_column("payments", "next_action")
    op.execute("DELETE FROM payments WHERE status = 'requires_action'")
    op.drop_constraint("ck_payments_status", "payments", type_="check")
    op.create_check_constraint("ck_payments_status", "payments", f"status IN ({_PAYMENT})")
    op.execute(
        "UPDATE payment_orders SET capture_status = NULL WHERE capture_status = 'requires_action'"
    )
    op.drop_constraint("ck_payment_orders_capture_status", "payment_orders", type_="check")
    op.create_check_constraint(
        "ck_payment_orders_capture_status", "payment_orders", f"capture_status IN ({_CAPTURE})"
    )
    op.alter_column("payment_orders", "capture_status", type_=sa.String(length=10))
