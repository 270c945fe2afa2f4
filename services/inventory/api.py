"""HTTP in: the inventory routes of the contract, plus a reservation view for operators."""

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from pydantic import BaseModel, Field, field_validator

from libs.events.common import Line, Money
from libs.events.inventory import Allocation, ChannelAvailability
from libs.kit.app import Events, Session, add_reconciliation_routes, get_runtime
from libs.kit.auth import Admin
from libs.kit.deadletters import include_dead_letter_routes
from libs.kit.idempotency import request_hash
from libs.kit.pagination import DEFAULT_LIMIT, Cursor, Limit, Page, decode_cursor, encode_cursor
from libs.kit.problems import invalid
from libs.kit.transactions import SessionTx
from libs.kit.validation import CurrencyCode, RequestBody, Timestamp
from services.inventory import service
from services.inventory.db import Store
from services.inventory.domain import (
    CHANNEL_PATTERN,
    LOCATION_PATTERN,
    MAX_QUANTITY,
    SKU_PATTERN,
    Availability,
    Location,
    PurchaseOrder,
    PurchaseOrderStatus,
    Receipt,
    Reservation,
    StockItem,
    Supplier,
    SupplierItem,
    Transfer,
)
from services.inventory.settings import InventorySettings

router = APIRouter(prefix="/inventory", tags=["inventory"])

SkuPath = Annotated[str, Path(pattern=SKU_PATTERN, max_length=64)]
Quantity = Annotated[int, Field(ge=0, le=MAX_QUANTITY)]


async def _transaction(request: Request, session: Session, events: Events) -> SessionTx[Store]:
    """The request's transaction with the configured allocation policy (issue 13)."""
    settings = get_runtime(request).settings
    policy = settings.allocation_policy() if isinstance(settings, InventorySettings) else None
    return SessionTx(session, Store(session, policy), events)


TxDep = Annotated[SessionTx[Store], Depends(_transaction, scope="function")]


class StockIn(RequestBody):
    on_hand: Quantity
    reorder_point: Quantity | None = None


class AdjustmentIn(RequestBody):
    delta: int = Field(ge=-MAX_QUANTITY, le=MAX_QUANTITY, json_schema_extra={"not": {"const": 0}})
    reason: str = Field(
        min_length=1, max_length=100, description="restock, damage, count_correction, ..."
    )

    @field_validator("delta")
    @classmethod
    def _not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("must not be 0")
        return value


class BackordersOut(BaseModel):
    """Issue 13: whether the sku accepts backorders, when incoming stock is expected, and the
    units promised to waiting backorders."""

    allowed: bool = False
    expected_at: datetime | None = None
    waiting: int = 0


class ItemOut(BaseModel):
    sku: str
    on_hand: int
    reserved: int
    available: int
    reorder_point: int
    updated_at: datetime
    # Issue 13: units on sent purchase orders not received yet, and the backorder policy.
    on_order: int = 0
    backorders: BackordersOut = Field(default_factory=BackordersOut)

    # Issue 13: the sku at each location, and its capped channels.
    locations: list["LocationStockOut"] = []
    channels: list[ChannelAvailability] = []

    @classmethod
    def of(cls, item: StockItem, availability: Availability | None = None) -> "ItemOut":
        shown = availability or Availability(item.level.available)
        return cls(
            sku=item.sku,
            on_hand=item.level.on_hand,
            reserved=item.level.reserved,
            available=shown.available,
            reorder_point=item.level.reorder_point,
            updated_at=item.updated_at,
            locations=[
                LocationStockOut(
                    location=s.location,
                    on_hand=s.on_hand,
                    reserved=s.reserved,
                    safety_stock=s.safety_stock,
                    available=s.allocatable,
                )
                for s in item.locations
            ],
            channels=[
                ChannelAvailability(
                    channel=c.channel, cap=c.cap, used=c.used, available=c.available
                )
                for c in shown.channels
            ],
        )


class ReservationOut(BaseModel):
    order_id: str
    status: str
    reason: str | None
    lines: list[Line]
    expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    # Issue 13: where the units were taken from, and the order's channel.
    allocations: list[Allocation] = []
    channel: str | None = None

    @classmethod
    def of(cls, reservation: Reservation) -> "ReservationOut":
        return cls(
            order_id=reservation.order_id,
            status=reservation.status.value,
            reason=reservation.reason,
            lines=[Line(sku=sku, quantity=quantity) for sku, quantity in reservation.lines],
            expires_at=reservation.expires_at,
            created_at=reservation.created_at,
            updated_at=reservation.updated_at,
            allocations=[
                Allocation(sku=a.sku, location=a.location, quantity=a.quantity)
                for a in reservation.allocations
            ],
            channel=reservation.channel,
        )


@router.put(
    "/items/{sku}",
    response_model=ItemOut,
    responses={201: {"model": ItemOut, "description": "the item was created"}},
)
async def set_stock(
    sku: SkuPath, body: StockIn, _: Admin, tx: TxDep, response: Response
) -> ItemOut:
    """Set the counted stock: 200 for an existing item, 201 when this created it."""
    item, created = await service.set_stock(tx, sku, body.on_hand, body.reorder_point)
    if created:
        response.status_code = 201
    return await _supply_item(tx, item)


@router.post("/items/{sku}/adjustments", response_model=ItemOut)
async def adjust_stock(sku: SkuPath, body: AdjustmentIn, _: Admin, tx: TxDep) -> ItemOut:
    return await _supply_item(tx, await service.adjust_stock(tx, sku, body.delta, body.reason))


@router.get("/items/{sku}", response_model=ItemOut)
async def get_item(sku: Annotated[str, Path(max_length=64)], tx: TxDep) -> ItemOut:
    return await _supply_item(tx, await service.get_item(tx, sku))


@router.get("/reservations/{order_id}", response_model=ReservationOut)
async def get_reservation(
    order_id: Annotated[str, Path(max_length=64)], _: Admin, tx: TxDep
) -> ReservationOut:
    return ReservationOut.of(await service.get_reservation(tx, order_id))


# --- purchasing (issue 13) ---

EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
CODE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
IdPath = Annotated[str, Path(pattern=CODE_PATTERN, max_length=64)]
PoPath = Annotated[str, Path(max_length=64)]
LeadTime = Annotated[int, Field(ge=0, le=3650)]
LocationField = Annotated[str, Field(pattern=LOCATION_PATTERN, max_length=32)]
Sku = Annotated[str, Field(pattern=SKU_PATTERN, max_length=64)]
PositiveQuantity = Annotated[int, Field(gt=0, le=MAX_QUANTITY)]


class MoneyIn(RequestBody):
    amount: int = Field(ge=0, le=2**53 - 1)  # what every JSON reader holds exactly
    currency: CurrencyCode


class SupplierItemIn(RequestBody):
    sku: Sku
    reorder_quantity: PositiveQuantity
    lead_time_days: LeadTime | None = None
    unit_cost: MoneyIn | None = None


class SupplierIn(RequestBody):
    name: str = Field(min_length=1, max_length=200)
    email: str | None = Field(default=None, max_length=254, pattern=EMAIL_PATTERN)
    lead_time_days: LeadTime
    location: LocationField = "main"
    items: list[SupplierItemIn] = Field(default_factory=list, max_length=1000)


class SupplierItemOut(BaseModel):
    sku: str
    reorder_quantity: int
    lead_time_days: int | None
    unit_cost: Money | None


class SupplierOut(BaseModel):
    id: str
    name: str
    email: str | None
    lead_time_days: int
    location: str
    items: list[SupplierItemOut]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, supplier: Supplier) -> "SupplierOut":
        return cls(
            id=supplier.id,
            name=supplier.name,
            email=supplier.email,
            lead_time_days=supplier.lead_time_days,
            location=supplier.location,
            items=[
                SupplierItemOut(
                    sku=item.sku,
                    reorder_quantity=item.reorder_quantity,
                    lead_time_days=item.lead_time_days,
                    unit_cost=(
                        Money(amount=item.unit_cost_amount, currency=item.unit_cost_currency)
                        if item.unit_cost_amount is not None and item.unit_cost_currency
                        else None
                    ),
                )
                for item in supplier.items
            ],
            created_at=supplier.created_at,
            updated_at=supplier.updated_at,
        )


class POLineIn(RequestBody):
    sku: Sku
    quantity: PositiveQuantity


class PurchaseOrderIn(RequestBody):
    supplier_id: str = Field(pattern=CODE_PATTERN, max_length=64)
    location: LocationField | None = None
    lines: list[POLineIn] = Field(min_length=1, max_length=500)


class POLineOut(BaseModel):
    sku: str
    quantity: int
    received: int
    remaining: int


class PurchaseOrderOut(BaseModel):
    id: str
    supplier_id: str
    location: str
    status: str
    lines: list[POLineOut]
    expected_at: datetime | None
    reason: str
    created_at: datetime
    sent_at: datetime | None
    updated_at: datetime

    @classmethod
    def of(cls, po: PurchaseOrder) -> "PurchaseOrderOut":
        return cls(
            id=po.id,
            supplier_id=po.supplier_id,
            location=po.location,
            status=po.status.value,
            lines=[
                POLineOut(
                    sku=ln.sku, quantity=ln.quantity, received=ln.received, remaining=ln.remaining
                )
                for ln in po.lines
            ],
            expected_at=po.expected_at,
            reason=po.reason,
            created_at=po.created_at,
            sent_at=po.sent_at,
            updated_at=po.updated_at,
        )


class ReceiptIn(RequestBody):
    location: LocationField | None = None
    lines: list[POLineIn] = Field(min_length=1, max_length=500)


class ReceiptOut(BaseModel):
    id: str
    purchase_order_id: str
    location: str
    lines: list[Line]
    at: datetime

    @classmethod
    def of(cls, receipt: Receipt) -> "ReceiptOut":
        return cls(
            id=receipt.id,
            purchase_order_id=receipt.purchase_order_id,
            location=receipt.location,
            lines=[Line(sku=s, quantity=q) for s, q in receipt.lines],
            at=receipt.at,
        )


class BackordersIn(RequestBody):
    allowed: bool
    expected_at: Timestamp | None = None


async def _supply_item(tx: SessionTx[Store], item: StockItem) -> ItemOut:
    """The item read with what is on order for it and its backorder policy."""
    supply = await service.item_supply(tx, item.sku)
    return ItemOut.of(item, service.availability_of(tx, item)).model_copy(
        update={
            "on_order": supply.on_order,
            "backorders": BackordersOut(
                allowed=supply.backorders_allowed,
                expected_at=supply.expected_at,
                waiting=supply.waiting,
            ),
        }
    )


def _unique_skus(field: str, skus: list[str]) -> None:
    seen: set[str] = set()
    for index, sku in enumerate(skus):
        if sku in seen:
            raise invalid(f"{field}[{index}].sku", f"{sku} is listed twice")
        seen.add(sku)


@router.put("/items/{sku}/backorders", response_model=ItemOut)
async def set_backorders(sku: SkuPath, body: BackordersIn, _: Admin, tx: TxDep) -> ItemOut:
    """Whether the sku accepts backorders against incoming stock, and when that stock is
    expected (absent: the earliest sent purchase order's date)."""
    item = await service.set_backorders(tx, sku, body.allowed, body.expected_at)
    return await _supply_item(tx, item)


@router.put(
    "/suppliers/{supplier_id}",
    response_model=SupplierOut,
    responses={201: {"model": SupplierOut, "description": "the supplier was created"}},
)
async def put_supplier(
    supplier_id: IdPath, body: SupplierIn, _: Admin, tx: TxDep, response: Response
) -> SupplierOut:
    """Create or replace a supplier and its items. A sku has at most one supplier item: the
    latest PUT that lists it takes it over from another supplier."""
    _unique_skus("items", [item.sku for item in body.items])
    supplier, created = await service.put_supplier(
        tx,
        supplier_id,
        name=body.name,
        email=body.email,
        lead_time_days=body.lead_time_days,
        location=body.location,
        items=[
            SupplierItem(
                sku=item.sku,
                reorder_quantity=item.reorder_quantity,
                lead_time_days=item.lead_time_days,
                unit_cost_amount=item.unit_cost.amount if item.unit_cost else None,
                unit_cost_currency=item.unit_cost.currency if item.unit_cost else None,
            )
            for item in body.items
        ],
    )
    if created:
        response.status_code = 201
    return SupplierOut.of(supplier)


@router.get("/suppliers/{supplier_id}", response_model=SupplierOut)
async def get_supplier(supplier_id: PoPath, _: Admin, tx: TxDep) -> SupplierOut:
    return SupplierOut.of(await service.get_supplier(tx, supplier_id))


@router.get("/suppliers", response_model=Page[SupplierOut])
async def list_suppliers(
    _: Admin,
    tx: TxDep,
    limit: Annotated[int, Query(ge=1, le=200)] = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[SupplierOut]:
    position = decode_cursor(cursor)
    after = str(position.get("id")) if position else None
    found = await service.list_suppliers(tx, after, limit + 1)
    page = found[:limit]
    more = len(found) > limit
    return Page[SupplierOut](
        items=[SupplierOut.of(s) for s in page],
        next_cursor=encode_cursor({"id": page[-1].id}) if more and page else None,
    )


@router.get("/purchase-orders", response_model=Page[PurchaseOrderOut])
async def list_purchase_orders(
    _: Admin,
    tx: TxDep,
    status: PurchaseOrderStatus | None = None,
    sku: Annotated[str | None, Query(max_length=64)] = None,
    supplier_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[PurchaseOrderOut]:
    """Newest first."""
    position = decode_cursor(cursor)
    before: tuple[datetime, str] | None = None
    if position:
        try:
            before = (datetime.fromisoformat(str(position["at"])), str(position["id"]))
        except (KeyError, ValueError) as exc:
            raise invalid("cursor", "malformed cursor", status=400) from exc
    found = await service.list_purchase_orders(
        tx,
        status=status.value if status else None,
        sku=sku,
        supplier_id=supplier_id,
        before=before,
        limit=limit + 1,
    )
    page = found[:limit]
    last = page[-1] if page and len(found) > limit else None
    return Page[PurchaseOrderOut](
        items=[PurchaseOrderOut.of(po) for po in page],
        next_cursor=(
            encode_cursor({"at": last.created_at.isoformat(), "id": last.id}) if last else None
        ),
    )


@router.post(
    "/purchase-orders",
    response_model=PurchaseOrderOut,
    status_code=201,
    responses={404: {"description": "unknown supplier (problem+json)"}},
)
async def create_purchase_order(body: PurchaseOrderIn, _: Admin, tx: TxDep) -> PurchaseOrderOut:
    """A draft by hand (PurchaseOrderDrafted with reason `manual`)."""
    _unique_skus("lines", [line.sku for line in body.lines])
    po = await service.create_purchase_order(
        tx, body.supplier_id, body.location, [(ln.sku, ln.quantity) for ln in body.lines]
    )
    return PurchaseOrderOut.of(po)


@router.get("/purchase-orders/{po_id}", response_model=PurchaseOrderOut)
async def get_purchase_order(po_id: PoPath, _: Admin, tx: TxDep) -> PurchaseOrderOut:
    return PurchaseOrderOut.of(await service.get_purchase_order(tx, po_id))


@router.post("/purchase-orders/{po_id}/send", response_model=PurchaseOrderOut)
async def send_purchase_order(po_id: PoPath, _: Admin, tx: TxDep) -> PurchaseOrderOut:
    """draft → sent (PurchaseOrderSent: notifications emails the supplier); 409 otherwise."""
    return PurchaseOrderOut.of(await service.send_purchase_order(tx, po_id))


@router.post("/purchase-orders/{po_id}/cancel", response_model=PurchaseOrderOut)
async def cancel_purchase_order(po_id: PoPath, _: Admin, tx: TxDep) -> PurchaseOrderOut:
    """draft or sent → cancelled, only before any receipt; 409 otherwise."""
    return PurchaseOrderOut.of(await service.cancel_purchase_order(tx, po_id))


@router.post(
    "/purchase-orders/{po_id}/receipts",
    response_model=ReceiptOut,
    status_code=201,
    responses={200: {"model": ReceiptOut, "description": "replay of an earlier identical request"}},
)
async def receive_purchase_order(
    po_id: PoPath,
    body: ReceiptIn,
    _: Admin,
    tx: TxDep,
    response: Response,
    idempotency_key: Annotated[str, Header(alias="Idempotency-Key", min_length=1, max_length=200)],
) -> ReceiptOut:
    """Goods arrived: 201 with the receipt, the purchase order partially_received or received;
    more than a line's remaining units is a 422 naming `lines[i].quantity`, a draft a 409. The
    same Idempotency-Key and body replays the receipt (200)."""
    receipt, replayed = await service.receive_purchase_order(
        tx,
        po_id,
        idempotency_key=idempotency_key,
        request_hash=request_hash(body.model_dump(mode="json")),
        location=body.location,
        lines=[(ln.sku, ln.quantity) for ln in body.lines],
    )
    if replayed:
        response.status_code = 200
    return ReceiptOut.of(receipt)


# --- locations, stock per location, transfers, channel caps (issue 13) ---

LocationCode = Annotated[str, Path(pattern=LOCATION_PATTERN, max_length=32)]
ChannelCode = Annotated[str, Path(pattern=CHANNEL_PATTERN, max_length=32)]
Region = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")]


class LocationStockOut(BaseModel):
    location: str
    on_hand: int
    reserved: int
    safety_stock: int
    available: int  # what orders may take here (0 when the location is inactive)


ItemOut.model_rebuild()


class LocationIn(RequestBody):
    name: str = Field(min_length=1, max_length=200)
    kind: Literal["warehouse", "store"] | None = None
    priority: int | None = Field(default=None, ge=0, le=1_000_000, description="lower first")
    regions: list[Region] | None = Field(default=None, max_length=100)
    active: bool | None = None


class LocationOut(BaseModel):
    code: str
    name: str
    kind: str
    priority: int
    regions: list[str]
    active: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, location: Location) -> "LocationOut":
        return cls(
            code=location.code,
            name=location.name,
            kind=location.kind,
            priority=location.priority,
            regions=list(location.regions),
            active=location.active,
            created_at=location.created_at,
            updated_at=location.updated_at,
        )


class LocationStockIn(RequestBody):
    on_hand: Quantity
    safety_stock: Quantity | None = None


class CapIn(RequestBody):
    cap: Quantity


class TransferIn(RequestBody):
    sku: str = Field(pattern=SKU_PATTERN, max_length=64)
    from_location: str = Field(pattern=LOCATION_PATTERN, max_length=32)
    to_location: str = Field(pattern=LOCATION_PATTERN, max_length=32)
    quantity: int = Field(ge=1, le=MAX_QUANTITY)
    reason: str | None = Field(default=None, min_length=1, max_length=100)


class TransferOut(BaseModel):
    id: str
    sku: str
    from_location: str
    to_location: str
    quantity: int
    reason: str | None
    at: datetime | None

    @classmethod
    def of(cls, transfer: Transfer) -> "TransferOut":
        return cls(
            id=transfer.id,
            sku=transfer.sku,
            from_location=transfer.from_location,
            to_location=transfer.to_location,
            quantity=transfer.quantity,
            reason=transfer.reason,
            at=transfer.at,
        )


@router.put(
    "/locations/{code}",
    response_model=LocationOut,
    responses={201: {"model": LocationOut, "description": "the location was created"}},
)
async def put_location(
    code: LocationCode, body: LocationIn, _: Admin, tx: TxDep, response: Response
) -> LocationOut:
    """Admin. Create (201) or update (200) a location; fields left out keep their values (new:
    warehouse, priority 100, no regions, active)."""
    location, created = await service.put_location(
        tx, code, body.name, body.kind, body.priority, body.regions, body.active
    )
    if created:
        response.status_code = 201
    return LocationOut.of(location)


@router.get("/locations", response_model=Page[LocationOut])
async def list_locations(
    _: Admin, tx: TxDep, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[LocationOut]:
    """Admin. By code."""
    position = decode_cursor(cursor)
    after = None if position is None else position.get("code")
    if after is not None and not isinstance(after, str):
        raise invalid("cursor", "malformed cursor", status=400)
    items, more = await service.list_locations(tx, after, limit)
    next_cursor = encode_cursor({"code": items[-1].code}) if more and items else None
    return Page[LocationOut](items=[LocationOut.of(x) for x in items], next_cursor=next_cursor)


@router.get("/locations/{code}", response_model=LocationOut)
async def get_location(
    code: Annotated[str, Path(max_length=32)], _: Admin, tx: TxDep
) -> LocationOut:
    return LocationOut.of(await service.get_location(tx, code))


@router.put(
    "/items/{sku}/locations/{code}",
    response_model=ItemOut,
    responses={201: {"model": ItemOut, "description": "the item was created"}},
)
async def set_location_stock(
    sku: SkuPath,
    code: LocationCode,
    body: LocationStockIn,
    _: Admin,
    tx: TxDep,
    response: Response,
) -> ItemOut:
    """Admin. The counted stock of a sku at one location (404 unknown location; 409 below what
    is reserved there); 201 when this created the sku."""
    item, created = await service.set_location_stock(tx, sku, code, body.on_hand, body.safety_stock)
    if created:
        response.status_code = 201
    return await _supply_item(tx, item)


@router.put("/items/{sku}/channels/{channel}", response_model=ItemOut)
async def set_channel_cap(
    sku: SkuPath, channel: ChannelCode, body: CapIn, _: Admin, tx: TxDep
) -> ItemOut:
    """Admin. At most `cap` units of the sku in the channel's live and committed orders."""
    item = await service.set_channel_cap(tx, sku, channel, body.cap)
    return await _supply_item(tx, item)


@router.post(
    "/transfers",
    status_code=201,
    response_model=TransferOut,
    responses={
        200: {"model": TransferOut, "description": "replay of an earlier identical request"},
        404: {"description": "unknown location (problem+json)"},
    },
)
async def transfer_stock(
    body: TransferIn,
    _: Admin,
    tx: TxDep,
    response: Response,
    idempotency_key: Annotated[str, Header(alias="Idempotency-Key", min_length=1, max_length=200)],
) -> TransferOut:
    """Admin. Move allocatable units between locations (409 otherwise); Idempotency-Key
    required: the same key and body replay the transfer (200), another body is a 409."""
    transfer, replayed = await service.transfer_stock(
        tx,
        body.sku,
        body.from_location,
        body.to_location,
        body.quantity,
        body.reason,
        idempotency_key,
        request_hash(body.model_dump(mode="json")),
    )
    if replayed:
        response.status_code = 200
    return TransferOut.of(transfer)


# --- reconciliation (issue 14) ---

add_reconciliation_routes(router)


# --- dead letters (issue 14) ---

include_dead_letter_routes(router)  # /inventory/dead-letters (libs/kit/deadletters.py)
