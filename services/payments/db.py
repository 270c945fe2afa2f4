"""Payments tables and every query on them; rows leave as domain objects.

The order's payment state (with the provider call it owes), the money movements, and the
sandbox PSP's ledger."""

import hashlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    Interval,
    MetaData,
    Row,
    String,
    Table,
    UniqueConstraint,
    bindparam,
    case,
    func,
    literal,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.elements import TextClause

from libs.kit.db import Database, DbSession
from libs.kit.inbox import claim_delivery
from services.payments.domain import (
    CaptureBalance,
    CaptureTally,
    Intent,
    LedgerEntry,
    NewPayment,
    NextAction,
    OrderPayment,
    Payment,
    Refund,
    RefundedCapture,
    RefundIntent,
    Trace,
    intent_of,
)

metadata = MetaData()

# Orders that owe the provider a call. Spelled out with literals, in the partial index and in the
# claim alike, so the planner can match the claim to the index even with a generic plan.
_OWES_A_CALL = "capture_status = 'pending' OR refund_status = 'pending'"

# One row per order, created by whichever fact arrives first (instruction, StockReserved, or a
# rejection/cancellation); its row lock serialises every decision about the order. It also
# holds the provider call the order owes (capture_status or refund_status 'pending'): claimed by
# the charger with a lease, carried out outside any transaction, its outcome recorded here.
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
    Column("refund_reason", String(100)),
    Column("capture_status", String(20)),
    Column("capture_ref", String(100)),
    Column("refund_status", String(10)),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("lease_until", DateTime(timezone=True)),
    Column("correlation_id", String(200)),
    Column("causation_id", String(200)),
    Column("refund_amount", BigInteger),
    # The provider's authorization while one holds the order's money (capture policy
    # on_shipment): captured when the order ships, voided if it closes first.
    Column("hold_ref", String(100)),
    Column("authorized_at", DateTime(timezone=True)),
    # Held past `hold_lifetime_s` and reported (PaymentFailed authorization_expired) once.
    Column("hold_lapsed", Boolean, nullable=False, server_default="false"),
    CheckConstraint("(amount IS NULL) = (currency IS NULL)", name="ck_payment_orders_money"),
    CheckConstraint(
        "capture_status IN ('pending', 'requires_action', 'authorized', 'captured', 'failed',"
        " 'refunded', 'voided')",
        name="ck_payment_orders_capture_status",
    ),
    CheckConstraint(
        "refund_status IN ('pending', 'refunded', 'failed')",
        name="ck_payment_orders_refund_status",
    ),
    Index(
        "ix_payment_orders_due",
        "lease_until",
        postgresql_where=text(_OWES_A_CALL),
    ),
)

# Money movements: one capture attempt per order (captured, failed, partially_refunded or
# refunded) and at most one refund row of an order's close; the unique constraint is the "charged
# at most once per order" guarantee, whatever is retried or redelivered. A row is written only
# with the provider's answer (or a decline decided without it), never for an intent. A capture
# row also keeps what refunds gave back (`refunded_amount`) and what refunds under way hold
# besides (`refund_reserved`, which counts both): the checks make "never more refunded than
# captured" the database's rule, whatever runs at once.
payments = Table(
    "payments",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("order_id", String(100), nullable=False),
    Column("customer_id", String(200), nullable=False),
    Column("kind", String(10), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(20), nullable=False),
    Column("provider_ref", String(100)),
    Column("failure_reason", String(100)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("refunded_at", DateTime(timezone=True)),
    Column("refunded_amount", BigInteger, nullable=False, server_default="0"),
    Column("refund_reserved", BigInteger, nullable=False, server_default="0"),
    Column("provider", String(20), nullable=False, server_default="sandbox"),
    # What the shopper must do while the status is requires_action (3-D Secure): {type,
    # client_secret, redirect_url}; the frontend completes it with the provider's library.
    Column("next_action", JSONB),
    UniqueConstraint("order_id", "kind", name="uq_payments_order_kind"),
    CheckConstraint("kind IN ('capture', 'refund')", name="ck_payments_kind"),
    CheckConstraint(
        "status IN ('requires_action', 'authorized', 'captured', 'failed', 'refunded',"
        " 'partially_refunded', 'voided')",
        name="ck_payments_status",
    ),
    CheckConstraint(
        "status = 'failed' OR provider_ref IS NOT NULL", name="ck_payments_ref_when_moved"
    ),
    CheckConstraint(
        "0 <= refunded_amount AND refunded_amount <= refund_reserved AND refund_reserved <= amount",
        name="ck_payments_refunds_within_capture",
    ),
    Index("ix_payments_customer_created", "customer_id", "created_at", "id"),
    Index("ix_payments_created", "created_at", "id"),
)

# Refunds of captures: those an operator asks for (`POST /payments/{id}/refunds`, owed to the
# provider while `pending`, claimed by the charger like an order's call) and the one an order's
# close made (recorded with its outcome). An operator's Idempotency-Key is unique per payment.
refunds = Table(
    "refunds",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("payment_id", String(36), nullable=False),
    Column("order_id", String(100), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("reason", String(200), nullable=False),
    Column("status", String(10), nullable=False),
    Column("capture_ref", String(100), nullable=False),
    Column("provider_ref", String(100)),
    Column("failure_reason", String(100)),
    Column("idempotency_key", String(200)),
    Column("request_hash", String(64)),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("lease_until", DateTime(timezone=True)),
    Column("correlation_id", String(200)),
    Column("causation_id", String(200)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("payment_id", "idempotency_key", name="uq_refunds_payment_key"),
    # Issue 12: the orders return a refund gives the share of (one refund per return).
    Column("return_id", String(64)),
    UniqueConstraint("return_id", name="uq_refunds_return"),
    CheckConstraint("status IN ('pending', 'succeeded', 'failed')", name="ck_refunds_status"),
    CheckConstraint("amount >= 0", name="ck_refunds_amount"),
    Index("ix_refunds_payment_created", "payment_id", "created_at", "id"),
    Index("ix_refunds_due", "lease_until", postgresql_where=text("status = 'pending'")),
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
    Column("capture_ref", String(100), index=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("behaviour", String(20)),
    Column("awaiting_action", Boolean, nullable=False, server_default="false"),
)

_o = payment_orders.c
_p = payments.c


def _order(row: Row[Any]) -> OrderPayment:
    return OrderPayment(
        order_id=row.order_id,
        customer_id=row.customer_id,
        amount=row.amount,
        currency=row.currency,
        token=row.token,
        stock_reserved=row.stock_reserved,
        closed_reason=row.closed_reason,
        refund_reason=row.refund_reason,
        capture_status=row.capture_status,
        capture_ref=row.capture_ref,
        refund_status=row.refund_status,
        attempts=row.attempts,
        refund_amount=row.refund_amount,
        hold_ref=row.hold_ref,
        hold_lapsed=row.hold_lapsed,
    )


def _intent(row: Row[Any]) -> Intent:
    return intent_of(_order(row), Trace(row.correlation_id, row.causation_id))


# The upserts are text: SQLAlchemy 2.0 never caches PostgreSQL's insert construct (the one with
# ON CONFLICT; inherit_cache=False), so it compiled these statements of every payment again on
# each execution, while a text constant is compiled once.

# The row `lock` returns: every column of payment_orders, in the Table's order (what
# `.columns(*payment_orders.c)` reads back).
_RETURNING_PAYMENT_ORDER = "RETURNING " + ", ".join(
    f"payment_orders.{column.name}" for column in payment_orders.c
)

# The first fact about an order creates its row, any later one locks it (the upsert's row lock),
# keeping the customer first known; `stock_reserved` true records that inventory holds the stock,
# false leaves the flag as it was (OR, on a NOT NULL column).
LOCK_PAYMENT_ORDER = text(
    "INSERT INTO payment_orders (order_id, customer_id, stock_reserved)"
    " VALUES (:order_id, :customer_id, :stock_reserved)"
    " ON CONFLICT (order_id) DO UPDATE"
    " SET customer_id = coalesce(payment_orders.customer_id, EXCLUDED.customer_id),"
    " stock_reserved = payment_orders.stock_reserved OR EXCLUDED.stock_reserved,"
    " updated_at = now()"
    f" {_RETURNING_PAYMENT_ORDER}"
)

# The writes of an order's payment state on every checkout (issue 10): fixed text, so they take
# DbSession's asyncpg path instead of compiling and executing an update() construct.
_SAVE_STATE = (
    "UPDATE payment_orders SET amount = :amount, currency = :currency, token = :token,"
    " closed_reason = :closed_reason, refund_reason = :refund_reason,"
    " capture_status = :capture_status, capture_ref = :capture_ref,"
    " refund_status = :refund_status, attempts = :attempts, refund_amount = :refund_amount,"
    " hold_ref = :hold_ref, updated_at = now()"
)
SAVE_PAYMENT_ORDER = text(_SAVE_STATE + " WHERE payment_orders.order_id = :order_id")
# With the provider call it now owes: unclaimed (no lease) or claimed for `lease_s` seconds.
SAVE_PAYMENT_ORDER_OWING = text(
    _SAVE_STATE + ", lease_until = CASE WHEN CAST(:lease_s AS double precision) IS NULL"
    " THEN NULL ELSE now() + make_interval(secs => CAST(:lease_s AS double precision)) END,"
    " correlation_id = :correlation_id, causation_id = :causation_id"
    " WHERE payment_orders.order_id = :order_id"
)
# The provider's answers, each only while the call it answers is still owed (none: no row).
# Every one ends the call's lease.
_SETTLED = ", lease_until = NULL, updated_at = now() WHERE payment_orders.order_id = :order_id"
SETTLE_CAPTURE = text(
    "UPDATE payment_orders SET capture_status = :status, capture_ref = :ref, token = NULL,"
    " hold_ref = CASE WHEN CAST(:authorized AS boolean) THEN :hold_ref ELSE hold_ref END,"
    " authorized_at = CASE WHEN CAST(:authorized AS boolean) THEN now() ELSE authorized_at END"
    + _SETTLED
    + f" AND payment_orders.capture_status = :expected {_RETURNING_PAYMENT_ORDER}"
)
SETTLE_RELEASE = text(
    "UPDATE payment_orders SET refund_status = :refund_status,"
    " capture_status = CASE WHEN CAST(:released AS boolean) THEN 'voided' ELSE capture_status END"
    + _SETTLED
    + " AND payment_orders.refund_status = 'pending'"
    f" AND payment_orders.capture_status = 'authorized' {_RETURNING_PAYMENT_ORDER}"
)
DROP_CAPTURE = text(
    "UPDATE payment_orders SET capture_status = NULL, token = NULL"
    + _SETTLED
    + f" AND payment_orders.capture_status = 'pending' {_RETURNING_PAYMENT_ORDER}"
)
SETTLE_REFUND = text(
    "UPDATE payment_orders SET refund_status = :status"
    + _SETTLED
    + f" AND payment_orders.refund_status = 'pending' {_RETURNING_PAYMENT_ORDER}"
)
LOCK_EXISTING = text(
    "SELECT " + ", ".join(column.name for column in payment_orders.c) + " FROM payment_orders"
    " WHERE order_id = :order_id FOR UPDATE"
)


def _claim(table: Table, owed: Any, limit: int, lease_s: float) -> Any:
    """Take up to `limit` owed provider calls of `table` nobody holds (never claimed, or whose
    claim's lease ran out: that claimer died or gave up) for `lease_s`, most overdue first; rows
    another transaction holds are skipped, not waited for. Returns every column."""
    key = table.primary_key.columns.values()[0]
    lease_until, attempts = table.c.lease_until, table.c.attempts
    due = (
        select(key)
        .where(owed, or_(lease_until.is_(None), lease_until <= func.now()))
        .order_by(lease_until.nulls_first())
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return (
        update(table)
        .where(key.in_(due))
        .values(
            attempts=attempts + 1,
            lease_until=func.now() + literal(timedelta(seconds=lease_s), Interval()),
        )
        .returning(*table.c)
    )


class PaymentOrders:
    """The order's payment state; `lock` first in every transaction that decides about it."""

    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def lock(
        self, order_id: str, customer_id: str | None = None, *, stock_reserved: bool = False
    ) -> OrderPayment:
        """Create the order's row if this is the first fact about it, and lock it either way (with
        `stock_reserved`, also record that inventory holds the stock)."""
        row = (
            await self.session.execute(
                LOCK_PAYMENT_ORDER,
                {
                    "order_id": order_id,
                    "customer_id": customer_id,
                    "stock_reserved": stock_reserved,
                },
            )
        ).one()
        return _order(row)

    async def save(
        self, order: OrderPayment, *, intent: Trace | None = None, lease_s: float | None = None
    ) -> None:
        """Write the state `lock` returned and a use case changed; with `intent`, the provider
        call it now owes starts in that event's story, unclaimed, or with `lease_s` claimed by
        this transaction for that long (`order.attempts` counts that claim)."""
        values: dict[str, Any] = {
            "order_id": order.order_id,
            "amount": order.amount,
            "currency": order.currency,
            "token": order.token,
            "closed_reason": order.closed_reason,
            "refund_reason": order.refund_reason,
            "capture_status": order.capture_status,
            "capture_ref": order.capture_ref,
            "refund_status": order.refund_status,
            "attempts": order.attempts,
            "refund_amount": order.refund_amount,
            "hold_ref": order.hold_ref,
        }
        if intent is None:
            await self.session.execute(SAVE_PAYMENT_ORDER, values)
            return
        values |= {
            "lease_s": lease_s,
            "correlation_id": intent.correlation_id,
            "causation_id": intent.causation_id,
        }
        await self.session.execute(SAVE_PAYMENT_ORDER_OWING, values)

    async def claim_due(self, limit: int, lease_s: float) -> list[Intent]:
        """Take up to `limit` owed provider calls nobody holds (never claimed, or whose claim's
        lease ran out: that claimer died or gave up) for `lease_s`; rows another transaction
        holds are skipped, not waited for."""
        statement = _claim(payment_orders, text(f"({_OWES_A_CALL})"), limit, lease_s)
        return [_intent(row) for row in (await self.session.execute(statement)).all()]

    async def settle_capture(
        self,
        order_id: str,
        status: Literal["requires_action", "authorized", "captured", "failed"],
        ref: str | None,
        *,
        awaiting: bool = False,
    ) -> OrderPayment | None:
        """Record the provider's answer to the order's pending capture (with `awaiting`: its
        verdict on one that awaited the shopper) and erase the token; an authorization keeps
        its reference as the hold. None if no such capture is left (another claim or delivery
        recorded it, or it was dropped)."""
        return await self._settle(
            SETTLE_CAPTURE,
            {
                "order_id": order_id,
                "status": status,
                "ref": ref,
                "authorized": status == "authorized",
                "hold_ref": ref,
                "expected": "requires_action" if awaiting else "pending",
            },
        )

    async def settle_release(self, order_id: str, *, released: bool) -> OrderPayment | None:
        """Record the provider's answer to releasing the order's hold: voided, or (declined)
        left for an operator; None if no release is owed any more."""
        return await self._settle(
            SETTLE_RELEASE,
            {
                "order_id": order_id,
                "refund_status": "refunded" if released else "failed",
                "released": released,
            },
        )

    async def drop_capture(self, order_id: str) -> OrderPayment | None:
        """The pending capture of a closed order that the provider never made: owed no more."""
        return await self._settle(DROP_CAPTURE, {"order_id": order_id})

    async def settle_refund(
        self, order_id: str, status: Literal["refunded", "failed"]
    ) -> OrderPayment | None:
        """Record the provider's answer to the order's pending refund; None if none is pending."""
        return await self._settle(SETTLE_REFUND, {"order_id": order_id, "status": status})

    async def _settle(self, statement: TextClause, values: dict[str, Any]) -> OrderPayment | None:
        row = (await self.session.execute(statement, values)).first()
        return None if row is None else _order(row)

    async def lapse_holds(self, lifetime_s: float, limit: int) -> list[OrderPayment]:
        """Mark up to `limit` holds authorized longer than `lifetime_s` ago, of open orders not
        shipped yet, as lapsed (each once; rows another transaction holds are skipped)."""
        lapsing = (
            select(_o.order_id)
            .where(
                _o.capture_status == "authorized",
                _o.refund_status.is_(None),
                _o.closed_reason.is_(None),
                _o.hold_lapsed.is_(False),
                _o.authorized_at <= func.now() - literal(timedelta(seconds=lifetime_s), Interval()),
            )
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        rows = await self.session.execute(
            update(payment_orders)
            .where(_o.order_id.in_(lapsing))
            .values(hold_lapsed=True, updated_at=func.now())
            .returning(*payment_orders.c)
        )
        return [_order(row) for row in rows.all()]

    async def lock_existing(self, order_id: str) -> OrderPayment | None:
        """The order's row locked, or None if payments never heard of the order (a provider's
        webhook may name one: it creates nothing)."""
        row = (await self.session.execute(LOCK_EXISTING, {"order_id": order_id})).first()
        return None if row is None else _order(row)

    async def customer_of(self, order_id: str) -> str | None:
        """Whose order this is, as far as payments knows (None: not known yet)."""
        return await self.session.scalar(select(_o.customer_id).where(_o.order_id == order_id))


class Payments:
    """The money movements of orders; those it adds name `provider`."""

    def __init__(self, session: DbSession, provider: str = "sandbox") -> None:
        self.session = session
        self.provider = provider

    async def add(self, payment: NewPayment) -> str:
        """Record one movement and return its id. The capture row of a payment that awaited the
        shopper (`requires_action`) is concluded in place, keeping its id; any other second
        capture (or refund) of an order is refused (DuplicateMovement) and rolls the
        transaction back."""
        action = payment.next_action
        written = await self.session.scalar(
            ADD_PAYMENT,
            {
                "id": payment.id,
                "order_id": payment.order_id,
                "customer_id": payment.customer_id,
                "kind": payment.kind,
                "amount": payment.amount,
                "currency": payment.currency,
                "status": payment.status,
                "provider_ref": payment.provider_ref,
                "failure_reason": payment.failure_reason,
                "provider": self.provider,
                "next_action": None
                if action is None
                else {
                    "type": action.type,
                    "client_secret": action.client_secret,
                    "redirect_url": action.redirect_url,
                },
            },
        )
        if written is None:
            raise DuplicateMovement(f"order {payment.order_id} has a {payment.kind} already")
        return str(written)

    async def mark_refunded(self, order_id: str) -> RefundedCapture | None:
        """An order's close gave back what was left of its capture: all of it is refunded now.
        None if it has no capture left to give back."""
        statement = (
            update(payments)
            .where(
                _p.order_id == order_id,
                _p.kind == "capture",
                _p.status.in_(("captured", "partially_refunded")),
            )
            .values(
                status="refunded",
                refunded_amount=_p.amount,
                refund_reserved=_p.amount,
                refunded_at=func.now(),
            )
            .returning(_p.id, _p.customer_id, _p.amount, _p.currency)
        )
        row = (await self.session.execute(statement)).first()
        if row is None:
            return None
        return RefundedCapture(
            payment_id=row.id, customer_id=row.customer_id, amount=row.amount, currency=row.currency
        )

    async def lock_capture(self, payment_id: str) -> CaptureBalance | None:
        """The capture `payment_id`, locked (refunds of one payment are decided one at a time);
        None if there is no such capture."""
        row = (
            await self.session.execute(
                select(payments).where(_p.id == payment_id, _p.kind == "capture").with_for_update()
            )
        ).first()
        return None if row is None else _balance(row)

    async def reserve_refund(self, payment_id: str, amount: int) -> None:
        """Hold `amount` of the capture for a refund under way (the check refuses more than the
        capture: the caller decided on the locked row, so it never trips)."""
        await self.session.execute(
            update(payments)
            .where(_p.id == payment_id)
            .values(refund_reserved=_p.refund_reserved + amount)
        )

    async def reserve_rest(self, order_id: str) -> int:
        """Hold everything not yet refunded or held of the order's capture for its close's
        refund; returns how much that is (0: refunds gave or are giving it all back already)."""
        rest = await self.session.scalar(RESERVE_REST, {"order_id": order_id})
        return int(rest or 0)

    async def settle_refund(self, payment_id: str, amount: int, *, moved: bool) -> CaptureBalance:
        """A refund of `amount` under way was answered: given back (`moved`: counted as refunded
        and the status follows), or declined (its hold is released)."""
        if moved:
            values: dict[str, Any] = {
                "refunded_amount": _p.refunded_amount + amount,
                "status": case(
                    (_p.refunded_amount + amount >= _p.amount, "refunded"),
                    else_="partially_refunded",
                ),
                "refunded_at": func.now(),
            }
        else:
            values = {"refund_reserved": _p.refund_reserved - amount}
        row = (
            await self.session.execute(
                update(payments).where(_p.id == payment_id).values(**values).returning(*payments.c)
            )
        ).one()
        return _balance(row)

    async def page(
        self,
        *,
        customer_id: str | None,
        order_id: str | None,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[Payment]:
        """Capture attempts, newest first, one more than `limit` so the caller knows if there is
        more; refunds show in their capture's status and `refunded` amount."""
        query = (
            select(payments)
            .where(_p.kind == "capture")
            .order_by(_p.created_at.desc(), _p.id.desc())
            .limit(limit + 1)
        )
        if customer_id is not None:
            query = query.where(_p.customer_id == customer_id)
        if order_id is not None:
            query = query.where(_p.order_id == order_id)
        if after is not None:
            created_at, payment_id = after
            query = query.where(
                tuple_(_p.created_at, _p.id)
                < tuple_(literal(created_at, DateTime(timezone=True)), literal(payment_id))
            )
        return [_payment(row) for row in (await self.session.execute(query)).all()]

    async def by_provider_ref(self, ref: str) -> Payment | None:
        """The capture the provider knows as `ref`."""
        row = (
            await self.session.execute(
                select(payments).where(_p.provider_ref == ref, _p.kind == "capture")
            )
        ).first()
        return None if row is None else _payment(row)

    async def conclude_hold(self, order_id: str) -> str | None:
        """The order's authorized payment was released: `voided`. Its id, or None."""
        return await self.session.scalar(
            update(payments)
            .where(_p.order_id == order_id, _p.kind == "capture", _p.status == "authorized")
            .values(status="voided")
            .returning(_p.id)
        )

    async def get(self, payment_id: str) -> Payment | None:
        row = (
            await self.session.execute(
                select(payments).where(_p.id == payment_id, _p.kind == "capture")
            )
        ).first()
        return None if row is None else _payment(row)


class DuplicateMovement(Exception):
    """A second capture or refund row of one order: never written."""


# A movement, or the conclusion of a capture that awaited the shopper or held the money (same
# row, same id; its next action is done with). Nothing is returned when the order has that movement already.
ADD_PAYMENT = text(
    "INSERT INTO payments (id, order_id, customer_id, kind, amount, currency, status,"
    " provider_ref, failure_reason, provider, next_action)"
    " VALUES (:id, :order_id, :customer_id, :kind, :amount, :currency, :status, :provider_ref,"
    " :failure_reason, :provider, :next_action)"
    " ON CONFLICT (order_id, kind) DO UPDATE"
    " SET status = EXCLUDED.status, provider_ref = EXCLUDED.provider_ref,"
    " failure_reason = EXCLUDED.failure_reason, next_action = EXCLUDED.next_action"
    " WHERE payments.status IN ('requires_action', 'authorized')"
    " RETURNING payments.id"
).bindparams(bindparam("next_action", type_=JSONB(none_as_null=True)))


# Everything of the order's capture not yet refunded or held, held now for the close's refund;
# answers how much that was.
RESERVE_REST = text(
    "WITH before AS ("
    " SELECT id, amount - refund_reserved AS rest FROM payments"
    " WHERE order_id = :order_id AND kind = 'capture'"
    " AND status IN ('captured', 'partially_refunded') FOR UPDATE"
    ")"
    " UPDATE payments SET refund_reserved = payments.amount FROM before"
    " WHERE payments.id = before.id RETURNING before.rest"
)


def _balance(row: Row[Any]) -> CaptureBalance:
    return CaptureBalance(
        payment_id=row.id,
        order_id=row.order_id,
        customer_id=row.customer_id,
        amount=row.amount,
        currency=row.currency,
        status=row.status,
        provider_ref=row.provider_ref,
        refunded=row.refunded_amount,
        reserved=row.refund_reserved,
    )


def _payment(row: Row[Any]) -> Payment:
    return Payment(
        id=row.id,
        order_id=row.order_id,
        customer_id=row.customer_id,
        amount=row.amount,
        currency=row.currency,
        status=row.status,
        provider_ref=row.provider_ref,
        failure_reason=row.failure_reason,
        created_at=row.created_at,
        refunded_at=row.refunded_at,
        refunded=row.refunded_amount,
        provider=row.provider,
        next_action=_next_action(row.next_action),
    )


def _next_action(stored: dict[str, Any] | None) -> NextAction | None:
    if not stored:
        return None
    return NextAction(
        type=str(stored.get("type")),
        client_secret=stored.get("client_secret"),
        redirect_url=stored.get("redirect_url"),
    )


_r = refunds.c

# An operator's refund, unless its Idempotency-Key was used for this payment before.
ADD_REFUND = text(
    "INSERT INTO refunds (id, payment_id, order_id, amount, currency, reason, status,"
    " capture_ref, provider_ref, failure_reason, idempotency_key, request_hash,"
    " correlation_id, causation_id)"
    " VALUES (:id, :payment_id, :order_id, :amount, :currency, :reason, :status, :capture_ref,"
    " :provider_ref, :failure_reason, :idempotency_key, :request_hash, :correlation_id,"
    " :causation_id)"
    " ON CONFLICT (payment_id, idempotency_key) DO NOTHING"
    " RETURNING refunds.id"
)


def _refund(row: Row[Any]) -> Refund:
    return Refund(
        id=row.id,
        payment_id=row.payment_id,
        order_id=row.order_id,
        amount=row.amount,
        currency=row.currency,
        reason=row.reason,
        status=row.status,
        provider_ref=row.provider_ref,
        failure_reason=row.failure_reason,
        created_at=row.created_at,
    )


class Refunds:
    """Refunds of captures, and the operators' refunds owed to the provider."""

    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def add(
        self,
        refund: Refund,
        *,
        capture_ref: str,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
        trace: Trace = Trace(),
    ) -> bool:
        """Record `refund`; False if its Idempotency-Key was used for this payment already."""
        added = await self.session.scalar(
            ADD_REFUND,
            {
                "id": refund.id,
                "payment_id": refund.payment_id,
                "order_id": refund.order_id,
                "amount": refund.amount,
                "currency": refund.currency,
                "reason": refund.reason,
                "status": refund.status,
                "capture_ref": capture_ref,
                "provider_ref": refund.provider_ref,
                "failure_reason": refund.failure_reason,
                "idempotency_key": idempotency_key,
                "request_hash": request_hash,
                "correlation_id": trace.correlation_id,
                "causation_id": trace.causation_id,
            },
        )
        return added is not None

    async def by_key(self, payment_id: str, idempotency_key: str) -> tuple[Refund, str] | None:
        """The refund asked for with this key, and the hash of the request that asked for it."""
        row = (
            await self.session.execute(
                select(refunds).where(
                    _r.payment_id == payment_id, _r.idempotency_key == idempotency_key
                )
            )
        ).first()
        return None if row is None else (_refund(row), row.request_hash or "")

    async def get(self, refund_id: str) -> Refund | None:
        row = (await self.session.execute(select(refunds).where(_r.id == refund_id))).first()
        return None if row is None else _refund(row)

    async def of_payment(
        self, payment_id: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[Refund]:
        """Oldest first, one more than `limit`."""
        query = (
            select(refunds)
            .where(_r.payment_id == payment_id)
            .order_by(_r.created_at, _r.id)
            .limit(limit + 1)
        )
        if after is not None:
            created_at, refund_id = after
            query = query.where(
                tuple_(_r.created_at, _r.id)
                > tuple_(literal(created_at, DateTime(timezone=True)), literal(refund_id))
            )
        return [_refund(row) for row in (await self.session.execute(query)).all()]

    async def claim_due(self, limit: int, lease_s: float) -> list[RefundIntent]:
        """Take up to `limit` pending refunds nobody holds for `lease_s` (rows another
        transaction holds are skipped)."""
        statement = _claim(refunds, _r.status == "pending", limit, lease_s)
        return [
            RefundIntent(
                refund_id=row.id,
                payment_id=row.payment_id,
                order_id=row.order_id,
                amount=row.amount,
                currency=row.currency,
                capture_ref=row.capture_ref,
                reason=row.reason,
                attempts=row.attempts,
                trace=Trace(row.correlation_id, row.causation_id),
                return_id=row.return_id,
            )
            for row in (await self.session.execute(statement)).all()
        ]

    async def settle(
        self,
        refund_id: str,
        status: Literal["succeeded", "failed"],
        provider_ref: str | None,
        failure_reason: str | None,
    ) -> Refund | None:
        """Record the provider's answer to a pending refund; None if it was recorded already."""
        row = (
            await self.session.execute(
                update(refunds)
                .where(_r.id == refund_id, _r.status == "pending")
                .values(
                    status=status,
                    provider_ref=provider_ref,
                    failure_reason=failure_reason,
                    lease_until=None,
                    updated_at=func.now(),
                )
                .returning(*refunds.c)
            )
        ).first()
        return None if row is None else _refund(row)


class ProviderDeliveries:
    """The provider webhooks already handled: the kit's inbox, keyed by the provider's event id."""

    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def claim(self, provider: str, event_id: str, event_type: str) -> bool:
        """False if this event of `provider` was handled before (a redelivery)."""
        key = f"{provider}:{event_id}"
        if len(key) > 64:  # the inbox's id column; a provider's ids are far shorter
            key = (
                f"{provider}:" + hashlib.sha256(event_id.encode()).hexdigest()[: 63 - len(provider)]
            )
        return await claim_delivery(self.session, key, event_type[:100], f"webhook:{provider}")


class Store:
    """Payments' repositories on one transaction's session; money movements it records name
    `provider` (the one configured: `Store.for_provider`)."""

    def __init__(self, session: DbSession, provider: str = "sandbox") -> None:
        self.orders = PaymentOrders(session)
        self.payments = Payments(session, provider)
        self.refunds = Refunds(session)
        self.deliveries = ProviderDeliveries(session)
        self.return_refunds = ReturnRefunds(session)

    @staticmethod
    def for_provider(provider: str) -> Callable[[DbSession], "Store"]:
        return lambda session: Store(session, provider)


# A ledger entry as the sandbox's step left it, created or overwritten.
# One key's operations are serialised (the provider answers a retried key as it did the first time).
LOCK_LEDGER_KEY = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")
_LEDGER_ENTRY = "SELECT " + ", ".join(c.name for c in sandbox_ledger.c) + " FROM sandbox_ledger"
LEDGER_ENTRY_BY_KEY = text(_LEDGER_ENTRY + " WHERE idempotency_key = :value")
LEDGER_ENTRY_BY_REF = text(_LEDGER_ENTRY + " WHERE ref = :value")

WRITE_LEDGER_ENTRY = text(
    "INSERT INTO sandbox_ledger"
    " (idempotency_key, operation, amount, currency, attempts, ref, decline_reason, capture_ref,"
    " behaviour, awaiting_action)"
    " VALUES (:idempotency_key, :operation, :amount, :currency, :attempts, :ref, :decline_reason,"
    " :capture_ref, :behaviour, :awaiting_action)"
    " ON CONFLICT (idempotency_key) DO UPDATE"
    " SET operation = EXCLUDED.operation, amount = EXCLUDED.amount,"
    " currency = EXCLUDED.currency, attempts = EXCLUDED.attempts, ref = EXCLUDED.ref,"
    " decline_reason = EXCLUDED.decline_reason, capture_ref = EXCLUDED.capture_ref,"
    " behaviour = EXCLUDED.behaviour, awaiting_action = EXCLUDED.awaiting_action,"
    " updated_at = now()"
)


class PgSandboxLedger:
    """The sandbox PSP's ledger in table `sandbox_ledger`: each step in its own committed
    transaction on its own connection (never one of ours), serialised per key by an advisory
    lock."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, key: str) -> LedgerEntry | None:
        async with self.db.transaction() as session:
            return await self._select(session, LEDGER_ENTRY_BY_KEY, key)

    async def by_ref(self, ref: str) -> LedgerEntry | None:
        async with self.db.transaction() as session:
            return await self._select(session, LEDGER_ENTRY_BY_REF, ref)

    async def acting_on(self, ref: str) -> list[LedgerEntry]:
        async with self.db.transaction() as session:
            rows = await session.execute(
                select(sandbox_ledger)
                .where(sandbox_ledger.c.capture_ref == ref)
                .order_by(sandbox_ledger.c.created_at)
            )
            return [_ledger_entry(row) for row in rows.all()]

    async def apply(
        self, key: str, step: Callable[[LedgerEntry | None], LedgerEntry]
    ) -> LedgerEntry:
        async with self.db.transaction() as session:
            await session.execute(LOCK_LEDGER_KEY, {"key": key})
            before = await self._select(session, LEDGER_ENTRY_BY_KEY, key)
            after = step(before)
            if after != before:
                await session.execute(
                    WRITE_LEDGER_ENTRY,
                    {
                        "idempotency_key": key,
                        "operation": after.operation,
                        "amount": after.amount,
                        "currency": after.currency,
                        "attempts": after.attempts,
                        "ref": after.ref,
                        "decline_reason": after.decline_reason,
                        "capture_ref": after.capture_ref,
                        "behaviour": after.behaviour,
                        "awaiting_action": after.awaiting_action,
                    },
                )
            return after

    @staticmethod
    async def _select(session: DbSession, statement: TextClause, value: str) -> LedgerEntry | None:
        row = (await session.execute(statement, {"value": value})).first()
        return None if row is None else _ledger_entry(row)


def _ledger_entry(row: Row[Any]) -> LedgerEntry:
    return LedgerEntry(
        key=row.idempotency_key,
        operation=row.operation,
        amount=row.amount,
        currency=row.currency,
        attempts=row.attempts,
        ref=row.ref,
        decline_reason=row.decline_reason,
        capture_ref=row.capture_ref,
        behaviour=row.behaviour,
        awaiting_action=row.awaiting_action,
    )


# --- refunds of returns (issue 12) ---

# A return's refund, owed to the provider like an operator's; nothing when the return has one.
ADD_RETURN_REFUND = text(
    "INSERT INTO refunds (id, payment_id, order_id, amount, currency, reason, status,"
    " capture_ref, return_id, correlation_id, causation_id)"
    " VALUES (:id, :payment_id, :order_id, :amount, :currency, :reason, 'pending', :capture_ref,"
    " :return_id, :correlation_id, :causation_id)"
    " ON CONFLICT (return_id) DO NOTHING"
    " RETURNING refunds.id"
)


class ReturnRefunds:
    """Refunds of orders' returns: the order's capture they give back from, and their rows."""

    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def lock_capture_of(self, order_id: str) -> CaptureBalance | None:
        """The order's capture, locked (refunds of one payment are decided one at a time)."""
        row = (
            await self.session.execute(
                select(payments)
                .where(_p.order_id == order_id, _p.kind == "capture")
                .with_for_update()
            )
        ).first()
        return None if row is None else _balance(row)

    async def add(self, refund: Refund, *, capture_ref: str, return_id: str, trace: Trace) -> bool:
        """Record a return's pending refund; False when the return has one already."""
        added = await self.session.scalar(
            ADD_RETURN_REFUND,
            {
                "id": refund.id,
                "payment_id": refund.payment_id,
                "order_id": refund.order_id,
                "amount": refund.amount,
                "currency": refund.currency,
                "reason": refund.reason,
                "capture_ref": capture_ref,
                "return_id": return_id,
                "correlation_id": trace.correlation_id,
                "causation_id": trace.causation_id,
            },
        )
        return added is not None


# --- reconciliation (issue 14) ---

# Captures made within :window_s (ix_payments_created) that may be inconsistent: their order
# closed :grace_s ago or more and they are not refunded, or their succeeded refunds add up to
# more than they took; at most :limit.
CAPTURE_TALLIES = text(
    "SELECT p.id, p.order_id, p.status, p.amount, p.currency, o.closed_reason,"
    " o.updated_at AS closed_at, coalesce(r.refunded, 0) AS refunded, now() AS now"
    " FROM payments p JOIN payment_orders o ON o.order_id = p.order_id"
    " LEFT JOIN LATERAL (SELECT sum(amount) AS refunded FROM refunds"
    " WHERE refunds.payment_id = p.id AND refunds.status = 'succeeded') r ON true"
    " WHERE p.kind = 'capture'"
    " AND p.created_at >= now() - make_interval(secs => CAST(:window_s AS double precision))"
    " AND ((o.closed_reason IS NOT NULL AND p.status IN ('captured', 'partially_refunded')"
    " AND o.updated_at < now() - make_interval(secs => CAST(:grace_s AS double precision)))"
    " OR coalesce(r.refunded, 0) > p.amount)"
    " ORDER BY p.created_at, p.id LIMIT :limit"
)


class ReconcileReads:
    """Payments' reconciliation queries: read-only, bounded, on their own connection."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def capture_tallies(
        self, window_s: float, grace_s: float, limit: int
    ) -> tuple[list[CaptureTally], datetime | None]:
        """The suspect captures and the database's now (None when there are none)."""
        params = {"window_s": window_s, "grace_s": grace_s, "limit": limit}
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(CAPTURE_TALLIES, params)).all()
        tallies = [
            CaptureTally(
                payment_id=r.id,
                order_id=r.order_id,
                status=r.status,
                amount=int(r.amount),
                currency=r.currency,
                closed_reason=r.closed_reason,
                closed_at=r.closed_at if r.closed_reason is not None else None,
                refunded=int(r.refunded),
            )
            for r in rows
        ]
        return tallies, (rows[0].now if rows else None)
