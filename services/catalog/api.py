"""HTTP in: the catalog routes of the contract."""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field, HttpUrl
from sqlalchemy import Row

from libs.events.common import Money
from libs.kit.app import Events, Session
from libs.kit.auth import Admin
from libs.kit.pagination import DEFAULT_LIMIT, Cursor, Page, decode_cursor, encode_cursor
from services.catalog import service
from services.catalog.domain import SKU_PATTERN, Availability

router = APIRouter(prefix="/catalog", tags=["catalog"])

Sku = Annotated[str, Field(pattern=SKU_PATTERN, max_length=64)]
Attributes = Annotated[dict[str, Any], Field(max_length=50)]
Images = Annotated[list[Annotated[HttpUrl, Field()]], Field(max_length=20)]


class ProductIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: Sku
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=5000)
    category: str = Field(min_length=1, max_length=100)
    attributes: Attributes = {}
    images: Images = []


class ProductPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=5000)
    category: str | None = Field(default=None, min_length=1, max_length=100)
    attributes: Attributes | None = None
    images: Images | None = None
    status: Literal["active", "discontinued"] | None = None


class AvailabilityOut(BaseModel):
    available: int
    in_stock: bool


class ProductOut(BaseModel):
    sku: str
    name: str
    description: str | None
    category: str
    attributes: dict[str, Any]
    images: list[str]
    status: str
    price: Money | None
    availability: AvailabilityOut
    created_at: str
    updated_at: str

    @classmethod
    def from_row(cls, row: Row[Any]) -> "ProductOut":
        availability = Availability.from_available(row.available)
        price = (
            Money(amount=row.price_amount, currency=row.price_currency)
            if row.price_amount is not None and row.price_currency
            else None
        )
        return cls(
            sku=row.sku,
            name=row.name,
            description=row.description,
            category=row.category,
            attributes=row.attributes,
            images=row.images,
            status=row.status,
            price=price,
            availability=AvailabilityOut(
                available=availability.available, in_stock=availability.in_stock
            ),
            created_at=row.created_at.isoformat(),
            updated_at=row.updated_at.isoformat(),
        )


@router.post("/products", status_code=201, response_model=ProductOut)
async def create_product(body: ProductIn, _: Admin, session: Session, events: Events) -> ProductOut:
    fields = body.model_dump(mode="json")
    return ProductOut.from_row(await service.create_product(session, events, fields))


@router.patch("/products/{sku}", response_model=ProductOut)
async def update_product(
    sku: Annotated[str, Path(max_length=64)],
    body: ProductPatch,
    _: Admin,
    session: Session,
    events: Events,
) -> ProductOut:
    patch = body.model_dump(mode="json", exclude_unset=True)
    for field in ("name", "category", "attributes", "images", "status"):
        if field in patch and patch[field] is None:
            patch.pop(field)  # null means "leave as is" for required fields
    return ProductOut.from_row(await service.update_product(session, events, sku, patch))


@router.get("/products/{sku}", response_model=ProductOut)
async def get_product(sku: Annotated[str, Path(max_length=64)], session: Session) -> ProductOut:
    return ProductOut.from_row(await service.get_product(session, sku))


@router.get("/products", response_model=Page[ProductOut])
async def list_products(
    session: Session,
    q: Annotated[str | None, Query(max_length=200)] = None,
    category: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[ProductOut]:
    position = decode_cursor(cursor)
    after = str(position.get("sku")) if position else None
    rows = await service.list_products(
        session, q=q, category=category, after_sku=after, limit=limit
    )
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor({"sku": rows[-1].sku}) if more and rows else None
    return Page[ProductOut](items=[ProductOut.from_row(r) for r in rows], next_cursor=next_cursor)
