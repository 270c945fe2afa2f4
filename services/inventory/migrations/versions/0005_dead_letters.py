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

from libs.kit.migrations import create_dead_letter_tables, drop_dead_letter_tables

revision: str = "0005_dead_letters"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_dead_letter_tables()


def downgrade() -> None:
    drop_dead_letter_tables()
