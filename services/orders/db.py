"""Orders tables (orders with their priced snapshot, their status history, idempotency keys) and
every query on them, as repositories returning the domain's objects and read models."""

from collections.abc import Iterable
from datetime import datetime
from typing import Any

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
    insert,
    literal,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Row

from libs.events.common import Money, PricedLine
from libs.kit.db import DbSession
from services.orders.domain import (
    HistoryEntry,
    LockedOrder,
    Order,
    OrderStatus,
    OrderView,
    PendingOrder,
    StoredKey,
)

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


class Orders:
    """The orders table: one order written, locked, changed, or read with its history."""

    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def add(self, order: PendingOrder) -> OrderView:
        """Insert a pending order; returns it as written (RETURNING, no read back), without
        history."""
        row = (
            await self.session.execute(
                insert(orders)
                .values(
                    id=order.id,
                    customer_id=order.customer_id,
                    status=OrderStatus.PENDING.value,
                    region=order.region,
                    shipping_address=order.shipping_address,
                    email=order.email,
                    lines=[ln.model_dump(mode="json") for ln in order.lines],
                    currency=order.total.currency,
                    subtotal=order.subtotal.amount,
                    discount=order.discount.amount,
                    tax=order.tax.amount,
                    total=order.total.amount,
                    quote_id=order.quote_id,
                    reservation_deadline=order.reservation_deadline,
                    correlation_id=order.correlation_id,
                )
                .returning(*orders.c)
            )
        ).one()
        return _view(row, ())

    async def lock(self, order_id: str) -> LockedOrder | None:
        """The order, locked until the transaction ends (FOR UPDATE), or None."""
        row = (
            await self.session.execute(
                select(orders).where(orders.c.id == order_id).with_for_update()
            )
        ).first()
        return None if row is None else _locked(row)

    async def claim_overdue(self, now: datetime) -> LockedOrder | None:
        """The pending order whose deadline passed first before `now`, locked; rows another
        sweeper holds are skipped (SKIP LOCKED), so several sweepers share a backlog."""
        row = (
            await self.session.execute(
                select(orders)
                .where(orders.c.status == OrderStatus.PENDING.value)
                .where(orders.c.reservation_deadline < now)
                .order_by(orders.c.reservation_deadline)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
        ).first()
        return None if row is None else _locked(row)

    async def save(
        self, order_id: str, state: Order, tracking: dict[str, Any] | None = None
    ) -> None:
        """Write an order's new state (and its tracking, once shipped)."""
        values: dict[str, Any] = {
            "status": state.status.value,
            "reason": state.reason,
            "stock_reserved": state.stock_reserved,
            "cancellation_requested": state.cancellation_requested,
            "cancellation_reason": state.cancellation_reason,
            "cancel_stock_returned": state.cancel_stock_returned,
            "cancel_payment_returned": state.cancel_payment_returned,
            "updated_at": func.now(),
        }
        if tracking is not None:
            values["tracking"] = tracking
        await self.session.execute(update(orders).where(orders.c.id == order_id).values(**values))

    async def view(self, order_id: str) -> OrderView | None:
        row = (await self.session.execute(select(orders).where(orders.c.id == order_id))).first()
        if row is None:
            return None
        history = await self._histories([order_id])
        return _view(row, history.get(order_id, ()))

    async def newest(
        self,
        *,
        customer_id: str | None,
        status: OrderStatus | None,
        before: tuple[datetime, str] | None,
        limit: int,
    ) -> list[OrderView]:
        """Up to `limit` orders, newest first (created_at, then id), strictly after the
        (created_at, id) position `before` when given; one customer's or everyone's."""
        query = select(orders).order_by(orders.c.created_at.desc(), orders.c.id.desc()).limit(limit)
        if customer_id is not None:
            query = query.where(orders.c.customer_id == customer_id)
        if status is not None:
            query = query.where(orders.c.status == status.value)
        if before is not None:
            created_at, order_id = before
            query = query.where(
                tuple_(orders.c.created_at, orders.c.id)
                < tuple_(
                    literal(created_at, orders.c.created_at.type),
                    literal(order_id, orders.c.id.type),
                )
            )
        rows = list((await self.session.execute(query)).all())
        history = await self._histories([r.id for r in rows])
        return [_view(r, history.get(r.id, ())) for r in rows]

    async def _histories(self, order_ids: list[str]) -> dict[str, tuple[HistoryEntry, ...]]:
        """The orders' histories, oldest first, in one query."""
        if not order_ids:
            return {}
        rows = await self.session.execute(
            select(order_history)
            .where(order_history.c.order_id.in_(order_ids))
            .order_by(order_history.c.id)
        )
        by_order: dict[str, list[HistoryEntry]] = {}
        for row in rows:
            by_order.setdefault(row.order_id, []).append(_entry(row))
        return {order_id: tuple(entries) for order_id, entries in by_order.items()}


class OrderHistory:
    """Each status an order took, appended as it moves."""

    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def append(self, order_id: str, status: OrderStatus, reason: str | None) -> HistoryEntry:
        row = (
            await self.session.execute(
                insert(order_history)
                .values(order_id=order_id, status=status.value, reason=reason)
                .returning(order_history.c.status, order_history.c.reason, order_history.c.at)
            )
        ).one()
        return _entry(row)


# The key claim is text: SQLAlchemy 2.0 never caches PostgreSQL's insert construct (the one with
# ON CONFLICT; inherit_cache=False), so it compiled this statement of every checkout again on each
# execution, while a text constant is compiled once.
CLAIM_IDEMPOTENCY_KEY = text(
    "INSERT INTO idempotency_keys (customer_id, key, request_hash, order_id)"
    " VALUES (:customer_id, :key, :request_hash, :order_id)"
    " ON CONFLICT DO NOTHING"
    " RETURNING idempotency_keys.order_id"
)


class IdempotencyKeys:
    """Per customer, the request each Idempotency-Key first came with and the order it placed."""

    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def claim(self, customer_id: str, key: str, request_hash: str, order_id: str) -> bool:
        """Take the key for `order_id`; False when it is taken. The primary key decides between
        concurrent requests: the second waits for the first's commit (and is False then) or
        rollback (and takes it)."""
        claimed = await self.session.scalar(
            CLAIM_IDEMPOTENCY_KEY,
            {
                "customer_id": customer_id,
                "key": key,
                "request_hash": request_hash,
                "order_id": order_id,
            },
        )
        return claimed is not None

    async def find(self, customer_id: str, key: str) -> StoredKey | None:
        row = (
            await self.session.execute(
                select(idempotency_keys.c.request_hash, idempotency_keys.c.order_id).where(
                    idempotency_keys.c.customer_id == customer_id, idempotency_keys.c.key == key
                )
            )
        ).first()
        return None if row is None else StoredKey(row.request_hash, row.order_id)


class Store:
    """The orders repositories on one transaction's session."""

    def __init__(self, session: DbSession) -> None:
        self.orders = Orders(session)
        self.history = OrderHistory(session)
        self.keys = IdempotencyKeys(session)


def _lines(raw: Iterable[dict[str, Any]]) -> tuple[PricedLine, ...]:
    return tuple(PricedLine.model_validate(ln) for ln in raw)


def _locked(row: Row[Any]) -> LockedOrder:
    return LockedOrder(
        id=row.id,
        customer_id=row.customer_id,
        email=row.email,
        lines=_lines(row.lines),
        total=Money(amount=row.total, currency=row.currency),
        correlation_id=row.correlation_id,
        state=Order(
            status=OrderStatus(row.status),
            reservation_deadline=row.reservation_deadline,
            reason=row.reason,
            stock_reserved=row.stock_reserved,
            cancellation_requested=row.cancellation_requested,
            cancellation_reason=row.cancellation_reason,
            cancel_stock_returned=row.cancel_stock_returned,
            cancel_payment_returned=row.cancel_payment_returned,
        ),
    )


def _entry(row: Row[Any]) -> HistoryEntry:
    return HistoryEntry(status=OrderStatus(row.status), reason=row.reason, at=row.at)


def _view(row: Row[Any], history: tuple[HistoryEntry, ...]) -> OrderView:
    def money(amount: int) -> Money:
        return Money(amount=amount, currency=row.currency)

    return OrderView(
        id=row.id,
        customer_id=row.customer_id,
        status=OrderStatus(row.status),
        reason=row.reason,
        lines=_lines(row.lines),
        subtotal=money(row.subtotal),
        discount=money(row.discount),
        tax=money(row.tax),
        total=money(row.total),
        region=row.region,
        shipping_address=row.shipping_address,
        email=row.email,
        tracking=row.tracking,
        reservation_deadline=row.reservation_deadline,
        cancellation_requested=row.cancellation_requested,
        quote_id=row.quote_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        history=history,
    )
