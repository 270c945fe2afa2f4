"""queued emails: what a pending email needs to be sent after the event's commit, and its lease

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
    op.add_column("notifications", sa.Column("message_id", sa.String(length=400), nullable=True))
    op.add_column("notifications", sa.Column("mail_subject", sa.Text(), nullable=True))
    op.add_column("notifications", sa.Column("mail_text", sa.Text(), nullable=True))
    op.add_column(
        "notifications",
        sa.Column(
            "queued_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
    )
    op.add_column("notifications", sa.Column("subject", sa.String(length=200), nullable=True))
    op.add_column("notifications", sa.Column("sku", sa.String(length=200), nullable=True))
    op.add_column(
        "notifications", sa.Column("correlation_id", sa.String(length=200), nullable=True)
    )
    op.add_column("notifications", sa.Column("causation_id", sa.String(length=200), nullable=True))
    op.add_column(
        "notifications",
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
    )
    op.add_column(
        "notifications", sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_index(
        "ix_notifications_pending",
        "notifications",
        ["seq"],
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_notifications_pending",
        table_name="notifications",
        postgresql_where=sa.text("status = 'pending'"),
    )
    for column in (
        "lease_until",
        "attempts",
        "causation_id",
        "correlation_id",
        "sku",
        "subject",
        "queued_at",
        "mail_text",
        "mail_subject",
        "message_id",
    ):
        op.drop_column("notifications", column)
