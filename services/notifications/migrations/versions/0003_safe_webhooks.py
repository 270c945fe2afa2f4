"""safe webhooks: a second active secret for rotation, delivery rounds (horizon, redelivery) and
a sequence to page a subscription's deliveries

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 11:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "webhook_subscriptions",
        sa.Column("previous_secret", sa.String(length=200), nullable=True),
    )
    # Existing rows are numbered in the identity's order as the column is added.
    op.add_column(
        "webhook_deliveries",
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=True), nullable=False),
    )
    op.create_unique_constraint("webhook_deliveries_seq_key", "webhook_deliveries", ["seq"])
    op.add_column(
        "webhook_deliveries",
        sa.Column("retry_from", sa.DateTime(timezone=True), nullable=True),
    )
    op.add_column(
        "webhook_deliveries",
        sa.Column("redeliveries", sa.Integer(), server_default="0", nullable=False),
    )
    op.create_index(
        "ix_webhook_deliveries_subscription_seq",
        "webhook_deliveries",
        ["subscription_id", "seq"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_subscription_seq", table_name="webhook_deliveries")
    op.drop_column("webhook_deliveries", "redeliveries")
    op.drop_column("webhook_deliveries", "retry_from")
    op.drop_constraint("webhook_deliveries_seq_key", "webhook_deliveries", type_="unique")
    op.drop_column("webhook_deliveries", "seq")
    op.drop_column("webhook_subscriptions", "previous_secret")
