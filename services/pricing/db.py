"""Pricing tables: base prices, rules, tax rates, issued quotes, and the products projection."""

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSON

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
    CheckConstraint("kind IN ('volume', 'promotion', 'customer_group')", name="ck_rules_kind"),
    CheckConstraint("kind = 'promotion' OR sku IS NOT NULL", name="ck_rules_sku"),
    CheckConstraint("kind <> 'promotion' OR ends_at > starts_at", name="ck_rules_promotion_window"),
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
    Column("event_time", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
