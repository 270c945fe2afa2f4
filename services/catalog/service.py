"""Catalog use cases: create, update, read and search products; apply price and stock facts."""

from dataclasses import asdict
from typing import Any, Protocol

from libs.events.catalog import ProductCreated, ProductUpdated
from libs.events.common import Money
from libs.kit.errors import Conflict, FieldError, Invalid, NotFound
from libs.kit.uow import Tx
from services.catalog.domain import (
    NewProduct,
    Product,
    ProductPage,
    ProductView,
    changed_fields,
    weight_problems,
)


class ProductRepository(Protocol):
    async def add(self, new: NewProduct) -> bool:
        """Insert the product; False (and nothing written) when its sku already exists."""
        ...

    async def lock(self, sku: str) -> Product | None:
        """The product, locked until the transaction ends."""
        ...

    async def change(self, sku: str, changes: dict[str, Any]) -> None:
        """Write these fields and stamp the product as updated now."""
        ...

    async def view(self, sku: str) -> ProductView | None: ...

    async def search(
        self, *, q: str | None, category: str | None, after_sku: str | None, limit: int
    ) -> list[ProductView]:
        """Up to `limit` products in sku order, after `after_sku`, matching text and category."""
        ...


class ProjectionRepository(Protocol):
    """Prices and stock reported by pricing and inventory, kept whether or not the product
    exists yet (either may arrive before it); the latest report wins."""

    async def record_price(self, sku: str, price: Money | None) -> None: ...

    async def record_stock(self, sku: str, available: int) -> None: ...


class CatalogStore(Protocol):
    @property
    def products(self) -> ProductRepository: ...

    @property
    def projections(self) -> ProjectionRepository: ...


async def create_product(tx: Tx[CatalogStore], new: NewProduct) -> ProductView:
    refuse_bad_weight(new.attributes)
    if not await tx.store.products.add(new):
        raise Conflict(f"product {new.sku} already exists")
    view = await get_product(tx, new.sku)
    await tx.events.emit(ProductCreated(**_event_fields(view.product)), subject=new.sku)
    return view


async def update_product(tx: Tx[CatalogStore], sku: str, patch: dict[str, Any]) -> ProductView:
    """Apply a partial update; ProductUpdated names the fields that really changed (no event,
    and no write, when nothing did)."""
    current = await tx.store.products.lock(sku)
    if current is None:
        raise NotFound(f"product {sku}")
    refuse_bad_weight(patch.get("attributes") or {})
    changes = changed_fields(current, patch)
    if changes:
        await tx.store.products.change(sku, changes)
    view = await get_product(tx, sku)
    if changes:
        event = ProductUpdated(**_event_fields(view.product), changed=sorted(changes))
        await tx.events.emit(event, subject=sku)
    return view


async def get_product(tx: Tx[CatalogStore], sku: str) -> ProductView:
    view = await tx.store.products.view(sku)
    if view is None:
        raise NotFound(f"product {sku}")
    return view


async def list_products(
    tx: Tx[CatalogStore],
    *,
    q: str | None,
    category: str | None,
    after_sku: str | None,
    limit: int,
) -> ProductPage:
    """One page ordered by sku; one product more is read than asked, to know if there is more."""
    found = await tx.store.products.search(
        q=q, category=category, after_sku=after_sku, limit=limit + 1
    )
    return ProductPage(items=found[:limit], more=len(found) > limit)


async def record_price(tx: Tx[CatalogStore], sku: str, price: Money | None) -> None:
    await tx.store.projections.record_price(sku, price)


async def record_stock(tx: Tx[CatalogStore], sku: str, available: int) -> None:
    await tx.store.projections.record_stock(sku, available)


def _event_fields(product: Product) -> dict[str, Any]:
    fields = asdict(product)
    del fields["created_at"], fields["updated_at"]
    return fields


# --- shipping rates (issue 12) ---


def refuse_bad_weight(attributes: dict[str, Any]) -> None:
    """422 naming `attributes.weight.unit` / `.value` when the weight is not one pricing can
    rate shipping by."""
    problems = weight_problems(attributes)
    if problems:
        errors = [FieldError(field, message) for field, message in problems]
        raise Invalid("; ".join(f"{e.field}: {e.message}" for e in errors), errors)
