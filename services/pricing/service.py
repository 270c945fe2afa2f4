"""Pricing use cases: base prices, rules, tax rates, quotes, and the catalog products projection."""

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from libs.events.common import Money
from libs.kit.errors import Conflict, FieldError, Invalid, NotFound
from libs.kit.uow import Tx
from services.pricing import domain
from services.pricing.domain import BasePrice, ProductFacts, RulePage, StoredRule, TaxRate


class PriceRepository(Protocol):
    async def lock(self, sku: str) -> BasePrice | None:
        """The sku's base price, locked until the transaction ends."""
        ...

    async def add(self, sku: str, price: Money) -> bool:
        """A first price; False (nothing written) when the sku already has one."""
        ...

    async def change(self, sku: str, price: Money) -> None:
        """Replace the price and stamp it as changed now."""
        ...

    async def get(self, sku: str) -> BasePrice | None: ...


class RuleRepository(Protocol):
    async def add(self, rule: domain.AnyRule, definition: dict[str, Any]) -> bool:
        """Store a rule; False (nothing written) when a volume rule for its sku, or a group
        price for its (group, sku), already exists."""
        ...

    async def holder_of(self, rule: domain.AnyRule) -> str | None:
        """The id of the stored rule that keeps `rule` from being added."""
        ...

    async def get(self, rule_id: str) -> StoredRule | None: ...

    async def delete(self, rule_id: str) -> bool:
        """False when there was no such rule."""
        ...

    async def page(
        self, *, kind: str | None, sku: str | None, after: tuple[datetime, str] | None, limit: int
    ) -> list[StoredRule]:
        """Up to `limit` rules in (created_at, id) order after `after`."""
        ...

    async def applicable(
        self, skus: Sequence[str], groups: frozenset[str], now: datetime
    ) -> list[domain.Rule]:
        """Rules that may touch these skus now (volume and group prices of the skus, for the
        caller's groups only, and every active promotion); the domain decides which apply."""
        ...


class TaxRateRepository(Protocol):
    async def put(self, region: str, rate_bps: int) -> None: ...

    async def get(self, region: str) -> TaxRate | None: ...


class QuoteRepository(Protocol):
    async def add(
        self,
        quote_id: str,
        *,
        customer_id: str | None,
        body: dict[str, Any],
        created_at: datetime,
        expires_at: datetime,
    ) -> None: ...

    async def body_of(self, quote_id: str) -> dict[str, Any] | None: ...


class ProductRepository(Protocol):
    async def record(self, facts: ProductFacts, event_time: datetime) -> None:
        """Upsert the sku's facts unless they already reflect a newer catalog event."""
        ...


class QuoteInputRepository(Protocol):
    async def read(self, skus: Sequence[str], channel: str, region: str) -> domain.QuoteInputs:
        """The skus' products and unit prices in `channel`, and `region`'s tax rate."""
        ...


class PricingStore(Protocol):
    @property
    def prices(self) -> PriceRepository: ...

    @property
    def rules(self) -> RuleRepository: ...

    @property
    def tax_rates(self) -> TaxRateRepository: ...

    @property
    def quotes(self) -> QuoteRepository: ...

    @property
    def products(self) -> ProductRepository: ...

    @property
    def shipping_methods(self) -> "ShippingMethodRepository": ...

    @property
    def free_shipping(self) -> "FreeShippingRuleRepository": ...

    @property
    def channel_prices(self) -> "ChannelPriceRepository": ...  # issue 13

    @property
    def quote_inputs(self) -> QuoteInputRepository: ...  # issue 10: one read per quote


# ---- prices ----


async def set_price(tx: Tx[PricingStore], sku: str, price: Money) -> BasePrice:
    """Set a sku's base price; PriceChanged goes out only when the price really changes."""
    prices = tx.store.prices
    current = await prices.lock(sku)
    if current is None and not await prices.add(sku, price):
        current = await prices.lock(sku)  # a concurrent PUT created it first: compare with theirs
    change = domain.price_change(current.price if current else None, price, sku)
    if change is not None:
        if current is not None:
            await prices.change(sku, price)
        await tx.events.emit(change, subject=sku)
    return await get_price(tx, sku)


async def get_price(tx: Tx[PricingStore], sku: str) -> BasePrice:
    found = await tx.store.prices.get(sku)
    if found is None:
        raise NotFound(f"price of {sku}")
    return found


# ---- rules ----


async def create_rule(tx: Tx[PricingStore], definition: dict[str, Any]) -> StoredRule:
    """Store a validated rule definition (as the API will echo it) under a new id."""
    rule_id = str(uuid.uuid4())
    rule = domain.any_rule_from_definition(rule_id, definition)
    if not await tx.store.rules.add(rule, definition):
        existing = await tx.store.rules.holder_of(rule)
        what = "volume rule for this sku" if rule.kind == "volume" else "group price for this sku"
        raise Conflict(f"a {what} already exists (rule {existing}); delete it first")
    return await get_rule(tx, rule_id)


async def get_rule(tx: Tx[PricingStore], rule_id: str) -> StoredRule:
    found = await tx.store.rules.get(rule_id)
    if found is None:
        raise NotFound(f"rule {rule_id}")
    return found


async def delete_rule(tx: Tx[PricingStore], rule_id: str) -> None:
    """Quotes already issued keep their prices: they hold copies, not references."""
    if not await tx.store.rules.delete(rule_id):
        raise NotFound(f"rule {rule_id}")


async def list_rules(
    tx: Tx[PricingStore],
    *,
    kind: str | None,
    sku: str | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> RulePage:
    """One page in creation order; one rule more is read than asked, to know if there is more."""
    found = await tx.store.rules.page(kind=kind, sku=sku, after=after, limit=limit + 1)
    return RulePage(items=found[:limit], more=len(found) > limit)


# ---- tax rates ----


async def set_tax_rate(tx: Tx[PricingStore], region: str, rate_bps: int) -> TaxRate:
    await tx.store.tax_rates.put(region, rate_bps)
    return await get_tax_rate(tx, region)


async def get_tax_rate(tx: Tx[PricingStore], region: str) -> TaxRate:
    found = await tx.store.tax_rates.get(region)
    if found is None:
        raise NotFound(f"tax rate of region {region}")
    return found


# ---- quotes ----


async def create_quote(
    tx: Tx[PricingStore],
    *,
    lines: list[tuple[str, int]],
    region: str,
    groups: frozenset[str],
    customer_id: str | None,
    now: datetime,
    ttl_s: int,
    shipping_method: str | None = None,
    channel: str = domain.DEFAULT_CHANNEL,
) -> dict[str, Any]:
    """Price the lines with today's prices (the channel's price list first, then the base
    prices) and rules, store the quote and return its body. Every line that cannot be quoted,
    an unknown region and an unusable shipping method are refused together."""
    store = tx.store
    skus = [sku for sku, _ in lines]
    _refuse_duplicates(skus)
    inputs = await store.quote_inputs.read(skus, channel, region)
    known, base, rate_bps = inputs.products, inputs.unit_prices, inputs.rate_bps
    errors: list[FieldError] = []
    for index, sku in enumerate(skus):
        product = known.get(sku)
        reason = domain.line_problem(
            known_product=product is not None,
            status=product.status if product else None,
            has_price=sku in base,
        )
        if reason:
            errors.append(FieldError(f"lines[{index}].sku", reason))
    if rate_bps is None:
        errors.append(FieldError("region", "unknown region: no tax rate is set"))
    method, method_error = await _shipping_method_for(store, shipping_method, region)
    if method_error is not None:
        errors.append(method_error)
    if errors or rate_bps is None:
        raise _invalid_fields(errors)
    currencies = [base[sku].currency for sku in skus]
    foreign = domain.first_foreign_currency(currencies)
    if foreign is not None:
        message = (
            f"priced in {currencies[foreign]}, other lines in {currencies[0]}: "
            "quote them separately"
        )
        raise _invalid_fields([FieldError(f"lines[{foreign}].sku", message)])
    applicable = await store.rules.applicable(skus, groups, now)
    priced = [
        domain.price_line(
            domain.LineToPrice(
                sku=sku,
                quantity=quantity,
                unit_price=base[sku].amount,
                currency=base[sku].currency,
                category=known[sku].category,
            ),
            applicable,
            groups=groups,
            now=now,
            rate_bps=rate_bps,
        )
        for sku, quantity in lines
    ]
    quote_id = str(uuid.uuid4())
    expires_at = now + timedelta(seconds=ttl_s)
    body = domain.quote_body(
        quote_id,
        priced,
        region=region,
        rate_bps=rate_bps,
        customer_id=customer_id,
        now=now,
        expires_at=expires_at,
    )
    weight_g = sum(known[sku].weight_g * quantity for sku, quantity in lines)
    charge = await _shipping_charge(store, method, priced, weight_g, rate_bps, now)
    body = domain.with_shipping(body, charge, weight_g) | {"channel": channel}
    await store.quotes.add(
        quote_id, customer_id=customer_id, body=body, created_at=now, expires_at=expires_at
    )
    return body


async def get_quote(tx: Tx[PricingStore], quote_id: str) -> dict[str, Any]:
    """The stored quote, also after it expired (the reader compares `expires_at`)."""
    body = await tx.store.quotes.body_of(quote_id)
    if body is None:
        raise NotFound(f"quote {quote_id}")
    return body


def _refuse_duplicates(skus: list[str]) -> None:
    seen: set[str] = set()
    errors = []
    for index, sku in enumerate(skus):
        if sku in seen:
            errors.append(
                FieldError(f"lines[{index}].sku", f"duplicate sku {sku}: one line per sku")
            )
        seen.add(sku)
    if errors:
        raise _invalid_fields(errors)


def _invalid_fields(errors: list[FieldError]) -> Invalid:
    """One refusal naming every bad field at once."""
    return Invalid("; ".join(f"{e.field}: {e.message}" for e in errors), errors)


# ---- the catalog products projection ----


async def record_product(tx: Tx[PricingStore], facts: ProductFacts, event_time: datetime) -> None:
    """Apply a catalog fact unless a newer one was applied already (a DLQ replay of an older
    event never undoes a newer one)."""
    await tx.store.products.record(facts, event_time)


# --- shipping rates (issue 12) ---


class ShippingMethodRepository(Protocol):
    async def lock_region(self, region: str) -> None:
        """Serialise changes to one region's methods until the transaction ends (so two
        concurrent PUTs cannot both make a default)."""
        ...

    async def get(self, code: str) -> domain.ShippingMethod | None: ...

    async def default_of(self, region: str) -> domain.ShippingMethod | None: ...

    async def clear_default(self, region: str) -> None:
        """The region has no default any more (its new one is written next, same transaction)."""
        ...

    async def put(self, method: domain.ShippingMethodSpec, *, is_default: bool) -> None:
        """Insert or replace the method under its code."""
        ...

    async def page(
        self, *, region: str | None, after: tuple[str, str] | None, limit: int
    ) -> list[domain.ShippingMethod]:
        """Up to `limit` active methods in (region, code) order after `after`."""
        ...


class FreeShippingRuleRepository(Protocol):
    async def active(self, now: datetime) -> list[domain.FreeShippingRule]: ...


async def put_shipping_method(
    tx: Tx[PricingStore], spec: domain.ShippingMethodSpec
) -> domain.ShippingMethod:
    """Create or replace a method. A region with methods has exactly one default, and it is
    active: the first method of a region becomes it, `default: true` moves it (the old one loses
    it in this transaction), and the default can neither be unset nor deactivated directly."""
    methods = tx.store.shipping_methods
    await methods.lock_region(spec.region)
    current = await methods.get(spec.code)
    if current is not None and current.region != spec.region:
        raise Conflict(
            f"shipping method {spec.code} serves region {current.region}; "
            "a method's region cannot change (create another code)"
        )
    region_default = await methods.default_of(spec.region)
    try:
        is_default = domain.becomes_default(spec, region_default)
    except domain.MethodRefused as exc:
        raise _invalid_fields([FieldError(exc.field, exc.message)]) from exc
    if is_default and region_default is not None and region_default.code != spec.code:
        await methods.clear_default(spec.region)
    await methods.put(spec, is_default=is_default)
    return await get_shipping_method(tx, spec.code)


async def get_shipping_method(tx: Tx[PricingStore], code: str) -> domain.ShippingMethod:
    found = await tx.store.shipping_methods.get(code)
    if found is None:
        raise NotFound(f"shipping method {code}")
    return found


async def list_shipping_methods(
    tx: Tx[PricingStore], *, region: str | None, after: tuple[str, str] | None, limit: int
) -> domain.ShippingMethodPage:
    """Active methods, one page in (region, code) order; one more is read to know if there is
    more."""
    found = await tx.store.shipping_methods.page(region=region, after=after, limit=limit + 1)
    return domain.ShippingMethodPage(items=found[:limit], more=len(found) > limit)


async def _shipping_method_for(
    store: PricingStore, code: str | None, region: str
) -> tuple[domain.ShippingMethod | None, FieldError | None]:
    """The method a quote ships by: the one asked for (it must be active and serve the region),
    else the region's default; (None, None) when the region has no shipping methods at all."""
    if code is None:
        return await store.shipping_methods.default_of(region), None
    method = await store.shipping_methods.get(code)
    if method is None:
        return None, FieldError("shipping_method", f"unknown shipping method {code}")
    if not method.active:
        return None, FieldError("shipping_method", f"shipping method {code} is not offered now")
    if method.region != region:
        message = f"shipping method {code} serves region {method.region}, not {region}"
        return None, FieldError("shipping_method", message)
    return method, None


async def _shipping_charge(
    store: PricingStore,
    method: domain.ShippingMethod | None,
    priced: Sequence[domain.PricedLine],
    weight_g: int,
    rate_bps: int,
    now: datetime,
) -> domain.ShippingCharge:
    if method is None:
        return domain.NO_SHIPPING
    sums = domain.totals(priced)
    try:
        return domain.shipping_charge(
            method,
            weight_g=weight_g,
            order_value=sums.subtotal - sums.discount,
            currency=priced[0].currency,
            rate_bps=rate_bps,
            promotions=await store.free_shipping.active(now),
            now=now,
        )
    except domain.ShippingNotOffered as exc:
        raise _invalid_fields([FieldError("shipping_method", str(exc))]) from exc


# --- channel price lists (issue 13) ---


class ChannelPriceRepository(Protocol):
    async def lock(self, channel: str, sku: str) -> domain.ChannelPrice | None:
        """The channel's price of the sku, locked until the transaction ends."""
        ...

    async def add(self, channel: str, sku: str, price: Money) -> bool:
        """A first price in the channel's list; False (nothing written) when it has one."""
        ...

    async def change(self, channel: str, sku: str, price: Money) -> None: ...

    async def remove(self, channel: str, sku: str) -> domain.ChannelPrice | None:
        """Delete the channel's price of the sku; what it was, or None when there was none."""
        ...

    async def get(self, channel: str, sku: str) -> domain.ChannelPrice | None: ...


async def set_channel_price(
    tx: Tx[PricingStore], channel: str, sku: str, price: Money
) -> domain.ChannelPrice:
    """Set a sku's price in a channel's list; PriceChanged (with `channel`) only on a real
    change."""
    listed = tx.store.channel_prices
    current = await listed.lock(channel, sku)
    if current is None and not await listed.add(channel, sku, price):
        current = await listed.lock(channel, sku)  # a concurrent PUT created it first
    change = domain.channel_price_change(current.price if current else None, price, sku, channel)
    if change is not None:
        if current is not None:
            await listed.change(channel, sku, price)
        await tx.events.emit(change, subject=sku)
    return await get_channel_price(tx, channel, sku)


async def get_channel_price(tx: Tx[PricingStore], channel: str, sku: str) -> domain.ChannelPrice:
    found = await tx.store.channel_prices.get(channel, sku)
    if found is None:
        raise NotFound(f"price of {sku} in channel {channel}")
    return found


async def delete_channel_price(tx: Tx[PricingStore], channel: str, sku: str) -> None:
    """The channel sells the sku at its base price again; PriceChanged with `price` null and
    `channel` set says so."""
    removed = await tx.store.channel_prices.remove(channel, sku)
    if removed is None:
        raise NotFound(f"price of {sku} in channel {channel}")
    await tx.events.emit(domain.channel_price_removed(removed.price, sku, channel), subject=sku)
