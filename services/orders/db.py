"""Orders tables (orders with their priced snapshot, their status history, idempotency keys, carts)
and every query on them, as repositories returning the domain's objects and read models."""

import hashlib
import json
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    Interval,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Row
from sqlalchemy.sql.elements import TextClause

from libs.events.common import BackorderedLine, Money, PricedLine
from libs.events.orders import CreditNote, Invoice
from libs.kit.db import Database, DbSession
from libs.kit.inbox import claim_delivery
from libs.kit.retention import PruneTask
from services.orders.domain import (
    Cart,
    CartLine,
    CartStatus,
    Channel,
    DocumentNumber,
    DocumentRef,
    HistoryEntry,
    InvoiceSource,
    JournalEntry,
    LockedOrder,
    Order,
    OrderDocuments,
    OrderReturn,
    OrderStatus,
    OrderView,
    OverdueOrder,
    PendingOrder,
    ReceivedLine,
    ReturnLine,
    ReturnStatus,
    ShipmentIntent,
    ShipmentStatus,
    ShipmentView,
    StoredKey,
    TrackedShipment,
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
    Column("paid", Boolean, nullable=False, server_default=text("false")),
    Column("cancellation_requested", Boolean, nullable=False, server_default=text("false")),
    Column("cancellation_reason", String(100)),
    Column("cancel_stock_returned", Boolean, nullable=False, server_default=text("false")),
    Column("cancel_payment_returned", Boolean, nullable=False, server_default=text("false")),
    Column("tracking", JSONB),
    # What payments gave back of the order's charge so far (PaymentRefunded amounts).
    Column("refunded", BigInteger, nullable=False, server_default=text("0")),
    # The request id that placed the order: events the deadline sweep causes carry it too.
    Column("correlation_id", String(200), nullable=False),
    # The quote's shipping line (issue 12): net minor units of `currency` (its tax is in `tax`,
    # both are in `total`) and the method's code (NULL: the region had no shipping methods).
    Column("shipping", BigInteger, nullable=False, server_default=text("0")),
    Column("shipping_method", String(64)),
    # The parcel's weight in grams as pricing weighed the lines (0: unknown).
    Column("weight_g", BigInteger, nullable=False, server_default=text("0")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # Issue 13: the sales channel (catalog's code) the order came through.
    Column("channel", String(64), nullable=False, server_default=text("'web'")),
    CheckConstraint(f"status IN ({_STATUSES})", name="ck_orders_status"),
    CheckConstraint("total >= 0", name="ck_orders_total_not_negative"),
    Index("ix_orders_customer_created", "customer_id", "created_at", "id"),
    Index("ix_orders_created", "created_at", "id"),
    Index("ix_orders_channel_created", "channel", "created_at", "id"),  # issue 13
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


# The two writes of a checkout's hot path are text, each one statement over data-modifying WITHs:
# SQLAlchemy 2.0 never caches PostgreSQL's insert construct (the one with ON CONFLICT;
# inherit_cache=False) nor CTEs around it, while a text constant is compiled once; and what always
# runs together in one transaction costs one round trip instead of two or three. Each WITH part
# takes its values from the RETURNING of the one before (they all see the same snapshot, so none
# could read another's rows from the table).

# Every column of orders, in the Table's order: what the statements below read back.
_ORDER_COLUMNS = ", ".join(column.name for column in orders.c)

# The key claim decides: when the customer's key is taken (ON CONFLICT DO NOTHING, which waits
# for a concurrent claimer's commit or rollback as the single insert did), `claimed` is empty and
# neither the order nor its history row is written. The order's first history entry gets `at`
# from the column default, now(), as the insert of its own did.
PLACE_ORDER = text(
    "WITH claimed AS ("
    "INSERT INTO idempotency_keys (customer_id, key, request_hash, order_id)"
    " VALUES (:customer_id, :key, :request_hash, :id)"
    " ON CONFLICT DO NOTHING"
    " RETURNING idempotency_keys.order_id"
    "), placed AS ("
    "INSERT INTO orders (id, customer_id, status, region, shipping_address, email, lines,"
    " currency, subtotal, discount, tax, total, quote_id, reservation_deadline,"
    " correlation_id, shipping, shipping_method, weight_g, channel)"
    " SELECT claimed.order_id, CAST(:customer_id AS text), CAST(:status AS text),"
    " CAST(:region AS text), CAST(:shipping_address AS jsonb), CAST(:email AS text),"
    " CAST(:lines AS jsonb), CAST(:currency AS text), CAST(:subtotal AS bigint),"
    " CAST(:discount AS bigint), CAST(:tax AS bigint), CAST(:total AS bigint),"
    " CAST(:quote_id AS text), CAST(:reservation_deadline AS timestamptz),"
    " CAST(:correlation_id AS text), CAST(:shipping AS bigint),"
    " CAST(:shipping_method AS text), CAST(:weight_g AS bigint), CAST(:channel AS text)"
    " FROM claimed"
    f" RETURNING {_ORDER_COLUMNS}"
    "), entry AS ("
    "INSERT INTO order_history (order_id, status, reason)"
    " SELECT placed.id, placed.status, placed.reason FROM placed"
    " RETURNING order_history.order_id, order_history.status, order_history.reason,"
    " order_history.at"
    ")"
    " SELECT "
    + ", ".join(f"placed.{column.name}" for column in orders.c)
    + ", entry.status AS history_status, entry.reason AS history_reason,"
    " entry.at AS history_at"
    " FROM placed JOIN entry ON entry.order_id = placed.id"
).bindparams(
    bindparam("shipping_address", type_=orders.c.shipping_address.type),
    bindparam("lines", type_=orders.c.lines.type),
    bindparam("reservation_deadline", type_=orders.c.reservation_deadline.type),
)

# A new status: the order's new state and its history entry (status and reason as written, `at`
# now()). The tracking is written only when given (a NULL keeps the stored one, as `save` leaves
# the column out), hence a JSONB bind that sends None as SQL NULL, not as JSON null.
# An order's state (`_state_columns`), and its tracking when given (NULL keeps it).
_SAVE_STATE = (
    "UPDATE orders SET status = :status, reason = :reason, stock_reserved = :stock_reserved,"
    " paid = :paid,"
    " cancellation_requested = :cancellation_requested,"
    " cancellation_reason = :cancellation_reason,"
    " cancel_stock_returned = :cancel_stock_returned,"
    " cancel_payment_returned = :cancel_payment_returned,"
    " tracking = COALESCE(CAST(:tracking AS jsonb), orders.tracking),"
    " updated_at = now()"
    " WHERE orders.id = :order_id"
)
_TRACKING = bindparam("tracking", type_=JSONB(none_as_null=True))
SAVE_STATE = text(_SAVE_STATE).bindparams(_TRACKING)
SAVE_STATUS_CHANGE = text(
    "WITH changed AS (" + _SAVE_STATE + " RETURNING orders.id, orders.status, orders.reason"
    ")"
    " INSERT INTO order_history (order_id, status, reason)"
    " SELECT changed.id, changed.status, changed.reason FROM changed"
).bindparams(_TRACKING)


# The hot reads of one order (issue 10): fixed text, so they take DbSession's asyncpg path. JSONB
# columns come back parsed there too (SQLAlchemy's asyncpg dialect sets the connection's codec).
ORDER_BY_ID = text(f"SELECT {_ORDER_COLUMNS} FROM orders WHERE orders.id = :order_id")
LOCK_ORDER = text(f"SELECT {_ORDER_COLUMNS} FROM orders WHERE orders.id = :order_id FOR UPDATE")


def _state_columns(state: Order) -> dict[str, Any]:
    """The columns an order's state is stored in (`save` and `save_status_change` write them)."""
    return {
        "status": state.status.value,
        "reason": state.reason,
        "stock_reserved": state.stock_reserved,
        "paid": state.paid,
        "cancellation_requested": state.cancellation_requested,
        "cancellation_reason": state.cancellation_reason,
        "cancel_stock_returned": state.cancel_stock_returned,
        "cancel_payment_returned": state.cancel_payment_returned,
    }


class Orders:
    """The orders table: one order written, locked, changed, or read with its history."""

    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def add(self, order: PendingOrder, key: str, request_hash: str) -> OrderView | None:
        """Claim the customer's Idempotency-Key `key` (with the request's hash) for the order,
        insert it pending and append its first history entry, in one statement; returns it as
        written (RETURNING, no read back) with that entry, or None, with nothing written, when
        the key is taken. The key's primary key decides between concurrent requests: the second
        waits for the first's commit (and gets None) or rollback (and takes the key)."""
        row = (
            await self.session.execute(
                PLACE_ORDER,
                {
                    "key": key,
                    "request_hash": request_hash,
                    "id": order.id,
                    "customer_id": order.customer_id,
                    "status": OrderStatus.PENDING.value,
                    "region": order.region,
                    "shipping_address": order.shipping_address,
                    "email": order.email,
                    "lines": [ln.model_dump(mode="json") for ln in order.lines],
                    "currency": order.total.currency,
                    "subtotal": order.subtotal.amount,
                    "discount": order.discount.amount,
                    "tax": order.tax.amount,
                    "total": order.total.amount,
                    "quote_id": order.quote_id,
                    "reservation_deadline": order.reservation_deadline,
                    "correlation_id": order.correlation_id,
                    "shipping": order.shipping.amount if order.shipping else 0,
                    "shipping_method": order.shipping_method,
                    "weight_g": order.weight_g,
                    "channel": order.channel,
                },
            )
        ).first()
        if row is None:
            return None
        entry = HistoryEntry(
            status=OrderStatus(row.history_status), reason=row.history_reason, at=row.history_at
        )
        return _view(row, (entry,))

    async def lock(self, order_id: str) -> LockedOrder | None:
        """The order, locked until the transaction ends (FOR UPDATE), or None."""
        row = (await self.session.execute(LOCK_ORDER, {"order_id": order_id})).first()
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
        await self.session.execute(
            SAVE_STATE, {"order_id": order_id, **_state_columns(state), "tracking": tracking}
        )

    async def save_status_change(
        self, order_id: str, state: Order, tracking: dict[str, Any] | None = None
    ) -> None:
        """`save` for a state with a new status, and that status (with its reason) appended to
        the order's history, in one statement."""
        await self.session.execute(
            SAVE_STATUS_CHANGE,
            {"order_id": order_id, **_state_columns(state), "tracking": tracking},
        )

    async def add_refunded(self, order_id: str, amount: int) -> bool:
        """Count `amount` more as given back of the order's charge; False for an unknown order."""
        found = await self.session.scalar(
            update(orders)
            .where(orders.c.id == order_id)
            .values(refunded=orders.c.refunded + amount, updated_at=func.now())
            .returning(orders.c.id)
        )
        return found is not None

    async def view(self, order_id: str) -> OrderView | None:
        row = (await self.session.execute(select(orders).where(orders.c.id == order_id))).first()
        if row is None:
            return None
        history = await self._histories([order_id])
        views = [_view(row, history.get(order_id, ()))]
        views = await _with_backorders(self.session, views)  # issue 13
        return (await _with_returns(self.session, await with_shipments(self.session, views)))[0]

    async def newest(
        self,
        *,
        customer_id: str | None,
        status: OrderStatus | None,
        before: tuple[datetime, str] | None,
        limit: int,
        channel: str | None = None,
    ) -> list[OrderView]:
        """Up to `limit` orders, newest first (created_at, then id), strictly after the
        (created_at, id) position `before` when given; one customer's or everyone's, of one
        channel or all."""
        query = select(orders).order_by(orders.c.created_at.desc(), orders.c.id.desc()).limit(limit)
        if customer_id is not None:
            query = query.where(orders.c.customer_id == customer_id)
        if channel is not None:
            query = query.where(orders.c.channel == channel)
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
        views = [_view(r, history.get(r.id, ())) for r in rows]
        views = await _with_backorders(self.session, views)  # issue 13
        return await _with_returns(self.session, await with_shipments(self.session, views))

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


# Every checkout's first reads (the key, the channel): plain text, so they take the kit's fast
# path (libs/kit/db.py) instead of SQLAlchemy's execution of a select() (issue 10).
FIND_KEY = text(
    "SELECT request_hash, order_id FROM idempotency_keys"
    " WHERE customer_id = :customer_id AND key = :key"
)


class IdempotencyKeys:
    """Per customer, the request each Idempotency-Key first came with and the order it placed
    (`Orders.add` claims a key with the order it places)."""

    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def find(self, customer_id: str, key: str) -> StoredKey | None:
        row = (
            await self.session.execute(FIND_KEY, {"customer_id": customer_id, "key": key})
        ).first()
        return None if row is None else StoredKey(row.request_hash, row.order_id)


class Store:
    """The orders repositories on one transaction's session."""

    def __init__(self, session: DbSession) -> None:
        self.orders = Orders(session)
        self.keys = IdempotencyKeys(session)
        self.carts = Carts(session)
        self.shipments = Shipments(session)
        self.carrier_deliveries = CarrierDeliveries(session)
        self.returns = OrderReturns(session)
        self.invoices = Invoices(session)  # invoices and credit notes (issue 12)
        self.channels = Channels(session)  # issue 13

        self.backorders = OrderBackorders(session)  # issue 13
        self.journal = OrderEvents(session)  # issue 14: the timeline's events


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
        channel=row.channel,
        placed_at=row.created_at,
        shipping_address=row.shipping_address,
        weight_g=row.weight_g,
        state=Order(
            status=OrderStatus(row.status),
            reservation_deadline=row.reservation_deadline,
            reason=row.reason,
            stock_reserved=row.stock_reserved,
            paid=row.paid,
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
        refunded=money(row.refunded) if row.refunded else None,
        reservation_deadline=row.reservation_deadline,
        cancellation_requested=row.cancellation_requested,
        quote_id=row.quote_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        history=history,
        shipping=money(row.shipping),
        shipping_method=row.shipping_method,
        channel=row.channel,
    )


# --- carts (issue 12) ---------------------------------------------------------------------------

_CART_STATUSES = "'open', 'checked_out'"

carts = Table(
    "carts",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("customer_id", String(200), nullable=False),
    Column("status", String(20), nullable=False),
    # The token's receipt address when the cart was last changed: what CartAbandoned tells.
    Column("email", String(254)),
    # One more with every change: a checkout closes the cart only at the revision it ordered.
    Column("revision", BigInteger, nullable=False, server_default=text("0")),
    Column("order_id", String(64), ForeignKey("orders.id")),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # The service clock's time of the last change: the idle period starts there.
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # Set when this idle period's CartAbandoned was emitted; a change clears it.
    Column("abandoned_at", DateTime(timezone=True)),
    CheckConstraint(f"status IN ({_CART_STATUSES})", name="ck_carts_status"),
    CheckConstraint(
        "(status = 'checked_out') = (order_id IS NOT NULL)", name="ck_carts_order_when_checked_out"
    ),
    # The abandonment sweep only ever looks at open carts not yet reported for this idle period.
    Index(
        "ix_carts_open_idle",
        "updated_at",
        postgresql_where=text("status = 'open' AND abandoned_at IS NULL"),
    ),
)

cart_lines = Table(
    "cart_lines",
    metadata,
    Column("cart_id", String(64), ForeignKey("carts.id"), nullable=False),
    Column("sku", String(64), nullable=False),
    # Insertion order: lines are shown (and ordered) in the order they were first added.
    Column("position", BigInteger, Identity(always=True), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    # Catalog's price when the line was last set (minor units of `currency`), if it had one.
    Column("seen_price", BigInteger),
    Column("seen_currency", String(3)),
    PrimaryKeyConstraint("cart_id", "sku"),
    CheckConstraint("quantity > 0", name="ck_cart_lines_quantity_positive"),
)

# A line set to a quantity: a new row, or the existing one changed in place (ON CONFLICT on the
# (cart_id, sku) key), so two requests setting two skus at once both keep their line.
SET_CART_LINE = text(
    "INSERT INTO cart_lines (cart_id, sku, quantity, seen_price, seen_currency)"
    " VALUES (:cart_id, :sku, :quantity, :seen_price, :seen_currency)"
    " ON CONFLICT (cart_id, sku) DO UPDATE SET quantity = excluded.quantity,"
    " seen_price = excluded.seen_price, seen_currency = excluded.seen_currency"
)

# Open, non-empty carts idle since before :idle_before and not yet reported, oldest first, each
# marked abandoned in the same statement; rows another sweeper holds are skipped (SKIP LOCKED),
# so two replicas never report one cart twice.
MARK_ABANDONED = text(
    "WITH due AS ("
    "SELECT carts.id FROM carts"
    " WHERE carts.status = 'open' AND carts.abandoned_at IS NULL"
    " AND carts.updated_at < :idle_before"
    " AND EXISTS (SELECT 1 FROM cart_lines WHERE cart_lines.cart_id = carts.id)"
    " ORDER BY carts.updated_at LIMIT :limit"
    " FOR UPDATE OF carts SKIP LOCKED"
    ")"
    " UPDATE carts SET abandoned_at = :now FROM due WHERE carts.id = due.id"
    " RETURNING carts.id"
).bindparams(
    bindparam("idle_before", type_=carts.c.updated_at.type),
    bindparam("now", type_=carts.c.abandoned_at.type),
)


class Carts:
    """The carts and their lines: written, locked for a change, closed by a checkout, swept."""

    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def add(self, cart: Cart) -> None:
        await self.session.execute(
            carts.insert().values(
                id=cart.id,
                customer_id=cart.customer_id,
                status=cart.status.value,
                email=cart.email,
                revision=cart.revision,
                created_at=cart.created_at,
                updated_at=cart.updated_at,
            )
        )
        for line in cart.lines:
            await self.set_line(cart.id, line)

    async def get(self, cart_id: str) -> Cart | None:
        row = (await self.session.execute(select(carts).where(carts.c.id == cart_id))).first()
        return None if row is None else await self._cart(row)

    async def lock(self, cart_id: str) -> Cart | None:
        """The cart, its row locked until the transaction ends (FOR UPDATE): line changes and
        the checkout's close take their turns on it."""
        row = (
            await self.session.execute(select(carts).where(carts.c.id == cart_id).with_for_update())
        ).first()
        return None if row is None else await self._cart(row)

    async def set_line(self, cart_id: str, line: CartLine) -> None:
        price = line.seen_price
        await self.session.execute(
            SET_CART_LINE,
            {
                "cart_id": cart_id,
                "sku": line.sku,
                "quantity": line.quantity,
                "seen_price": price.amount if price else None,
                "seen_currency": price.currency if price else None,
            },
        )

    async def remove_line(self, cart_id: str, sku: str) -> bool:
        removed = await self.session.scalar(
            cart_lines.delete()
            .where(cart_lines.c.cart_id == cart_id, cart_lines.c.sku == sku)
            .returning(cart_lines.c.sku)
        )
        return removed is not None

    async def touch(self, cart_id: str, now: datetime, email: str | None) -> None:
        """A change: the next revision, a new idle period (abandonment cleared)."""
        await self.session.execute(
            update(carts)
            .where(carts.c.id == cart_id)
            .values(
                revision=carts.c.revision + 1,
                updated_at=now,
                abandoned_at=None,
                email=func.coalesce(literal(email, carts.c.email.type), carts.c.email),
            )
        )

    async def close(self, cart_id: str, order_id: str, revision: int, now: datetime) -> bool:
        """Check the cart out for the order, if it is still open at `revision`; False (nothing
        written) otherwise."""
        closed = await self.session.scalar(
            update(carts)
            .where(
                carts.c.id == cart_id,
                carts.c.status == CartStatus.OPEN.value,
                carts.c.revision == revision,
            )
            .values(
                status=CartStatus.CHECKED_OUT.value,
                order_id=order_id,
                revision=carts.c.revision + 1,
                updated_at=now,
            )
            .returning(carts.c.id)
        )
        return closed is not None

    async def mark_abandoned(self, idle_before: datetime, now: datetime, limit: int) -> list[Cart]:
        marked = await self.session.execute(
            MARK_ABANDONED, {"idle_before": idle_before, "now": now, "limit": limit}
        )
        ids = [row.id for row in marked]
        if not ids:
            return []
        rows = (await self.session.execute(select(carts).where(carts.c.id.in_(ids)))).all()
        lines = await self._lines(ids)
        found = [_cart(row, lines.get(row.id, ())) for row in rows]
        return sorted(found, key=lambda c: (c.updated_at, c.id))

    async def _cart(self, row: Row[Any]) -> Cart:
        lines = await self._lines([row.id])
        return _cart(row, lines.get(row.id, ()))

    async def _lines(self, cart_ids: list[str]) -> dict[str, tuple[CartLine, ...]]:
        rows = await self.session.execute(
            select(cart_lines)
            .where(cart_lines.c.cart_id.in_(cart_ids))
            .order_by(cart_lines.c.position)
        )
        by_cart: dict[str, list[CartLine]] = {}
        for row in rows:
            price = (
                Money(amount=row.seen_price, currency=row.seen_currency)
                if row.seen_price is not None and row.seen_currency
                else None
            )
            by_cart.setdefault(row.cart_id, []).append(CartLine(row.sku, row.quantity, price))
        return {cart_id: tuple(lines) for cart_id, lines in by_cart.items()}


def _cart(row: Row[Any], lines: tuple[CartLine, ...]) -> Cart:
    return Cart(
        id=row.id,
        customer_id=row.customer_id,
        status=CartStatus(row.status),
        email=row.email,
        lines=lines,
        revision=row.revision,
        order_id=row.order_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        abandoned_at=row.abandoned_at,
    )


# --- shipments (issue 12) ---

_SHIPMENT_STATUSES = ", ".join(f"'{s.value}'" for s in ShipmentStatus)

shipments = Table(
    "shipments",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("order_id", String(64), ForeignKey("orders.id"), nullable=False),
    # The carrier that sells the label: set by the label worker's claim (its configured one).
    Column("carrier", String(20)),
    Column("status", String(20), nullable=False),
    # The shipment the order's confirmation asked for (one per order); an operator's are not.
    Column("automatic", Boolean, nullable=False, server_default=text("false")),
    Column("tracking_number", String(100)),
    Column("carrier_ref", String(200)),
    Column("label_pdf", LargeBinary),
    Column("label_url", String(2000)),
    Column("tracking_url", String(2000)),
    Column("failure_reason", String(500)),
    # The label worker's claims: how many, and until when the last one holds.
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("lease_until", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint(f"status IN ({_SHIPMENT_STATUSES})", name="ck_shipments_status"),
    Index("ix_shipments_order", "order_id", "created_at"),
    Index("ux_shipments_automatic", "order_id", unique=True, postgresql_where=text("automatic")),
    Index(
        "ux_shipments_tracking",
        "carrier",
        "tracking_number",
        unique=True,
        postgresql_where=text("tracking_number IS NOT NULL"),
    ),
    Index("ix_shipments_pending", "lease_until", postgresql_where=text("status = 'pending'")),
)
_s = shipments.c


def _shipment_view(row: Row[Any]) -> ShipmentView:
    return ShipmentView(
        id=row.id,
        order_id=row.order_id,
        carrier=row.carrier,
        status=ShipmentStatus(row.status),
        tracking_number=row.tracking_number,
        label_url=row.label_url,
        tracking_url=row.tracking_url,
        created_at=row.created_at,
        failure_reason=row.failure_reason,
    )


# Every column but the label's bytes: what views read.
_VIEW_COLUMNS = [c for c in shipments.c if c.name != "label_pdf"]

# A label worker's outcome for the shipment it claimed (`attempts`), if that claim still holds
# it: fixed text on the kit's fast path (an update().values() construct took SQLAlchemy's
# execution and compiled its cache key on every label, issue 10).
_SETTLE_CLAIM = (
    ", lease_until = NULL, updated_at = now()"
    " WHERE id = :id AND status = :pending AND attempts = :attempts"
    " RETURNING " + ", ".join(c.name for c in _VIEW_COLUMNS)
)
RECORD_LABEL = text(
    "UPDATE shipments SET status = :status, tracking_number = :tracking_number,"
    " carrier_ref = :carrier_ref, label_pdf = :label_pdf, label_url = :label_url,"
    " tracking_url = :tracking_url" + _SETTLE_CLAIM
)
RECORD_NOT_BOUGHT = text(
    "UPDATE shipments SET status = :status, failure_reason = :failure_reason" + _SETTLE_CLAIM
)


async def with_shipments(session: DbSession, views: list[OrderView]) -> list[OrderView]:
    """The views with their orders' shipments (oldest first), in one query."""
    if not views:
        return views
    rows = await session.execute(
        select(*_VIEW_COLUMNS)
        .where(_s.order_id.in_([v.id for v in views]))
        .order_by(_s.created_at, _s.id)
    )
    by_order: dict[str, list[ShipmentView]] = {}
    for row in rows:
        by_order.setdefault(row.order_id, []).append(_shipment_view(row))
    return [replace(v, shipments=tuple(by_order.get(v.id, ()))) for v in views]


# A shipment to buy, skipped when the order has its automatic one already (the partial unique
# index): a text statement, as SQLAlchemy gives an INSERT .. ON CONFLICT no cache key.
# With a lease the shipment is written claimed (its first claim) for the carrier: the label
# worker of the transaction's process buys it without a claim of its own (issue 10).
ADD_SHIPMENT = text(
    "INSERT INTO shipments (id, order_id, status, automatic, carrier, attempts, lease_until)"
    " VALUES (:id, :order_id, :status, :automatic, :carrier,"
    " CASE WHEN :lease_s IS NULL THEN 0 ELSE 1 END,"
    " now() + make_interval(secs => :lease_s))"
    " ON CONFLICT DO NOTHING RETURNING shipments.id"
).bindparams(bindparam("lease_s", type_=Float()), bindparam("carrier", type_=String()))


class Shipments:
    """The shipments table: intents written with the order's confirmation, claimed by the label
    worker (SKIP LOCKED, with a lease), their outcomes, and their tracking."""

    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def add_intent(
        self,
        shipment_id: str,
        order_id: str,
        *,
        automatic: bool,
        carrier: str | None = None,
        lease_s: float | None = None,
    ) -> bool:
        """Record a shipment to buy, unclaimed, or with `lease_s` claimed for `carrier` by this
        transaction; False (nothing written) when the order already has its automatic one."""
        added = await self.session.scalar(
            ADD_SHIPMENT,
            {
                "id": shipment_id,
                "order_id": order_id,
                "status": ShipmentStatus.PENDING.value,
                "automatic": automatic,
                "carrier": carrier,
                "lease_s": lease_s,
            },
        )
        return added is not None

    async def claim_due(self, carrier: str, limit: int, lease_s: float) -> list[ShipmentIntent]:
        """Take up to `limit` pending shipments nobody holds (never claimed, or whose lease ran
        out) for `lease_s`, for `carrier`; rows another transaction holds are skipped. Each comes
        with what its order says now (status, address, lines)."""
        due = (
            select(_s.id)
            .where(_s.status == ShipmentStatus.PENDING.value)
            .where(or_(_s.lease_until.is_(None), _s.lease_until <= func.now()))
            .order_by(_s.lease_until.nulls_first(), _s.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        claimed = (
            update(shipments)
            .where(_s.id.in_(due))
            .values(
                attempts=_s.attempts + 1,
                lease_until=func.now() + literal(timedelta(seconds=lease_s), Interval()),
                carrier=func.coalesce(_s.carrier, carrier),
                updated_at=func.now(),
            )
            .returning(_s.id, _s.order_id, _s.carrier, _s.attempts)
        )
        taken = list((await self.session.execute(claimed)).all())
        if not taken:
            return []
        facts = {
            row.id: row
            for row in await self.session.execute(
                select(
                    orders.c.id,
                    orders.c.status,
                    orders.c.cancellation_requested,
                    orders.c.shipping_address,
                    orders.c.lines,
                    orders.c.correlation_id,
                    orders.c.weight_g,
                ).where(orders.c.id.in_({row.order_id for row in taken}))
            )
        }
        return [
            ShipmentIntent(
                id=row.id,
                order_id=row.order_id,
                carrier=row.carrier,
                attempts=row.attempts,
                order_status=OrderStatus(facts[row.order_id].status),
                cancellation_requested=facts[row.order_id].cancellation_requested,
                shipping_address=facts[row.order_id].shipping_address,
                lines=_lines(facts[row.order_id].lines),
                correlation_id=facts[row.order_id].correlation_id,
                weight_g=facts[row.order_id].weight_g,
            )
            for row in taken
        ]

    async def record_label(
        self,
        shipment_id: str,
        attempts: int,
        *,
        tracking_number: str,
        carrier_ref: str,
        label_pdf: bytes | None,
        label_url: str,
        tracking_url: str | None,
    ) -> ShipmentView | None:
        """The label bought under claim `attempts`; None when that claim no longer holds the
        shipment (its lease ran out and another claim took it, or it was settled)."""
        return await self._settle(
            RECORD_LABEL,
            shipment_id,
            attempts,
            status=ShipmentStatus.LABEL_CREATED.value,
            tracking_number=tracking_number,
            carrier_ref=carrier_ref,
            label_pdf=label_pdf,
            label_url=label_url,
            tracking_url=tracking_url,
        )

    async def record_not_bought(
        self, shipment_id: str, attempts: int, status: ShipmentStatus, reason: str
    ) -> ShipmentView | None:
        """`failed` (the carrier refused) or `cancelled` (the order is not leaving), with why."""
        return await self._settle(
            RECORD_NOT_BOUGHT,
            shipment_id,
            attempts,
            status=status.value,
            failure_reason=reason[:500],
        )

    async def _settle(
        self, statement: TextClause, shipment_id: str, attempts: int, **values: Any
    ) -> ShipmentView | None:
        params = {"id": shipment_id, "attempts": attempts, "pending": ShipmentStatus.PENDING.value}
        row = (await self.session.execute(statement, params | values)).first()
        return None if row is None else _shipment_view(row)

    async def lock_by_tracking(self, carrier: str, tracking_number: str) -> TrackedShipment | None:
        row = (
            await self.session.execute(
                select(_s.id, _s.order_id, _s.carrier, _s.tracking_number, _s.tracking_url)
                .add_columns(_s.status)
                .where(_s.carrier == carrier, _s.tracking_number == tracking_number)
                .with_for_update()
            )
        ).first()
        if row is None:
            return None
        return TrackedShipment(
            id=row.id,
            order_id=row.order_id,
            carrier=row.carrier,
            tracking_number=row.tracking_number,
            tracking_url=row.tracking_url,
            status=ShipmentStatus(row.status),
        )

    async def set_status(self, shipment_id: str, status: ShipmentStatus) -> None:
        await self.session.execute(
            update(shipments)
            .where(_s.id == shipment_id)
            .values(status=status.value, updated_at=func.now())
        )

    async def label(self, order_id: str, shipment_id: str) -> bytes | None:
        """The label PDF we hold for the order's shipment (None: no such shipment, or its label
        is at the carrier)."""
        found: bytes | None = await self.session.scalar(
            select(_s.label_pdf).where(_s.id == shipment_id, _s.order_id == order_id)
        )
        return found


class CarrierDeliveries:
    """The carrier webhooks already handled: the kit's inbox, keyed by the carrier's event id."""

    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def claim(self, carrier: str, event_id: str, event_type: str) -> bool:
        """False if this event of `carrier` was handled before (a redelivery)."""
        key = f"carrier:{carrier}:{event_id}"
        if len(key) > 64:  # the inbox's id column
            key = f"carrier:{carrier}:" + hashlib.sha256(event_id.encode()).hexdigest()[:40]
        return await claim_delivery(
            self.session, key, event_type[:100], f"webhook:carrier:{carrier}"
        )


# --- returns (issue 12) ---

order_returns = Table(
    "order_returns",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("order_id", String(64), ForeignKey("orders.id"), nullable=False),
    Column("status", String(20), nullable=False),
    # [{sku, quantity, reason}] as requested; [{sku, quantity, condition}] as received.
    Column("lines", JSONB, nullable=False),
    Column("received", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("currency", String(3), nullable=False),
    # The received units' share of the charge (set when received).
    Column("refund", BigInteger),
    Column("stock_done", Boolean, nullable=False, server_default=text("false")),
    Column("refund_done", Boolean, nullable=False, server_default=text("false")),
    # The customer's Idempotency-Key (optional), unique per order, and its request's hash.
    Column("idempotency_key", String(200)),
    Column("request_hash", String(64)),
    Column("requested_at", DateTime(timezone=True), nullable=False),
    Column("received_at", DateTime(timezone=True)),
    Column("completed_at", DateTime(timezone=True)),
    CheckConstraint(
        "status IN ('requested', 'received', 'completed')", name="ck_order_returns_status"
    ),
    CheckConstraint("refund IS NULL OR refund >= 0", name="ck_order_returns_refund"),
    UniqueConstraint("order_id", "idempotency_key", name="uq_order_returns_key"),
    Index("ix_order_returns_order", "order_id", "requested_at"),
)

_ret = order_returns.c


def _order_return(row: Row[Any]) -> OrderReturn:
    return OrderReturn(
        id=row.id,
        order_id=row.order_id,
        status=ReturnStatus(row.status),
        lines=tuple(
            ReturnLine(str(ln["sku"]), int(ln["quantity"]), str(ln["reason"])) for ln in row.lines
        ),
        requested_at=row.requested_at,
        received=tuple(
            ReceivedLine(str(ln["sku"]), int(ln["quantity"]), str(ln["condition"]))
            for ln in row.received
        ),
        refund=None if row.refund is None else Money(amount=row.refund, currency=row.currency),
        received_at=row.received_at,
        completed_at=row.completed_at,
        stock_done=row.stock_done,
        refund_done=row.refund_done,
    )


class OrderReturns:
    """Returns of orders. Changes are made with the order's row locked (Orders.lock), which
    serialises every decision about one order's returns."""

    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def add(
        self,
        order_return: OrderReturn,
        currency: str,
        idempotency_key: str | None,
        request_hash: str | None,
    ) -> None:
        await self.session.execute(
            order_returns.insert().values(
                id=order_return.id,
                order_id=order_return.order_id,
                status=order_return.status.value,
                lines=[
                    {"sku": ln.sku, "quantity": ln.quantity, "reason": ln.reason}
                    for ln in order_return.lines
                ],
                currency=currency,
                idempotency_key=idempotency_key,
                request_hash=request_hash,
                requested_at=order_return.requested_at,
            )
        )

    async def by_key(self, order_id: str, idempotency_key: str) -> tuple[OrderReturn, str] | None:
        """The return requested with this key for the order, and its request's hash."""
        row = (
            await self.session.execute(
                select(order_returns).where(
                    _ret.order_id == order_id, _ret.idempotency_key == idempotency_key
                )
            )
        ).first()
        return None if row is None else (_order_return(row), row.request_hash or "")

    async def of_order(self, order_id: str) -> tuple[OrderReturn, ...]:
        return (await self.of_orders([order_id])).get(order_id, ())

    async def of_orders(self, order_ids: list[str]) -> dict[str, tuple[OrderReturn, ...]]:
        """The orders' returns, oldest first, in one query."""
        if not order_ids:
            return {}
        rows = await self.session.execute(
            select(order_returns)
            .where(_ret.order_id.in_(order_ids))
            .order_by(_ret.requested_at, _ret.id)
        )
        by_order: dict[str, list[OrderReturn]] = {}
        for row in rows:
            by_order.setdefault(row.order_id, []).append(_order_return(row))
        return {order_id: tuple(found) for order_id, found in by_order.items()}

    async def get(self, return_id: str) -> OrderReturn | None:
        row = (
            await self.session.execute(select(order_returns).where(_ret.id == return_id))
        ).first()
        return None if row is None else _order_return(row)

    async def save(self, order_return: OrderReturn) -> None:
        """Write a return's state after it was received or one of its halves done."""
        await self.session.execute(
            update(order_returns)
            .where(_ret.id == order_return.id)
            .values(
                status=order_return.status.value,
                received=[
                    {"sku": ln.sku, "quantity": ln.quantity, "condition": ln.condition}
                    for ln in order_return.received
                ],
                refund=None if order_return.refund is None else order_return.refund.amount,
                currency=order_return.refund.currency
                if order_return.refund is not None
                else _ret.currency,
                stock_done=order_return.stock_done,
                refund_done=order_return.refund_done,
                received_at=order_return.received_at,
                completed_at=order_return.completed_at,
            )
        )

    async def delivered_at(self, order_id: str) -> datetime | None:
        """When the order's `delivered` history entry was written (None: not delivered)."""
        found: datetime | None = await self.session.scalar(
            select(func.max(order_history.c.at)).where(
                order_history.c.order_id == order_id,
                order_history.c.status == OrderStatus.DELIVERED.value,
            )
        )
        return found


async def _with_returns(session: DbSession, views: list[OrderView]) -> list[OrderView]:
    """The views with their returns (orders without any keep the default, none)."""
    found = await OrderReturns(session).of_orders([v.id for v in views])
    return [replace(v, returns=found[v.id]) if v.id in found else v for v in views]


# --- invoices and credit notes (issue 12) ---

# One row per (store, kind, year): the last number given out. Allocation is one upsert that
# takes the row's lock and keeps it until the transaction ends, so numbers are given out one
# transaction at a time per store, kind and year: a rollback gives its number back (the next
# allocation gets it again) and no number is skipped. The price is contention: confirmations of
# one store queue on that row from their allocation to their commit, which is why the
# allocation is the last write of the confirming transaction (only the outbox insert follows).
document_counters = Table(
    "document_counters",
    metadata,
    Column("store", String(50), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("year", Integer, nullable=False),
    Column("last_number", BigInteger, nullable=False),
    PrimaryKeyConstraint("store", "kind", "year"),
    CheckConstraint("kind IN ('invoice', 'credit_note')", name="ck_document_counters_kind"),
    CheckConstraint("last_number > 0", name="ck_document_counters_positive"),
)

invoices = Table(
    "invoices",
    metadata,
    # One invoice per order.
    Column("order_id", String(64), ForeignKey("orders.id"), primary_key=True),
    Column("number", String(64), nullable=False, unique=True),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    # The invoice exactly as issued (libs.events.orders.Invoice): what the PDF is rendered from.
    Column("document", JSONB, nullable=False),
)

credit_notes = Table(
    "credit_notes",
    metadata,
    Column("number", String(64), primary_key=True),
    Column("order_id", String(64), ForeignKey("orders.id"), nullable=False),
    Column("invoice_number", String(64), ForeignKey("invoices.number"), nullable=False),
    # The refund it credits: a refund is credited once, however often its event comes.
    Column("refund_id", String(200), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("tax", BigInteger, nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    Column("document", JSONB, nullable=False),
    CheckConstraint("amount >= 0", name="ck_credit_notes_amount_not_negative"),
    UniqueConstraint("order_id", "refund_id", name="uq_credit_notes_order_refund"),
    Index("ix_credit_notes_order", "order_id", "issued_at"),
)

# The year is the one of the transaction's now() in UTC, and now() is also the issue time the
# statement returns: a document issued at 23:59:59 on 31 December belongs to that year.
ALLOCATE_NUMBER = text(
    "INSERT INTO document_counters AS c (store, kind, year, last_number)"
    " VALUES (:store, :kind, CAST(EXTRACT(YEAR FROM now() AT TIME ZONE 'UTC') AS integer), 1)"
    " ON CONFLICT (store, kind, year) DO UPDATE SET last_number = c.last_number + 1"
    " RETURNING c.year, c.last_number, now() AS issued_at"
)


ADD_INVOICE = text(
    "INSERT INTO invoices (order_id, number, issued_at, document)"
    " VALUES (:order_id, :number, :issued_at, :document)"
).bindparams(bindparam("document", type_=JSONB))


class Invoices:
    """Invoices, credit notes and the counters that number them."""

    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def allocate(self, store: str, kind: str) -> DocumentNumber:
        row = (await self.session.execute(ALLOCATE_NUMBER, {"store": store, "kind": kind})).one()
        return DocumentNumber(kind, row.year, row.last_number, row.issued_at)

    async def source(self, order_id: str) -> InvoiceSource | None:
        """The order as its invoice needs it. The order keeps its shipping net; the tax on it is
        the order's tax beyond its lines' taxes (pricing taxes shipping at the region's rate)."""
        row = (await self.session.execute(ORDER_BY_ID, {"order_id": order_id})).first()
        if row is None:
            return None

        def money(amount: int) -> Money:
            return Money(amount=amount, currency=row.currency)

        lines = _lines(row.lines)
        shipping_tax = row.tax - sum(ln.tax.amount for ln in lines) if row.shipping else 0
        return InvoiceSource(
            order_id=row.id,
            customer_id=row.customer_id,
            email=row.email,
            shipping_address=row.shipping_address,
            lines=lines,
            subtotal=money(row.subtotal),
            discount=money(row.discount),
            tax=money(row.tax),
            total=money(row.total),
            shipping=money(row.shipping) if row.shipping else None,
            shipping_tax=money(shipping_tax) if row.shipping else None,
        )

    async def add_invoice(self, invoice: Invoice) -> None:
        await self.session.execute(
            ADD_INVOICE,
            {
                "order_id": invoice.order_id,
                "number": invoice.number,
                "issued_at": invoice.issued_at,
                "document": invoice.model_dump(mode="json"),
            },
        )

    async def invoice(self, order_id: str) -> Invoice | None:
        document = await self.session.scalar(
            select(invoices.c.document).where(invoices.c.order_id == order_id)
        )
        return None if document is None else Invoice.model_validate(document)

    async def add_credit_note(self, note: CreditNote) -> None:
        """Insert a credit note; a second note for the same refund violates `refund_id`'s
        unique key (the transaction then rolls back, giving its number back)."""
        await self.session.execute(
            insert(credit_notes).values(
                number=note.number,
                order_id=note.order_id,
                invoice_number=note.invoice_number,
                refund_id=note.refund_id,
                currency=note.currency,
                amount=note.amount.amount,
                tax=note.tax.amount,
                issued_at=note.issued_at,
                document=note.model_dump(mode="json"),
            )
        )

    async def credit_note_for_refund(self, order_id: str, refund_id: str) -> CreditNote | None:
        document = await self.session.scalar(
            select(credit_notes.c.document).where(
                credit_notes.c.order_id == order_id, credit_notes.c.refund_id == refund_id
            )
        )
        return None if document is None else CreditNote.model_validate(document)

    async def credit_note(self, order_id: str, number: str) -> CreditNote | None:
        document = await self.session.scalar(
            select(credit_notes.c.document).where(
                credit_notes.c.order_id == order_id, credit_notes.c.number == number
            )
        )
        return None if document is None else CreditNote.model_validate(document)

    async def credited(self, order_id: str) -> int:
        """What the order's credit notes gave back so far."""
        total = await self.session.scalar(
            select(func.coalesce(func.sum(credit_notes.c.amount), 0)).where(
                credit_notes.c.order_id == order_id
            )
        )
        return int(total or 0)

    async def documents(self, order_ids: list[str]) -> dict[str, OrderDocuments]:
        """Each order's invoice and credit notes (oldest first), in two queries."""
        if not order_ids:
            return {}
        found: dict[str, OrderDocuments] = {}
        for row in await self.session.execute(
            select(invoices.c.order_id, invoices.c.number, invoices.c.issued_at).where(
                invoices.c.order_id.in_(order_ids)
            )
        ):
            found[row.order_id] = OrderDocuments(DocumentRef(row.number, row.issued_at))
        notes: dict[str, list[DocumentRef]] = {}
        for row in await self.session.execute(
            select(credit_notes)
            .where(credit_notes.c.order_id.in_(order_ids))
            .order_by(credit_notes.c.issued_at, credit_notes.c.number)
        ):
            notes.setdefault(row.order_id, []).append(
                DocumentRef(
                    row.number, row.issued_at, Money(amount=row.amount, currency=row.currency)
                )
            )
        for order_id, refs in notes.items():
            invoice = found.get(order_id, OrderDocuments()).invoice
            found[order_id] = OrderDocuments(invoice, tuple(refs))
        return found


# --- channels (issue 13) ---

# Catalog's sales channels as its ChannelChanged events describe them (`web` is known without a
# row). `event_time` is the catalog event's: an older one (a DLQ replay) never overwrites it.
channels = Table(
    "channels",
    metadata,
    Column("code", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("active", Boolean, nullable=False),
    Column("event_time", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

RECORD_CHANNEL = text(
    "INSERT INTO channels (code, name, kind, active, event_time)"
    " VALUES (:code, :name, :kind, :active, :event_time)"
    " ON CONFLICT (code) DO UPDATE"
    " SET name = EXCLUDED.name, kind = EXCLUDED.kind, active = EXCLUDED.active,"
    " event_time = EXCLUDED.event_time, updated_at = now()"
    " WHERE channels.event_time <= EXCLUDED.event_time"
).bindparams(bindparam("event_time", type_=channels.c.event_time.type))


CHANNEL_OF = text("SELECT code, name, kind, active FROM channels WHERE code = :code")


class Channels:
    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def get(self, code: str) -> Channel | None:
        row = (await self.session.execute(CHANNEL_OF, {"code": code})).first()
        if row is None:
            return None
        return Channel(code=row.code, name=row.name, kind=row.kind, active=row.active)

    async def record(self, channel: Channel, event_time: datetime) -> None:
        await self.session.execute(
            RECORD_CHANNEL,
            {
                "code": channel.code,
                "name": channel.name,
                "kind": channel.kind,
                "active": channel.active,
                "event_time": event_time,
            },
        )


# --- backorders (issue 13) ---
# What inventory promised from incoming stock (StockReserved.backordered), and whether its
# BackorderFilled came (it may come before the order is confirmed). A backordered order's
# automatic shipment is written `awaiting_stock`, and turned `pending` by the fill.

order_backorders = Table(
    "order_backorders",
    metadata,
    Column("order_id", String(64), primary_key=True),
    # [{sku, quantity, expected_at}]
    Column("lines", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("filled_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

RECORD_BACKORDERS = text(
    "INSERT INTO order_backorders (order_id, lines) VALUES (:order_id, :lines)"
    " ON CONFLICT (order_id) DO UPDATE SET lines = excluded.lines, updated_at = now()"
    " WHERE order_backorders.lines = '[]'::jsonb"
).bindparams(bindparam("lines", type_=JSONB))

FILL_BACKORDERS = text(
    "INSERT INTO order_backorders (order_id, filled_at) VALUES (:order_id, now())"
    " ON CONFLICT (order_id) DO UPDATE SET filled_at = now(), updated_at = now()"
    " WHERE order_backorders.filled_at IS NULL"
    " RETURNING order_id"
)

BACKORDERS_OF = text("SELECT lines, filled_at FROM order_backorders WHERE order_id = :order_id")

ADD_HELD_SHIPMENT = text(
    "INSERT INTO shipments (id, order_id, status, automatic)"
    " VALUES (:id, :order_id, :status, true)"
    " ON CONFLICT DO NOTHING RETURNING shipments.id"
)


def _backordered_lines(raw: Iterable[dict[str, Any]]) -> tuple[BackorderedLine, ...]:
    return tuple(BackorderedLine.model_validate(line) for line in raw)


class OrderBackorders:
    """The order_backorders table, and the shipments a backorder holds."""

    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def record(self, order_id: str, lines: Iterable[BackorderedLine]) -> None:
        await self.session.execute(
            RECORD_BACKORDERS,
            {"order_id": order_id, "lines": [line.model_dump(mode="json") for line in lines]},
        )

    async def fill(self, order_id: str) -> bool:
        """Note the fill; False when it was noted before."""
        return (await self.session.scalar(FILL_BACKORDERS, {"order_id": order_id})) is not None

    async def get(self, order_id: str) -> tuple[tuple[BackorderedLine, ...], bool] | None:
        """The order's backordered lines and whether they were filled."""
        row = (await self.session.execute(BACKORDERS_OF, {"order_id": order_id})).first()
        if row is None:
            return None
        return _backordered_lines(row.lines), row.filled_at is not None

    async def add_held_shipment(self, shipment_id: str, order_id: str) -> bool:
        added = await self.session.scalar(
            ADD_HELD_SHIPMENT,
            {
                "id": shipment_id,
                "order_id": order_id,
                "status": ShipmentStatus.AWAITING_STOCK.value,
            },
        )
        return added is not None

    async def release_held(self, order_id: str) -> bool:
        """Held shipments of the order become pending (the label worker buys them)."""
        released = await self.session.execute(
            update(shipments)
            .where(_s.order_id == order_id, _s.status == ShipmentStatus.AWAITING_STOCK.value)
            .values(status=ShipmentStatus.PENDING.value, updated_at=func.now())
            .returning(_s.id)
        )
        return bool(released.all())


async def _with_backorders(session: DbSession, views: list[OrderView]) -> list[OrderView]:
    if not views:
        return views
    rows = await session.execute(
        select(order_backorders.c.order_id, order_backorders.c.lines).where(
            order_backorders.c.order_id.in_([v.id for v in views])
        )
    )
    lines = {row.order_id: _backordered_lines(row.lines) for row in rows}
    return [replace(v, backordered=lines[v.id]) if v.id in lines else v for v in views]


# --- metrics (issue 14) ---

# Read by the metrics poller on a timer: pending orders whose deadline has passed (the deadline
# sweep should have rejected them; a count that stays up means it is not running).
PENDING_OVERDUE_COUNT = text(
    "SELECT count(*) FROM orders WHERE status = 'pending' AND reservation_deadline < now()"
)


async def count_pending_overdue(db: Database) -> int:
    async with db.engine.connect() as conn:
        return int((await conn.execute(PENDING_OVERDUE_COUNT)).scalar_one())


# --- reconciliation (issue 14) ---

# Pending orders :grace_s or more past their deadline (by ix_orders_pending_deadline), oldest
# deadline first, at most :limit.
OVERDUE_PENDING = text(
    "SELECT id, reservation_deadline, stock_reserved, now() AS now FROM orders"
    " WHERE status = 'pending' AND reservation_deadline < now()"
    " - make_interval(secs => CAST(:grace_s AS double precision))"
    " ORDER BY reservation_deadline LIMIT :limit"
)


class ReconcileReads:
    """Orders' reconciliation queries: read-only, bounded, on their own connection."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def overdue_pending(
        self, grace_s: float, limit: int
    ) -> tuple[list[OverdueOrder], datetime | None]:
        """The overdue pending orders and the database's now (None when there are none)."""
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(OVERDUE_PENDING, {"grace_s": grace_s, "limit": limit})).all()
        pending = [OverdueOrder(r.id, r.reservation_deadline, r.stock_reserved) for r in rows]
        return pending, (rows[0].now if rows else None)


# --- retention (issue 14) ---

# An Idempotency-Key is remembered for `retention_idempotency_keys_s` (libs/kit/retention.py);
# the pruning job's range scan reads this index.
Index("ix_idempotency_keys_created", idempotency_keys.c.created_at)

PRUNE = (
    PruneTask(
        "idempotency_keys",
        text(
            "DELETE FROM idempotency_keys WHERE (customer_id, key) IN (SELECT customer_id, key"
            " FROM idempotency_keys WHERE created_at < :cutoff ORDER BY created_at LIMIT :limit)"
        ),
        "retention_idempotency_keys_s",
    ),
    PruneTask(
        "order_events",
        text(
            "DELETE FROM order_events WHERE seq IN (SELECT seq FROM order_events"
            " WHERE recorded_at < :cutoff ORDER BY recorded_at LIMIT :limit)"
        ),
        "retention_order_events_s",
    ),
)


# --- timeline (issue 14) ---

order_events = Table(
    "order_events",
    metadata,
    Column("seq", BigInteger, Identity(always=True), primary_key=True),
    Column("order_id", String(200), nullable=False),
    Column("direction", String(10), nullable=False),
    Column("event_id", String(64), nullable=False),
    Column("event_type", String(100), nullable=False),
    Column("topic", String(200), nullable=False),
    Column("payload", Text, nullable=False),  # the CloudEvent as published or received
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("direction IN ('emitted', 'consumed')", name="ck_order_events_direction"),
    Index("ix_order_events_order", "order_id", "seq"),
    Index("ix_order_events_recorded", "recorded_at"),
)

# A consumed event about an order, in the handler's transaction: one fixed-shape statement
# (emitted events are journaled by the outbox trigger of migration 0011_timeline).
RECORD_CONSUMED = text(
    "INSERT INTO order_events (order_id, direction, event_id, event_type, topic, payload)"
    " VALUES (:order_id, 'consumed', :event_id, :event_type, :topic, :payload)"
)
ORDER_EVENTS = text(
    "SELECT seq, direction, topic, payload FROM order_events WHERE order_id = :order_id"
    " ORDER BY seq"
)


def _journal_entry(row: Row[Any]) -> JournalEntry:
    event = json.loads(row.payload)
    return JournalEntry(
        seq=int(row.seq),
        direction=row.direction,
        id=str(event.get("id", "")),
        type=str(event.get("type", "")),
        topic=row.topic,
        source=str(event.get("source", "")),
        time=datetime.fromisoformat(str(event["time"])),
        subject=str(event.get("subject", "")),
        correlationid=event.get("correlationid"),
        causationid=event.get("causationid"),
        data=event.get("data") or {},
    )


class OrderEvents:
    """The journal of the events orders emitted and consumed about each order."""

    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def record_consumed(
        self, order_id: str, event_id: str, event_type: str, topic: str, payload: str
    ) -> None:
        await self.session.execute(
            RECORD_CONSUMED,
            {
                "order_id": order_id,
                "event_id": event_id,
                "event_type": event_type,
                "topic": topic,
                "payload": payload,
            },
        )

    async def of_order(self, order_id: str) -> list[JournalEntry]:
        """The order's journal, in insertion order."""
        rows = await self.session.execute(ORDER_EVENTS, {"order_id": order_id})
        return [_journal_entry(row) for row in rows]
