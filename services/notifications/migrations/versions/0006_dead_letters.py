"""dead letters and retention

`dead_letters`: what this service's consumers gave up on, beside the `<topic>.dlq` record, until an
admin replays it (to this group only) or drops it; `dead_letter_actions`: the audit trail of
lists, replays and drops (issue 14 part 7, libs/kit/deadletters.py). The retention job
(libs/kit/retention.py) prunes the inbox by `processed_at` (`ix_processed_events_processed_at`)
and resolved dead letters by `resolved_at`; finished webhook deliveries are pruned by age (`ix_webhook_deliveries_finished`).

Revision ID: 0006_dead_letters
Revises: 0005_channel_webhooks
Create Date: 2026-12-02 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from libs.kit.migrations import create_dead_letter_tables, drop_dead_letter_tables

revision: str = "0006_dead_letters"
down_revision: str | None = "0005_channel_webhooks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_dead_letter_tables()
    op.create_index(
        "ix_webhook_deliveries_finished",
        "webhook_deliveries",
        ["updated_at"],
        postgresql_where=sa.text("status <> 'pending'"),
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_finished", table_name="webhook_deliveries")
    drop_dead_letter_tables()
