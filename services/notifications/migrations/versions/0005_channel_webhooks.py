"""webhook subscriptions per sales channel: a channel's ListingChanged only (issue 13)

Revision ID: 0005_channel_webhooks
Revises: 0004_email_attachments
Create Date: 2026-12-01 23:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_channel_webhooks"
down_revision: str | None = "0004_email_attachments"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("webhook_subscriptions", sa.Column("channel", sa.String(32), nullable=True))
    op.create_index(
        "ix_webhook_subscriptions_channel",
        "webhook_subscriptions",
        ["channel"],
        postgresql_where=sa.text("channel IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_subscriptions_channel", table_name="webhook_subscriptions")
    op.drop_column("webhook_subscriptions", "channel")
