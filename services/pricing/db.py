"""Pricing tables and repositories: base prices, rules, tax rates, quotes, the products projection."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ColumnElement,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Row,
    String,
    Table,
    and_,
    bindparam,
    delete,
    func,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import JSON

from libs.events.common import Money
from libs.kit.db import DbSession
from libs.kit.retention import PruneTask
from services.pricing import domain
from services.pricing.domain import BasePrice, ProductFacts, StoredRule, TaxRate

metadata = MetaData()

prices = Table(
    "prices",
    metadata,
    Column("sku", String(64), primary_key=True),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("amount >= 0", name="ck_prices_amount_not_negative"),
)

# One row per rule; the columns pricing filters on are lifted out of `definition` (the rule as
# the admin posted it, normalised), which is what the API echoes and the domain is built from.
# Plain `json`, not `jsonb`: nothing queries inside it, and it keeps the fields in their order.
rules = Table(
    "rules",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("kind", String(20), nullable=False),
    Column("sku", String(64)),
    Column("group_name", String(64)),
    Column("starts_at", DateTime(timezone=True)),
    Column("ends_at", DateTime(timezone=True)),
    Column("definition", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint(
        "kind IN ('volume', 'promotion', 'customer_group', 'free_shipping')", name="ck_rules_kind"
    ),
    CheckConstraint(
        "kind IN ('promotion', 'free_shipping') OR sku IS NOT NULL", name="ck_rules_sku"
    ),
    CheckConstraint(
        "kind NOT IN ('promotion', 'free_shipping') OR ends_at > starts_at",
        name="ck_rules_promotion_window",
    ),
    Index("ix_rules_sku", "sku"),
    Index("ix_rules_promotion_window", "ends_at", postgresql_where=text("kind = 'promotion'")),
    # One quantity-break schedule per sku and one group price per (group, sku): a second one
    # would be ambiguous, so it is a 409 rather than a silent second rule.
    Index(
        "uq_rules_volume_sku",
        "sku",
        unique=True,
        postgresql_where=text("kind = 'volume'"),
    ),
    Index(
        "uq_rules_group_sku",
        "group_name",
        "sku",
        unique=True,
        postgresql_where=text("kind = 'customer_group'"),
    ),
)

tax_rates = Table(
    "tax_rates",
    metadata,
    Column("region", String(32), primary_key=True),
    Column("rate_bps", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("rate_bps BETWEEN 0 AND 10000", name="ck_tax_rates_rate_bps"),
)

quotes = Table(
    "quotes",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("customer_id", String(200)),
    Column("body", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

# What pricing knows of catalog products. `event_time` is the time of the catalog event that
# wrote the row, so a replayed older event never overwrites newer state.
products = Table(
    "products",
    metadata,
    Column("sku", String(64), primary_key=True),
    Column("category", String(100), nullable=False),
    Column("status", String(20), nullable=False),
    # attributes.weight in whole grams (0: the product has none); shipping rates by weight.
    Column("weight_g", BigInteger, nullable=False, server_default=text("0")),
    Column("event_time", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


# ---- repositories: every query of pricing, returning its domain's read models ----

# The inserts are text: SQLAlchemy 2.0 never caches PostgreSQL's insert construct (the one with
# ON CONFLICT; inherit_cache=False), so it compiled these hot statements again on every execution,
# while a text constant is compiled once. JSON binds take their column's type (serialised as before).
ADD_PRICE = text(
    "INSERT INTO prices (sku, amount, currency) VALUES (:sku, :amount, :currency)"
    " ON CONFLICT DO NOTHING"
    " RETURNING sku"
)


class Prices:
    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def lock(self, sku: str) -> BasePrice | None:
        query = select(prices).where(prices.c.sku == sku).with_for_update()
        row = (await self.session.execute(query)).first()
        return _price(row) if row is not None else None

    async def add(self, sku: str, price: Money) -> bool:
        inserted = await self.session.scalar(
            ADD_PRICE, {"sku": sku, "amount": price.amount, "currency": price.currency}
        )
        return inserted is not None

    async def change(self, sku: str, price: Money) -> None:
        await self.session.execute(
            update(prices)
            .where(prices.c.sku == sku)
            .values(amount=price.amount, currency=price.currency, updated_at=func.now())
        )

    async def get(self, sku: str) -> BasePrice | None:
        row = (await self.session.execute(select(prices).where(prices.c.sku == sku))).first()
        return _price(row) if row is not None else None


def _price(row: Row[Any]) -> BasePrice:
    return BasePrice(
        sku=row.sku,
        price=Money(amount=row.amount, currency=row.currency),
        updated_at=row.updated_at,
    )


# Every rule writes all its key columns, NULL where its kind has none: one shape for all kinds.
ADD_RULE = text(
    "INSERT INTO rules (id, kind, sku, group_name, starts_at, ends_at, definition)"
    " VALUES (:id, :kind, :sku, :group_name, :starts_at, :ends_at, :definition)"
    " ON CONFLICT DO NOTHING"
    " RETURNING id"
).bindparams(
    bindparam("starts_at", type_=rules.c.starts_at.type),
    bindparam("ends_at", type_=rules.c.ends_at.type),
    bindparam("definition", type_=rules.c.definition.type),
)


# The rules a quote applies (issue 10: fixed text, DbSession's asyncpg path): the skus' volume
# breaks, the live promotions, and the customer's groups' prices for the skus (no groups: none).
APPLICABLE_RULES = text(
    "SELECT id, definition FROM rules"
    " WHERE (kind = 'volume' AND sku = ANY(:skus))"
    " OR (kind = 'promotion' AND starts_at <= :now AND ends_at > :now)"
    " OR (kind = 'customer_group' AND sku = ANY(:skus) AND group_name = ANY(:groups))"
)


class Rules:
    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def add(self, rule: domain.AnyRule, definition: dict[str, Any]) -> bool:
        columns: dict[str, Any] = {"id": rule.id, "kind": rule.kind, "definition": definition}
        columns |= {"sku": None, "group_name": None, "starts_at": None, "ends_at": None}
        columns |= _keys(rule)
        inserted = await self.session.scalar(ADD_RULE, columns)
        return inserted is not None

    async def holder_of(self, rule: domain.AnyRule) -> str | None:
        keys = _keys(rule)
        holder: str | None = await self.session.scalar(
            select(rules.c.id).where(
                rules.c.kind == rule.kind,
                rules.c.sku == keys.get("sku"),
                rules.c.group_name.is_not_distinct_from(keys.get("group_name")),
            )
        )
        return holder

    async def get(self, rule_id: str) -> StoredRule | None:
        row = (await self.session.execute(select(rules).where(rules.c.id == rule_id))).first()
        return _stored_rule(row) if row is not None else None

    async def delete(self, rule_id: str) -> bool:
        deleted = await self.session.scalar(
            delete(rules).where(rules.c.id == rule_id).returning(rules.c.id)
        )
        return deleted is not None

    async def page(
        self, *, kind: str | None, sku: str | None, after: tuple[datetime, str] | None, limit: int
    ) -> list[StoredRule]:
        query = select(rules).order_by(rules.c.created_at, rules.c.id).limit(limit)
        if kind:
            query = query.where(rules.c.kind == kind)
        if sku:
            query = query.where(rules.c.sku == sku)
        if after:
            query = query.where(tuple_(rules.c.created_at, rules.c.id) > after)
        return [_stored_rule(row) for row in (await self.session.execute(query)).all()]

    async def applicable(
        self, skus: Sequence[str], groups: frozenset[str], now: datetime
    ) -> list[domain.Rule]:
        rows = (
            await self.session.execute(
                APPLICABLE_RULES, {"skus": list(skus), "groups": sorted(groups), "now": now}
            )
        ).all()
        return [domain.rule_from_definition(row.id, row.definition) for row in rows]


def _keys(rule: domain.AnyRule) -> dict[str, Any]:
    """The columns lifted out of a rule's definition, which queries and unique indexes use."""
    if isinstance(rule, domain.PromotionRule | domain.FreeShippingRule):
        return {"starts_at": rule.starts_at, "ends_at": rule.ends_at}
    if isinstance(rule, domain.GroupPriceRule):
        return {"sku": rule.sku, "group_name": rule.group}
    return {"sku": rule.sku}


def _stored_rule(row: Row[Any]) -> StoredRule:
    return StoredRule(id=row.id, definition=row.definition, created_at=row.created_at)


PUT_TAX_RATE = text(
    "INSERT INTO tax_rates (region, rate_bps) VALUES (:region, :rate_bps)"
    " ON CONFLICT (region) DO UPDATE SET rate_bps = EXCLUDED.rate_bps, updated_at = now()"
)


class TaxRates:
    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def put(self, region: str, rate_bps: int) -> None:
        await self.session.execute(PUT_TAX_RATE, {"region": region, "rate_bps": rate_bps})

    async def get(self, region: str) -> TaxRate | None:
        query = select(tax_rates).where(tax_rates.c.region == region)
        row = (await self.session.execute(query)).first()
        if row is None:
            return None
        return TaxRate(region=row.region, rate_bps=row.rate_bps, updated_at=row.updated_at)


ADD_QUOTE = text(
    "INSERT INTO quotes (id, customer_id, body, created_at, expires_at)"
    " VALUES (:id, :customer_id, :body, :created_at, :expires_at)"
).bindparams(
    bindparam("body", type_=quotes.c.body.type),
    bindparam("created_at", type_=quotes.c.created_at.type),
    bindparam("expires_at", type_=quotes.c.expires_at.type),
)


class Quotes:
    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def add(
        self,
        quote_id: str,
        *,
        customer_id: str | None,
        body: dict[str, Any],
        created_at: datetime,
        expires_at: datetime,
    ) -> None:
        await self.session.execute(
            ADD_QUOTE,
            {
                "id": quote_id,
                "customer_id": customer_id,
                "body": body,
                "created_at": created_at,
                "expires_at": expires_at,
            },
        )

    async def body_of(self, quote_id: str) -> dict[str, Any] | None:
        body: dict[str, Any] | None = await self.session.scalar(
            select(quotes.c.body).where(quotes.c.id == quote_id)
        )
        return body


# A replayed older catalog event (event_time not newer) leaves the row as it is.
RECORD_PRODUCT = text(
    "INSERT INTO products (sku, category, status, weight_g, event_time)"
    " VALUES (:sku, :category, :status, :weight_g, :event_time)"
    " ON CONFLICT (sku) DO UPDATE"
    " SET category = EXCLUDED.category, status = EXCLUDED.status, weight_g = EXCLUDED.weight_g,"
    " event_time = EXCLUDED.event_time, updated_at = now()"
    " WHERE products.event_time <= EXCLUDED.event_time"
).bindparams(bindparam("event_time", type_=products.c.event_time.type))


class Products:
    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def record(self, facts: ProductFacts, event_time: datetime) -> None:
        await self.session.execute(
            RECORD_PRODUCT,
            {
                "sku": facts.sku,
                "category": facts.category,
                "status": facts.status,
                "weight_g": facts.weight_g,
                "event_time": event_time,
            },
        )


# A quote's reads in one statement (issue 10: one round trip instead of four): per asked sku its
# product facts and its unit price in the channel (the channel's list over the base price, as
# domain.unit_prices decides), each row with the region's tax rate; NULLs where there is none.
# Plain text, no JSON in the row: it takes the kit's fast path (libs/kit/db.py).
QUOTE_INPUTS = text(
    "SELECT s.sku, p.category, p.status, p.weight_g,"
    " CASE WHEN c.sku IS NULL THEN b.amount ELSE c.amount END AS amount,"
    " CASE WHEN c.sku IS NULL THEN b.currency ELSE c.currency END AS currency,"
    " (SELECT t.rate_bps FROM tax_rates t WHERE t.region = :region) AS rate_bps"
    " FROM unnest(CAST(:skus AS text[])) AS s (sku)"
    " LEFT JOIN products p ON p.sku = s.sku"
    " LEFT JOIN prices b ON b.sku = s.sku"
    " LEFT JOIN channel_prices c ON c.channel = :channel AND c.sku = s.sku"
)
TAX_RATE_OF = text("SELECT rate_bps FROM tax_rates WHERE region = :region")


class QuoteInputReads:
    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def read(self, skus: Sequence[str], channel: str, region: str) -> domain.QuoteInputs:
        if not skus:
            rate = await self.session.scalar(TAX_RATE_OF, {"region": region})
            return domain.QuoteInputs({}, {}, rate)
        rows = (
            await self.session.execute(
                QUOTE_INPUTS, {"skus": list(skus), "channel": channel, "region": region}
            )
        ).all()
        return domain.QuoteInputs(
            products={
                row.sku: ProductFacts(
                    sku=row.sku, category=row.category, status=row.status, weight_g=row.weight_g
                )
                for row in rows
                if row.status is not None
            },
            unit_prices={
                row.sku: Money(amount=row.amount, currency=row.currency)
                for row in rows
                if row.amount is not None
            },
            rate_bps=rows[0].rate_bps if rows else None,
        )


class Store:
    """Pricing's repositories on one session (the `PricingStore` its use cases need)."""

    def __init__(self, session: DbSession) -> None:
        self.prices = Prices(session)
        self.rules = Rules(session)
        self.tax_rates = TaxRates(session)
        self.quotes = Quotes(session)
        self.products = Products(session)
        self.shipping_methods = ShippingMethods(session)
        self.free_shipping = FreeShippingRules(session)
        self.channel_prices = ChannelPrices(session)  # issue 13
        self.quote_inputs = QuoteInputReads(session)  # issue 10


# --- shipping rates (issue 12) ---

# One row per method code (codes are global; each method serves one region). `bands` is the rate
# table as posted ([{"up_to": int|null, "amount": int}], ascending, the last one may be open).
shipping_methods = Table(
    "shipping_methods",
    metadata,
    Column("code", String(64), primary_key=True),
    Column("region", String(32), nullable=False),
    Column("name", String(200), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("rate_by", String(20), nullable=False),
    Column("bands", JSON, nullable=False),
    Column("free_over", BigInteger),
    Column("is_default", Boolean, nullable=False, server_default=text("false")),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("rate_by IN ('weight', 'order_value')", name="ck_shipping_methods_rate_by"),
    CheckConstraint("free_over IS NULL OR free_over >= 0", name="ck_shipping_methods_free_over"),
    CheckConstraint("NOT is_default OR active", name="ck_shipping_methods_default_active"),
    Index("ix_shipping_methods_region", "region", "code"),
    # At most one default per region, whatever the application does.
    Index(
        "uq_shipping_methods_region_default",
        "region",
        unique=True,
        postgresql_where=text("is_default"),
    ),
)

PUT_SHIPPING_METHOD = text(
    "INSERT INTO shipping_methods"
    " (code, region, name, currency, rate_by, bands, free_over, is_default, active)"
    " VALUES (:code, :region, :name, :currency, :rate_by, :bands, :free_over, :is_default,"
    " :active)"
    " ON CONFLICT (code) DO UPDATE SET region = EXCLUDED.region, name = EXCLUDED.name,"
    " currency = EXCLUDED.currency, rate_by = EXCLUDED.rate_by, bands = EXCLUDED.bands,"
    " free_over = EXCLUDED.free_over, is_default = EXCLUDED.is_default,"
    " active = EXCLUDED.active, updated_at = now()"
).bindparams(bindparam("bands", type_=shipping_methods.c.bands.type))

# A transaction-scoped advisory lock per region: PUTs of one region's methods run one at a time,
# so the default moves atomically even when the region has no row yet to lock.
LOCK_REGION = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")


# Every quote reads its shipping method (issue 10: fixed text, DbSession's asyncpg path).
_SHIPPING_METHOD = (
    "SELECT " + ", ".join(c.name for c in shipping_methods.c) + " FROM shipping_methods"
)
SHIPPING_METHOD = text(_SHIPPING_METHOD + " WHERE code = :code")
DEFAULT_SHIPPING_METHOD = text(_SHIPPING_METHOD + " WHERE region = :region AND is_default")


class ShippingMethods:
    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def lock_region(self, region: str) -> None:
        await self.session.execute(LOCK_REGION, {"key": f"pricing.shipping_region:{region}"})

    async def get(self, code: str) -> domain.ShippingMethod | None:
        row = (await self.session.execute(SHIPPING_METHOD, {"code": code})).first()
        return _shipping_method(row) if row is not None else None

    async def default_of(self, region: str) -> domain.ShippingMethod | None:
        row = (await self.session.execute(DEFAULT_SHIPPING_METHOD, {"region": region})).first()
        return _shipping_method(row) if row is not None else None

    async def clear_default(self, region: str) -> None:
        await self.session.execute(
            update(shipping_methods)
            .where(shipping_methods.c.region == region, shipping_methods.c.is_default)
            .values(is_default=False, updated_at=func.now())
        )

    async def put(self, method: domain.ShippingMethodSpec, *, is_default: bool) -> None:
        await self.session.execute(
            PUT_SHIPPING_METHOD,
            {
                "code": method.code,
                "region": method.region,
                "name": method.name,
                "currency": method.currency,
                "rate_by": method.rate_by,
                "bands": [{"up_to": b.up_to, "amount": b.amount} for b in method.bands],
                "free_over": method.free_over,
                "is_default": is_default,
                "active": method.active,
            },
        )

    async def page(
        self, *, region: str | None, after: tuple[str, str] | None, limit: int
    ) -> list[domain.ShippingMethod]:
        query = (
            select(shipping_methods)
            .where(shipping_methods.c.active)
            .order_by(shipping_methods.c.region, shipping_methods.c.code)
            .limit(limit)
        )
        if region is not None:
            query = query.where(shipping_methods.c.region == region)
        if after is not None:
            query = query.where(tuple_(shipping_methods.c.region, shipping_methods.c.code) > after)
        return [_shipping_method(row) for row in (await self.session.execute(query)).all()]


def _shipping_method(row: Row[Any]) -> domain.ShippingMethod:
    return domain.ShippingMethod(
        code=row.code,
        region=row.region,
        name=row.name,
        currency=row.currency,
        rate_by=row.rate_by,
        bands=tuple(domain.RateBand(up_to=b["up_to"], amount=b["amount"]) for b in row.bands),
        free_over=row.free_over,
        is_default=row.is_default,
        active=row.active,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class FreeShippingRules:
    """Free-shipping promotions: rules of kind `free_shipping` in the rules table."""

    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def active(self, now: datetime) -> list[domain.FreeShippingRule]:
        query = select(rules.c.id, rules.c.definition).where(
            rules.c.kind == "free_shipping", rules.c.starts_at <= now, rules.c.ends_at > now
        )
        rows = (await self.session.execute(query)).all()
        found = [domain.any_rule_from_definition(row.id, row.definition) for row in rows]
        return [rule for rule in found if isinstance(rule, domain.FreeShippingRule)]


# --- channel price lists (issue 13) ---

# A channel's own price of a sku; a sku without a row here sells at its base price (`prices`).
channel_prices = Table(
    "channel_prices",
    metadata,
    Column("channel", String(64), nullable=False),
    Column("sku", String(64), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("channel", "sku"),
    CheckConstraint("amount >= 0", name="ck_channel_prices_amount_not_negative"),
)

ADD_CHANNEL_PRICE = text(
    "INSERT INTO channel_prices (channel, sku, amount, currency)"
    " VALUES (:channel, :sku, :amount, :currency)"
    " ON CONFLICT DO NOTHING"
    " RETURNING sku"
)


class ChannelPrices:
    def __init__(self, session: DbSession) -> None:
        self.session = session

    def _one(self, channel: str, sku: str) -> ColumnElement[bool]:
        return and_(channel_prices.c.channel == channel, channel_prices.c.sku == sku)

    async def lock(self, channel: str, sku: str) -> domain.ChannelPrice | None:
        query = select(channel_prices).where(self._one(channel, sku)).with_for_update()
        row = (await self.session.execute(query)).first()
        return _channel_price(row) if row is not None else None

    async def add(self, channel: str, sku: str, price: Money) -> bool:
        inserted = await self.session.scalar(
            ADD_CHANNEL_PRICE,
            {"channel": channel, "sku": sku, "amount": price.amount, "currency": price.currency},
        )
        return inserted is not None

    async def change(self, channel: str, sku: str, price: Money) -> None:
        await self.session.execute(
            update(channel_prices)
            .where(self._one(channel, sku))
            .values(amount=price.amount, currency=price.currency, updated_at=func.now())
        )

    async def remove(self, channel: str, sku: str) -> domain.ChannelPrice | None:
        row = (
            await self.session.execute(
                delete(channel_prices).where(self._one(channel, sku)).returning(*channel_prices.c)
            )
        ).first()
        return _channel_price(row) if row is not None else None

    async def get(self, channel: str, sku: str) -> domain.ChannelPrice | None:
        query = select(channel_prices).where(self._one(channel, sku))
        row = (await self.session.execute(query)).first()
        return _channel_price(row) if row is not None else None


def _channel_price(row: Row[Any]) -> domain.ChannelPrice:
    return domain.ChannelPrice(
        channel=row.channel,
        sku=row.sku,
        price=Money(amount=row.amount, currency=row.currency),
        updated_at=row.updated_at,
    )


# --- retention (issue 14) ---

# Quotes go `retention_quotes_s` after they expire (libs/kit/retention.py), by this index.
Index("ix_quotes_expires", quotes.c.expires_at)

PRUNE = (
    PruneTask(
        "quotes",
        text(
            "DELETE FROM quotes WHERE id IN (SELECT id FROM quotes"
            " WHERE expires_at < :cutoff ORDER BY expires_at LIMIT :limit)"
        ),
        "retention_quotes_s",
    ),
)
