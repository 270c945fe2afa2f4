"""orders record their shipping line

`shipping`: the quote's net shipping price in minor units of the order's currency (its tax is in
`tax`, both are in `total`); `shipping_method`: the method's code (NULL when the region had no
shipping methods, and for orders placed before).

Revision ID: 0003_shipping
Revises: 0002
Create Date: 2026-12-01 19:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_shipping"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "orders", sa.Column("shipping", sa.BigInteger(), server_default="0", nullable=False)
    )
    op.add_column("orders", sa.Column("shipping_method", sa.String(length=64), nullable=True))
    op.add_column(
        "orders", sa.Column("weight_g", sa.BigInteger(), server_default="0", nullable=False)
    )


def downgrade() -> None:
    op.drop_column("orders", "weight_g")
    op.drop_column("orders", "shipping_method")
    op.drop_column("orders", "shipping")
