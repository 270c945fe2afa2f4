"""HTTP in: the payments route of the contract (a page of an order's or a customer's payments)."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from libs.events.common import Money
from libs.kit.app import request_id, transaction_of
from libs.kit.auth import Admin, Caller
from libs.kit.pagination import DEFAULT_LIMIT, Cursor, Limit, Page, decode_cursor, encode_cursor
from libs.kit.problems import invalid
from libs.kit.transactions import DatabaseUnitOfWork, SessionTx
from libs.kit.validation import CurrencyCode
from services.payments import service
from services.payments.db import Store
from services.payments.domain import (
    REFUND_REASON_MAX,
    Payment,
    PaymentStatus,
    Refund,
    RefundState,
    Trace,
    request_hash,
)
from services.payments.service import Charger

router = APIRouter(prefix="/payments", tags=["payments"])
TxDep = Annotated[SessionTx[Store], Depends(transaction_of(Store), scope="function")]
# How long a refund's answer waits for the provider's verdict before it says `pending`.
REFUND_ANSWER_WAIT_S = 5.0


def _unit_of_work(request: Request) -> DatabaseUnitOfWork[Store]:
    uow: DatabaseUnitOfWork[Store] = request.app.state.payments_uow
    return uow


UnitOfWorkDep = Annotated[DatabaseUnitOfWork[Store], Depends(_unit_of_work)]


class PaymentOut(BaseModel):
    id: str
    order_id: str
    customer_id: str
    amount: Money
    status: PaymentStatus
    provider_ref: str | None
    failure_reason: str | None
    created_at: str
    refunded_at: str | None
    # Additive (v2): what refunds gave back so far, and the provider that moved the money.
    refunded: Money
    provider: str

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
            refunded=Money(amount=payment.refunded, currency=payment.currency),
            provider=payment.provider,
        )


class MoneyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: int = Field(ge=-(2**62), le=2**62)
    currency: CurrencyCode


class RefundIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: MoneyIn
    reason: str = Field(min_length=1, max_length=REFUND_REASON_MAX)


class RefundOut(BaseModel):
    id: str
    payment_id: str
    order_id: str
    amount: Money
    # `pending` until the provider answers (the call is made after the request's commit; the
    # answer waits for it up to a few seconds), then `succeeded` or `failed`.
    status: RefundState
    provider_ref: str | None
    reason: str
    failure_reason: str | None
    created_at: str

    @classmethod
    def of(cls, refund: Refund) -> "RefundOut":
        return cls(
            id=refund.id,
            payment_id=refund.payment_id,
            order_id=refund.order_id,
            amount=Money(amount=refund.amount, currency=refund.currency),
            status=refund.status,
            provider_ref=refund.provider_ref,
            reason=refund.reason,
            failure_reason=refund.failure_reason,
            created_at=refund.created_at.isoformat(),
        )


PaymentId = Annotated[str, Path(min_length=1, max_length=36)]


def _charger(request: Request) -> Charger:
    charger: Charger = request.app.state.charger
    return charger


ChargerDep = Annotated[Charger, Depends(_charger)]


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


@router.get("/{payment_id}", response_model=PaymentOut)
async def get_payment(payment_id: PaymentId, caller: Caller, tx: TxDep) -> PaymentOut:
    """Owner or admin (another customer's payment is 404)."""
    payment = await service.get_payment(
        tx.store, payment_id, caller=caller.sub, is_admin=caller.is_admin
    )
    return PaymentOut.of(payment)


@router.post(
    "/{payment_id}/refunds",
    status_code=201,
    response_model=RefundOut,
    responses={200: {"model": RefundOut, "description": "replay of an earlier identical request"}},
)
async def refund_payment(
    payment_id: PaymentId,
    body: RefundIn,
    caller: Admin,
    request: Request,
    response: Response,
    uow: UnitOfWorkDep,
    charger: ChargerDep,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200)
    ] = None,
) -> RefundOut:
    """Admin. Give back part or all of a capture; refunds of a payment never add up to more
    than it captured (422 naming `amount.amount`, with what is left). The provider is called
    after this commits: the answer waits for its verdict a few seconds, else says `pending`."""
    if idempotency_key is None:
        raise invalid("Idempotency-Key", "header is required")
    asked = service.RefundAsked(
        payment_id=payment_id,
        amount=Money(amount=body.amount.amount, currency=body.amount.currency),
        reason=body.reason,
        idempotency_key=idempotency_key,
        request_hash=request_hash(body.model_dump(mode="json")),
        trace=Trace(request_id(request), None),
    )
    async with uow(request_id(request)) as tx:
        answer = await service.ask_refund(tx, asked, charger.wake)
    refund = answer.refund
    if refund.status == "pending":
        await charger.settled(f"refund:{refund.id}", REFUND_ANSWER_WAIT_S)
        async with uow() as tx:
            refund = await tx.store.refunds.get(refund.id) or refund
    if answer.replayed:
        response.status_code = 200
    return RefundOut.of(refund)


@router.get("/{payment_id}/refunds", response_model=Page[RefundOut])
async def list_refunds(
    payment_id: PaymentId,
    caller: Caller,
    tx: TxDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[RefundOut]:
    """Owner or admin; oldest first."""
    items, more = await service.list_refunds(
        tx.store,
        payment_id=payment_id,
        caller=caller.sub,
        is_admin=caller.is_admin,
        after=_position(cursor),
        limit=limit,
    )
    last = items[-1] if items else None
    next_cursor = (
        encode_cursor({"created_at": last.created_at.isoformat(), "id": last.id})
        if more and last is not None
        else None
    )
    return Page[RefundOut](items=[RefundOut.of(r) for r in items], next_cursor=next_cursor)


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
