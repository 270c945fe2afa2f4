"""Catalog use cases: create, update, read and search products; apply price and stock facts."""

from typing import Any

from sqlalchemy import Row, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from libs.events.catalog import ProductCreated, ProductUpdated
from libs.kit.outbox import Emitter
from libs.kit.problems import conflict, not_found
from services.catalog.db import price_projection, products, stock_projection
from services.catalog.domain import changed_fields

_VIEW = (
    select(
        products,
        price_projection.c.amount.label("price_amount"),
        price_projection.c.currency.label("price_currency"),
        stock_projection.c.available.label("available"),
    )
    .select_from(products)
    .outerjoin(price_projection, price_projection.c.sku == products.c.sku)
    .outerjoin(stock_projection, stock_projection.c.sku == products.c.sku)
)


async def create_product(
    session: AsyncSession, events: Emitter, fields: dict[str, Any]
) -> Row[Any]:
    inserted = await session.scalar(
        pg_insert(products).values(**fields).on_conflict_do_nothing().returning(products.c.sku)
    )
    if inserted is None:
        raise conflict(f"product {fields['sku']} already exists")
    product = await get_product(session, fields["sku"])
    await events.emit(ProductCreated(**_event_fields(product)), subject=product.sku)
    return product


async def update_product(
    session: AsyncSession, events: Emitter, sku: str, patch: dict[str, Any]
) -> Row[Any]:
    current = (
        await session.execute(select(products).where(products.c.sku == sku).with_for_update())
    ).first()
    if current is None:
        raise not_found(f"product {sku}")
    changes = changed_fields(dict(current._mapping), patch)
    if changes:
        await session.execute(
            update(products).where(products.c.sku == sku).values(**changes, updated_at=func.now())
        )
    product = await get_product(session, sku)
    if changes:
        await events.emit(
            ProductUpdated(**_event_fields(product), changed=sorted(changes)), subject=sku
        )
    return product


async def get_product(session: AsyncSession, sku: str) -> Row[Any]:
    row = (await session.execute(_VIEW.where(products.c.sku == sku))).first()
    if row is None:
        raise not_found(f"product {sku}")
    return row


async def list_products(
    session: AsyncSession,
    *,
    q: str | None,
    category: str | None,
    after_sku: str | None,
    limit: int,
) -> list[Row[Any]]:
    """One page ordered by sku, one row more than asked so the caller knows if there is more."""
    query = _VIEW.order_by(products.c.sku).limit(limit + 1)
    if q:
        pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(
            or_(
                products.c.name.ilike(pattern),
                products.c.description.ilike(pattern),
                products.c.sku.ilike(pattern),
            )
        )
    if category:
        query = query.where(products.c.category == category)
    if after_sku:
        query = query.where(products.c.sku > after_sku)
    return list((await session.execute(query)).all())


async def record_price(
    session: AsyncSession, sku: str, amount: int | None, currency: str | None
) -> None:
    await _upsert(session, price_projection, sku, amount=amount, currency=currency)


async def record_stock(session: AsyncSession, sku: str, available: int) -> None:
    await _upsert(session, stock_projection, sku, available=available)


async def _upsert(session: AsyncSession, table: Any, sku: str, **values: Any) -> None:
    statement = pg_insert(table).values(sku=sku, **values)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[table.c.sku], set_={**values, "updated_at": func.now()}
        )
    )


def _event_fields(product: Row[Any]) -> dict[str, Any]:
    return {
        "sku": product.sku,
        "name": product.name,
        "description": product.description,
        "category": product.category,
        "attributes": product.attributes,
        "images": product.images,
        "status": product.status,
    }
