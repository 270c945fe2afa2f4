"""HTTP in: the inventory routes of the contract, plus a reservation view for operators."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from libs.events.common import Line
from libs.kit.app import transaction_of
from libs.kit.auth import Admin
from libs.kit.transactions import SessionTx
from services.inventory import service
from services.inventory.db import Store
from services.inventory.domain import MAX_QUANTITY, SKU_PATTERN, Reservation, StockItem

router = APIRouter(prefix="/inventory", tags=["inventory"])

SkuPath = Annotated[str, Path(pattern=SKU_PATTERN, max_length=64)]
Quantity = Annotated[int, Field(ge=0, le=MAX_QUANTITY)]
TxDep = Annotated[SessionTx[Store], Depends(transaction_of(Store), scope="function")]


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
    def of(cls, item: StockItem) -> "ItemOut":
        return cls(
            sku=item.sku,
            on_hand=item.level.on_hand,
            reserved=item.level.reserved,
            available=item.level.available,
            reorder_point=item.level.reorder_point,
            updated_at=item.updated_at,
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
    def of(cls, reservation: Reservation) -> "ReservationOut":
        return cls(
            order_id=reservation.order_id,
            status=reservation.status.value,
            reason=reservation.reason,
            lines=[Line(sku=sku, quantity=quantity) for sku, quantity in reservation.lines],
            expires_at=reservation.expires_at,
            created_at=reservation.created_at,
            updated_at=reservation.updated_at,
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
    return ItemOut.of(item)


@router.post("/items/{sku}/adjustments", response_model=ItemOut)
async def adjust_stock(sku: SkuPath, body: AdjustmentIn, _: Admin, tx: TxDep) -> ItemOut:
    return ItemOut.of(await service.adjust_stock(tx, sku, body.delta, body.reason))


@router.get("/items/{sku}", response_model=ItemOut)
async def get_item(sku: Annotated[str, Path(max_length=64)], tx: TxDep) -> ItemOut:
    return ItemOut.of(await service.get_item(tx, sku))


@router.get("/reservations/{order_id}", response_model=ReservationOut)
async def get_reservation(
    order_id: Annotated[str, Path(max_length=64)], _: Admin, tx: TxDep
) -> ReservationOut:
    return ReservationOut.of(await service.get_reservation(tx, order_id))
