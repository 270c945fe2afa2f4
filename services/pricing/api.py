"""HTTP in: the pricing routes of the contract (prices, rules, tax rates, quotes)."""

from datetime import UTC, datetime
from decimal import Decimal
from itertools import pairwise
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Path, Query, Response
from fastapi.exceptions import RequestValidationError
from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    PlainSerializer,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic import Strict as StrictFlag
from pydantic_core import PydanticCustomError

from libs.events.common import Money
from libs.kit.app import RuntimeDep, add_reconciliation_routes, transaction_of
from libs.kit.auth import Admin, MaybeCaller
from libs.kit.deadletters import include_dead_letter_routes
from libs.kit.pagination import DEFAULT_LIMIT, Cursor, Limit, Page, decode_cursor, encode_cursor
from libs.kit.problems import invalid
from libs.kit.transactions import SessionTx
from libs.kit.validation import CurrencyCode, RequestBody, Timestamp
from services.pricing import service
from services.pricing.db import Store
from services.pricing.domain import (
    CHANNEL_PATTERN,
    CURRENCY_PATTERN,
    DEFAULT_CHANNEL,
    MAX_RATE_BPS,
    REGION_PATTERN,
    SHIPPING_CODE_PATTERN,
    SKU_PATTERN,
    BasePrice,
    ChannelPrice,
    RateBand,
    ShippingMethod,
    ShippingMethodSpec,
    StoredRule,
    TaxRate,
)
from services.pricing.settings import PricingSettings

router = APIRouter(prefix="/pricing", tags=["pricing"])

TxDep = Annotated[SessionTx[Store], Depends(transaction_of(Store), scope="function")]

MAX_AMOUNT = 1_000_000_000_000  # minor units; keeps every sum of a quote far inside BIGINT

Sku = Annotated[str, Field(pattern=SKU_PATTERN, max_length=64)]
Region = Annotated[str, Field(pattern=REGION_PATTERN, max_length=32)]
Amount = Annotated[int, Field(ge=0, le=MAX_AMOUNT)]
SkuPath = Annotated[str, Path(pattern=SKU_PATTERN, max_length=64)]
RegionPath = Annotated[str, Path(pattern=REGION_PATTERN, max_length=32)]
IdPath = Annotated[str, Path(max_length=64)]
ShippingCode = Annotated[str, Field(pattern=SHIPPING_CODE_PATTERN, max_length=64)]


def _as_number(value: Decimal) -> int | float:
    """Percentages go out as JSON numbers (5 or 12.5); two decimals survive a float exactly."""
    return int(value) if value == value.to_integral_value() else float(value)


def _json_number(value: Any) -> Any:
    # A JSON number (strict bodies, libs/kit/validation.py): `true` and "5" are no percentages.
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise PydanticCustomError("decimal_type", "must be a number")
    return value


Percent = Annotated[
    Decimal,
    Field(gt=0, le=100, max_digits=5, decimal_places=2),
    StrictFlag(False),
    BeforeValidator(_json_number),
    WithJsonSchema(
        {
            "type": "number",
            "exclusiveMinimum": 0,
            "maximum": 100,
            "description": "at most 2 decimals",
        }
    ),
    PlainSerializer(_as_number, return_type=int | float, when_used="json"),
]


async def utc_now() -> datetime:
    """The clock quotes and promotions are judged by (tests may override this dependency);
    `async` so FastAPI calls it inline rather than in a worker thread."""
    return datetime.now(UTC)


Now = Annotated[datetime, Depends(utc_now)]


class Strict(RequestBody):
    pass


# ---- prices ----


class PriceIn(Strict):
    amount: Amount
    currency: Annotated[CurrencyCode, Field(pattern=CURRENCY_PATTERN)]


class PriceOut(BaseModel):
    sku: str
    price: Money
    updated_at: str

    @classmethod
    def of(cls, base: BasePrice) -> "PriceOut":
        return cls(sku=base.sku, price=base.price, updated_at=base.updated_at.isoformat())


@router.put("/prices/{sku}", response_model=PriceOut)
async def set_price(sku: SkuPath, body: PriceIn, _: Admin, tx: TxDep) -> PriceOut:
    price = Money(amount=body.amount, currency=body.currency)
    return PriceOut.of(await service.set_price(tx, sku, price))


@router.get("/prices/{sku}", response_model=PriceOut)
async def get_price(sku: Annotated[str, Path(max_length=64)], tx: TxDep) -> PriceOut:
    return PriceOut.of(await service.get_price(tx, sku))


# ---- rules ----


class TierIn(Strict):
    min_quantity: int = Field(ge=1, le=1_000_000)
    percent_off: Percent


class VolumeRuleIn(Strict):
    kind: Literal["volume"]
    sku: Sku
    tiers: list[TierIn] = Field(min_length=1, max_length=20)

    @field_validator("tiers")
    @classmethod
    def _distinct_breaks(cls, tiers: list[TierIn]) -> list[TierIn]:
        breaks = [t.min_quantity for t in tiers]
        if len(set(breaks)) != len(breaks):
            raise ValueError("each tier needs its own min_quantity")
        return sorted(tiers, key=lambda t: t.min_quantity)


class ActiveWindow(Strict):
    """A rule's time window: UTC, `ends_at` after `starts_at` (the rule applies in between)."""

    starts_at: Timestamp
    ends_at: Timestamp

    @field_validator("starts_at", "ends_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @field_validator("ends_at")
    @classmethod
    def _after_start(cls, value: datetime, info: ValidationInfo) -> datetime:
        starts_at = info.data.get("starts_at")
        if starts_at is not None and value <= starts_at:
            raise ValueError("must be after starts_at")
        return value


class PromotionRuleIn(ActiveWindow):
    kind: Literal["promotion"]
    skus: list[Sku] | None = Field(default=None, min_length=1, max_length=500)
    category: str | None = Field(default=None, min_length=1, max_length=100)
    percent_off: Percent

    @model_validator(mode="after")
    def _one_target(self) -> "PromotionRuleIn":
        if (self.skus is None) == (self.category is None):
            raise PydanticCustomError(
                "promotion_target",
                "give exactly one of skus or category",
                {"field": "skus" if self.skus is not None else "category"},
            )
        return self


class GroupPriceRuleIn(Strict):
    """Members of `group` pay `amount` per unit of `sku`, in the currency of its base price."""

    kind: Literal["customer_group"]
    group: str = Field(min_length=1, max_length=64)
    sku: Sku
    amount: Amount


class FreeShippingRuleIn(ActiveWindow):
    """Shipping is free while active, for orders in `region` (any if absent), by one of
    `methods` (any if absent), worth at least `min_order_value` (subtotal - discount)."""

    kind: Literal["free_shipping"]
    region: Region | None = None
    methods: list[ShippingCode] | None = Field(default=None, min_length=1, max_length=50)
    min_order_value: Amount | None = None


AnyRuleIn = VolumeRuleIn | PromotionRuleIn | GroupPriceRuleIn | FreeShippingRuleIn
RuleIn = Annotated[AnyRuleIn, Field(discriminator="kind")]
_RULE = TypeAdapter[AnyRuleIn](RuleIn)


def parse_rule(body: dict[str, Any]) -> AnyRuleIn:
    """Validate a rule, naming fields as the client wrote them (`tiers[0].percent_off`, not
    `volume.tiers.0.percent_off` as pydantic's discriminated union would)."""
    try:
        return _RULE.validate_python(body)
    except ValidationError as exc:
        errors = []
        for error in exc.errors(include_url=False, include_context=True):
            loc: tuple[Any, ...] = tuple(error["loc"])
            if error["type"].startswith("union_tag"):
                loc = ("kind",)
                error["msg"] = "must be one of volume, promotion, customer_group, free_shipping"
            else:
                loc = loc[1:]  # drop the union tag
                if not loc and "field" in error.get("ctx", {}):
                    loc = (error["ctx"]["field"],)
            errors.append({**error, "loc": ("body", *loc)})
        raise RequestValidationError(errors) from exc


def rule_body_schema() -> dict[str, Any]:
    """The four rule shapes as one JSON Schema for the document (the body is read as a dict, so
    parse_rule can name fields as the client wrote them): `oneOf`, each branch inlined."""
    schema = _RULE.json_schema()
    defs = schema.pop("$defs", {})
    prefix = "#/$defs/"

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(prefix):
                return inline(defs[ref[len(prefix) :]])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return {"oneOf": inline(schema["oneOf"])}


def _rule_out(rule: StoredRule) -> dict[str, Any]:
    return {"id": rule.id, **rule.definition, "created_at": rule.created_at.isoformat()}


@router.post(
    "/rules",
    status_code=201,
    openapi_extra={
        "requestBody": {"content": {"application/json": {"schema": rule_body_schema()}}}
    },
)
async def create_rule(
    body: Annotated[
        dict[str, Any],
        Body(description="a volume, promotion, customer_group or free_shipping rule"),
    ],
    _: Admin,
    tx: TxDep,
) -> dict[str, Any]:
    rule = parse_rule(body)
    definition = rule.model_dump(mode="json", exclude_none=True)
    return _rule_out(await service.create_rule(tx, definition))


@router.delete("/rules/{rule_id}", status_code=204)
async def delete_rule(rule_id: IdPath, _: Admin, tx: TxDep) -> Response:
    await service.delete_rule(tx, rule_id)
    return Response(status_code=204)


@router.get("/rules", response_model=Page[dict[str, Any]])
async def list_rules(
    _: Admin,
    tx: TxDep,
    kind: Literal["volume", "promotion", "customer_group", "free_shipping"] | None = None,
    sku: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[dict[str, Any]]:
    position = decode_cursor(cursor)
    after = None
    if position:
        try:
            after = (datetime.fromisoformat(position["at"]), str(position["id"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise invalid("cursor", "malformed cursor", status=400) from exc
    page = await service.list_rules(tx, kind=kind, sku=sku, after=after, limit=limit)
    last = page.items[-1] if page.items else None
    next_cursor = (
        encode_cursor({"at": last.created_at.isoformat(), "id": last.id})
        if page.more and last
        else None
    )
    return Page[dict[str, Any]](items=[_rule_out(r) for r in page.items], next_cursor=next_cursor)


# ---- tax rates ----


class TaxRateIn(Strict):
    rate_bps: int = Field(ge=0, le=MAX_RATE_BPS, description="basis points: 2000 = 20.00 %")


class TaxRateOut(BaseModel):
    region: str
    rate_bps: int
    updated_at: str

    @classmethod
    def of(cls, rate: TaxRate) -> "TaxRateOut":
        return cls(
            region=rate.region, rate_bps=rate.rate_bps, updated_at=rate.updated_at.isoformat()
        )


@router.put("/tax-rates/{region}", response_model=TaxRateOut)
async def set_tax_rate(region: RegionPath, body: TaxRateIn, _: Admin, tx: TxDep) -> TaxRateOut:
    return TaxRateOut.of(await service.set_tax_rate(tx, region, body.rate_bps))


@router.get("/tax-rates/{region}", response_model=TaxRateOut)
async def get_tax_rate(region: Annotated[str, Path(max_length=32)], tx: TxDep) -> TaxRateOut:
    return TaxRateOut.of(await service.get_tax_rate(tx, region))


# ---- quotes ----


class QuoteLineIn(Strict):
    sku: Sku
    quantity: int = Field(ge=1, le=10_000)


class QuoteIn(Strict):
    lines: list[QuoteLineIn] = Field(min_length=1, max_length=100)
    region: Region
    # v2: absent → the region's default method (none in the region: no shipping line).
    shipping_method: ShippingCode | None = None
    # Issue 13: whose price list prices the lines (absent: web); base prices fill the gaps.
    channel: Annotated[str, Field(pattern=CHANNEL_PATTERN, max_length=64)] | None = None


@router.post("/quotes", status_code=201)
async def create_quote(
    body: QuoteIn, caller: MaybeCaller, tx: TxDep, runtime: RuntimeDep, now: Now
) -> dict[str, Any]:
    """Price lines for a region; a bearer token's `groups` claim unlocks customer_group prices."""
    settings = runtime.settings
    assert isinstance(settings, PricingSettings)
    return await service.create_quote(
        tx,
        lines=[(line.sku, line.quantity) for line in body.lines],
        region=body.region,
        groups=caller.groups if caller else frozenset(),
        customer_id=caller.sub if caller else None,
        now=now,
        ttl_s=settings.quote_ttl_s,
        shipping_method=body.shipping_method,
        channel=body.channel or DEFAULT_CHANNEL,
    )


@router.get("/quotes/{quote_id}")
async def get_quote(quote_id: IdPath, tx: TxDep) -> dict[str, Any]:
    return await service.get_quote(tx, quote_id)


# --- shipping rates (issue 12) ---

ShippingCodePath = Annotated[str, Path(pattern=SHIPPING_CODE_PATTERN, max_length=64)]
MAX_BANDS = 50


class RateBandIn(Strict):
    up_to: int | None = Field(
        ge=0, le=MAX_AMOUNT, description="inclusive upper bound (grams or minor units); null: open"
    )
    amount: Amount


class RateIn(Strict):
    by: Literal["weight", "order_value"]
    bands: list[RateBandIn] = Field(min_length=1, max_length=MAX_BANDS)

    @field_validator("bands")
    @classmethod
    def _ascending(cls, bands: list[RateBandIn]) -> list[RateBandIn]:
        bounds = [band.up_to for band in bands]
        if None in bounds[:-1]:
            raise ValueError("only the last band may be open (up_to: null)")
        closed = [bound for bound in bounds if bound is not None]
        if any(b <= a for a, b in pairwise(closed)):
            raise ValueError("up_to must increase from band to band")
        return bands


class ShippingMethodIn(Strict):
    region: Region
    name: str = Field(min_length=1, max_length=200)
    currency: Annotated[CurrencyCode, Field(pattern=CURRENCY_PATTERN)]
    rate: RateIn
    free_over: Amount | None = Field(
        default=None, description="order value (subtotal - discount) at or over which it is free"
    )
    default: bool | None = Field(default=None, description="absent: keep (first of a region: yes)")
    active: bool = True


class RateBandOut(BaseModel):
    up_to: int | None
    amount: int


class RateOut(BaseModel):
    by: str
    bands: list[RateBandOut]


class ShippingMethodOut(BaseModel):
    code: str
    region: str
    name: str
    currency: str
    rate: RateOut
    free_over: int | None
    default: bool
    active: bool
    created_at: str
    updated_at: str

    @classmethod
    def of(cls, method: ShippingMethod) -> "ShippingMethodOut":
        return cls(
            code=method.code,
            region=method.region,
            name=method.name,
            currency=method.currency,
            rate=RateOut(
                by=method.rate_by,
                bands=[RateBandOut(up_to=b.up_to, amount=b.amount) for b in method.bands],
            ),
            free_over=method.free_over,
            default=method.is_default,
            active=method.active,
            created_at=method.created_at.isoformat(),
            updated_at=method.updated_at.isoformat(),
        )


@router.put("/shipping-methods/{code}", response_model=ShippingMethodOut)
async def put_shipping_method(
    code: ShippingCodePath, body: ShippingMethodIn, _: Admin, tx: TxDep
) -> ShippingMethodOut:
    spec = ShippingMethodSpec(
        code=code,
        region=body.region,
        name=body.name,
        currency=body.currency,
        rate_by=body.rate.by,
        bands=tuple(RateBand(up_to=b.up_to, amount=b.amount) for b in body.rate.bands),
        free_over=body.free_over,
        default=body.default,
        active=body.active,
    )
    return ShippingMethodOut.of(await service.put_shipping_method(tx, spec))


@router.get("/shipping-methods/{code}", response_model=ShippingMethodOut)
async def get_shipping_method(
    code: Annotated[str, Path(max_length=64)], tx: TxDep
) -> ShippingMethodOut:
    return ShippingMethodOut.of(await service.get_shipping_method(tx, code))


@router.get("/shipping-methods", response_model=Page[ShippingMethodOut])
async def list_shipping_methods(
    tx: TxDep,
    region: Annotated[str | None, Query(pattern=REGION_PATTERN, max_length=32)] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[ShippingMethodOut]:
    """The active methods a checkout can offer, in (region, code) order; `region` narrows it."""
    position = decode_cursor(cursor)
    after = None
    if position:
        try:
            after = (str(position["region"]), str(position["code"]))
        except (KeyError, TypeError) as exc:
            raise invalid("cursor", "malformed cursor", status=400) from exc
    page = await service.list_shipping_methods(tx, region=region, after=after, limit=limit)
    last = page.items[-1] if page.items else None
    next_cursor = (
        encode_cursor({"region": last.region, "code": last.code}) if page.more and last else None
    )
    return Page[ShippingMethodOut](
        items=[ShippingMethodOut.of(m) for m in page.items], next_cursor=next_cursor
    )


# --- channel price lists (issue 13) ---

ChannelPath = Annotated[str, Path(pattern=CHANNEL_PATTERN, max_length=64)]


class ChannelPriceOut(BaseModel):
    channel: str
    sku: str
    price: Money
    updated_at: str

    @classmethod
    def of(cls, listed: ChannelPrice) -> "ChannelPriceOut":
        return cls(
            channel=listed.channel,
            sku=listed.sku,
            price=listed.price,
            updated_at=listed.updated_at.isoformat(),
        )


@router.put("/channels/{channel}/prices/{sku}", response_model=ChannelPriceOut)
async def set_channel_price(
    channel: ChannelPath, sku: SkuPath, body: PriceIn, _: Admin, tx: TxDep
) -> ChannelPriceOut:
    """The sku's price in the channel's list (quotes for the channel use it over the base)."""
    price = Money(amount=body.amount, currency=body.currency)
    return ChannelPriceOut.of(await service.set_channel_price(tx, channel, sku, price))


@router.get("/channels/{channel}/prices/{sku}", response_model=ChannelPriceOut)
async def get_channel_price(
    channel: Annotated[str, Path(max_length=64)],
    sku: Annotated[str, Path(max_length=64)],
    tx: TxDep,
) -> ChannelPriceOut:
    """404 when the channel has no price of its own for the sku (it sells at the base price)."""
    return ChannelPriceOut.of(await service.get_channel_price(tx, channel, sku))


@router.delete("/channels/{channel}/prices/{sku}", status_code=204)
async def delete_channel_price(
    channel: Annotated[str, Path(max_length=64)],
    sku: Annotated[str, Path(max_length=64)],
    _: Admin,
    tx: TxDep,
) -> Response:
    """The channel sells the sku at its base price again; 404 if it had no price of its own."""
    await service.delete_channel_price(tx, channel, sku)
    return Response(status_code=204)


# --- reconciliation (issue 14) ---

add_reconciliation_routes(router)


# --- dead letters (issue 14) ---

include_dead_letter_routes(router)  # /pricing/dead-letters (libs/kit/deadletters.py)
