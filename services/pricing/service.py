"""Pricing use cases: base prices, rules, tax rates, quotes, and the catalog products projection."""

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, and_, delete, func, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from libs.events.common import Money
from libs.kit.outbox import Emitter
from libs.kit.problems import Problem, conflict, not_found
from services.pricing import domain
from services.pricing.db import prices, products, quotes, rules, tax_rates


async def set_price(
    session: AsyncSession, events: Emitter, sku: str, amount: int, currency: str
) -> Row[Any]:
    """Set a sku's base price; PriceChanged goes out only when the price really changes."""
    current = await _price_for_update(session, sku)
    if current is None:
        inserted = await session.scalar(
            pg_insert(prices)
            .values(sku=sku, amount=amount, currency=currency)
            .on_conflict_do_nothing()
            .returning(prices.c.sku)
        )
        if inserted is None:  # a concurrent PUT created it first: lock theirs and compare
            current = await _price_for_update(session, sku)
    previous = Money(amount=current.amount, currency=current.currency) if current else None
    change = domain.price_change(previous, Money(amount=amount, currency=currency), sku)
    if change is not None:
        if current is not None:
            await session.execute(
                update(prices)
                .where(prices.c.sku == sku)
                .values(amount=amount, currency=currency, updated_at=func.now())
            )
        await events.emit(change, subject=sku)
    return await get_price(session, sku)


async def _price_for_update(session: AsyncSession, sku: str) -> Row[Any] | None:
    query = select(prices).where(prices.c.sku == sku).with_for_update()
    return (await session.execute(query)).first()


async def get_price(session: AsyncSession, sku: str) -> Row[Any]:
    row = (await session.execute(select(prices).where(prices.c.sku == sku))).first()
    if row is None:
        raise not_found(f"price of {sku}")
    return row


async def create_rule(session: AsyncSession, definition: dict[str, Any]) -> Row[Any]:
    """Store a validated rule definition (as the API will echo it) under a new id."""
    rule_id = str(uuid.uuid4())
    rule = domain.rule_from_definition(rule_id, definition)
    columns: dict[str, Any] = {"id": rule_id, "kind": rule.kind, "definition": definition}
    if isinstance(rule, domain.PromotionRule):
        columns |= {"starts_at": rule.starts_at, "ends_at": rule.ends_at}
    else:
        columns["sku"] = rule.sku
    if isinstance(rule, domain.GroupPriceRule):
        columns["group_name"] = rule.group
    inserted = await session.scalar(
        pg_insert(rules).values(**columns).on_conflict_do_nothing().returning(rules.c.id)
    )
    if inserted is None:
        existing = await session.scalar(
            select(rules.c.id).where(
                rules.c.kind == rule.kind,
                rules.c.sku == columns.get("sku"),
                rules.c.group_name.is_not_distinct_from(columns.get("group_name")),
            )
        )
        what = "volume rule for this sku" if rule.kind == "volume" else "group price for this sku"
        raise conflict(f"a {what} already exists (rule {existing}); delete it first")
    return await get_rule(session, rule_id)


async def get_rule(session: AsyncSession, rule_id: str) -> Row[Any]:
    row = (await session.execute(select(rules).where(rules.c.id == rule_id))).first()
    if row is None:
        raise not_found(f"rule {rule_id}")
    return row


async def delete_rule(session: AsyncSession, rule_id: str) -> None:
    deleted = await session.scalar(delete(rules).where(rules.c.id == rule_id).returning(rules.c.id))
    if deleted is None:
        raise not_found(f"rule {rule_id}")


async def list_rules(
    session: AsyncSession,
    *,
    kind: str | None,
    sku: str | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[Row[Any]]:
    """One page in creation order, one row more than asked so the caller knows if there is more."""
    query = select(rules).order_by(rules.c.created_at, rules.c.id).limit(limit + 1)
    if kind:
        query = query.where(rules.c.kind == kind)
    if sku:
        query = query.where(rules.c.sku == sku)
    if after:
        query = query.where(tuple_(rules.c.created_at, rules.c.id) > after)
    return list((await session.execute(query)).all())


async def set_tax_rate(session: AsyncSession, region: str, rate_bps: int) -> Row[Any]:
    statement = pg_insert(tax_rates).values(region=region, rate_bps=rate_bps)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[tax_rates.c.region],
            set_={"rate_bps": rate_bps, "updated_at": func.now()},
        )
    )
    return await get_tax_rate(session, region)


async def get_tax_rate(session: AsyncSession, region: str) -> Row[Any]:
    row = (await session.execute(select(tax_rates).where(tax_rates.c.region == region))).first()
    if row is None:
        raise not_found(f"tax rate of region {region}")
    return row


async def create_quote(
    session: AsyncSession,
    *,
    lines: list[tuple[str, int]],
    region: str,
    groups: frozenset[str],
    customer_id: str | None,
    now: datetime,
    ttl_s: int,
) -> dict[str, Any]:
    """Price the lines with today's prices and rules, store the quote and return its body."""
    skus = [sku for sku, _ in lines]
    _refuse_duplicates(skus)
    known = {
        r.sku: r
        for r in (await session.execute(select(products).where(products.c.sku.in_(skus)))).all()
    }
    base = {
        r.sku: r
        for r in (await session.execute(select(prices).where(prices.c.sku.in_(skus)))).all()
    }
    rate_bps = await session.scalar(
        select(tax_rates.c.rate_bps).where(tax_rates.c.region == region)
    )
    errors: list[tuple[str, str]] = []
    for index, sku in enumerate(skus):
        product = known.get(sku)
        reason = domain.line_problem(
            known_product=product is not None,
            status=product.status if product else None,
            has_price=sku in base,
        )
        if reason:
            errors.append((f"lines[{index}].sku", reason))
    if rate_bps is None:
        errors.append(("region", "unknown region: no tax rate is set"))
    if errors or rate_bps is None:
        raise _invalid_fields(errors)
    foreign = domain.first_foreign_currency([base[sku].currency for sku in skus])
    if foreign is not None:
        raise _invalid_fields(
            [
                (
                    f"lines[{foreign}].sku",
                    f"priced in {base[skus[foreign]].currency}, other lines in "
                    f"{base[skus[0]].currency}: quote them separately",
                )
            ]
        )
    applicable = await _rules_for(session, skus, groups, now)
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
    body = _quote_body(quote_id, priced, region, rate_bps, customer_id, now, expires_at)
    await session.execute(
        pg_insert(quotes).values(
            id=quote_id, customer_id=customer_id, body=body, created_at=now, expires_at=expires_at
        )
    )
    return body


async def get_quote(session: AsyncSession, quote_id: str) -> dict[str, Any]:
    body = await session.scalar(select(quotes.c.body).where(quotes.c.id == quote_id))
    if body is None:
        raise not_found(f"quote {quote_id}")
    result: dict[str, Any] = body
    return result


async def record_product(
    session: AsyncSession, *, sku: str, category: str, status: str, event_time: datetime
) -> None:
    """Upsert the projection unless the row already reflects a newer catalog event."""
    values = {"category": category, "status": status, "event_time": event_time}
    statement = pg_insert(products).values(sku=sku, **values)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[products.c.sku],
            set_={**values, "updated_at": func.now()},
            where=products.c.event_time <= statement.excluded.event_time,
        )
    )


async def _rules_for(
    session: AsyncSession, skus: list[str], groups: frozenset[str], now: datetime
) -> list[domain.Rule]:
    """Rules that may touch these lines; the domain decides which really apply."""
    wanted = [
        and_(rules.c.kind == "volume", rules.c.sku.in_(skus)),
        and_(rules.c.kind == "promotion", rules.c.starts_at <= now, rules.c.ends_at > now),
    ]
    if groups:
        wanted.append(
            and_(
                rules.c.kind == "customer_group",
                rules.c.sku.in_(skus),
                rules.c.group_name.in_(sorted(groups)),
            )
        )
    rows = (await session.execute(select(rules.c.id, rules.c.definition).where(or_(*wanted)))).all()
    return [domain.rule_from_definition(row.id, row.definition) for row in rows]


def _refuse_duplicates(skus: list[str]) -> None:
    seen: set[str] = set()
    errors = []
    for index, sku in enumerate(skus):
        if sku in seen:
            errors.append((f"lines[{index}].sku", f"duplicate sku {sku}: one line per sku"))
        seen.add(sku)
    if errors:
        raise _invalid_fields(errors)


def _invalid_fields(errors: list[tuple[str, str]]) -> Problem:
    """One 422 naming every bad field at once."""
    return Problem(
        422,
        "; ".join(f"{field}: {message}" for field, message in errors),
        errors=[{"field": field, "message": message} for field, message in errors],
    )


def _money(amount: int, currency: str) -> dict[str, Any]:
    return {"amount": amount, "currency": currency}


def _quote_body(
    quote_id: str,
    priced: list[domain.PricedLine],
    region: str,
    rate_bps: int,
    customer_id: str | None,
    now: datetime,
    expires_at: datetime,
) -> dict[str, Any]:
    currency = priced[0].currency
    sums = domain.totals(priced)
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
