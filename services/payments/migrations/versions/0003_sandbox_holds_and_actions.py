"""sandbox ledger: authorizations, voids, partial refunds and 3-D Secure

The sandbox PSP now authorizes, captures holds, voids and refunds in part: each operation that
acts on a payment names it in `capture_ref` (indexed: refunds add up per capture), a payment
remembers what its test token makes it do later (`behaviour`), and a 3-D Secure payment awaits
the shopper's verdict (`awaiting_action`).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 17:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("sandbox_ledger", sa.Column("behaviour", sa.String(length=20)))
    op.add_column(
        "sandbox_ledger",
        sa.Column("awaiting_action", sa.Boolean(), server_default="false", nullable=False),
    )
    op.create_index("ix_sandbox_ledger_capture_ref", "sandbox_ledger", ["capture_ref"])


def downgrade() -> None:
    op.drop_index("ix_sandbox_ledger_capture_ref", table_name="sandbox_ledger")
    op.drop_column("sandbox_ledger", "awaiting_action")
    op.drop_column("sandbox_ledger", "behaviour")
