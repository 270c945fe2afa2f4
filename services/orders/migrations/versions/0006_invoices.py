"""invoices and credit notes with gap-free numbers (issue 12)

`document_counters`: the last number given out per (store, kind, year); `invoices`: one per
confirmed order; `credit_notes`: one per refund of an invoiced order (unique refund id).

Revision ID: 0006_invoices
Revises: 0005_shipments
Create Date: 2026-12-01 19:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006_invoices"
down_revision: str | None = "0005_shipments"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "document_counters",
        sa.Column("store", sa.String(length=50), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("last_number", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("kind IN ('invoice', 'credit_note')", name="ck_document_counters_kind"),
        sa.CheckConstraint("last_number > 0", name="ck_document_counters_positive"),
        sa.PrimaryKeyConstraint("store", "kind", "year"),
    )
    op.create_table(
        "invoices",
        sa.Column("order_id", sa.String(length=64), nullable=False),
        sa.Column("number", sa.String(length=64), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("document", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"]),
        sa.PrimaryKeyConstraint("order_id"),
        sa.UniqueConstraint("number"),
    )
    op.create_table(
        "credit_notes",
        sa.Column("number", sa.String(length=64), nullable=False),
        sa.Column("order_id", sa.String(length=64), nullable=False),
        sa.Column("invoice_number", sa.String(length=64), nullable=False),
        sa.Column("refund_id", sa.String(length=200), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("tax", sa.BigInteger(), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("document", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.CheckConstraint("amount >= 0", name="ck_credit_notes_amount_not_negative"),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"]),
        sa.ForeignKeyConstraint(["invoice_number"], ["invoices.number"]),
        sa.PrimaryKeyConstraint("number"),
        sa.UniqueConstraint("order_id", "refund_id", name="uq_credit_notes_order_refund"),
    )
    op.create_index("ix_credit_notes_order", "credit_notes", ["order_id", "issued_at"])


def downgrade() -> None:
    op.drop_index("ix_credit_notes_order", table_name="credit_notes")
    op.drop_table("credit_notes")
    op.drop_table("invoices")
    op.drop_table("document_counters")
