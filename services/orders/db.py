"""Orders tables: orders with their priced snapshot, their status history, and idempotency keys."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

_STATUSES = "'pending', 'confirmed', 'shipped', 'delivered', 'rejected', 'cancelled'"

orders = Table(
    "orders",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("customer_id", String(200), nullable=False),
    Column("status", String(20), nullable=False),
    Column("reason", String(100)),
    Column("region", String(50), nullable=False),
    Column("shipping_address", JSONB, nullable=False),
    Column("email", String(254)),
    # The pricing quote's snapshot, charged exactly: per line {sku, quantity, unit_price,
    # discount, tax, total} as Money objects; order totals in minor units of `currency`.
    Column("lines", JSONB, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("subtotal", BigInteger, nullable=False),
    Column("discount", BigInteger, nullable=False),
    Column("tax", BigInteger, nullable=False),
    Column("total", BigInteger, nullable=False),
    Column("quote_id", String(200)),
    Column("reservation_deadline", DateTime(timezone=True), nullable=False),
    Column("stock_reserved", Boolean, nullable=False, server_default=text("false")),
    Column("cancellation_requested", Boolean, nullable=False, server_default=text("false")),
    Column("cancellation_reason", String(100)),
    Column("cancel_stock_returned", Boolean, nullable=False, server_default=text("false")),
    Column("cancel_payment_returned", Boolean, nullable=False, server_default=text("false")),
    Column("tracking", JSONB),
    # The request id that placed the order: events the deadline sweep causes carry it too.
    Column("correlation_id", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint(f"status IN ({_STATUSES})", name="ck_orders_status"),
    CheckConstraint("total >= 0", name="ck_orders_total_not_negative"),
    Index("ix_orders_customer_created", "customer_id", "created_at", "id"),
    Index("ix_orders_created", "created_at", "id"),
    # The deadline sweep only ever looks at pending orders.
    Index(
        "ix_orders_pending_deadline",
        "reservation_deadline",
        postgresql_where=text("status = 'pending'"),
    ),
)

order_history = Table(
    "order_history",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("order_id", String(64), ForeignKey("orders.id"), nullable=False),
    Column("status", String(20), nullable=False),
    Column("reason", String(100)),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_order_history_order", "order_id", "id"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("customer_id", String(200), nullable=False),
    Column("key", String(200), nullable=False),
    Column("request_hash", String(64), nullable=False),
    # Deferred: the key row is inserted first, so its primary key decides between two
    # concurrent identical requests before either writes an order.
    Column(
        "order_id",
        String(64),
        ForeignKey("orders.id", deferrable=True, initially="DEFERRED"),
        nullable=False,
    ),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("customer_id", "key"),
)
