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
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    UniqueConstraint,
    bindparam,
    column,
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
from libs.events.orders import CreditNote, Invoice
from libs.kit.db import DbSession
from services.orders.domain import (
    DocumentNumber,
    DocumentRef,
    HistoryEntry,
    InvoiceSource,
    LockedOrder,
    Order,
    OrderDocuments,
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
    # What payments gave back of the order's charge so far (PaymentRefunded amounts).
    Column("refunded", BigInteger, nullable=False, server_default=text("0")),
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


# The two writes of a checkout's hot path are text, each one statement over data-modifying WITHs:
# SQLAlchemy 2.0 never caches PostgreSQL's insert construct (the one with ON CONFLICT;
# inherit_cache=False) nor CTEs around it, while a text constant is compiled once; and what always
# runs together in one transaction costs one round trip instead of two or three. Each WITH part
# takes its values from the RETURNING of the one before (they all see the same snapshot, so none
# could read another's rows from the table).

# Every column of orders, in the Table's order: what `.columns(*orders.c, ...)` reads back.
_ORDER_COLUMNS = ", ".join(column.name for column in orders.c)

# The key claim decides: when the customer's key is taken (ON CONFLICT DO NOTHING, which waits
# for a concurrent claimer's commit or rollback as the single insert did), `claimed` is empty and
# neither the order nor its history row is written. The order's first history entry gets `at`
# from the column default, now(), as the insert of its own did.
PLACE_ORDER = (
    text(
        "WITH claimed AS ("
        "INSERT INTO idempotency_keys (customer_id, key, request_hash, order_id)"
        " VALUES (:customer_id, :key, :request_hash, :id)"
        " ON CONFLICT DO NOTHING"
        " RETURNING idempotency_keys.order_id"
        "), placed AS ("
        "INSERT INTO orders (id, customer_id, status, region, shipping_address, email, lines,"
        " currency, subtotal, discount, tax, total, quote_id, reservation_deadline,"
        " correlation_id)"
        " SELECT claimed.order_id, CAST(:customer_id AS text), CAST(:status AS text),"
        " CAST(:region AS text), CAST(:shipping_address AS jsonb), CAST(:email AS text),"
        " CAST(:lines AS jsonb), CAST(:currency AS text), CAST(:subtotal AS bigint),"
        " CAST(:discount AS bigint), CAST(:tax AS bigint), CAST(:total AS bigint),"
        " CAST(:quote_id AS text), CAST(:reservation_deadline AS timestamptz),"
        " CAST(:correlation_id AS text)"
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
    )
    .bindparams(
        bindparam("shipping_address", type_=orders.c.shipping_address.type),
        bindparam("lines", type_=orders.c.lines.type),
        bindparam("reservation_deadline", type_=orders.c.reservation_deadline.type),
    )
    .columns(
        *orders.c,
        column("history_status", order_history.c.status.type),
        column("history_reason", order_history.c.reason.type),
        column("history_at", order_history.c.at.type),
    )
)

# A new status: the order's new state and its history entry (status and reason as written, `at`
# now()). The tracking is written only when given (a NULL keeps the stored one, as `save` leaves
# the column out), hence a JSONB bind that sends None as SQL NULL, not as JSON null.
SAVE_STATUS_CHANGE = text(
    "WITH changed AS ("
    "UPDATE orders SET status = :status, reason = :reason, stock_reserved = :stock_reserved,"
    " cancellation_requested = :cancellation_requested,"
    " cancellation_reason = :cancellation_reason,"
    " cancel_stock_returned = :cancel_stock_returned,"
    " cancel_payment_returned = :cancel_payment_returned,"
    " tracking = COALESCE(CAST(:tracking AS jsonb), orders.tracking),"
    " updated_at = now()"
    " WHERE orders.id = :order_id"
    " RETURNING orders.id, orders.status, orders.reason"
    ")"
    " INSERT INTO order_history (order_id, status, reason)"
    " SELECT changed.id, changed.status, changed.reason FROM changed"
).bindparams(bindparam("tracking", type_=JSONB(none_as_null=True)))


def _state_columns(state: Order) -> dict[str, Any]:
    """The columns an order's state is stored in (`save` and `save_status_change` write them)."""
    return {
        "status": state.status.value,
        "reason": state.reason,
        "stock_reserved": state.stock_reserved,
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
        values: dict[str, Any] = {**_state_columns(state), "updated_at": func.now()}
        if tracking is not None:
            values["tracking"] = tracking
        await self.session.execute(update(orders).where(orders.c.id == order_id).values(**values))

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


class IdempotencyKeys:
    """Per customer, the request each Idempotency-Key first came with and the order it placed
    (`Orders.add` claims a key with the order it places)."""

    def __init__(self, session: DbSession) -> None:
        self.session = session

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
        self.keys = IdempotencyKeys(session)
        self.invoices = Invoices(session)  # invoices and credit notes (issue 12)


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
        refunded=money(row.refunded) if row.refunded else None,
        reservation_deadline=row.reservation_deadline,
        cancellation_requested=row.cancellation_requested,
        quote_id=row.quote_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        history=history,
    )


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


class Invoices:
    """Invoices, credit notes and the counters that number them."""

    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def allocate(self, store: str, kind: str) -> DocumentNumber:
        row = (await self.session.execute(ALLOCATE_NUMBER, {"store": store, "kind": kind})).one()
        return DocumentNumber(kind, row.year, row.last_number, row.issued_at)

    async def source(self, order_id: str) -> InvoiceSource | None:
        """The order as its invoice needs it. Shipping columns are read when the table has them
        (`shipping`, `shipping_tax`: amounts in the order's currency, added by shipping rates)."""
        row = (await self.session.execute(select(orders).where(orders.c.id == order_id))).first()
        if row is None:
            return None
        fields = row._mapping

        def money(amount: int) -> Money:
            return Money(amount=amount, currency=row.currency)

        shipping = fields.get("shipping")
        shipping_tax = fields.get("shipping_tax")
        return InvoiceSource(
            order_id=row.id,
            customer_id=row.customer_id,
            email=row.email,
            shipping_address=row.shipping_address,
            lines=_lines(row.lines),
            subtotal=money(row.subtotal),
            discount=money(row.discount),
            tax=money(row.tax),
            total=money(row.total),
            shipping=_amount(shipping, row.currency),
            shipping_tax=_amount(shipping_tax, row.currency),
        )

    async def add_invoice(self, invoice: Invoice) -> None:
        await self.session.execute(
            insert(invoices).values(
                order_id=invoice.order_id,
                number=invoice.number,
                issued_at=invoice.issued_at,
                document=invoice.model_dump(mode="json"),
            )
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


def _amount(value: Any, currency: str) -> Money | None:
    """A shipping column's value as Money: minor units, or a stored Money object."""
    if value is None:
        return None
    if isinstance(value, dict):
        return Money(amount=int(value["amount"]), currency=str(value.get("currency", currency)))
    return Money(amount=int(value), currency=currency)
