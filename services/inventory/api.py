"""HTTP in: the inventory routes of the contract, plus a reservation view for operators."""

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Row

from libs.events.common import Line
from libs.kit.app import Events, Session
from libs.kit.auth import Admin
from services.inventory import service
from services.inventory.domain import MAX_QUANTITY, SKU_PATTERN

router = APIRouter(prefix="/inventory", tags=["inventory"])

SkuPath = Annotated[str, Path(pattern=SKU_PATTERN, max_length=64)]
Quantity = Annotated[int, Field(ge=0, le=MAX_QUANTITY)]


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

    @classmethod
    def from_row(cls, row: Row[Any]) -> "ItemOut":
        return cls(
            sku=row.sku,
            on_hand=row.on_hand,
            reserved=row.reserved,
            available=row.on_hand - row.reserved,
            reorder_point=row.reorder_point,
            updated_at=row.updated_at,
        )


class ReservationOut(BaseModel):
    order_id: str
    status: str
    reason: str | None
    lines: list[Line]
    expires_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Row[Any]) -> "ReservationOut":
        return cls(
            order_id=row.order_id,
            status=row.status,
            reason=row.reason,
            lines=[Line.model_validate(line) for line in row.lines],
            expires_at=row.expires_at,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


@router.put(
    "/items/{sku}",
    response_model=ItemOut,
    responses={201: {"model": ItemOut, "description": "the item was created"}},
)
async def set_stock(
    sku: SkuPath, body: StockIn, _: Admin, session: Session, events: Events, response: Response
) -> ItemOut:
    """Set the counted stock: 200 for an existing item, 201 when this created it."""
    row, created = await service.set_stock(session, events, sku, body.on_hand, body.reorder_point)
    if created:
        response.status_code = 201
    return ItemOut.from_row(row)


@router.post("/items/{sku}/adjustments", response_model=ItemOut)
async def adjust_stock(
    sku: SkuPath, body: AdjustmentIn, _: Admin, session: Session, events: Events
) -> ItemOut:
    return ItemOut.from_row(
        await service.adjust_stock(session, events, sku, body.delta, body.reason)
    )


@router.get("/items/{sku}", response_model=ItemOut)
async def get_item(sku: Annotated[str, Path(max_length=64)], session: Session) -> ItemOut:
    return ItemOut.from_row(await service.get_item(session, sku))


@router.get("/reservations/{order_id}", response_model=ReservationOut)
async def get_reservation(
    order_id: Annotated[str, Path(max_length=64)], _: Admin, session: Session
) -> ReservationOut:
    return ReservationOut.from_row(await service.get_reservation(session, order_id))
