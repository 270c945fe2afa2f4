"""HTTP in: the inventory routes of the contract, plus a reservation view for operators."""

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from libs.events.common import Line
from libs.events.inventory import Allocation, ChannelAvailability
from libs.kit.app import Events, Session, get_runtime
from libs.kit.auth import Admin
from libs.kit.idempotency import request_hash
from libs.kit.pagination import DEFAULT_LIMIT, Cursor, Limit, Page, decode_cursor, encode_cursor
from libs.kit.problems import invalid
from libs.kit.transactions import SessionTx
from services.inventory import service
from services.inventory.db import Store
from services.inventory.domain import (
    CHANNEL_PATTERN,
    LOCATION_PATTERN,
    MAX_QUANTITY,
    SKU_PATTERN,
    Availability,
    Location,
    Reservation,
    StockItem,
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


class StockIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    on_hand: Quantity
    reorder_point: Quantity | None = None


class AdjustmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    delta: int = Field(ge=-MAX_QUANTITY, le=MAX_QUANTITY)
    reason: str = Field(
        min_length=1, max_length=100, description="restock, damage, count_correction, ..."
    )

    @field_validator("delta")
    @classmethod
    def _not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("must not be 0")
        return value


class ItemOut(BaseModel):
    sku: str
    on_hand: int
    reserved: int
    available: int
    reorder_point: int
    updated_at: datetime
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
    return ItemOut.of(item, service.availability_of(tx, item))


@router.post("/items/{sku}/adjustments", response_model=ItemOut)
async def adjust_stock(sku: SkuPath, body: AdjustmentIn, _: Admin, tx: TxDep) -> ItemOut:
    item = await service.adjust_stock(tx, sku, body.delta, body.reason)
    return ItemOut.of(item, service.availability_of(tx, item))


@router.get("/items/{sku}", response_model=ItemOut)
async def get_item(sku: Annotated[str, Path(max_length=64)], tx: TxDep) -> ItemOut:
    item = await service.get_item(tx, sku)
    return ItemOut.of(item, service.availability_of(tx, item))


@router.get("/reservations/{order_id}", response_model=ReservationOut)
async def get_reservation(
    order_id: Annotated[str, Path(max_length=64)], _: Admin, tx: TxDep
) -> ReservationOut:
    return ReservationOut.of(await service.get_reservation(tx, order_id))


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


class LocationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

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


class LocationStockIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    on_hand: Quantity
    safety_stock: Quantity | None = None


class CapIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cap: Quantity


class TransferIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

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
    return ItemOut.of(item, service.availability_of(tx, item))


@router.put("/items/{sku}/channels/{channel}", response_model=ItemOut)
async def set_channel_cap(
    sku: SkuPath, channel: ChannelCode, body: CapIn, _: Admin, tx: TxDep
) -> ItemOut:
    """Admin. At most `cap` units of the sku in the channel's live and committed orders."""
    item = await service.set_channel_cap(tx, sku, channel, body.cap)
    return ItemOut.of(item, service.availability_of(tx, item))


@router.post(
    "/transfers",
    status_code=201,
    response_model=TransferOut,
    responses={
        200: {"model": TransferOut, "description": "replay of an earlier identical request"}
    },
)
async def transfer_stock(
    body: TransferIn,
    _: Admin,
    tx: TxDep,
    response: Response,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200)
    ] = None,
) -> TransferOut:
    """Admin. Move allocatable units between locations (409 otherwise); Idempotency-Key
    required: the same key and body replay the transfer (200), another body is a 409."""
    if idempotency_key is None:
        raise invalid("Idempotency-Key", "header is required")
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
