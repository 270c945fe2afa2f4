"""Payments use cases: record the facts of an order, charge it once, refund or void it on close;
and the sandbox provider, which stands in for an external PSP."""

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import DateTime, Row, func, insert, literal, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from libs.events.common import Money
from libs.events.payments import PaymentCaptured, PaymentFailed, PaymentRefunded, PaymentVoided
from libs.kit.db import Database
from libs.kit.faults import crash_point
from libs.kit.outbox import Emitter
from services.payments.db import payment_orders, payments, sandbox_ledger
from services.payments.domain import (
    CLOSED_CANCELLED,
    CLOSED_REJECTED,
    TOK_SLOW,
    CaptureDecision,
    CloseDecision,
    LedgerEntry,
    OrderPayment,
    PaymentProvider,
    ProviderCapture,
    ProviderResult,
    TransientProviderError,
    accepts_instruction,
    capture_may_be_unrecorded,
    decide_capture,
    decide_close,
    refund_key,
    sandbox_capture,
    sandbox_refund,
    storable_token,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

# What orders reads in PaymentFailed.reason (it becomes the order's rejection reason); the
# provider's own code travels in `decline_code`.
PAYMENT_DECLINED = "payment_declined"


class RefundDeclined(Exception):
    """The provider refused a refund: an operator must look (the message is dead-lettered)."""


@dataclass(frozen=True)
class Charging:
    """How payments talks to its provider: which one, and how hard transient errors are retried."""

    provider: PaymentProvider
    attempts: int = 4
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 2.0

    async def call(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        """Retry transient errors (same idempotency key each time); re-raise after the last attempt
        so the kit retries the message later or dead-letters it."""
        delay = self.backoff_initial_s
        for attempt in range(1, self.attempts + 1):
            try:
                return await operation()
            except TransientProviderError as exc:
                if attempt >= self.attempts:
                    raise
                log.warning("%s: transient provider error (attempt %d): %s", what, attempt, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff_max_s)
        raise AssertionError("unreachable")  # attempts < 1


# --- facts about an order -------------------------------------------------------------------


async def record_instruction(
    session: AsyncSession,
    events: Emitter,
    charging: Charging,
    *,
    order_id: str,
    customer_id: str,
    amount: Money,
    token: str,
) -> None:
    """Orders told us how to charge the order (the token arrives only here)."""
    row = await _lock_order(session, order_id, customer_id)
    capture_status = await _capture_status(session, order_id)
    if accepts_instruction(_state(row, capture_status)):
        row = (
            await session.execute(
                update(payment_orders)
                .where(payment_orders.c.order_id == order_id)
                .values(amount=amount.amount, currency=amount.currency, token=storable_token(token))
                .returning(*payment_orders.c)
            )
        ).one()
    await _charge_if_due(session, events, charging, row, capture_status)


async def record_stock_reserved(
    session: AsyncSession, events: Emitter, charging: Charging, order_id: str
) -> None:
    """Inventory holds the order's stock: the other half of what a charge waits for."""
    row = await _lock_order(session, order_id, stock_reserved=True)
    await _charge_if_due(session, events, charging, row, await _capture_status(session, order_id))


async def close_order(
    session: AsyncSession,
    events: Emitter,
    charging: Charging,
    *,
    order_id: str,
    customer_id: str,
    reason: str,
    cancellation: bool,
) -> None:
    """The order was rejected or is being cancelled: never charge it from now on, give back a
    capture, and answer a cancellation with PaymentRefunded or PaymentVoided."""
    row = await _lock_order(session, order_id, customer_id)
    capture = await _capture_row(session, order_id)
    if capture_may_be_unrecorded(_state(row, None if capture is None else capture.status)):
        capture = await _record_provider_capture(session, events, charging, row)
    state = _state(row, capture.status if capture else None)
    decision = decide_close(state, cancellation=cancellation)
    await session.execute(
        update(payment_orders)
        .where(payment_orders.c.order_id == order_id)
        .values(
            closed_reason=func.coalesce(
                payment_orders.c.closed_reason,
                CLOSED_CANCELLED if cancellation else CLOSED_REJECTED,
            ),
            token=None,
            updated_at=func.now(),
        )
    )
    refund_reason = "cancelled" if cancellation else reason
    if decision is CloseDecision.REFUND:
        assert capture is not None and capture.provider_ref is not None
        await _refund(session, events, charging, capture, refund_reason)
    elif decision is CloseDecision.VOID:
        await events.emit(PaymentVoided(order_id=order_id, reason="cancelled"), subject=order_id)
        log.info("order %s cancelled before any capture: voided", order_id)


# --- charging and refunding ------------------------------------------------------------------


async def _charge_if_due(
    session: AsyncSession,
    events: Emitter,
    charging: Charging,
    row: Row[Any],
    capture_status: Any,
) -> None:
    """`row`: the order's payment row as this transaction holds it locked (and last wrote it)."""
    order_id = str(row.order_id)
    decision = decide_capture(_state(row, capture_status))
    if decision in (CaptureDecision.WAIT, CaptureDecision.NOTHING):
        return
    amount, currency = int(row.amount), str(row.currency)
    if decision is CaptureDecision.CAPTURE:
        token = str(row.token)
        result = await charging.call(
            f"capture of order {order_id}",
            lambda: charging.provider.capture(order_id, amount, currency, token),
        )
        crash_point("payments.after_provider_capture")
    else:
        result = ProviderResult.declined(decision.value)

    if result.ref is not None:
        payment_id = await _record_capture(session, events, row, amount, currency, result.ref)
        log.info("order %s captured (payment %s)", order_id, payment_id)
    else:
        payment_id = new_id()
        await session.execute(
            insert(payments).values(
                id=payment_id,
                order_id=order_id,
                customer_id=row.customer_id,
                kind="capture",
                amount=amount,
                currency=currency,
                status="failed",
                failure_reason=result.decline_reason,
            )
        )
        await events.emit(
            PaymentFailed(
                order_id=order_id,
                payment_id=payment_id,
                reason=PAYMENT_DECLINED,
                decline_code=result.decline_reason,
                amount=Money(amount=amount, currency=currency),
            ),
            subject=order_id,
        )
        log.info("order %s declined: %s", order_id, result.decline_reason)
    # The charge is decided: the token must not stay at rest.
    await session.execute(
        update(payment_orders)
        .where(payment_orders.c.order_id == order_id)
        .values(token=None, updated_at=func.now())
    )


async def _record_capture(
    session: AsyncSession, events: Emitter, row: Row[Any], amount: int, currency: str, ref: str
) -> str:
    """Record a capture the provider made for the order and announce it; returns its payment id."""
    order_id = str(row.order_id)
    payment_id = new_id()
    await session.execute(
        insert(payments).values(
            id=payment_id,
            order_id=order_id,
            customer_id=row.customer_id,
            kind="capture",
            amount=amount,
            currency=currency,
            status="captured",
            provider_ref=ref,
        )
    )
    await events.emit(
        PaymentCaptured(
            order_id=order_id,
            payment_id=payment_id,
            amount=Money(amount=amount, currency=currency),
            provider_ref=ref,
        ),
        subject=order_id,
    )
    return payment_id


async def _record_provider_capture(
    session: AsyncSession, events: Emitter, charging: Charging, row: Row[Any]
) -> Row[Any] | None:
    """A capture the provider made under the order's key that we never recorded (we died before
    our commit): record it and announce it, so closing the order refunds it. None if the
    provider has none."""
    order_id = str(row.order_id)
    found = await charging.call(
        f"capture lookup of order {order_id}", lambda: charging.provider.find_capture(order_id)
    )
    if found is None:
        return None
    payment_id = await _record_capture(
        session, events, row, found.amount, found.currency, found.ref
    )
    log.warning(
        "order %s closes with a capture the provider made but we never recorded (payment %s)",
        order_id,
        payment_id,
    )
    return await _capture_row(session, order_id)


async def _refund(
    session: AsyncSession, events: Emitter, charging: Charging, capture: Row[Any], reason: str
) -> None:
    order_id = str(capture.order_id)
    amount, capture_ref = int(capture.amount), str(capture.provider_ref)
    result = await charging.call(
        f"refund of order {order_id}",
        lambda: charging.provider.refund(refund_key(order_id), capture_ref, amount),
    )
    crash_point("payments.after_provider_refund")
    if result.ref is None:
        raise RefundDeclined(f"refund of order {order_id} declined: {result.decline_reason}")
    refund_id = new_id()
    await session.execute(
        insert(payments).values(
            id=refund_id,
            order_id=order_id,
            customer_id=capture.customer_id,
            kind="refund",
            amount=amount,
            currency=capture.currency,
            status="refunded",
            provider_ref=result.ref,
        )
    )
    await session.execute(
        update(payments)
        .where(payments.c.id == capture.id)
        .values(status="refunded", refunded_at=func.now())
    )
    await events.emit(
        PaymentRefunded(
            order_id=order_id,
            payment_id=capture.id,
            amount=Money(amount=amount, currency=capture.currency),
            provider_ref=result.ref,
            reason=reason,
            refund_id=refund_id,
        ),
        subject=order_id,
    )
    log.info("order %s refunded (payment %s, %s)", order_id, capture.id, reason)


# --- reads -----------------------------------------------------------------------------------


async def order_customer(session: AsyncSession, order_id: str) -> str | None:
    """Whose order this is, as far as payments knows (None: not known yet)."""
    return await session.scalar(
        select(payment_orders.c.customer_id).where(payment_orders.c.order_id == order_id)
    )


async def list_payments(
    session: AsyncSession,
    *,
    customer_id: str | None,
    order_id: str | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[Row[Any]]:
    """Capture attempts, newest first, one row more than asked so the caller knows if there is
    more; a refund shows as its capture's status `refunded`."""
    query = (
        select(payments)
        .where(payments.c.kind == "capture")
        .order_by(payments.c.created_at.desc(), payments.c.id.desc())
        .limit(limit + 1)
    )
    if customer_id is not None:
        query = query.where(payments.c.customer_id == customer_id)
    if order_id is not None:
        query = query.where(payments.c.order_id == order_id)
    if after is not None:
        created_at, payment_id = after
        query = query.where(
            tuple_(payments.c.created_at, payments.c.id)
            < tuple_(literal(created_at, DateTime(timezone=True)), literal(payment_id))
        )
    return list((await session.execute(query)).all())


# --- helpers ---------------------------------------------------------------------------------


def new_id() -> str:
    return str(uuid.uuid4())


async def _lock_order(
    session: AsyncSession,
    order_id: str,
    customer_id: str | None = None,
    *,
    stock_reserved: bool = False,
) -> Row[Any]:
    """Create the order's row if this is the first fact about it, and lock it either way (with
    `stock_reserved`, also record that inventory holds the stock); returns the row as written."""
    statement = pg_insert(payment_orders).values(
        order_id=order_id, customer_id=customer_id, stock_reserved=stock_reserved
    )
    changes: dict[str, Any] = {
        "customer_id": func.coalesce(payment_orders.c.customer_id, statement.excluded.customer_id),
        "updated_at": func.now(),
    }
    if stock_reserved:
        changes["stock_reserved"] = True
    row = (
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=[payment_orders.c.order_id], set_=changes
            ).returning(*payment_orders.c)
        )
    ).one()
    return row


async def _capture_row(session: AsyncSession, order_id: str) -> Row[Any] | None:
    return (
        await session.execute(
            select(payments).where(payments.c.order_id == order_id, payments.c.kind == "capture")
        )
    ).first()


async def _capture_status(session: AsyncSession, order_id: str) -> Any:
    row = await _capture_row(session, order_id)
    return row.status if row else None


def _state(row: Row[Any], capture_status: Any) -> OrderPayment:
    return OrderPayment(
        order_id=row.order_id,
        amount=row.amount,
        currency=row.currency,
        has_token=row.token is not None,
        stock_reserved=row.stock_reserved,
        closed_reason=row.closed_reason,
        capture_status=capture_status,
    )


# --- the sandbox provider ----------------------------------------------------------------------


class SandboxLedger(Protocol):
    """Where the sandbox keeps its idempotency keys (its own storage, outside our transactions)."""

    async def get(self, key: str) -> LedgerEntry | None: ...

    async def by_ref(self, ref: str) -> LedgerEntry | None: ...

    async def apply(
        self, key: str, step: Callable[[LedgerEntry | None], LedgerEntry]
    ) -> LedgerEntry: ...


class SandboxProvider:
    """The default PSP: deterministic answers per test token (see domain.sandbox_capture), an
    idempotency ledger that survives our crashes, and no card numbers, ever."""

    def __init__(self, ledger: SandboxLedger, slow_s: float = 10.0) -> None:
        self.ledger = ledger
        self.slow_s = slow_s

    async def capture(
        self, idempotency_key: str, amount: int, currency: str, token: str
    ) -> ProviderResult:
        if token == TOK_SLOW:  # the ledger is read only for the token that needs it
            known = await self.ledger.get(idempotency_key)
            if not (known and known.decided):
                await asyncio.sleep(self.slow_s)
        ref = f"ch_sbx_{uuid.uuid4().hex[:24]}"
        entry = await self.ledger.apply(
            idempotency_key,
            lambda e: sandbox_capture(e, idempotency_key, amount, currency, token, ref),
        )
        return entry.result()

    async def find_capture(self, idempotency_key: str) -> ProviderCapture | None:
        entry = await self.ledger.get(idempotency_key)
        if entry is None or entry.operation != "capture" or entry.ref is None:
            return None
        return ProviderCapture(ref=entry.ref, amount=entry.amount, currency=entry.currency or "")

    async def refund(self, idempotency_key: str, capture_ref: str, amount: int) -> ProviderResult:
        capture = await self.ledger.by_ref(capture_ref)
        ref = f"re_sbx_{uuid.uuid4().hex[:24]}"
        entry = await self.ledger.apply(
            idempotency_key,
            lambda e: sandbox_refund(e, capture, idempotency_key, capture_ref, amount, ref),
        )
        return entry.result()


class PgSandboxLedger:
    """The sandbox ledger in table `sandbox_ledger`, each step in its own committed transaction
    on its own connection, serialised per key by an advisory lock."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, key: str) -> LedgerEntry | None:
        async with self.db.transaction() as session:
            return await self._select(session, sandbox_ledger.c.idempotency_key == key)

    async def by_ref(self, ref: str) -> LedgerEntry | None:
        async with self.db.transaction() as session:
            return await self._select(session, sandbox_ledger.c.ref == ref)

    async def apply(
        self, key: str, step: Callable[[LedgerEntry | None], LedgerEntry]
    ) -> LedgerEntry:
        async with self.db.transaction() as session:
            await session.execute(
                text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": key}
            )
            before = await self._select(session, sandbox_ledger.c.idempotency_key == key)
            after = step(before)
            if after != before:
                values = {
                    "operation": after.operation,
                    "amount": after.amount,
                    "currency": after.currency,
                    "attempts": after.attempts,
                    "ref": after.ref,
                    "decline_reason": after.decline_reason,
                    "capture_ref": after.capture_ref,
                }
                statement = pg_insert(sandbox_ledger).values(idempotency_key=key, **values)
                await session.execute(
                    statement.on_conflict_do_update(
                        index_elements=[sandbox_ledger.c.idempotency_key],
                        set_={**values, "updated_at": func.now()},
                    )
                )
            return after

    @staticmethod
    async def _select(session: AsyncSession, condition: Any) -> LedgerEntry | None:
        row = (await session.execute(select(sandbox_ledger).where(condition))).first()
        if row is None:
            return None
        return LedgerEntry(
            key=row.idempotency_key,
            operation=row.operation,
            amount=row.amount,
            currency=row.currency,
            attempts=row.attempts,
            ref=row.ref,
            decline_reason=row.decline_reason,
            capture_ref=row.capture_ref,
        )
