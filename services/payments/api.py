"""HTTP in: the payments route of the contract (a page of an order's or a customer's payments)."""

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from libs.events.common import Money
from libs.kit.app import transaction_of
from libs.kit.auth import Caller
from libs.kit.pagination import DEFAULT_LIMIT, Cursor, Limit, Page, decode_cursor, encode_cursor
from libs.kit.problems import invalid
from libs.kit.transactions import SessionTx
from services.payments import service
from services.payments.db import Store
from services.payments.domain import Payment

router = APIRouter(prefix="/payments", tags=["payments"])
TxDep = Annotated[SessionTx[Store], Depends(transaction_of(Store), scope="function")]


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
    def of(cls, payment: Payment) -> "PaymentOut":
        return cls(
            id=payment.id,
            order_id=payment.order_id,
            customer_id=payment.customer_id,
            amount=Money(amount=payment.amount, currency=payment.currency),
            status=payment.status,
            provider_ref=payment.provider_ref,
            failure_reason=payment.failure_reason,
            created_at=payment.created_at.isoformat(),
            refunded_at=payment.refunded_at.isoformat() if payment.refunded_at else None,
        )


@router.get("", response_model=Page[PaymentOut])
async def list_payments(
    caller: Caller,
    tx: TxDep,
    order_id: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[PaymentOut]:
    """Owner or admin. A customer sees only their own payments; naming another customer's
    order is answered 404, like reading that order itself."""
    page = await service.list_payments(
        tx.store,
        caller=caller.sub,
        is_admin=caller.is_admin,
        order_id=order_id,
        after=_position(cursor),
        limit=limit,
    )
    last = page.items[-1] if page.items else None
    next_cursor = (
        encode_cursor({"created_at": last.created_at.isoformat(), "id": last.id})
        if page.more and last is not None
        else None
    )
    return Page[PaymentOut](items=[PaymentOut.of(p) for p in page.items], next_cursor=next_cursor)


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
