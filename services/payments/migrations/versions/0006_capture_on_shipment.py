"""capture policy on_shipment: holds, captured when the order ships or voided

`hold_ref` on the order's row names the provider's authorization while it holds the money; the
order's capture and its payment may be `authorized` (held) or `voided` (released).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 18:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CAPTURE_BEFORE = "'pending', 'requires_action', 'captured', 'failed', 'refunded'"
_CAPTURE_NOW = (
    "'pending', 'requires_action', 'authorized', 'captured', 'failed', 'refunded', 'voided'"
)
_PAYMENT_BEFORE = "'requires_action', 'captured', 'failed', 'refunded', 'partially_refunded'"
_PAYMENT_NOW = (
    "'requires_action', 'authorized', 'captured', 'failed', 'refunded', 'partially_refunded',"
    " 'voided'"
)


def _checks(capture: str, payment: str) -> None:
    op.drop_constraint("ck_payment_orders_capture_status", "payment_orders", type_="check")
    op.create_check_constraint(
        "ck_payment_orders_capture_status", "payment_orders", f"capture_status IN ({capture})"
    )
    op.drop_constraint("ck_payments_status", "payments", type_="check")
    op.create_check_constraint("ck_payments_status", "payments", f"status IN ({payment})")


def upgrade() -> None:
    op.add_column("payment_orders", sa.Column("hold_ref", sa.String(length=100)))
    _checks(_CAPTURE_NOW, _PAYMENT_NOW)


def downgrade() -> None:
    op.execute("UPDATE payments SET status = 'failed' WHERE status IN ('authorized', 'voided')")
    op.execute(
        "UPDATE payment_orders SET capture_status = 'failed'"
        " WHERE capture_status IN ('authorized', 'voided')"
    )
    _checks(_CAPTURE_BEFORE, _PAYMENT_BEFORE)
    op.drop_column("payment_orders", "hold_ref")
