"""dead letters and retention

`dead_letters`: what this service's consumers gave up on, beside the `<topic>.dlq` record, until an
admin replays it (to this group only) or drops it; `dead_letter_actions`: the audit trail of
lists, replays and drops (issue 14 part 7, libs/kit/deadletters.py). The retention job
(libs/kit/retention.py) prunes the inbox by `processed_at` (`ix_processed_events_processed_at`)
and resolved dead letters by `resolved_at`.

Revision ID: 0005_dead_letters
Revises: 0004
Create Date: 2026-12-02 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_dead_letters"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("consumer_group", sa.String(length=200), nullable=False),
        sa.Column("source_topic", sa.String(length=249), nullable=False),
        sa.Column("source_partition", sa.Integer(), nullable=False),
        sa.Column("source_offset", sa.BigInteger(), nullable=False),
        sa.Column("message_key", sa.Text(), nullable=True),
        sa.Column("event_id", sa.String(length=64), nullable=True),
        sa.Column("event_type", sa.String(length=100), nullable=True),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("error_type", sa.String(length=200), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column(
            "failed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("status", sa.String(length=10), server_default="open", nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_by", sa.String(length=200), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('open', 'replayed', 'dropped')", name="ck_dead_letters_status"
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "consumer_group",
            "source_topic",
            "source_partition",
            "source_offset",
            name="uq_dead_letters_source",
        ),
    )
    op.create_index(
        "ix_dead_letters_open",
        "dead_letters",
        ["consumer_group", "id"],
        postgresql_where=sa.text("status = 'open'"),
    )
    op.create_index(
        "ix_dead_letters_resolved",
        "dead_letters",
        ["resolved_at"],
        postgresql_where=sa.text("status <> 'open'"),
    )
    op.create_table(
        "dead_letter_actions",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("dead_letter_id", sa.BigInteger(), nullable=True),
        sa.Column("action", sa.String(length=10), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "action IN ('list', 'replay', 'drop')", name="ck_dead_letter_actions_action"
        ),
        sa.ForeignKeyConstraint(["dead_letter_id"], ["dead_letters.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_dead_letter_actions_dead_letter", "dead_letter_actions", ["dead_letter_id", "id"]
    )
    op.create_index("ix_dead_letter_actions_at", "dead_letter_actions", ["at"])
    op.create_index("ix_processed_events_processed_at", "processed_events", ["processed_at"])


def downgrade() -> None:
    op.drop_index("ix_processed_events_processed_at", table_name="processed_events")
    op.drop_table("dead_letter_actions")
    op.drop_table("dead_letters")
