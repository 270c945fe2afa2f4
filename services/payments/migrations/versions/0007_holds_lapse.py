"""holds that lapse before their order ships

`authorized_at` dates a hold; one older than `hold_lifetime_s` whose order has not shipped is
reported once (`hold_lapsed`), PaymentFailed authorization_expired, and orders cancels the order.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("payment_orders", sa.Column("authorized_at", sa.DateTime(timezone=True)))
    op.add_column(
        "payment_orders",
        sa.Column("hold_lapsed", sa.Boolean(), server_default="false", nullable=False),
    )
    op.execute(
        "UPDATE payment_orders SET authorized_at = updated_at WHERE capture_status = 'authorized'"
    )


def downgrade() -> None:
    op.drop_column("payment_orders", "hold_lapsed")
    op.drop_column("payment_orders", "authorized_at")
