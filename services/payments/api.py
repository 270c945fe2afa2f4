"""HTTP in: payments' routes (its payments and refunds, provider webhooks, the sandbox's
simulated 3-D Secure verdict)."""

import logging
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from pydantic import BaseModel, Field

from libs.events.common import Money
from libs.kit.app import add_reconciliation_routes, request_id, transaction_of
from libs.kit.auth import Admin, Caller
from libs.kit.deadletters import include_dead_letter_routes
from libs.kit.errors import Conflict, NotFound
from libs.kit.idempotency import request_hash
from libs.kit.pagination import DEFAULT_LIMIT, Cursor, Limit, Page, decode_cursor, encode_cursor
from libs.kit.problems import invalid
from libs.kit.transactions import DatabaseUnitOfWork, SessionTx
from libs.kit.validation import CurrencyCode, RequestBody
from services.payments import service
from services.payments.adapters import PaymentProvider, SimulatesActions
from services.payments.db import Store
from services.payments.domain import (
    REFUND_REASON_MAX,
    NextAction,
    Payment,
    PaymentStatus,
    Refund,
    RefundState,
    Trace,
    WebhookRejected,
)
from services.payments.service import Charger

log = logging.getLogger(__name__)
router = APIRouter(prefix="/payments", tags=["payments"])
TxDep = Annotated[SessionTx[Store], Depends(transaction_of(Store), scope="function")]
# How long a refund's answer waits for the provider's verdict before it says `pending`.
REFUND_ANSWER_WAIT_S = 5.0


def _unit_of_work(request: Request) -> DatabaseUnitOfWork[Store]:
    uow: DatabaseUnitOfWork[Store] = request.app.state.payments_uow
    return uow


UnitOfWorkDep = Annotated[DatabaseUnitOfWork[Store], Depends(_unit_of_work)]


class NextActionOut(BaseModel):
    """Complete it with the provider's client library and `client_secret` (Stripe.js
    `handleNextAction`), or by sending the shopper to `redirect_url`."""

    type: str
    client_secret: str | None
    redirect_url: str | None

    @classmethod
    def of(cls, action: NextAction) -> "NextActionOut":
        return cls(
            type=action.type, client_secret=action.client_secret, redirect_url=action.redirect_url
        )


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
    # While `requires_action`: what the shopper must do (3-D Secure), for the frontend.
    next_action: NextActionOut | None = None

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
            next_action=NextActionOut.of(payment.next_action) if payment.next_action else None,
        )


class MoneyIn(RequestBody):
    amount: int = Field(ge=-(2**53 - 1), le=2**53 - 1)  # what every JSON reader holds exactly
    currency: CurrencyCode


class RefundIn(RequestBody):
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
    idempotency_key: Annotated[str, Header(alias="Idempotency-Key", min_length=1, max_length=200)],
) -> RefundOut:
    """Admin. Give back part or all of a capture; refunds of a payment never add up to more
    than it captured (422 naming `amount.amount`, with what is left). The provider is called
    after this commits: the answer waits for its verdict a few seconds, else says `pending`."""
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


# --- provider webhooks (public: the provider's signature is the authentication) ---------------

# A provider's event is a few KB; anything much larger is not one.
WEBHOOK_MAX_BYTES = 256 * 1024


class WebhookAck(BaseModel):
    received: bool
    outcome: str  # what payments did: captured, failed, disputed, duplicate, ignored


def _provider(request: Request) -> PaymentProvider:
    provider: PaymentProvider = request.app.state.provider
    return provider


ProviderDep = Annotated[PaymentProvider, Depends(_provider)]


@router.post(
    "/webhooks/{provider}",
    response_model=WebhookAck,
    responses={400: {"description": "not signed by the provider"}, 404: {}},
)
async def provider_webhook(
    provider: Annotated[str, Path(min_length=1, max_length=20)],
    request: Request,
    uow: UnitOfWorkDep,
    configured: ProviderDep,
    charger: ChargerDep,
) -> WebhookAck:
    """Public, provider-signed (`Stripe-Signature` for `stripe`, `sandbox-signature` for the
    sandbox) over the exact body, within the timestamp tolerance. Each provider event is handled
    once (its id in the inbox): a redelivery answers 200 `duplicate`."""
    if provider != configured.name:
        raise NotFound(f"payment provider {provider}")
    body = await request.body()
    if len(body) > WEBHOOK_MAX_BYTES:
        raise invalid("body", f"at most {WEBHOOK_MAX_BYTES} bytes", status=413)
    return await receive_webhook(uow, configured, charger, body, dict(request.headers))


async def receive_webhook(
    uow: DatabaseUnitOfWork[Store],
    provider: PaymentProvider,
    charger: Charger,
    body: bytes,
    headers: dict[str, str],
) -> WebhookAck:
    try:
        event = provider.parse_webhook(body, {k.lower(): v for k, v in headers.items()})
    except WebhookRejected as exc:
        raise invalid("signature", str(exc), status=400) from exc
    async with uow() as tx:
        outcome = await service.apply_provider_event(tx, provider.name, event, charger.wake)
    log.info("%s webhook %s (%s): %s", provider.name, event.id, event.provider_type, outcome)
    return WebhookAck(received=True, outcome=outcome)


class ActionVerdictIn(RequestBody):
    outcome: Literal["succeeded", "failed"]


@router.post("/sandbox/actions/{ref}", response_model=WebhookAck)
async def simulate_sandbox_action(
    ref: Annotated[str, Path(min_length=1, max_length=100)],
    body: ActionVerdictIn,
    caller: Caller,
    uow: UnitOfWorkDep,
    configured: ProviderDep,
    charger: ChargerDep,
) -> WebhookAck:
    """Sandbox only: the shopper's 3-D Secure verdict on the payment `ref` (its `provider_ref`
    while `requires_action`), as the provider's page would take it. The sandbox records it and
    sends its signed webhook, which takes the same path as one arriving at
    `POST /payments/webhooks/sandbox`. Owner of the payment or admin."""
    if not isinstance(configured, SimulatesActions):
        raise NotFound("the sandbox is not this store's payment provider")
    async with uow() as tx:
        payment = await tx.store.payments.by_provider_ref(ref)
    if payment is None or (not caller.is_admin and payment.customer_id != caller.sub):
        raise NotFound(f"payment {ref}")
    sent = await configured.confirm_action(ref, succeeded=body.outcome == "succeeded")
    if sent is None:
        raise Conflict(f"payment {ref} awaits no action")
    webhook, headers = sent
    return await receive_webhook(uow, configured, charger, webhook, headers)


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


# --- reconciliation (issue 14) ---

add_reconciliation_routes(router)


# --- dead letters (issue 14) ---

include_dead_letter_routes(router)  # /payments/dead-letters (libs/kit/deadletters.py)
