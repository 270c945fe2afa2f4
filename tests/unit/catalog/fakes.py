"""In-memory catalog repositories: the same answers as services/catalog/db.py, without PostgreSQL."""

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from libs.events.common import Money
from services.catalog.domain import Availability, NewProduct, Product, ProductView
from tests.support.fakes import MutableClock


@dataclass
class FakeProjections:
    prices: dict[str, Money | None] = field(default_factory=dict)
    stock: dict[str, int] = field(default_factory=dict)

    async def record_price(self, sku: str, price: Money | None) -> None:
        self.prices[sku] = price

    async def record_stock(self, sku: str, available: int) -> None:
        self.stock[sku] = available


@dataclass
class FakeProducts:
    projections: FakeProjections
    clock: MutableClock
    rows: dict[str, Product] = field(default_factory=dict)

    async def add(self, new: NewProduct) -> bool:
        if new.sku in self.rows:
            return False
        now = self.clock()
        self.rows[new.sku] = Product(**asdict(new), status="active", created_at=now, updated_at=now)
        return True

    async def lock(self, sku: str) -> Product | None:
        return self.rows.get(sku)

    async def change(self, sku: str, changes: dict[str, Any]) -> None:
        self.rows[sku] = replace(self.rows[sku], **changes, updated_at=self.clock())

    async def view(self, sku: str) -> ProductView | None:
        product = self.rows.get(sku)
        return self._view(product) if product else None

    async def search(
        self, *, q: str | None, category: str | None, after_sku: str | None, limit: int
    ) -> list[ProductView]:
        def matches(p: Product) -> bool:
            text = q.lower() if q else None
            return (
                (
                    text is None
                    or any(text in (s or "").lower() for s in (p.name, p.description, p.sku))
                )
                and (category is None or p.category == category)
                and (after_sku is None or p.sku > after_sku)
            )

        found = sorted((p for p in self.rows.values() if matches(p)), key=lambda p: p.sku)
        return [self._view(p) for p in found[:limit]]

    def _view(self, product: Product) -> ProductView:
        # The projections answer whatever was reported (a price row may hold a null price).
        return ProductView(
            product=product,
            price=self.projections.prices.get(product.sku),
            availability=Availability.from_available(self.projections.stock.get(product.sku)),
        )


class FakeStore:
    def __init__(self, clock: MutableClock | None = None) -> None:
        self.clock = clock or MutableClock()
        self.projections = FakeProjections()
        self.products = FakeProducts(self.projections, self.clock)
