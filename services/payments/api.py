"""HTTP in: the payments route of the contract (a page of an order's or a customer's payments)."""

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import Row

from libs.events.common import Money
from libs.kit.app import Session
from libs.kit.auth import Caller
from libs.kit.pagination import DEFAULT_LIMIT, Cursor, Limit, Page, decode_cursor, encode_cursor
from libs.kit.problems import invalid, not_found
from services.payments import service

router = APIRouter(prefix="/payments", tags=["payments"])


class PaymentOut(BaseModel):
    id: str
    order_id: str
    customer_id: str
    amount: Money
    status: Literal["captured", "failed", "refunded"]
    provider_ref: str | None
    failure_reason: str | None
    created_at: str
    refunded_at: str | None

    @classmethod
    def from_row(cls, row: Row[Any]) -> "PaymentOut":
        return cls(
            id=row.id,
            order_id=row.order_id,
            customer_id=row.customer_id,
            amount=Money(amount=row.amount, currency=row.currency),
            status=row.status,
            provider_ref=row.provider_ref,
            failure_reason=row.failure_reason,
            created_at=row.created_at.isoformat(),
            refunded_at=row.refunded_at.isoformat() if row.refunded_at else None,
        )


@router.get("", response_model=Page[PaymentOut])
async def list_payments(
    caller: Caller,
    session: Session,
    order_id: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[PaymentOut]:
    """Owner or admin. A customer sees only their own payments; naming another customer's
    order is answered 404, like reading that order itself."""
    if order_id is not None and not caller.is_admin:
        owner = await service.order_customer(session, order_id)
        if owner is not None and owner != caller.sub:
            raise not_found(f"order {order_id}")
    rows = await service.list_payments(
        session,
        customer_id=None if caller.is_admin else caller.sub,
        order_id=order_id,
        after=_position(cursor),
        limit=limit,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = (
        encode_cursor({"created_at": rows[-1].created_at.isoformat(), "id": rows[-1].id})
        if more and rows
        else None
    )
    return Page[PaymentOut](items=[PaymentOut.from_row(r) for r in rows], next_cursor=next_cursor)


def _position(cursor: str | None) -> tuple[datetime, str] | None:
    position = decode_cursor(cursor)
    if position is None:
        return None
    try:
        created_at = datetime.fromisoformat(str(position["created_at"]))
        payment_id = str(position["id"])
    except (KeyError, ValueError) as exc:
        raise invalid("cursor", "malformed cursor", status=400) from exc
    if created_at.tzinfo is None:
        raise invalid("cursor", "malformed cursor", status=400)
    return created_at, payment_id
