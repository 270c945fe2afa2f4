"""Pricing rules: the discount a line gets, tax and rounding, when a price changed, what a quote says."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

from libs.events.common import Money
from libs.events.pricing import PriceChanged

SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
CURRENCY_PATTERN = r"^[A-Z]{3}$"
REGION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$"
MAX_RATE_BPS = 10_000  # 100.00 %

RuleKind = Literal["volume", "promotion", "customer_group"]
# On a tie the earlier kind wins, so the same request always names the same rule.
KIND_PREFERENCE: tuple[RuleKind, ...] = ("customer_group", "volume", "promotion")


def round_half_up(value: Decimal) -> int:
    """Round to a whole minor unit, halves away from zero (0.5 cent -> 1 cent)."""
    return int(value.to_integral_value(rounding=ROUND_HALF_UP))


def percent_of(amount: int, percent: Decimal) -> int:
    """`percent` % of `amount` minor units, rounded half-up (Decimal is exact for our inputs)."""
    return round_half_up(Decimal(amount) * percent / 100)


def tax_on(net: int, rate_bps: int) -> int:
    """Tax on a net amount at a rate in basis points (2000 = 20.00 %), rounded half-up."""
    return round_half_up(Decimal(net) * rate_bps / MAX_RATE_BPS)


@dataclass(frozen=True)
class Tier:
    min_quantity: int
    percent_off: Decimal


@dataclass(frozen=True)
class VolumeRule:
    """Quantity breaks on one sku: the highest tier the quantity reaches applies."""

    id: str
    sku: str
    tiers: tuple[Tier, ...]
    kind: RuleKind = "volume"

    def percent_for(self, quantity: int) -> Decimal | None:
        reached = [t for t in self.tiers if t.min_quantity <= quantity]
        return max(reached, key=lambda t: t.min_quantity).percent_off if reached else None


@dataclass(frozen=True)
class PromotionRule:
    """A percentage off listed skus or a whole category during [starts_at, ends_at)."""

    id: str
    percent_off: Decimal
    starts_at: datetime
    ends_at: datetime
    skus: frozenset[str] = frozenset()
    category: str | None = None
    kind: RuleKind = "promotion"

    def is_active(self, now: datetime) -> bool:
        return self.starts_at <= now < self.ends_at

    def covers(self, sku: str, category: str | None) -> bool:
        if self.category is not None:
            return category == self.category
        return sku in self.skus


@dataclass(frozen=True)
class GroupPriceRule:
    """The unit price members of a customer group pay for one sku (in the base price's currency)."""

    id: str
    group: str
    sku: str
    amount: int
    kind: RuleKind = "customer_group"


Rule = VolumeRule | PromotionRule | GroupPriceRule


def rule_from_definition(rule_id: str, definition: dict[str, Any]) -> Rule:
    """Build a rule from its stored JSON definition (already validated by the API)."""
    kind = definition["kind"]
    if kind == "volume":
        tiers = tuple(
            Tier(int(t["min_quantity"]), _decimal(t["percent_off"])) for t in definition["tiers"]
        )
        return VolumeRule(id=rule_id, sku=definition["sku"], tiers=tiers)
    if kind == "promotion":
        return PromotionRule(
            id=rule_id,
            percent_off=_decimal(definition["percent_off"]),
            starts_at=datetime.fromisoformat(definition["starts_at"]),
            ends_at=datetime.fromisoformat(definition["ends_at"]),
            skus=frozenset(definition.get("skus") or ()),
            category=definition.get("category"),
        )
    if kind == "customer_group":
        return GroupPriceRule(
            id=rule_id,
            group=definition["group"],
            sku=definition["sku"],
            amount=int(definition["amount"]),
        )
    raise ValueError(f"unknown rule kind {kind!r}")


def _decimal(value: int | float | str) -> Decimal:
    """JSON numbers come back as int or float; through str a float keeps its written digits."""
    return Decimal(str(value))


@dataclass(frozen=True)
class LineToPrice:
    """A requested line with what pricing knows about its sku."""

    sku: str
    quantity: int
    unit_price: int
    currency: str
    category: str | None = None


@dataclass(frozen=True)
class Discount:
    amount: int
    rule_id: str
    kind: RuleKind


@dataclass(frozen=True)
class PricedLine:
    sku: str
    quantity: int
    currency: str
    unit_price: int
    gross: int
    discount: int
    tax: int
    total: int
    applied: Discount | None


@dataclass(frozen=True)
class Totals:
    subtotal: int
    discount: int
    tax: int
    total: int


def candidate_discounts(
    line: LineToPrice, rules: Iterable[Rule], *, groups: frozenset[str], now: datetime
) -> list[Discount]:
    """Every positive discount a rule offers this line; they are alternatives, never summed."""
    gross = line.unit_price * line.quantity
    found: list[Discount] = []
    for rule in rules:
        amount = 0
        if isinstance(rule, VolumeRule):
            percent = rule.percent_for(line.quantity) if rule.sku == line.sku else None
            amount = percent_of(gross, percent) if percent is not None else 0
        elif isinstance(rule, PromotionRule):
            if rule.is_active(now) and rule.covers(line.sku, line.category):
                amount = percent_of(gross, rule.percent_off)
        elif rule.sku == line.sku and rule.group in groups:
            amount = (line.unit_price - rule.amount) * line.quantity
        if amount > 0:
            found.append(Discount(min(amount, gross), rule.id, rule.kind))
    return found


def best_discount(candidates: Sequence[Discount]) -> Discount | None:
    """The largest discount; ties go to the preferred kind, then the smallest rule id."""
    if not candidates:
        return None
    return min(candidates, key=lambda d: (-d.amount, KIND_PREFERENCE.index(d.kind), d.rule_id))


def price_line(
    line: LineToPrice,
    rules: Iterable[Rule],
    *,
    groups: frozenset[str],
    now: datetime,
    rate_bps: int,
) -> PricedLine:
    """Gross, best single discount, tax on what is left, and the line total."""
    gross = line.unit_price * line.quantity
    applied = best_discount(candidate_discounts(line, rules, groups=groups, now=now))
    discount = applied.amount if applied else 0
    tax = tax_on(gross - discount, rate_bps)
    return PricedLine(
        sku=line.sku,
        quantity=line.quantity,
        currency=line.currency,
        unit_price=line.unit_price,
        gross=gross,
        discount=discount,
        tax=tax,
        total=gross - discount + tax,
        applied=applied,
    )


def totals(lines: Iterable[PricedLine]) -> Totals:
    """Quote totals are sums of the already-rounded lines, so lines always add up to the total."""
    lines = list(lines)
    return Totals(
        subtotal=sum(line.gross for line in lines),
        discount=sum(line.discount for line in lines),
        tax=sum(line.tax for line in lines),
        total=sum(line.total for line in lines),
    )


def line_problem(*, known_product: bool, status: str | None, has_price: bool) -> str | None:
    """Why a sku cannot be quoted, or None when it can."""
    if not known_product:
        return "unknown sku"
    if status == "discontinued":
        return "discontinued"
    if not has_price:
        return "unknown sku: no price is set"
    return None


def first_foreign_currency(currencies: Sequence[str]) -> int | None:
    """Index of the first line priced in another currency than the first line, if any."""
    for index, currency in enumerate(currencies):
        if currency != currencies[0]:
            return index
    return None


def price_change(previous: Money | None, new: Money, sku: str) -> PriceChanged | None:
    """The fact to publish when a sku's base price is set; None when nothing really changed."""
    if previous is not None and previous.amount == new.amount and previous.currency == new.currency:
        return None
    return PriceChanged(sku=sku, price=new, previous=previous)


# ---- what pricing stores, as its use cases read it ----


@dataclass(frozen=True)
class BasePrice:
    sku: str
    price: Money
    updated_at: datetime  # the last real change


@dataclass(frozen=True)
class TaxRate:
    region: str
    rate_bps: int
    updated_at: datetime


@dataclass(frozen=True)
class StoredRule:
    """A rule as an admin posted it (normalised), under its id."""

    id: str
    definition: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class RulePage:
    """Rules in creation order; `more` says whether another page follows."""

    items: list[StoredRule]
    more: bool


@dataclass(frozen=True)
class ProductFacts:
    """What pricing knows of a catalog product."""

    sku: str
    category: str
    status: str
    weight_g: int = 0  # attributes.weight in whole grams; 0 when the product has none


# ---- quotes ----


@dataclass(frozen=True)
class QuoteInputs:
    """What a quote reads before it prices, in one statement: the products pricing knows, each
    sku's unit price in the channel (see `unit_prices`; absent: it cannot be quoted), and the
    region's tax rate (None: an unknown region)."""

    products: dict[str, ProductFacts]
    unit_prices: dict[str, Money]
    rate_bps: int | None


def _money(amount: int, currency: str) -> dict[str, Any]:
    return {"amount": amount, "currency": currency}


def quote_body(
    quote_id: str,
    priced: Sequence[PricedLine],
    *,
    region: str,
    rate_bps: int,
    customer_id: str | None,
    now: datetime,
    expires_at: datetime,
) -> dict[str, Any]:
    """The quote as stored and answered (the JSON of the contract, in one currency)."""
    currency = priced[0].currency
    sums = totals(priced)
    return {
        "id": quote_id,
        "customer_id": customer_id,
        "region": region,
        "tax_rate_bps": rate_bps,
        "currency": currency,
        "lines": [
            {
                "sku": line.sku,
                "quantity": line.quantity,
                "unit_price": _money(line.unit_price, currency),
                "discount": _money(line.discount, currency),
                "tax": _money(line.tax, currency),
                "total": _money(line.total, currency),
                "applied_rule": (
                    {"id": line.applied.rule_id, "kind": line.applied.kind}
                    if line.applied
                    else None
                ),
            }
            for line in priced
        ],
        "subtotal": _money(sums.subtotal, currency),
        "discount": _money(sums.discount, currency),
        "tax": _money(sums.tax, currency),
        "total": _money(sums.total, currency),
        "created_at": now.isoformat(),
        "expires_at": expires_at.isoformat(),
    }


# --- shipping rates (issue 12) ---

ShippingRateBasis = Literal["weight", "order_value"]
WeightUnit = Literal["g", "kg", "lb", "oz"]
SHIPPING_CODE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
# Exact definitions (the avoirdupois pound is 453.59237 g by law; an ounce is 1/16 of it).
GRAMS_PER_UNIT: dict[str, Decimal] = {
    "g": Decimal(1),
    "kg": Decimal(1000),
    "lb": Decimal("453.59237"),
    "oz": Decimal("28.349523125"),
}


def weight_in_grams(attributes: dict[str, Any]) -> int:
    """A product's `attributes.weight` in whole grams (half-up); 0 when absent or unreadable
    (catalog validates it, but a projection never fails on an older, unchecked product)."""
    weight = attributes.get("weight")
    if not isinstance(weight, dict):
        return 0
    value, unit = weight.get("value"), weight.get("unit")
    if isinstance(value, bool) or not isinstance(value, int | float) or unit not in GRAMS_PER_UNIT:
        return 0
    grams = round_half_up(_decimal(value) * GRAMS_PER_UNIT[unit])
    return max(grams, 0)


@dataclass(frozen=True)
class RateBand:
    """Up to and including `up_to` (grams or minor units; None: no upper bound) costs `amount`."""

    up_to: int | None
    amount: int


@dataclass(frozen=True)
class ShippingMethod:
    code: str
    region: str
    name: str
    currency: str
    rate_by: ShippingRateBasis
    bands: tuple[RateBand, ...]
    free_over: int | None
    is_default: bool
    active: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class ShippingMethodPage:
    """Methods in (region, code) order; `more` says whether another page follows."""

    items: list[ShippingMethod]
    more: bool


@dataclass(frozen=True)
class FreeShippingRule:
    """Shipping costs nothing during [starts_at, ends_at) for orders in `region` (any when None),
    by one of `methods` (any when empty), of at least `min_order_value` (net of tax)."""

    id: str
    starts_at: datetime
    ends_at: datetime
    region: str | None = None
    methods: frozenset[str] = frozenset()
    min_order_value: int | None = None
    kind: Literal["free_shipping"] = "free_shipping"

    def is_active(self, now: datetime) -> bool:
        return self.starts_at <= now < self.ends_at

    def frees(self, *, region: str, method: str, order_value: int, now: datetime) -> bool:
        return (
            self.is_active(now)
            and (self.region is None or self.region == region)
            and (not self.methods or method in self.methods)
            and (self.min_order_value is None or order_value >= self.min_order_value)
        )


AnyRule = Rule | FreeShippingRule


def any_rule_from_definition(rule_id: str, definition: dict[str, Any]) -> AnyRule:
    """`rule_from_definition`, knowing free-shipping promotions too."""
    if definition["kind"] != "free_shipping":
        return rule_from_definition(rule_id, definition)
    min_order_value = definition.get("min_order_value")
    return FreeShippingRule(
        id=rule_id,
        starts_at=datetime.fromisoformat(definition["starts_at"]),
        ends_at=datetime.fromisoformat(definition["ends_at"]),
        region=definition.get("region"),
        methods=frozenset(definition.get("methods") or ()),
        min_order_value=int(min_order_value) if min_order_value is not None else None,
    )


def band_for(bands: Sequence[RateBand], measure: int) -> RateBand | None:
    """The first band (ascending `up_to`) whose bound the measure does not exceed; None when the
    measure is beyond every band (the method is not offered for this order)."""
    for band in bands:
        if band.up_to is None or measure <= band.up_to:
            return band
    return None


@dataclass(frozen=True)
class ShippingCharge:
    """The shipping line of a quote: its net price, the tax on it, and why it is what it is."""

    method: str | None
    amount: int
    tax: int
    free_because: str | None = None  # "threshold" | "promotion" | None


NO_SHIPPING = ShippingCharge(method=None, amount=0, tax=0)


class ShippingNotOffered(Exception):
    """The method cannot carry this order (beyond its bands, or another currency)."""


def shipping_charge(
    method: ShippingMethod,
    *,
    weight_g: int,
    order_value: int,
    currency: str,
    rate_bps: int,
    promotions: Iterable[FreeShippingRule],
    now: datetime,
) -> ShippingCharge:
    """What `method` charges for an order weighing `weight_g` grams worth `order_value` (subtotal
    minus discount, net of tax): its band's amount, free at or over `free_over` or while a
    free-shipping promotion covers it; taxed at the region's rate, rounded half-up."""
    if method.currency != currency:
        raise ShippingNotOffered(
            f"method {method.code} is priced in {method.currency}, the order in {currency}"
        )
    measure = weight_g if method.rate_by == "weight" else order_value
    band = band_for(method.bands, measure)
    if band is None:
        what = f"{weight_g} g" if method.rate_by == "weight" else f"an order value of {measure}"
        raise ShippingNotOffered(f"method {method.code} does not ship {what} (beyond its bands)")
    free_because = None
    if method.free_over is not None and order_value >= method.free_over:
        free_because = "threshold"
    elif any(
        p.frees(region=method.region, method=method.code, order_value=order_value, now=now)
        for p in promotions
    ):
        free_because = "promotion"
    amount = 0 if free_because else band.amount
    return ShippingCharge(
        method=method.code,
        amount=amount,
        tax=tax_on(amount, rate_bps),
        free_because=free_because,
    )


def with_shipping(
    body: dict[str, Any], charge: ShippingCharge, weight_g: int = 0
) -> dict[str, Any]:
    """The quote body with its shipping line: `shipping` (net), `shipping_tax`, `shipping_method`;
    `tax` includes the shipping tax and `total` = subtotal - discount + tax + shipping.
    `weight_g` is the lines' weight the rate was chosen by (orders weighs its parcel with it)."""
    currency = body["currency"]
    tax = body["tax"]["amount"] + charge.tax
    total = body["total"]["amount"] + charge.amount + charge.tax
    return {
        **body,
        "shipping": _money(charge.amount, currency),
        "shipping_tax": _money(charge.tax, currency),
        "shipping_method": charge.method,
        "shipping_free": charge.free_because,
        "weight_g": weight_g,
        "tax": _money(tax, currency),
        "total": _money(total, currency),
    }


@dataclass(frozen=True)
class ShippingMethodSpec:
    """A method as an admin PUTs it (validated): `default` None keeps what it is."""

    code: str
    region: str
    name: str
    currency: str
    rate_by: ShippingRateBasis
    bands: tuple[RateBand, ...]
    free_over: int | None = None
    default: bool | None = None
    active: bool = True


class MethodRefused(Exception):
    """A PUT of a shipping method breaks a rule of the region's methods (names the field)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def becomes_default(spec: ShippingMethodSpec, region_default: ShippingMethod | None) -> bool:
    """Whether the method is its region's default after this PUT; MethodRefused when the PUT
    would leave the region without exactly one default, or with an inactive one."""
    is_current_default = region_default is not None and region_default.code == spec.code
    if spec.default is None:
        is_default = is_current_default or region_default is None
    elif spec.default is False and is_current_default:
        raise MethodRefused(
            "default", "this is the region's default method: make another one default instead"
        )
    elif spec.default is False and region_default is None:
        raise MethodRefused("default", "the region has no default method yet: this one must be it")
    else:
        is_default = spec.default
    if is_default and not spec.active:
        raise MethodRefused("active", "the region's default method must be active")
    return is_default


# --- channel price lists (issue 13) ---

DEFAULT_CHANNEL = "web"
# A channel code as catalog names its channels (and Kafka topics can carry it).
CHANNEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"


@dataclass(frozen=True)
class ChannelPrice:
    """A sku's price in one channel's price list (it overrides the base price there)."""

    channel: str
    sku: str
    price: Money
    updated_at: datetime  # the last real change


def channel_price_change(
    previous: Money | None, new: Money, sku: str, channel: str
) -> PriceChanged | None:
    """The fact to publish when a channel's price of a sku is set; None when nothing changed."""
    change = price_change(previous, new, sku)
    return None if change is None else change.model_copy(update={"channel": channel})


def channel_price_removed(removed: Money, sku: str, channel: str) -> PriceChanged:
    """The channel's own price is gone: `price` null says the channel sells at the base price."""
    return PriceChanged(sku=sku, price=None, previous=removed, channel=channel)


def unit_prices(
    base: dict[str, BasePrice], in_channel: dict[str, ChannelPrice]
) -> dict[str, Money]:
    """What each sku sells for in a channel: its price in the channel's list when it has one,
    else its base price; a sku with neither is absent (it cannot be quoted)."""
    prices = {sku: found.price for sku, found in base.items()}
    prices.update({sku: found.price for sku, found in in_channel.items()})
    return prices
