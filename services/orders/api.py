"""HTTP in: the orders routes of the contract, plus the operator's ship and deliver."""

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Row

from libs.events.common import Money
from libs.kit.app import Events, RuntimeDep, Session, request_id
from libs.kit.auth import Admin, Caller
from libs.kit.pagination import DEFAULT_LIMIT, Cursor, Page, decode_cursor, encode_cursor
from libs.kit.problems import invalid
from services.orders import domain, service
from services.orders.settings import OrdersSettings

router = APIRouter(prefix="/orders", tags=["orders"])


async def _pricing(request: Request) -> service.Pricing:
    pricing: service.Pricing = request.app.state.pricing
    return pricing


async def _clock(request: Request) -> Callable[[], datetime]:
    clock: Callable[[], datetime] = request.app.state.clock
    return clock


async def _settings(request: Request) -> OrdersSettings:
    settings: OrdersSettings = request.app.state.settings
    return settings


# Dependencies are `async def` so FastAPI calls them inline instead of in a worker thread.
SettingsDep = Annotated[OrdersSettings, Depends(_settings)]
PricingDep = Annotated[service.Pricing, Depends(_pricing)]
ClockDep = Annotated[Callable[[], datetime], Depends(_clock)]
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

    token: str = Field(pattern=domain.TOKEN_PATTERN, max_length=64)


class OrderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lines: list[LineIn] = Field(min_length=1, max_length=100)
    region: str = Field(min_length=1, max_length=50)
    shipping_address: dict[AddressKey, AddressValue] = Field(min_length=1, max_length=20)
    payment: PaymentIn
    # Extension: where notifications go; defaults to the token's `email` claim.
    email: str | None = Field(default=None, max_length=254, pattern=EMAIL_PATTERN)


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default=domain.DEFAULT_CANCEL_REASON, min_length=1, max_length=100)


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
    reservation_deadline: datetime
    cancellation_requested: bool
    quote_id: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_view(cls, view: service.OrderView) -> "OrderOut":
        row, history = view

        def money(amount: int) -> Money:
            return Money(amount=amount, currency=row.currency)

        return cls(
            id=row.id,
            customer_id=row.customer_id,
            status=row.status,
            reason=row.reason,
            lines=[LineOut.model_validate(ln) for ln in row.lines],
            subtotal=money(row.subtotal),
            discount=money(row.discount),
            tax=money(row.tax),
            total=money(row.total),
            region=row.region,
            shipping_address=row.shipping_address,
            email=row.email,
            history=[HistoryOut(status=h.status, at=h.at, reason=h.reason) for h in history],
            tracking=row.tracking,
            reservation_deadline=row.reservation_deadline,
            cancellation_requested=row.cancellation_requested,
            quote_id=row.quote_id,
            created_at=row.created_at,
            updated_at=row.updated_at,
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
    runtime: RuntimeDep,
    session: Session,
    events: Events,
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
    request_hash = domain.request_hash(body.model_dump(mode="json"))
    # A replay answers from the database alone, before pricing is asked anything; this read
    # is its own short transaction so no connection idles while pricing answers.
    async with runtime.db.transaction() as lookup:
        replayed = await service.find_replay(lookup, caller.sub, idempotency_key, request_hash)
    if replayed is not None:
        response.status_code = 200
        return OrderOut.from_view(await service.get_order(session, replayed, caller))

    lines = [(line.sku, line.quantity) for line in body.lines]
    quote = await pricing.quote(
        lines,
        body.region,
        authorization=request.headers.get("authorization"),
        request_id=request_id(request),
    )
    new = service.NewOrder(
        customer_id=caller.sub,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        lines=lines,
        region=body.region,
        shipping_address=body.shipping_address,
        email=body.email or caller.email,
        payment_token=body.payment.token,
    )
    order_id, view = await service.place_order(
        session, events, new, quote, clock(), settings.reservation_ttl_s
    )
    if view is None:  # a concurrent identical request placed it
        response.status_code = 200
        view = await service.get_order(session, order_id, caller)
    return OrderOut.from_view(view)


@router.get("/{order_id}", response_model=OrderOut)
async def get_order(order_id: OrderId, caller: Caller, session: Session) -> OrderOut:
    return OrderOut.from_view(await service.get_order(session, order_id, caller))


@router.get("", response_model=Page[OrderOut])
async def list_orders(
    caller: Caller,
    session: Session,
    customer_id: Annotated[str | None, Query(max_length=200)] = None,
    status: Status | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[OrderOut]:
    # Customers always see their own orders only; admins see all, or one customer's.
    owner = customer_id if caller.is_admin else caller.sub
    position = decode_cursor(cursor)
    before = _cursor_position(position) if position else None
    views = await service.list_orders(
        session, customer_id=owner, status=status, before=before, limit=limit
    )
    more = len(views) > limit
    views = views[:limit]
    next_cursor = _encode(views[-1][0]) if more and views else None
    return Page[OrderOut](items=[OrderOut.from_view(v) for v in views], next_cursor=next_cursor)


def _encode(row: Row[Any]) -> str:
    return encode_cursor({"created_at": row.created_at.isoformat(), "id": row.id})


def _cursor_position(position: dict[str, Any]) -> tuple[datetime, str]:
    try:
        return datetime.fromisoformat(str(position["created_at"])), str(position["id"])
    except (KeyError, ValueError) as exc:
        raise invalid("cursor", "malformed cursor", status=400) from exc


@router.post("/{order_id}/cancel", status_code=202, response_model=OrderOut)
async def cancel_order(
    order_id: OrderId,
    caller: Caller,
    session: Session,
    events: Events,
    body: Annotated[CancelIn | None, Body()] = None,
) -> OrderOut:
    reason = body.reason if body else domain.DEFAULT_CANCEL_REASON
    await service.request_cancellation(session, events, caller, order_id, reason)
    return OrderOut.from_view(await service.get_order(session, order_id, caller))


@router.post("/{order_id}/ship", response_model=OrderOut)
async def ship_order(
    order_id: OrderId,
    body: ShipIn,
    caller: Admin,
    session: Session,
    events: Events,
    clock: ClockDep,
) -> OrderOut:
    await service.ship(session, events, order_id, body.carrier, body.tracking_number, clock())
    return OrderOut.from_view(await service.get_order(session, order_id, caller))


@router.post("/{order_id}/deliver", response_model=OrderOut)
async def deliver_order(
    order_id: OrderId, caller: Admin, session: Session, events: Events
) -> OrderOut:
    await service.deliver(session, events, order_id)
    return OrderOut.from_view(await service.get_order(session, order_id, caller))
