"""HTTP in: the catalog routes of the contract."""

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, HttpUrl

from libs.events.catalog import ChannelKind
from libs.events.common import Money
from libs.kit.app import add_reconciliation_routes, transaction_of
from libs.kit.auth import Admin
from libs.kit.deadletters import include_dead_letter_routes
from libs.kit.pagination import DEFAULT_LIMIT, Cursor, Page, decode_cursor, encode_cursor
from libs.kit.transactions import SessionTx
from libs.kit.validation import MULTILINE, RequestBody
from services.catalog import service
from services.catalog.db import Store
from services.catalog.domain import (
    CHANNEL_CODE_PATTERN,
    EXPORT_COLUMNS,
    SKU_PATTERN,
    Channel,
    Listing,
    NewProduct,
    Offer,
    ProductView,
    csv_row,
)

router = APIRouter(prefix="/catalog", tags=["catalog"])

TxDep = Annotated[SessionTx[Store], Depends(transaction_of(Store), scope="function")]

Sku = Annotated[str, Field(pattern=SKU_PATTERN, max_length=64)]
# Issue 13: `?channel=` on the product reads (an unknown channel is a 422 naming `channel`).
ChannelQuery = Annotated[str | None, Query(min_length=1, max_length=32)]
Attributes = Annotated[dict[str, Any], Field(max_length=50)]
Images = Annotated[list[Annotated[HttpUrl, Field()]], Field(max_length=20)]
# The one multi-line text field: TAB, LF and CR are allowed in it, other control characters
# are refused as everywhere (the kit's input rule).
Description = Annotated[str | None, MULTILINE]


class ProductIn(RequestBody):
    sku: Sku
    name: str = Field(min_length=1, max_length=200)
    description: Description = Field(default=None, max_length=5000)
    category: str = Field(min_length=1, max_length=100)
    attributes: Attributes = {}
    images: Images = []


class ProductPatch(RequestBody):
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
    description: Description
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
async def get_product(
    sku: Annotated[str, Path(max_length=64)], tx: TxDep, channel: ChannelQuery = None
) -> ProductOut:
    if channel is not None:  # issue 13: as that channel offers it, 404 unless published there
        return ProductOut.from_view(await service.get_offer(tx, channel, sku))
    return ProductOut.from_view(await service.get_product(tx, sku))


@router.get("/products", response_model=Page[ProductOut])
async def list_products(
    tx: TxDep,
    q: Annotated[str | None, Query(max_length=200)] = None,
    category: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = DEFAULT_LIMIT,
    cursor: Cursor = None,
    channel: ChannelQuery = None,
) -> Page[ProductOut]:
    position = decode_cursor(cursor)
    after = str(position.get("sku")) if position else None
    if channel is not None:  # issue 13: only what the channel publishes, at its price and stock
        page = await service.list_offers(
            tx, channel, q=q, category=category, after_sku=after, limit=limit
        )
    else:
        page = await service.list_products(tx, q=q, category=category, after_sku=after, limit=limit)
    last = page.items[-1].product.sku if page.items else None
    next_cursor = encode_cursor({"sku": last}) if page.more and last else None
    return Page[ProductOut](
        items=[ProductOut.from_view(v) for v in page.items], next_cursor=next_cursor
    )


# --- channels and listings (issue 13) ---

ChannelCode = Annotated[str, Path(pattern=CHANNEL_CODE_PATTERN, max_length=32)]


class ChannelIn(RequestBody):
    name: str = Field(min_length=1, max_length=200)
    kind: ChannelKind
    active: bool = True


class ChannelOut(BaseModel):
    code: str
    name: str
    kind: str
    active: bool
    created_at: str
    updated_at: str

    @classmethod
    def of(cls, channel: Channel) -> "ChannelOut":
        return cls(
            code=channel.code,
            name=channel.name,
            kind=channel.kind,
            active=channel.active,
            created_at=channel.created_at.isoformat(),
            updated_at=channel.updated_at.isoformat(),
        )


class ChannelList(BaseModel):
    items: list[ChannelOut]


class ListingIn(RequestBody):
    published: bool


class ListingOut(BaseModel):
    channel: str
    sku: str
    published: bool
    price: Money | None
    available: int
    updated_at: str | None

    @classmethod
    def of(cls, listing: Listing) -> "ListingOut":
        return cls(
            channel=listing.channel,
            sku=listing.sku,
            published=listing.published,
            price=listing.price,
            available=listing.available,
            updated_at=listing.updated_at.isoformat() if listing.updated_at else None,
        )


class ListingList(BaseModel):
    items: list[ListingOut]


def listing_topics(request: Request) -> service.ListingTopics:
    topics: service.ListingTopics = request.app.state.listing_topics
    return topics


ListingTopicsDep = Annotated[service.ListingTopics, Depends(listing_topics)]


@router.put(
    "/channels/{code}",
    response_model=ChannelOut,
    responses={201: {"model": ChannelOut, "description": "created"}},
)
async def put_channel(
    code: ChannelCode,
    body: ChannelIn,
    _: Admin,
    tx: TxDep,
    topics: ListingTopicsDep,
    response: Response,
) -> ChannelOut:
    put = await service.put_channel(tx, topics, code, body.name, body.kind, body.active)
    response.status_code = 201 if put.created else 200
    return ChannelOut.of(put.channel)


@router.get("/channels", response_model=ChannelList)
async def list_channels(_: Admin, tx: TxDep) -> ChannelList:
    return ChannelList(items=[ChannelOut.of(c) for c in await service.list_channels(tx)])


@router.get("/channels/{code}", response_model=ChannelOut)
async def get_channel(code: Annotated[str, Path(max_length=32)], _: Admin, tx: TxDep) -> ChannelOut:
    return ChannelOut.of(await service.get_channel(tx, code))


@router.put("/products/{sku}/listings/{channel}", response_model=ListingOut)
async def put_listing(
    sku: Annotated[str, Path(max_length=64)],
    channel: Annotated[str, Path(max_length=32)],
    body: ListingIn,
    _: Admin,
    tx: TxDep,
) -> ListingOut:
    return ListingOut.of(await service.put_listing(tx, sku, channel, body.published))


@router.get("/products/{sku}/listings", response_model=ListingList)
async def get_listings(
    sku: Annotated[str, Path(max_length=64)], _: Admin, tx: TxDep
) -> ListingList:
    return ListingList(items=[ListingOut.of(x) for x in await service.listings_of(tx, sku)])


def export_values(offer: Offer) -> list[Any]:
    """One exported row, in EXPORT_COLUMNS order."""
    view = offer.view
    return [
        view.product.sku,
        view.product.name,
        view.product.status,
        view.price.amount if view.price else None,
        view.price.currency if view.price else None,
        view.availability.available,
        _iso(offer.updated_at),
    ]


def _iso(at: datetime) -> str:
    return at.isoformat()


async def _csv(pages: AsyncIterator[list[Offer]]) -> AsyncIterator[bytes]:
    yield csv_row(list(EXPORT_COLUMNS)).encode()
    async for page in pages:
        yield "".join(csv_row(export_values(o)) for o in page).encode()


async def _json(channel: str, pages: AsyncIterator[list[Offer]]) -> AsyncIterator[bytes]:
    yield (json.dumps({"channel": channel})[:-1] + ', "items": [').encode()
    first = True
    async for page in pages:
        rows = [json.dumps(dict(zip(EXPORT_COLUMNS, export_values(o), strict=True))) for o in page]
        chunk = ",".join(rows)
        yield ((chunk if first else "," + chunk) if rows else "").encode()
        first = first and not rows
    yield b"]}"


@router.get(
    "/channels/{code}/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "the channel's published listing, streamed",
            "content": {"application/json": {}, "text/csv": {}},
        }
    },
)
async def export_channel(
    code: Annotated[str, Path(max_length=32)],
    _: Admin,
    tx: TxDep,
    request: Request,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> StreamingResponse:
    """A full snapshot of what the channel publishes (sku, name, status, price_amount, currency,
    available, updated_at) in sku order, read page by page while it streams."""
    await service.get_channel(tx, code)  # 404 before the first byte
    state = request.app.state
    pages = service.export_offers(state.catalog_uow, code, state.export_page_size)
    filename = f"{code}-listing.{format}"
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    if format == "csv":
        return StreamingResponse(_csv(pages), media_type="text/csv; charset=utf-8", headers=headers)
    return StreamingResponse(_json(code, pages), media_type="application/json", headers=headers)


# --- reconciliation (issue 14) ---

add_reconciliation_routes(router)


# --- dead letters (issue 14) ---

include_dead_letter_routes(router)  # /catalog/dead-letters (libs/kit/deadletters.py)
