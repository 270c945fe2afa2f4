"""HTTP in: the orders routes of the contract, plus the operator's ship and deliver, carts,
shipments' labels and the carriers' tracking webhooks."""

import logging
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request, Response
from pydantic import BaseModel, Field

from libs.events.common import BackorderedLine, Money
from libs.kit.app import add_reconciliation_routes, request_id, transaction_of
from libs.kit.auth import Admin, Caller, ChannelOrCaller, Principal
from libs.kit.deadletters import include_dead_letter_routes
from libs.kit.errors import NotFound
from libs.kit.idempotency import request_hash
from libs.kit.pagination import DEFAULT_LIMIT, Cursor, Page, decode_cursor, encode_cursor
from libs.kit.problems import invalid
from libs.kit.transactions import SessionTx
from libs.kit.uow import Clock, UnitOfWork
from libs.kit.validation import NoCardNumber, RequestBody
from libs.kit.worker import Worker
from services.orders import domain, service
from services.orders.adapters import Carrier, CatalogClient, DocumentRenderer, PricingClient
from services.orders.db import Store
from services.orders.domain import CartView, OrderStatus, OrderView, ShipmentView, WebhookRejected
from services.orders.settings import OrdersSettings

log = logging.getLogger(__name__)
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
SHIPPING_METHOD_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"  # pricing's method codes


class LineIn(RequestBody):
    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(ge=1, le=1000)


class PaymentIn(RequestBody):
    # A token holding a card number is refused here, so it is never stored, logged or published
    # (the 422 names `payment.token` and never repeats it).
    token: Annotated[str, NoCardNumber] = Field(pattern=domain.TOKEN_PATTERN, max_length=64)


class OrderIn(RequestBody):
    lines: list[LineIn] = Field(min_length=1, max_length=100)
    region: str = Field(min_length=1, max_length=50)
    shipping_address: dict[AddressKey, AddressValue] = Field(min_length=1, max_length=20)
    payment: PaymentIn
    # Extension, kept for v1 clients that send it: it must be the token's verified `email` claim,
    # where notifications go in any case (a customer cannot make the store mail someone else).
    email: str | None = Field(default=None, max_length=254, pattern=EMAIL_PATTERN)
    # v2 (issue 12): a code of GET /pricing/shipping-methods?region=; absent: the region's default.
    shipping_method: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=SHIPPING_METHOD_PATTERN
    )
    # Issue 13: the sales channel (absent: web; a channel token's own channel).
    channel: str | None = Field(default=None, max_length=64, pattern=domain.CHANNEL_PATTERN)


class CancelIn(RequestBody):
    # One of a fixed set (a 422 lists them): no free text reaches the cancellation email.
    reason: domain.CancellationReason = domain.DEFAULT_CANCEL_REASON


class ShipIn(RequestBody):
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
    # Additive (v2, issue 12): the shipping line, net (its tax is in `tax`, both in `total`).
    shipping: Money | None = None
    shipping_method: str | None = None
    # Additive (issue 12): the order's returns, oldest first.
    returns: list["ReturnOut"] = []
    # Additive (issue 12): the invoice (once confirmed) and the credit notes of refunds.
    invoice: "DocumentOut | None" = None
    credit_notes: "list[DocumentOut]" = []
    reservation_deadline: datetime
    cancellation_requested: bool
    quote_id: str | None
    created_at: datetime
    updated_at: datetime
    # Additive (v2, issue 12): the order's shipments, oldest first.
    shipments: "list[ShipmentOut]" = []
    # Additive (issue 13): the sales channel the order came through.
    channel: str = domain.DEFAULT_CHANNEL

    # Additive (issue 13): the (parts of) lines promised from incoming stock.
    backordered: list[BackorderedLine] = []

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
            shipping=view.shipping,
            shipping_method=view.shipping_method,
            returns=[ReturnOut.of(r) for r in view.returns],
            **_documents_out(view),
            reservation_deadline=view.reservation_deadline,
            cancellation_requested=view.cancellation_requested,
            quote_id=view.quote_id,
            created_at=view.created_at,
            updated_at=view.updated_at,
            shipments=[ShipmentOut.of(sh) for sh in view.shipments],
            channel=view.channel,
            backordered=list(view.backordered),
        )


def _order_email(caller: Principal, asked: str | None) -> str | None:
    """Where the order's emails go: the token's verified address. A body may name it (any
    case), never another one."""
    email = receipt_address(caller)
    if asked is not None and (email is None or asked.casefold() != email.casefold()):
        raise invalid(
            "email",
            "must be the verified email of the token (the `email` claim), or left out: "
            "order emails go only to the customer's own address",
        )
    return email


@router.post(
    "",
    status_code=202,
    response_model=OrderOut,
    responses={200: {"model": OrderOut, "description": "replay of an earlier identical request"}},
)
async def place_order(
    body: OrderIn,
    caller: ChannelOrCaller,
    request: Request,
    response: Response,
    uow: UnitOfWorkDep,
    pricing: PricingDep,
    clock: ClockDep,
    settings: SettingsDep,
    idempotency_key: Annotated[str, Header(alias="Idempotency-Key", min_length=1, max_length=200)],
) -> OrderOut:
    duplicate = domain.first_duplicate([line.sku for line in body.lines])
    if duplicate is not None:
        raise invalid(f"lines[{duplicate}].sku", "duplicate sku; put its quantity on one line")
    email = _order_email(caller, body.email)
    channel = order_channel(body.channel, caller)
    order = service.OrderRequest(
        customer_id=caller.sub,
        idempotency_key=idempotency_key,
        # A v1 body (no shipping_method) hashes as it did before v2, so its replays still match.
        request_hash=request_hash(body.model_dump(mode="json", exclude=_absent_v2_fields(body))),
        lines=[(line.sku, line.quantity) for line in body.lines],
        region=body.region,
        shipping_address=body.shipping_address,
        email=email,
        payment_token=body.payment.token,
        shipping_method=body.shipping_method,
        channel=channel,
        channel_privileged=caller.channel is not None or caller.is_admin,
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
async def get_order(order_id: OrderId, caller: ChannelOrCaller, tx: TxDep) -> OrderOut:
    return OrderOut.from_view(await service.get_order(tx, caller, order_id))


@router.get("", response_model=Page[OrderOut])
async def list_orders(
    caller: ChannelOrCaller,
    tx: TxDep,
    customer_id: Annotated[str | None, Query(max_length=200)] = None,
    status: Status | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = DEFAULT_LIMIT,
    cursor: Cursor = None,
    channel: Annotated[str | None, Query(max_length=64)] = None,
) -> Page[OrderOut]:
    position = decode_cursor(cursor)
    page = await service.list_orders(
        tx,
        caller,
        customer_id=customer_id,
        status=OrderStatus(status) if status else None,
        before=_cursor_position(position) if position else None,
        limit=limit,
        channel=channel,
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


# --- carts (issue 12) ---------------------------------------------------------------------------

carts_router = APIRouter(prefix="/carts", tags=["carts"])

CartId = Annotated[str, Path(max_length=64)]
# Catalog's sku form: a cart line's sku travels in catalog's URL.
CART_SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
CartSku = Annotated[str, Path(pattern=CART_SKU_PATTERN, max_length=64)]


async def _catalog(request: Request) -> CatalogClient:
    catalog: CatalogClient = request.app.state.catalog
    return catalog


CatalogDep = Annotated[CatalogClient, Depends(_catalog)]


class CartLineIn(RequestBody):
    sku: str = Field(pattern=CART_SKU_PATTERN, max_length=64)
    quantity: int = Field(ge=1, le=domain.MAX_CART_LINE_QUANTITY)


class CartIn(RequestBody):
    lines: list[CartLineIn] = Field(default=[], max_length=domain.MAX_CART_LINES)


class CartQuantityIn(RequestBody):
    # 0 removes the line.
    quantity: int = Field(ge=0, le=domain.MAX_CART_LINE_QUANTITY)


class CheckoutIn(RequestBody):
    """POST /orders' body without the lines (they are the cart's)."""

    region: str = Field(min_length=1, max_length=50)
    shipping_address: dict[AddressKey, AddressValue] = Field(min_length=1, max_length=20)
    shipping_method: str | None = Field(default=None, min_length=1, max_length=50)
    payment: PaymentIn
    email: str | None = Field(default=None, max_length=254, pattern=EMAIL_PATTERN)
    # Issue 13: as POST /orders' (absent: web).
    channel: str | None = Field(default=None, max_length=64, pattern=domain.CHANNEL_PATTERN)


class CartLineOut(BaseModel):
    sku: str
    quantity: int
    # Live from catalog: its base price (null while it has none, or the product is
    # discontinued); the checkout's order is priced by pricing (groups, promotions, tax).
    unit_price: Money | None
    line_total: Money | None
    available: int
    in_stock: bool
    # `available` < `quantity`: the cart keeps the line, the order's reservation decides.
    short: bool
    product_status: Literal["active", "discontinued", "unknown"]


class CartOut(BaseModel):
    id: str
    customer_id: str
    status: Literal["open", "checked_out"]
    lines: list[CartLineOut]
    subtotal: Money | None
    currency: str | None
    order_id: str | None
    created_at: datetime
    updated_at: datetime
    # When this idle period's CartAbandoned was emitted (null once the cart changes again).
    abandoned_at: datetime | None

    @classmethod
    def from_view(cls, view: CartView) -> "CartOut":
        cart = view.cart
        return cls(
            id=cart.id,
            customer_id=cart.customer_id,
            status=cart.status.value,
            lines=[
                CartLineOut(
                    sku=ln.sku,
                    quantity=ln.quantity,
                    unit_price=ln.unit_price,
                    line_total=ln.line_total,
                    available=ln.available,
                    in_stock=ln.in_stock,
                    short=ln.available < ln.quantity,
                    product_status=ln.product_status,
                )
                for ln in view.lines
            ],
            subtotal=view.subtotal,
            currency=view.currency,
            order_id=cart.order_id,
            created_at=cart.created_at,
            updated_at=cart.updated_at,
            abandoned_at=cart.abandoned_at,
        )


@carts_router.post("", status_code=201, response_model=CartOut)
async def create_cart(
    caller: Caller,
    request: Request,
    uow: UnitOfWorkDep,
    catalog: CatalogDep,
    clock: ClockDep,
    body: Annotated[CartIn | None, Body()] = None,
) -> CartOut:
    lines = body.lines if body else []
    duplicate = domain.first_duplicate([line.sku for line in lines])
    if duplicate is not None:
        raise invalid(f"lines[{duplicate}].sku", "duplicate sku; put its quantity on one line")
    view = await service.create_cart(
        uow,
        catalog,
        caller,
        [(line.sku, line.quantity) for line in lines],
        email=receipt_address(caller),
        clock=clock,
        request_id=request_id(request),
    )
    return CartOut.from_view(view)


@carts_router.get("/{cart_id}", response_model=CartOut)
async def get_cart(
    cart_id: CartId, caller: Caller, request: Request, uow: UnitOfWorkDep, catalog: CatalogDep
) -> CartOut:
    view = await service.get_cart(uow, catalog, caller, cart_id, request_id(request))
    return CartOut.from_view(view)


@carts_router.put("/{cart_id}/lines/{sku}", response_model=CartOut)
async def set_cart_line(
    cart_id: CartId,
    sku: CartSku,
    body: CartQuantityIn,
    caller: Caller,
    request: Request,
    uow: UnitOfWorkDep,
    catalog: CatalogDep,
    clock: ClockDep,
) -> CartOut:
    view = await service.set_cart_line(
        uow,
        catalog,
        caller,
        cart_id,
        sku,
        body.quantity,
        email=receipt_address(caller),
        clock=clock,
        request_id=request_id(request),
    )
    return CartOut.from_view(view)


@carts_router.post(
    "/{cart_id}/checkout",
    status_code=202,
    response_model=OrderOut,
    responses={200: {"model": OrderOut, "description": "replay of an earlier identical request"}},
)
async def checkout_cart(
    cart_id: CartId,
    body: CheckoutIn,
    caller: Caller,
    request: Request,
    response: Response,
    uow: UnitOfWorkDep,
    pricing: PricingDep,
    clock: ClockDep,
    settings: SettingsDep,
    idempotency_key: Annotated[str, Header(alias="Idempotency-Key", min_length=1, max_length=200)],
) -> OrderOut:
    email = _order_email(caller, body.email)
    order = service.OrderRequest(
        customer_id=caller.sub,
        idempotency_key=idempotency_key,
        # The cart is part of the request: one key cannot check out two carts. An absent
        # channel is not hashed (issue 13): bodies from before it replay as they did.
        request_hash=request_hash(
            {
                "cart_id": cart_id,
                **body.model_dump(
                    mode="json", exclude={"channel"} if body.channel is None else None
                ),
            }
        ),
        lines=[],  # the cart's, read by the use case
        region=body.region,
        shipping_address=body.shipping_address,
        email=email,
        payment_token=body.payment.token,
        shipping_method=body.shipping_method,
        channel=body.channel or domain.DEFAULT_CHANNEL,
        channel_privileged=caller.is_admin,
    )
    placed = await service.checkout_cart(
        uow,
        pricing,
        caller,
        cart_id,
        order,
        clock=clock,
        reservation_ttl_s=settings.reservation_ttl_s,
        request_id=request_id(request),
        authorization=request.headers.get("authorization"),
    )
    if placed.replayed:
        response.status_code = 200
    return OrderOut.from_view(placed.order)


# --- shipments (issue 12) ---


class ShipmentOut(BaseModel):
    id: str
    carrier: str | None
    tracking_number: str | None
    # The sandbox's PDF under this API (GET it with the order's token), else the carrier's URL.
    label_url: str | None
    status: str
    tracking_url: str | None = None
    failure_reason: str | None = None
    created_at: datetime

    @classmethod
    def of(cls, shipment: ShipmentView) -> "ShipmentOut":
        return cls(
            id=shipment.id,
            carrier=shipment.carrier,
            tracking_number=shipment.tracking_number,
            label_url=shipment.label_url,
            status=shipment.status.value,
            tracking_url=shipment.tracking_url,
            failure_reason=shipment.failure_reason,
            created_at=shipment.created_at,
        )


# A carrier's tracking event is a few KB; anything much larger is not one.
CARRIER_WEBHOOK_MAX_BYTES = 256 * 1024


class CarrierWebhookAck(BaseModel):
    received: bool
    # What orders did: the shipment's new status, duplicate, ignored (not a tracking update we
    # know, or an unknown tracking number), stale (an update that changes nothing).
    outcome: str


async def _carrier(request: Request) -> Carrier:
    carrier: Carrier = request.app.state.carrier
    return carrier


async def _label_worker(request: Request) -> Worker:
    worker: Worker = request.app.state.label_worker
    return worker


CarrierDep = Annotated[Carrier, Depends(_carrier)]
LabelWorkerDep = Annotated[Worker, Depends(_label_worker)]


@router.post(
    "/webhooks/carriers/{carrier}",
    response_model=CarrierWebhookAck,
    responses={400: {"description": "not signed by the carrier"}, 404: {}, 413: {}},
)
async def carrier_webhook(
    carrier: Annotated[str, Path(min_length=1, max_length=20)],
    request: Request,
    uow: UnitOfWorkDep,
    configured: CarrierDep,
) -> CarrierWebhookAck:
    """Public, carrier-signed (`sandbox-signature` for the sandbox, `X-Hmac-Signature` for
    EasyPost) over the exact body. Each carrier event is handled once (its id in the inbox): a
    redelivery answers 200 `duplicate`; an unknown tracking number 200 `ignored` (carriers
    retry anything else)."""
    if carrier != configured.name:
        raise NotFound(f"carrier {carrier}")
    body = await request.body()
    if len(body) > CARRIER_WEBHOOK_MAX_BYTES:
        raise invalid("body", f"at most {CARRIER_WEBHOOK_MAX_BYTES} bytes", status=413)
    headers = {k.lower(): v for k, v in request.headers.items()}
    try:
        event = configured.parse_webhook(headers, body)
    except WebhookRejected as exc:
        raise invalid("signature", str(exc), status=400) from exc
    if event is None:
        return CarrierWebhookAck(received=True, outcome="ignored")
    async with uow(request_id(request)) as tx:
        outcome = await service.apply_tracking(tx, configured.name, event)
    log.info("%s webhook %s (%s): %s", carrier, event.event_id, event.status, outcome)
    return CarrierWebhookAck(received=True, outcome=outcome)


@router.get(
    "/{order_id}/shipments/{shipment_id}/label",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}, "description": "the label PDF"}},
)
async def shipment_label(
    order_id: OrderId,
    shipment_id: Annotated[str, Path(max_length=64)],
    caller: Caller,
    tx: TxDep,
) -> Response:
    """The shipment's label (the sandbox carrier's PDF), for the order's owner or an admin."""
    pdf = await service.shipment_label(tx, caller, order_id, shipment_id)
    return Response(
        content=pdf,
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="label-{shipment_id}.pdf"'},
    )


@router.post("/{order_id}/shipments", status_code=202, response_model=OrderOut)
async def request_shipment(
    order_id: OrderId, caller: Admin, tx: TxDep, worker: LabelWorkerDep
) -> OrderOut:
    """Admin: buy another label for a confirmed or shipped order (after a failed one, a lost
    parcel); 409 for any other order."""
    return OrderOut.from_view(await service.request_shipment(tx, caller, order_id, worker.wake))


# --- shipping rates (issue 12) ---


def _absent_v2_fields(body: OrderIn) -> set[str]:
    """The v2 fields a body left out: not hashed, so an Idempotency-Key's replay of a body
    placed before v2 still matches (and sending `shipping_method` makes it another body)."""
    absent = {"shipping_method"} if body.shipping_method is None else set()
    if body.channel is None:  # issue 13, the same way
        absent.add("channel")
    return absent


# --- returns (issue 12) ---


class ReturnLineIn(RequestBody):
    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(ge=1, le=1000)
    # One of a fixed set (a 422 lists them): no free text reaches an email.
    reason: domain.ReturnReason


class ReturnIn(RequestBody):
    lines: list[ReturnLineIn] = Field(min_length=1, max_length=100)


class ReceivedLineIn(RequestBody):
    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(ge=1, le=1000)
    condition: domain.ReturnCondition


class ReceiveIn(RequestBody):
    lines: list[ReceivedLineIn] = Field(min_length=1, max_length=200)


class ReturnLineOut(BaseModel):
    sku: str
    quantity: int
    reason: str


class ReceivedLineOut(BaseModel):
    sku: str
    quantity: int
    condition: str


class ReturnOut(BaseModel):
    id: str
    order_id: str
    status: str
    lines: list[ReturnLineOut]
    # What arrived back, per sku and condition (empty until received).
    received: list[ReceivedLineOut] = []
    # The received units' share of the charge (set once received).
    refund: Money | None = None
    requested_at: datetime
    received_at: datetime | None = None
    completed_at: datetime | None = None

    @classmethod
    def of(cls, order_return: domain.OrderReturn) -> "ReturnOut":
        return cls(
            id=order_return.id,
            order_id=order_return.order_id,
            status=order_return.status.value,
            lines=[
                ReturnLineOut(sku=ln.sku, quantity=ln.quantity, reason=ln.reason)
                for ln in order_return.lines
            ],
            received=[
                ReceivedLineOut(sku=ln.sku, quantity=ln.quantity, condition=ln.condition)
                for ln in order_return.received
            ],
            refund=order_return.refund,
            requested_at=order_return.requested_at,
            received_at=order_return.received_at,
            completed_at=order_return.completed_at,
        )


ReturnId = Annotated[str, Path(max_length=64)]


@router.post(
    "/{order_id}/returns",
    status_code=201,
    response_model=ReturnOut,
    responses={200: {"model": ReturnOut, "description": "replay of an earlier identical request"}},
)
async def request_return(
    order_id: OrderId,
    body: ReturnIn,
    caller: Caller,
    tx: TxDep,
    response: Response,
    clock: ClockDep,
    settings: SettingsDep,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200)
    ] = None,
) -> ReturnOut:
    """Owner (or admin): return units of a delivered order within the return window."""
    asked = service.ReturnRequest(
        order_id=order_id,
        lines=[domain.ReturnLine(ln.sku, ln.quantity, ln.reason) for ln in body.lines],
        idempotency_key=idempotency_key,
        request_hash=request_hash(body.model_dump(mode="json")) if idempotency_key else None,
    )
    answer = await service.request_return(
        tx, caller, asked, clock=clock, window_days=settings.return_window_days
    )
    if answer.replayed:
        response.status_code = 200
    return ReturnOut.of(answer.order_return)


@router.post("/{order_id}/returns/{return_id}/receive", response_model=ReturnOut)
async def receive_return(
    order_id: OrderId,
    return_id: ReturnId,
    body: ReceiveIn,
    caller: Admin,
    tx: TxDep,
    clock: ClockDep,
    settings: SettingsDep,
) -> ReturnOut:
    """Admin: record what came back of a return, per sku and condition."""
    received = await service.receive_return(
        tx,
        order_id,
        return_id,
        [domain.ReceivedLine(ln.sku, ln.quantity, ln.condition) for ln in body.lines],
        clock=clock,
        shipping_policy=settings.return_refund_shipping,
    )
    return ReturnOut.of(received)


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


# --- channels (issue 13) ---


def order_channel(asked: str | None, caller: Principal) -> str:
    """The channel an order goes through: a channel token's own (naming another: 403), else the
    body's, else web. Whether the caller may use it is the use case's check."""
    try:
        return domain.requested_channel(asked, caller.channel)
    except domain.ChannelRefused as exc:
        raise service.channel_refusal(exc) from exc


# --- reconciliation (issue 14) ---

add_reconciliation_routes(router)


# --- dead letters (issue 14) ---

include_dead_letter_routes(router)  # /orders/dead-letters (libs/kit/deadletters.py)


# --- timeline (issue 14) ---


class TimelineOrderOut(BaseModel):
    id: str
    status: str
    reason: str | None
    channel: str
    placed_at: datetime
    updated_at: datetime
    reservation_deadline: datetime
    cancellation_requested: bool
    history: list[HistoryOut]


class TimelineEventOut(BaseModel):
    id: str
    type: str
    topic: str
    source: str
    time: datetime
    subject: str
    correlationid: str | None
    causationid: str | None
    direction: Literal["emitted", "consumed"]
    summary: str


class WaitingOut(BaseModel):
    for_: str = Field(alias="for", serialization_alias="for")
    from_: str = Field(alias="from", serialization_alias="from")
    since: datetime
    deadline: datetime | None
    overdue: bool


class TimelineOut(BaseModel):
    order: TimelineOrderOut
    events: list[TimelineEventOut]
    services: dict[str, Any] = Field(
        description="per service (inventory, payments, notifications, orders) its records of "
        'the order, or {"error": ...} for a service that did not answer in time'
    )
    dead_letters: list[dict[str, Any]] | dict[str, str] = Field(
        description='the dead-lettered events about the order, or {"error": ...} when the '
        "dead-letter topics could not be read"
    )
    waiting: WaitingOut | None

    @classmethod
    def of(cls, timeline: service.Timeline) -> "TimelineOut":
        view = timeline.order
        waiting = timeline.waiting
        return cls(
            order=TimelineOrderOut(
                id=view.id,
                status=view.status.value,
                reason=view.reason,
                channel=view.channel,
                placed_at=view.created_at,
                updated_at=view.updated_at,
                reservation_deadline=view.reservation_deadline,
                cancellation_requested=view.cancellation_requested,
                history=[
                    HistoryOut(status=h.status.value, at=h.at, reason=h.reason)
                    for h in view.history
                ],
            ),
            events=[
                TimelineEventOut(
                    id=e.id,
                    type=e.type,
                    topic=e.topic,
                    source=e.source,
                    time=e.time,
                    subject=e.subject,
                    correlationid=e.correlationid,
                    causationid=e.causationid,
                    direction=e.direction,
                    summary=domain.event_summary(e.type, e.data),
                )
                for e in timeline.events
            ],
            services={
                **timeline.services,
                "orders": {
                    "shipments": [
                        ShipmentOut.of(sh).model_dump(mode="json") for sh in view.shipments
                    ],
                    "returns": [ReturnOut.of(r).model_dump(mode="json") for r in view.returns],
                },
            },
            dead_letters=timeline.dead_letters,
            waiting=None
            if waiting is None
            else WaitingOut.model_validate(
                {
                    "for": waiting.waiting_for,
                    "from": waiting.source,
                    "since": waiting.since,
                    "deadline": waiting.deadline,
                    "overdue": waiting.overdue,
                }
            ),
        )


async def _timeline_records(request: Request) -> service.ServiceRecords:
    records: service.ServiceRecords = request.app.state.timeline_records
    return records


async def _dead_letters(request: Request) -> service.DeadLetters:
    letters: service.DeadLetters = request.app.state.dead_letters
    return letters


@router.get(
    "/{order_id}/timeline",
    response_model=TimelineOut,
    response_model_by_alias=True,
    responses={404: {"description": "no such order"}},
)
async def order_timeline(
    order_id: OrderId,
    _: Admin,
    uow: UnitOfWorkDep,
    clock: ClockDep,
    records: Annotated[service.ServiceRecords, Depends(_timeline_records)],
    dead_letters: Annotated[service.DeadLetters, Depends(_dead_letters)],
) -> TimelineOut:
    """Admin: the saga inspector. Every event orders emitted or consumed about the order, in
    order (time, then the journal's order); what inventory, payments, notifications and orders
    hold for it; its dead letters; and, while it is not terminal, what it waits for and since
    when. A service that does not answer in time is `{"error": ...}` in `services`."""
    timeline = await service.order_timeline(uow, order_id, records, dead_letters, clock)
    return TimelineOut.of(timeline)
