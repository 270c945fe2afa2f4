"""Payments tables: what is known per order, the money movements, and the sandbox PSP's ledger."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    func,
)

metadata = MetaData()

# One row per order, created by whichever fact arrives first (instruction, StockReserved, or a
# rejection/cancellation); its row lock serialises every decision about the order.
payment_orders = Table(
    "payment_orders",
    metadata,
    Column("order_id", String(100), primary_key=True),
    Column("customer_id", String(200)),
    Column("amount", BigInteger),
    Column("currency", String(3)),
    # The payment token, kept only until the charge is decided or the order closes.
    Column("token", String(100)),
    Column("stock_reserved", Boolean, nullable=False, server_default="false"),
    Column("closed_reason", String(50)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("(amount IS NULL) = (currency IS NULL)", name="ck_payment_orders_money"),
)

# Money movements: one capture attempt per order (captured, failed, or refunded once its refund
# went through) and at most one (full) refund; the unique constraint is the "charged at most
# once per order" guarantee, whatever is retried or redelivered.
payments = Table(
    "payments",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("order_id", String(100), nullable=False),
    Column("customer_id", String(200), nullable=False),
    Column("kind", String(10), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(10), nullable=False),
    Column("provider_ref", String(100)),
    Column("failure_reason", String(100)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("refunded_at", DateTime(timezone=True)),
    UniqueConstraint("order_id", "kind", name="uq_payments_order_kind"),
    CheckConstraint("kind IN ('capture', 'refund')", name="ck_payments_kind"),
    CheckConstraint("status IN ('captured', 'failed', 'refunded')", name="ck_payments_status"),
    CheckConstraint(
        "status = 'failed' OR provider_ref IS NOT NULL", name="ck_payments_ref_when_moved"
    ),
    Index("ix_payments_customer_created", "customer_id", "created_at", "id"),
    Index("ix_payments_created", "created_at", "id"),
)

# The sandbox PSP's own memory, written on its own connection and committed at once (as a real
# PSP remembers idempotency keys whatever happens to our transaction). Never holds a token.
sandbox_ledger = Table(
    "sandbox_ledger",
    metadata,
    Column("idempotency_key", String(120), primary_key=True),
    Column("operation", String(10), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3)),
    Column("attempts", Integer, nullable=False),
    Column("ref", String(100), unique=True),
    Column("decline_reason", String(100)),
    Column("capture_ref", String(100)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
