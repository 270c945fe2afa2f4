"""refunds of returns

`refunds.return_id`: the orders return whose share a refund gives back; unique, so a redelivered
ReturnReceived refunds once.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 19:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("refunds", sa.Column("return_id", sa.String(length=64), nullable=True))
    op.create_unique_constraint("uq_refunds_return", "refunds", ["return_id"])


def downgrade() -> None:
    op.drop_constraint("uq_refunds_return", "refunds", type_="unique")
    op.drop_column("refunds", "return_id")
