"""HTTP in: the orders routes of the contract, plus the operator's ship and deliver."""

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from libs.events.common import Money
from libs.kit.app import request_id, transaction_of
from libs.kit.auth import Admin, Caller, Principal
from libs.kit.idempotency import request_hash
from libs.kit.pagination import DEFAULT_LIMIT, Cursor, Page, decode_cursor, encode_cursor
from libs.kit.problems import invalid
from libs.kit.transactions import SessionTx
from libs.kit.uow import Clock, UnitOfWork
from libs.kit.validation import NoCardNumber
from services.orders import domain, service
from services.orders.adapters import DocumentRenderer, PricingClient
from services.orders.db import Store
from services.orders.domain import OrderStatus, OrderView
from services.orders.settings import OrdersSettings

router = APIRouter(prefix="/orders", tags=["orders"])


async def _pricing(request: Request) -> PricingClient:
    pricing: PricingClient = request.app.state.pricing
    return pricing


async def _clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


async def _settings(request: Request) -> OrdersSettings:
    settings: OrdersSettings = request.app.state.settings
    return settings


async def _unit_of_work(request: Request) -> UnitOfWork[Store]:
    uow: UnitOfWork[Store] = request.app.state.unit_of_work
    return uow


# Dependencies are `async def` so FastAPI calls them inline instead of in a worker thread.
SettingsDep = Annotated[OrdersSettings, Depends(_settings)]
PricingDep = Annotated[PricingClient, Depends(_pricing)]
ClockDep = Annotated[Clock, Depends(_clock)]
# POST /orders opens its own transactions (none is open while pricing answers).
UnitOfWorkDep = Annotated[UnitOfWork[Store], Depends(_unit_of_work)]
# Every other route is one transaction: the request's, committed when the route returns.
TxDep = Annotated[SessionTx[Store], Depends(transaction_of(Store), scope="function")]
OrderId = Annotated[str, Path(max_length=64)]

Status = Literal["pending", "confirmed", "shipped", "delivered", "rejected", "cancelled"]
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
AddressKey = Annotated[str, Field(min_length=1, max_length=100)]
AddressValue = Annotated[str, Field(max_length=500)]


class LineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(ge=1, le=1000)


class PaymentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # A token holding a card number is refused here, so it is never stored, logged or published
    # (the 422 names `payment.token` and never repeats it).
    token: Annotated[str, NoCardNumber] = Field(pattern=domain.TOKEN_PATTERN, max_length=64)


class OrderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lines: list[LineIn] = Field(min_length=1, max_length=100)
    region: str = Field(min_length=1, max_length=50)
    shipping_address: dict[AddressKey, AddressValue] = Field(min_length=1, max_length=20)
    payment: PaymentIn
    # Extension, kept for v1 clients that send it: it must be the token's verified `email` claim,
    # where notifications go in any case (a customer cannot make the store mail someone else).
    email: str | None = Field(default=None, max_length=254, pattern=EMAIL_PATTERN)


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # One of a fixed set (a 422 lists them): no free text reaches the cancellation email.
    reason: domain.CancellationReason = domain.DEFAULT_CANCEL_REASON


class ShipIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    carrier: str = Field(min_length=1, max_length=100)
    tracking_number: str = Field(min_length=1, max_length=100)


class LineOut(BaseModel):
    sku: str
    quantity: int
    unit_price: Money
    discount: Money
    tax: Money
    total: Money


class HistoryOut(BaseModel):
    status: str
    at: datetime
    reason: str | None


class OrderOut(BaseModel):
    id: str
    customer_id: str
    status: str
    reason: str | None
    lines: list[LineOut]
    subtotal: Money
    discount: Money
    tax: Money
    total: Money
    region: str
    shipping_address: dict[str, Any]
    email: str | None
    history: list[HistoryOut]
    tracking: dict[str, Any] | None
    # Additive (v2): what payments gave back of the charge so far (refunds), if anything.
    refunded: Money | None = None
    # Additive (issue 12): the invoice (once confirmed) and the credit notes of refunds.
    invoice: "DocumentOut | None" = None
    credit_notes: "list[DocumentOut]" = []
    reservation_deadline: datetime
    cancellation_requested: bool
    quote_id: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_view(cls, view: OrderView) -> "OrderOut":
        return cls(
            id=view.id,
            customer_id=view.customer_id,
            status=view.status.value,
            reason=view.reason,
            lines=[LineOut.model_validate(ln, from_attributes=True) for ln in view.lines],
            subtotal=view.subtotal,
            discount=view.discount,
            tax=view.tax,
            total=view.total,
            region=view.region,
            shipping_address=view.shipping_address,
            email=view.email,
            history=[
                HistoryOut(status=h.status.value, at=h.at, reason=h.reason) for h in view.history
            ],
            tracking=view.tracking,
            refunded=view.refunded,
            **_documents_out(view),
            reservation_deadline=view.reservation_deadline,
            cancellation_requested=view.cancellation_requested,
            quote_id=view.quote_id,
            created_at=view.created_at,
            updated_at=view.updated_at,
        )


@router.post(
    "",
    status_code=202,
    response_model=OrderOut,
    responses={200: {"model": OrderOut, "description": "replay of an earlier identical request"}},
)
async def place_order(
    body: OrderIn,
    caller: Caller,
    request: Request,
    response: Response,
    uow: UnitOfWorkDep,
    pricing: PricingDep,
    clock: ClockDep,
    settings: SettingsDep,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200)
    ] = None,
) -> OrderOut:
    if idempotency_key is None:
        raise invalid("Idempotency-Key", "header is required")
    duplicate = domain.first_duplicate([line.sku for line in body.lines])
    if duplicate is not None:
        raise invalid(f"lines[{duplicate}].sku", "duplicate sku; put its quantity on one line")
    email = receipt_address(caller)
    if body.email is not None and (email is None or body.email.casefold() != email.casefold()):
        raise invalid(
            "email",
            "must be the verified email of the token (the `email` claim), or left out: "
            "order emails go only to the customer's own address",
        )
    order = service.OrderRequest(
        customer_id=caller.sub,
        idempotency_key=idempotency_key,
        request_hash=request_hash(body.model_dump(mode="json")),
        lines=[(line.sku, line.quantity) for line in body.lines],
        region=body.region,
        shipping_address=body.shipping_address,
        email=email,
        payment_token=body.payment.token,
    )
    placed = await service.place_order(
        uow,
        pricing,
        order,
        clock=clock,
        reservation_ttl_s=settings.reservation_ttl_s,
        request_id=request_id(request),
        authorization=request.headers.get("authorization"),
    )
    if placed.replayed:
        response.status_code = 200
    return OrderOut.from_view(placed.order)


def receipt_address(caller: Principal) -> str | None:
    """Where the order's emails go: the token's `email` claim, unless the identity provider says
    it is not verified (`email_verified: false`; tokens without that claim are the store's own)."""
    if caller.claims.get("email_verified") is False:
        return None
    return caller.email


@router.get("/{order_id}", response_model=OrderOut)
async def get_order(order_id: OrderId, caller: Caller, tx: TxDep) -> OrderOut:
    return OrderOut.from_view(await service.get_order(tx, caller, order_id))


@router.get("", response_model=Page[OrderOut])
async def list_orders(
    caller: Caller,
    tx: TxDep,
    customer_id: Annotated[str | None, Query(max_length=200)] = None,
    status: Status | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[OrderOut]:
    position = decode_cursor(cursor)
    page = await service.list_orders(
        tx,
        caller,
        customer_id=customer_id,
        status=OrderStatus(status) if status else None,
        before=_cursor_position(position) if position else None,
        limit=limit,
    )
    last = page.orders[-1] if page.more and page.orders else None
    return Page[OrderOut](
        items=[OrderOut.from_view(v) for v in page.orders],
        next_cursor=_encode(last) if last else None,
    )


def _encode(view: OrderView) -> str:
    return encode_cursor({"created_at": view.created_at.isoformat(), "id": view.id})


def _cursor_position(position: dict[str, Any]) -> tuple[datetime, str]:
    try:
        return datetime.fromisoformat(str(position["created_at"])), str(position["id"])
    except (KeyError, ValueError) as exc:
        raise invalid("cursor", "malformed cursor", status=400) from exc


@router.post("/{order_id}/cancel", status_code=202, response_model=OrderOut)
async def cancel_order(
    order_id: OrderId,
    caller: Caller,
    tx: TxDep,
    body: Annotated[CancelIn | None, Body()] = None,
) -> OrderOut:
    reason = body.reason if body else domain.DEFAULT_CANCEL_REASON
    return OrderOut.from_view(await service.request_cancellation(tx, caller, order_id, reason))


@router.post("/{order_id}/ship", response_model=OrderOut)
async def ship_order(
    order_id: OrderId, body: ShipIn, caller: Admin, tx: TxDep, clock: ClockDep
) -> OrderOut:
    view = await service.ship(
        tx,
        caller,
        order_id,
        carrier=body.carrier,
        tracking_number=body.tracking_number,
        clock=clock,
    )
    return OrderOut.from_view(view)


@router.post("/{order_id}/deliver", response_model=OrderOut)
async def deliver_order(order_id: OrderId, caller: Admin, tx: TxDep) -> OrderOut:
    return OrderOut.from_view(await service.deliver(tx, caller, order_id))


# --- invoices and credit notes (issue 12) ---


class DocumentOut(BaseModel):
    """An issued document: its number, when, what it credits (credit notes), where its PDF is."""

    number: str
    issued_at: datetime
    amount: Money | None = None
    url: str


OrderOut.model_rebuild()


def _documents_out(view: OrderView) -> dict[str, Any]:
    documents = view.documents
    if documents is None:
        return {}
    invoice = documents.invoice
    return {
        "invoice": (
            DocumentOut(
                number=invoice.number,
                issued_at=invoice.issued_at,
                url=f"/orders/{view.id}/invoice",
            )
            if invoice
            else None
        ),
        "credit_notes": [
            DocumentOut(
                number=note.number,
                issued_at=note.issued_at,
                amount=note.amount,
                url=f"/orders/{view.id}/credit-notes/{note.number}",
            )
            for note in documents.credit_notes
        ],
    }


async def _documents(request: Request) -> DocumentRenderer:
    renderer: DocumentRenderer = request.app.state.documents
    return renderer


DocumentsDep = Annotated[DocumentRenderer, Depends(_documents)]
DocumentNumber = Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
_PDF: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/pdf": {}}, "description": "the document as a PDF"}
}


def _pdf(document: service.Document) -> Response:
    # inline: browsers show it; the filename is the document's number.
    return Response(
        document.content,
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{document.filename}"'},
    )


@router.get("/{order_id}/invoice", response_class=Response, responses=_PDF)
async def get_invoice(
    order_id: OrderId, caller: Caller, tx: TxDep, renderer: DocumentsDep
) -> Response:
    return _pdf(await service.invoice_pdf(tx, caller, order_id, renderer))


@router.get("/{order_id}/credit-notes/{number}", response_class=Response, responses=_PDF)
async def get_credit_note(
    order_id: OrderId, number: DocumentNumber, caller: Caller, tx: TxDep, renderer: DocumentsDep
) -> Response:
    return _pdf(await service.credit_note_pdf(tx, caller, order_id, number, renderer))
