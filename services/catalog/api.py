"""HTTP in: the catalog routes of the contract."""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from libs.events.common import Money
from libs.kit.app import transaction_of
from libs.kit.auth import Admin
from libs.kit.pagination import DEFAULT_LIMIT, Cursor, Page, decode_cursor, encode_cursor
from libs.kit.transactions import SessionTx
from libs.kit.validation import MULTILINE
from services.catalog import service
from services.catalog.db import Store
from services.catalog.domain import SKU_PATTERN, NewProduct, ProductView

router = APIRouter(prefix="/catalog", tags=["catalog"])

TxDep = Annotated[SessionTx[Store], Depends(transaction_of(Store), scope="function")]

Sku = Annotated[str, Field(pattern=SKU_PATTERN, max_length=64)]
Attributes = Annotated[dict[str, Any], Field(max_length=50)]
Images = Annotated[list[Annotated[HttpUrl, Field()]], Field(max_length=20)]
# The one multi-line text field: TAB, LF and CR are allowed in it, other control characters
# are refused as everywhere (the kit's input rule).
Description = Annotated[str | None, MULTILINE]


class ProductIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: Sku
    name: str = Field(min_length=1, max_length=200)
    description: Description = Field(default=None, max_length=5000)
    category: str = Field(min_length=1, max_length=100)
    attributes: Attributes = {}
    images: Images = []


class ProductPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: Description = Field(default=None, max_length=5000)
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
    def from_view(cls, view: ProductView) -> "ProductOut":
        product = view.product
        return cls(
            sku=product.sku,
            name=product.name,
            description=product.description,
            category=product.category,
            attributes=product.attributes,
            images=product.images,
            status=product.status,
            price=view.price,
            availability=AvailabilityOut(
                available=view.availability.available, in_stock=view.availability.in_stock
            ),
            created_at=product.created_at.isoformat(),
            updated_at=product.updated_at.isoformat(),
        )


@router.post("/products", status_code=201, response_model=ProductOut)
async def create_product(body: ProductIn, _: Admin, tx: TxDep) -> ProductOut:
    new = NewProduct(**body.model_dump(mode="json"))
    return ProductOut.from_view(await service.create_product(tx, new))


@router.patch("/products/{sku}", response_model=ProductOut)
async def update_product(
    sku: Annotated[str, Path(max_length=64)],
    body: ProductPatch,
    _: Admin,
    tx: TxDep,
) -> ProductOut:
    patch = body.model_dump(mode="json", exclude_unset=True)
    for field in ("name", "category", "attributes", "images", "status"):
        if field in patch and patch[field] is None:
            patch.pop(field)  # null means "leave as is" for required fields
    return ProductOut.from_view(await service.update_product(tx, sku, patch))


@router.get("/products/{sku}", response_model=ProductOut)
async def get_product(sku: Annotated[str, Path(max_length=64)], tx: TxDep) -> ProductOut:
    return ProductOut.from_view(await service.get_product(tx, sku))


@router.get("/products", response_model=Page[ProductOut])
async def list_products(
    tx: TxDep,
    q: Annotated[str | None, Query(max_length=200)] = None,
    category: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[ProductOut]:
    position = decode_cursor(cursor)
    after = str(position.get("sku")) if position else None
    page = await service.list_products(tx, q=q, category=category, after_sku=after, limit=limit)
    last = page.items[-1].product.sku if page.items else None
    next_cursor = encode_cursor({"sku": last}) if page.more and last else None
    return Page[ProductOut](
        items=[ProductOut.from_view(v) for v in page.items], next_cursor=next_cursor
    )
