"""Orders use cases: place (priced, idempotent), read, cancel, ship, deliver, expire, and apply
stock and payment facts. Every change locks the order row and lets domain.py decide."""

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy import Row, func, insert, literal, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from libs.events.common import Money, PricedLine
from libs.events.orders import (
    OrderCancellationRequested,
    OrderCancelled,
    OrderConfirmed,
    OrderDelivered,
    OrderPlaced,
    OrderRejected,
    OrderShipped,
    PaymentInstructionIssued,
)
from libs.kit.auth import Principal
from libs.kit.outbox import Emitter
from libs.kit.problems import Problem, conflict, not_found
from services.orders import domain
from services.orders.db import idempotency_keys, order_history, orders
from services.orders.domain import IllegalTransition, Order, OrderStatus

log = logging.getLogger(__name__)


# --- pricing (HTTP out) -------------------------------------------------------------------------


class QuoteLine(BaseModel):
    model_config = ConfigDict(extra="ignore")

    sku: str
    quantity: int
    unit_price: Money
    discount: Money
    # Not in contract v1's quote line; read when pricing sends it, zero otherwise.
    tax: Money | None = None
    total: Money


class Quote(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    lines: list[QuoteLine]
    subtotal: Money
    discount: Money
    tax: Money
    total: Money


class Pricing:
    """Pricing's quote endpoint through one pooled HTTP client, opened in the app's lifespan."""

    def __init__(self, base_url: str, timeout_s: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.client: httpx.AsyncClient | None = None

    async def open(self) -> None:
        self.client = httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout_s)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    async def quote(
        self,
        lines: list[tuple[str, int]],
        region: str,
        *,
        authorization: str | None,
        request_id: str,
    ) -> Quote:
        """Price the lines; pricing's own verdict on bad lines (unknown sku, discontinued, unknown
        region) comes back as the same 4xx with its field errors, anything else as 503."""
        if self.client is None:
            raise Problem(503, "pricing is unavailable: client not started")
        # The caller's token travels on so customer-group prices apply to them.
        headers = {"X-Request-ID": request_id}
        if authorization:
            headers["Authorization"] = authorization
        body = {"lines": [{"sku": s, "quantity": q} for s, q in lines], "region": region}
        try:
            response = await self.client.post("/pricing/quotes", json=body, headers=headers)
        except httpx.HTTPError as exc:
            log.warning("pricing unreachable: %r", exc)
            raise Problem(503, "pricing is unavailable, try again later") from exc
        if response.status_code in (400, 404, 422):
            raise _relayed(response)
        if not response.is_success:
            raise Problem(503, f"pricing answered {response.status_code}, try again later")
        try:
            quote = Quote.model_validate_json(response.content)
        except ValidationError as exc:
            log.error("pricing sent a quote we cannot read: %s", exc)
            raise Problem(503, "pricing answered an unreadable quote") from exc
        if sorted((ln.sku, ln.quantity) for ln in quote.lines) != sorted(lines):
            raise Problem(503, "pricing quoted other lines than asked")
        return quote


def _relayed(response: httpx.Response) -> Problem:
    try:
        problem = response.json()
    except ValueError:
        problem = {}
    if not isinstance(problem, dict):
        problem = {}
    errors = problem.get("errors")
    status = 400 if response.status_code == 400 else 422
    return Problem(
        status,
        str(problem.get("detail") or "pricing refused the order lines"),
        errors=errors if isinstance(errors, list) else None,
    )


OrderView = tuple[Row[Any], list[Row[Any]]]  # the order row and its history, oldest first


# --- placing ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewOrder:
    """A validated POST /orders: who, under which key, what (the token only passes through)."""

    customer_id: str
    idempotency_key: str
    request_hash: str
    lines: list[tuple[str, int]]
    region: str
    shipping_address: dict[str, str]
    email: str | None
    payment_token: str


async def find_replay(
    session: AsyncSession, customer_id: str, key: str, request_hash: str
) -> str | None:
    """The order an earlier request with this key placed, or None; 409 if that request differed."""
    stored = (
        await session.execute(
            select(idempotency_keys).where(
                idempotency_keys.c.customer_id == customer_id, idempotency_keys.c.key == key
            )
        )
    ).first()
    if stored is None:
        return None
    if not domain.is_replay(stored.request_hash, request_hash):
        raise conflict("this Idempotency-Key was already used with a different request body")
    return str(stored.order_id)


async def place_order(
    session: AsyncSession, events: Emitter, new: NewOrder, quote: Quote, now: datetime, ttl_s: int
) -> tuple[str, OrderView | None]:
    """Write the key, the pending order and its events; returns the order id and, when this
    request created it, its view as written (no read back). The key's primary key decides
    between concurrent identical requests: the loser waits for the winner's commit and answers
    with its order (view None)."""
    order_id = str(uuid.uuid4())
    claimed = await session.scalar(
        pg_insert(idempotency_keys)
        .values(
            customer_id=new.customer_id,
            key=new.idempotency_key,
            request_hash=new.request_hash,
            order_id=order_id,
        )
        .on_conflict_do_nothing()
        .returning(idempotency_keys.c.order_id)
    )
    if claimed is None:
        existing = await find_replay(
            session, new.customer_id, new.idempotency_key, new.request_hash
        )
        if existing is None:  # the winner rolled back between our insert and read
            raise Problem(409, "a request with this Idempotency-Key is in flight; retry")
        return existing, None

    zero = Money(amount=0, currency=quote.total.currency)
    lines = [
        PricedLine(
            sku=ln.sku,
            quantity=ln.quantity,
            unit_price=ln.unit_price,
            discount=ln.discount,
            tax=ln.tax or zero,
            total=ln.total,
        )
        for ln in quote.lines
    ]
    deadline = now + timedelta(seconds=ttl_s)
    order = await session.execute(
        insert(orders)
        .values(
            id=order_id,
            customer_id=new.customer_id,
            status=OrderStatus.PENDING.value,
            region=new.region,
            shipping_address=new.shipping_address,
            email=new.email,
            lines=[ln.model_dump(mode="json") for ln in lines],
            currency=quote.total.currency,
            subtotal=quote.subtotal.amount,
            discount=quote.discount.amount,
            tax=quote.tax.amount,
            total=quote.total.amount,
            quote_id=quote.id,
            reservation_deadline=deadline,
            correlation_id=events.correlation_id or order_id,
        )
        .returning(*orders.c)
    )
    history = await session.execute(
        insert(order_history)
        .values(order_id=order_id, status=OrderStatus.PENDING.value, reason=None)
        .returning(*order_history.c)
    )
    view = (order.one(), list(history.all()))
    await events.emit(
        OrderPlaced(
            order_id=order_id,
            customer_id=new.customer_id,
            email=new.email,
            lines=lines,
            region=new.region,
            subtotal=quote.subtotal,
            discount=quote.discount,
            tax=quote.tax,
            total=quote.total,
            quote_id=quote.id,
            reservation_deadline=deadline,
        ),
        subject=order_id,
    )
    # The token leaves only here, on the restricted internal topic; it is never stored.
    await events.emit(
        PaymentInstructionIssued(
            order_id=order_id,
            customer_id=new.customer_id,
            amount=quote.total,
            token=new.payment_token,
        ),
        subject=order_id,
    )
    return order_id, view


# --- reading ------------------------------------------------------------------------------------


async def get_order(session: AsyncSession, order_id: str, caller: Principal) -> OrderView:
    row = (await session.execute(select(orders).where(orders.c.id == order_id))).first()
    _check_visible(row, caller, order_id)
    assert row is not None
    history = await _histories(session, [order_id])
    return row, history.get(order_id, [])


async def list_orders(
    session: AsyncSession,
    *,
    customer_id: str | None,
    status: str | None,
    before: tuple[datetime, str] | None,
    limit: int,
) -> list[OrderView]:
    """Newest first, one more than asked so the caller knows whether there is another page."""
    query = select(orders).order_by(orders.c.created_at.desc(), orders.c.id.desc()).limit(limit + 1)
    if customer_id is not None:
        query = query.where(orders.c.customer_id == customer_id)
    if status is not None:
        query = query.where(orders.c.status == status)
    if before is not None:
        created_at, order_id = before
        query = query.where(
            tuple_(orders.c.created_at, orders.c.id)
            < tuple_(
                literal(created_at, orders.c.created_at.type), literal(order_id, orders.c.id.type)
            )
        )
    rows = list((await session.execute(query)).all())
    history = await _histories(session, [r.id for r in rows])
    return [(r, history.get(r.id, [])) for r in rows]


async def _histories(session: AsyncSession, order_ids: list[str]) -> dict[str, list[Row[Any]]]:
    if not order_ids:
        return {}
    rows = await session.execute(
        select(order_history)
        .where(order_history.c.order_id.in_(order_ids))
        .order_by(order_history.c.id)
    )
    by_order: dict[str, list[Row[Any]]] = {}
    for row in rows:
        by_order.setdefault(row.order_id, []).append(row)
    return by_order


def _check_visible(row: Row[Any] | None, caller: Principal, order_id: str) -> None:
    # Another customer's order is reported as missing, not forbidden: ids are not confirmed.
    if row is None or not caller.can_see(row.customer_id):
        raise not_found(f"order {order_id}")


# --- changing -----------------------------------------------------------------------------------


async def _lock(session: AsyncSession, order_id: str) -> Row[Any] | None:
    return (
        await session.execute(select(orders).where(orders.c.id == order_id).with_for_update())
    ).first()


def _state(row: Row[Any]) -> Order:
    return Order(
        status=OrderStatus(row.status),
        reservation_deadline=row.reservation_deadline,
        reason=row.reason,
        stock_reserved=row.stock_reserved,
        cancellation_requested=row.cancellation_requested,
        cancellation_reason=row.cancellation_reason,
        cancel_stock_returned=row.cancel_stock_returned,
        cancel_payment_returned=row.cancel_payment_returned,
    )


async def _append_history(
    session: AsyncSession, order_id: str, status: OrderStatus, reason: str | None
) -> None:
    await session.execute(
        insert(order_history).values(order_id=order_id, status=status.value, reason=reason)
    )


async def _save(
    session: AsyncSession,
    events: Emitter,
    row: Row[Any],
    after: Order,
    tracking: dict[str, Any] | None = None,
) -> None:
    """Write the new state; a new status also gets its history entry and its event."""
    values: dict[str, Any] = {
        "status": after.status.value,
        "reason": after.reason,
        "stock_reserved": after.stock_reserved,
        "cancellation_requested": after.cancellation_requested,
        "cancellation_reason": after.cancellation_reason,
        "cancel_stock_returned": after.cancel_stock_returned,
        "cancel_payment_returned": after.cancel_payment_returned,
        "updated_at": func.now(),
    }
    if tracking is not None:
        values["tracking"] = tracking
    await session.execute(update(orders).where(orders.c.id == row.id).values(**values))
    if after.status.value != row.status:
        await _append_history(session, row.id, after.status, after.reason)
        await events.emit(_status_event(row, after, tracking), subject=row.id)


def _status_event(row: Row[Any], after: Order, tracking: dict[str, Any] | None) -> BaseModel:
    who = {"order_id": row.id, "customer_id": row.customer_id}
    match after.status:
        case OrderStatus.CONFIRMED:
            return OrderConfirmed(
                **who,
                email=row.email,
                lines=[PricedLine.model_validate(ln) for ln in row.lines],
                total=Money(amount=row.total, currency=row.currency),
            )
        case OrderStatus.REJECTED:
            return OrderRejected(**who, email=row.email, reason=after.reason or "invalid")
        case OrderStatus.CANCELLED:
            return OrderCancelled(**who, email=row.email, reason=after.reason or "")
        case OrderStatus.SHIPPED:
            return OrderShipped(**who, email=row.email, tracking=tracking or {})
        case OrderStatus.DELIVERED:
            return OrderDelivered(**who)
    raise AssertionError(f"no event for a move to {after.status}")


async def apply_fact(
    session: AsyncSession,
    events: Emitter,
    order_id: str,
    decide: Callable[[Order], Order | None],
) -> bool:
    """Apply another service's fact about an order; False when it changes nothing (unknown order,
    late, duplicated or out of order)."""
    row = await _lock(session, order_id)
    if row is None:
        log.info("fact about unknown order %s ignored", order_id)
        return False
    before = _state(row)
    after = decide(before)
    if after is None or after == before:
        return False
    await _save(session, events, row, after)
    return True


async def request_cancellation(
    session: AsyncSession, events: Emitter, caller: Principal, order_id: str, reason: str
) -> None:
    """Record the request and ask inventory and payments to undo their part; a repeated request
    changes nothing."""
    row = await _lock(session, order_id)
    _check_visible(row, caller, order_id)
    assert row is not None
    before = _state(row)
    try:
        after = domain.request_cancellation(before, reason)
    except IllegalTransition as exc:
        raise conflict(str(exc)) from exc
    if after == before:
        return
    await _save(session, events, row, after)
    await events.emit(
        OrderCancellationRequested(
            order_id=order_id,
            customer_id=row.customer_id,
            reason=reason,
            previous_status=before.status.value,
        ),
        subject=order_id,
    )


async def ship(
    session: AsyncSession,
    events: Emitter,
    order_id: str,
    carrier: str,
    tracking_number: str,
    now: datetime,
) -> None:
    row = await _lock(session, order_id)
    if row is None:
        raise not_found(f"order {order_id}")
    try:
        after = domain.ship(_state(row))
    except IllegalTransition as exc:
        raise conflict(str(exc)) from exc
    tracking = {
        "carrier": carrier,
        "tracking_number": tracking_number,
        "shipped_at": now.isoformat(),
    }
    await _save(session, events, row, after, tracking)


async def deliver(session: AsyncSession, events: Emitter, order_id: str) -> None:
    row = await _lock(session, order_id)
    if row is None:
        raise not_found(f"order {order_id}")
    try:
        after = domain.deliver(_state(row))
    except IllegalTransition as exc:
        raise conflict(str(exc)) from exc
    await _save(session, events, row, after)


# --- the reservation deadline -------------------------------------------------------------------


async def claim_overdue(session: AsyncSession, now: datetime) -> Row[Any] | None:
    """One pending order past its deadline, locked; rows another sweeper holds are skipped."""
    return (
        await session.execute(
            select(orders)
            .where(orders.c.status == OrderStatus.PENDING.value)
            .where(orders.c.reservation_deadline < now)
            .order_by(orders.c.reservation_deadline)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
    ).first()


async def expire(session: AsyncSession, events: Emitter, row: Row[Any], now: datetime) -> bool:
    after = domain.expire(_state(row), now)
    if after is None:
        return False
    await _save(session, events, row, after)
    return True
