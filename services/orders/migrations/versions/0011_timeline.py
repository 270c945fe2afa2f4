"""timeline (issue 14 part 5)

`order_events`: the journal of every event orders emitted or consumed about an order, read by
`GET /orders/{id}/timeline`. Emitted events are copied from the outbox by a statement-level
trigger (one INSERT ... SELECT per outbox statement, in the transaction that emits them: no
statement or round trip more for the service); the payment instruction is journaled without its
`data` (the token never lands in an orders table). Consumed events are written by the handlers'
transaction (`db.OrderEvents.record_consumed`).

Revision ID: 0011_timeline
Revises: 0010_dead_letters
Create Date: 2026-12-02 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_timeline"
down_revision: str | None = "0010_dead_letters"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FUNCTION = """
CREATE FUNCTION journal_order_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO order_events (order_id, direction, event_id, event_type, topic, payload)
  SELECT a.message_key, 'emitted', a.event_id, a.event_type, a.topic,
         CASE WHEN a.topic = 'backroom.orders' THEN a.payload
              ELSE (a.payload::jsonb - 'data')::text END
  FROM appended a
  WHERE (a.topic = 'backroom.orders' AND a.event_type <> 'CartAbandoned')
     OR a.topic = 'backroom.internal.payment-instructions'
  ORDER BY a.id;
  RETURN NULL;
END $$
"""


def upgrade() -> None:
    op.create_table(
        "order_events",
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("order_id", sa.String(length=200), nullable=False),
        sa.Column("direction", sa.String(length=10), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column("topic", sa.String(length=200), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column(
            "recorded_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("seq"),
        sa.CheckConstraint(
            "direction IN ('emitted', 'consumed')", name="ck_order_events_direction"
        ),
    )
    op.create_index("ix_order_events_order", "order_events", ["order_id", "seq"])
    # Retention (BACKROOM_RETENTION_ORDER_EVENTS_S) deletes the oldest first.
    op.create_index("ix_order_events_recorded", "order_events", ["recorded_at"])
    op.execute(_FUNCTION)
    op.execute(
        "CREATE TRIGGER outbox_journal_order_events AFTER INSERT ON outbox"
        " REFERENCING NEW TABLE AS appended FOR EACH STATEMENT"
        " EXECUTE FUNCTION journal_order_events()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS outbox_journal_order_events ON outbox")
    op.execute("DROP FUNCTION IF EXISTS journal_order_events()")
    op.drop_index("ix_order_events_recorded", table_name="order_events")
    op.drop_index("ix_order_events_order", table_name="order_events")
    op.drop_table("order_events")
