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


# ---- quotes ----


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
