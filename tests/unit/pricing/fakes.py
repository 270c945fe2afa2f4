"""In-memory pricing repositories: the same answers as services/pricing/db.py, without PostgreSQL."""

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from libs.events.common import Money
from libs.kit.uow import Clock
from services.pricing import domain
from services.pricing.domain import BasePrice, ProductFacts, StoredRule, TaxRate
from tests.support.fakes import MutableClock


@dataclass
class FakePrices:
    clock: Clock
    rows: dict[str, BasePrice] = field(default_factory=dict)

    async def lock(self, sku: str) -> BasePrice | None:
        return self.rows.get(sku)

    async def add(self, sku: str, price: Money) -> bool:
        if sku in self.rows:
            return False
        self.rows[sku] = BasePrice(sku, price, self.clock())
        return True

    async def change(self, sku: str, price: Money) -> None:
        self.rows[sku] = BasePrice(sku, price, self.clock())

    async def get(self, sku: str) -> BasePrice | None:
        return self.rows.get(sku)


@dataclass
class FakeRules:
    clock: Clock
    rows: dict[str, tuple[StoredRule, domain.AnyRule]] = field(default_factory=dict)

    async def add(self, rule: domain.AnyRule, definition: dict[str, Any]) -> bool:
        if await self.holder_of(rule) is not None:
            return False
        self.rows[rule.id] = (StoredRule(rule.id, definition, self.clock()), rule)
        return True

    async def holder_of(self, rule: domain.AnyRule) -> str | None:
        key = _unique_key(rule)
        for stored, other in self.rows.values():
            if key is not None and _unique_key(other) == key:
                return stored.id
        return None

    async def get(self, rule_id: str) -> StoredRule | None:
        found = self.rows.get(rule_id)
        return found[0] if found else None

    async def delete(self, rule_id: str) -> bool:
        return self.rows.pop(rule_id, None) is not None

    async def page(
        self, *, kind: str | None, sku: str | None, after: tuple[datetime, str] | None, limit: int
    ) -> list[StoredRule]:
        def wanted(rule: domain.AnyRule, stored: StoredRule) -> bool:
            return (
                (kind is None or rule.kind == kind)
                and (sku is None or getattr(rule, "sku", None) == sku)
                and (after is None or (stored.created_at, stored.id) > after)
            )

        found = [stored for stored, rule in self.rows.values() if wanted(rule, stored)]
        return sorted(found, key=lambda r: (r.created_at, r.id))[:limit]

    async def applicable(
        self, skus: Sequence[str], groups: frozenset[str], now: datetime
    ) -> list[domain.Rule]:
        def wanted(rule: domain.Rule) -> bool:
            if isinstance(rule, domain.VolumeRule):
                return rule.sku in skus
            if isinstance(rule, domain.PromotionRule):
                return rule.starts_at <= now < rule.ends_at
            return rule.sku in skus and rule.group in groups

        return [
            rule
            for _, rule in self.rows.values()
            if not isinstance(rule, domain.FreeShippingRule) and wanted(rule)
        ]


def _unique_key(rule: domain.AnyRule) -> tuple[str, ...] | None:
    """What the unique indexes hold: one volume rule per sku, one group price per (group, sku)."""
    if isinstance(rule, domain.VolumeRule):
        return ("volume", rule.sku)
    if isinstance(rule, domain.GroupPriceRule):
        return ("customer_group", rule.group, rule.sku)
    return None  # promotions may overlap


@dataclass
class FakeTaxRates:
    clock: Clock
    rows: dict[str, TaxRate] = field(default_factory=dict)

    async def put(self, region: str, rate_bps: int) -> None:
        self.rows[region] = TaxRate(region, rate_bps, self.clock())

    async def get(self, region: str) -> TaxRate | None:
        return self.rows.get(region)


@dataclass(frozen=True)
class StoredQuote:
    customer_id: str | None
    body: dict[str, Any]
    created_at: datetime
    expires_at: datetime


@dataclass
class FakeQuotes:
    rows: dict[str, StoredQuote] = field(default_factory=dict)

    async def add(
        self,
        quote_id: str,
        *,
        customer_id: str | None,
        body: dict[str, Any],
        created_at: datetime,
        expires_at: datetime,
    ) -> None:
        self.rows[quote_id] = StoredQuote(customer_id, body, created_at, expires_at)

    async def body_of(self, quote_id: str) -> dict[str, Any] | None:
        found = self.rows.get(quote_id)
        return found.body if found else None


@dataclass
class FakeProducts:
    rows: dict[str, tuple[ProductFacts, datetime]] = field(default_factory=dict)

    async def record(self, facts: ProductFacts, event_time: datetime) -> None:
        current = self.rows.get(facts.sku)
        if current is None or current[1] <= event_time:
            self.rows[facts.sku] = (facts, event_time)


class FakeStore:
    def __init__(self, clock: MutableClock | None = None) -> None:
        self.clock = clock or MutableClock()
        self.prices = FakePrices(self.clock)
        self.rules = FakeRules(self.clock)
        self.tax_rates = FakeTaxRates(self.clock)
        self.quotes = FakeQuotes()
        self.products = FakeProducts()
        self.shipping_methods = FakeShippingMethods(self.clock)
        self.free_shipping = FakeFreeShippingRules(self.rules)
        self.channel_prices = FakeChannelPrices(self.clock)  # issue 13
        self.quote_inputs = FakeQuoteInputs(self)


# --- shipping rates (issue 12) ---


@dataclass
class FakeShippingMethods:
    clock: Clock
    rows: dict[str, domain.ShippingMethod] = field(default_factory=dict)

    async def lock_region(self, region: str) -> None:
        return None

    async def get(self, code: str) -> domain.ShippingMethod | None:
        return self.rows.get(code)

    async def default_of(self, region: str) -> domain.ShippingMethod | None:
        found = [m for m in self.rows.values() if m.region == region and m.is_default]
        assert len(found) <= 1, f"two defaults in {region}: the unique index would refuse it"
        return found[0] if found else None

    async def clear_default(self, region: str) -> None:
        for code, method in list(self.rows.items()):
            if method.region == region and method.is_default:
                self.rows[code] = replace(method, is_default=False, updated_at=self.clock())

    async def put(self, method: domain.ShippingMethodSpec, *, is_default: bool) -> None:
        now = self.clock()
        current = self.rows.get(method.code)
        self.rows[method.code] = domain.ShippingMethod(
            code=method.code,
            region=method.region,
            name=method.name,
            currency=method.currency,
            rate_by=method.rate_by,
            bands=method.bands,
            free_over=method.free_over,
            is_default=is_default,
            active=method.active,
            created_at=current.created_at if current else now,
            updated_at=now,
        )
        assert not (is_default and not method.active), "the check constraint would refuse it"
        await self.default_of(method.region)

    async def page(
        self, *, region: str | None, after: tuple[str, str] | None, limit: int
    ) -> list[domain.ShippingMethod]:
        found = sorted(
            (
                m
                for m in self.rows.values()
                if m.active
                and (region is None or m.region == region)
                and (after is None or (m.region, m.code) > after)
            ),
            key=lambda m: (m.region, m.code),
        )
        return found[:limit]


@dataclass
class FakeFreeShippingRules:
    rules: FakeRules

    async def active(self, now: datetime) -> list[domain.FreeShippingRule]:
        return [
            rule
            for _, rule in self.rules.rows.values()
            if isinstance(rule, domain.FreeShippingRule) and rule.is_active(now)
        ]


# --- channel price lists (issue 13) ---


@dataclass
class FakeChannelPrices:
    clock: Clock
    rows: dict[tuple[str, str], domain.ChannelPrice] = field(default_factory=dict)

    async def lock(self, channel: str, sku: str) -> domain.ChannelPrice | None:
        return self.rows.get((channel, sku))

    async def add(self, channel: str, sku: str, price: Money) -> bool:
        if (channel, sku) in self.rows:
            return False
        self.rows[channel, sku] = domain.ChannelPrice(channel, sku, price, self.clock())
        return True

    async def change(self, channel: str, sku: str, price: Money) -> None:
        self.rows[channel, sku] = domain.ChannelPrice(channel, sku, price, self.clock())

    async def remove(self, channel: str, sku: str) -> domain.ChannelPrice | None:
        return self.rows.pop((channel, sku), None)

    async def get(self, channel: str, sku: str) -> domain.ChannelPrice | None:
        return self.rows.get((channel, sku))


@dataclass
class FakeQuoteInputs:
    """The quote's one read, answered from the other fakes' rows."""

    store: FakeStore

    async def read(self, skus: Sequence[str], channel: str, region: str) -> domain.QuoteInputs:
        store = self.store
        base = {sku: store.prices.rows[sku] for sku in skus if sku in store.prices.rows}
        listed = {
            sku: store.channel_prices.rows[channel, sku]
            for sku in skus
            if (channel, sku) in store.channel_prices.rows
        }
        rate = store.tax_rates.rows.get(region)
        return domain.QuoteInputs(
            products={
                sku: store.products.rows[sku][0] for sku in skus if sku in store.products.rows
            },
            unit_prices=domain.unit_prices(base, listed),
            rate_bps=rate.rate_bps if rate else None,
        )
