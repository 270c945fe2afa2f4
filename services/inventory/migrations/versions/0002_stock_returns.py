"""returns taken back

`stock_returns`: one row per received return whose units inventory restocked or wrote off (its
primary key makes ReturnReceived idempotent).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 19:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "stock_returns",
        sa.Column("return_id", sa.String(length=64), nullable=False),
        sa.Column("order_id", sa.String(length=64), nullable=False),
        sa.Column("restocked", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("written_off", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("return_id"),
    )


def downgrade() -> None:
    op.drop_table("stock_returns")
