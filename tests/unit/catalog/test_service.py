"""Catalog use cases on in-memory repositories: products, pages, and the price/stock projection."""

import pytest

from libs.events.catalog import ProductCreated, ProductUpdated
from libs.events.common import Money
from libs.kit.errors import Conflict, NotFound
from services.catalog import service
from services.catalog.domain import Availability, NewProduct
from tests.support.fakes import FakeTx
from tests.unit.catalog.fakes import FakeStore

NONE_IN_STOCK = Availability(available=0, in_stock=False)


@pytest.fixture
def tx() -> FakeTx[FakeStore]:
    return FakeTx(FakeStore())


def mug(
    sku: str = "MUG-1",
    *,
    name: str = "Mug",
    category: str = "kitchen",
    description: str | None = None,
    attributes: dict[str, object] | None = None,
) -> NewProduct:
    return NewProduct(
        sku=sku,
        name=name,
        category=category,
        description=description,
        attributes=dict(attributes or {}),
    )


async def test_a_created_product_is_active_without_price_or_stock_and_announced(
    tx: FakeTx[FakeStore],
) -> None:
    view = await service.create_product(tx, mug(attributes={"ml": 300}, description="big"))

    assert view.product.status == "active"
    assert view.price is None and view.availability == NONE_IN_STOCK
    assert tx.events.emitted == [
        ProductCreated(
            sku="MUG-1",
            name="Mug",
            description="big",
            category="kitchen",
            attributes={"ml": 300},
            images=[],
            status="active",
        )
    ]
    assert tx.events.envelopes[0].subject == "MUG-1"
    assert await service.get_product(tx, "MUG-1") == view


async def test_a_second_product_with_the_same_sku_is_a_conflict_and_changes_nothing(
    tx: FakeTx[FakeStore],
) -> None:
    await service.create_product(tx, mug())

    with pytest.raises(Conflict, match="product MUG-1 already exists"):
        await service.create_product(tx, mug(name="Other"))

    assert (await service.get_product(tx, "MUG-1")).product.name == "Mug"
    assert len(tx.events.emitted) == 1


async def test_an_unknown_product_is_not_found(tx: FakeTx[FakeStore]) -> None:
    with pytest.raises(NotFound, match="product NOPE not found"):
        await service.get_product(tx, "NOPE")
    with pytest.raises(NotFound, match="product NOPE not found"):
        await service.update_product(tx, "NOPE", {"name": "x"})
    assert tx.events.emitted == []


async def test_an_update_writes_the_changed_fields_and_names_them_in_the_event(
    tx: FakeTx[FakeStore],
) -> None:
    created = await service.create_product(tx, mug())
    tx.store.clock.advance(60)

    view = await service.update_product(
        tx, "MUG-1", {"status": "discontinued", "name": "Mug", "category": "office"}
    )

    assert view.product.status == "discontinued" and view.product.category == "office"
    assert view.product.updated_at > created.product.updated_at
    assert view.product.created_at == created.product.created_at
    [update] = tx.events.of_type(ProductUpdated)
    assert isinstance(update, ProductUpdated)
    assert update.changed == ["category", "status"]  # the name did not really change
    assert update.status == "discontinued" and update.category == "office"
    assert tx.events.envelopes[-1].subject == "MUG-1"


async def test_an_update_that_changes_nothing_writes_and_announces_nothing(
    tx: FakeTx[FakeStore],
) -> None:
    created = await service.create_product(tx, mug(description="big"))
    tx.store.clock.advance(60)

    view = await service.update_product(tx, "MUG-1", {"name": "Mug", "description": "big"})

    assert view == created
    assert tx.events.of_type(ProductUpdated) == []


async def test_an_update_can_clear_the_description(tx: FakeTx[FakeStore]) -> None:
    await service.create_product(tx, mug(description="big"))

    view = await service.update_product(tx, "MUG-1", {"description": None})

    assert view.product.description is None
    [update] = tx.events.of_type(ProductUpdated)
    assert isinstance(update, ProductUpdated) and update.changed == ["description"]


async def test_pages_follow_sku_order_and_say_whether_more_follow(tx: FakeTx[FakeStore]) -> None:
    for i in (3, 0, 4, 1, 2):
        await service.create_product(tx, mug(f"P-{i}", category="c"))
    await service.create_product(tx, mug("Q-0", category="other"))

    seen, after, pages = [], None, 0
    while True:
        page = await service.list_products(tx, q=None, category="c", after_sku=after, limit=2)
        pages += 1
        seen += [v.product.sku for v in page.items]
        if not page.more:
            break
        after = page.items[-1].product.sku

    assert seen == [f"P-{i}" for i in range(5)] and pages == 3


async def test_a_full_last_page_says_no_more(tx: FakeTx[FakeStore]) -> None:
    for i in range(4):
        await service.create_product(tx, mug(f"P-{i}"))

    first = await service.list_products(tx, q=None, category=None, after_sku=None, limit=2)
    last = await service.list_products(tx, q=None, category=None, after_sku="P-1", limit=2)

    assert first.more and [v.product.sku for v in last.items] == ["P-2", "P-3"]
    assert not last.more


async def test_search_matches_name_description_or_sku(tx: FakeTx[FakeStore]) -> None:
    await service.create_product(tx, mug("A-1", name="Red widget"))
    await service.create_product(tx, mug("A-2", name="Pen", description="writes like a widget"))
    await service.create_product(tx, mug("WIDGET-3", name="Box"))
    await service.create_product(tx, mug("A-4", name="Lamp"))

    page = await service.list_products(tx, q="WIDGET", category=None, after_sku=None, limit=50)

    assert [v.product.sku for v in page.items] == ["A-1", "A-2", "WIDGET-3"]
    assert not page.more


async def test_price_and_stock_reported_before_the_product_show_once_it_exists(
    tx: FakeTx[FakeStore],
) -> None:
    await service.record_stock(tx, "MUG-1", 5)
    await service.record_price(tx, "MUG-1", Money(amount=249, currency="EUR"))

    view = await service.create_product(tx, mug())

    assert view.price == Money(amount=249, currency="EUR")
    assert view.availability == Availability(available=5, in_stock=True)


async def test_price_and_stock_facts_apply_in_either_order_and_the_latest_wins(
    tx: FakeTx[FakeStore],
) -> None:
    await service.create_product(tx, mug())
    await service.record_price(tx, "MUG-1", Money(amount=100, currency="EUR"))
    await service.record_stock(tx, "MUG-1", 2)
    await service.record_stock(tx, "MUG-1", 0)
    await service.record_price(tx, "MUG-1", Money(amount=120, currency="EUR"))

    view = await service.get_product(tx, "MUG-1")

    assert view.price == Money(amount=120, currency="EUR")
    assert view.availability == NONE_IN_STOCK


async def test_a_redelivered_fact_leaves_the_projection_as_it_was(tx: FakeTx[FakeStore]) -> None:
    await service.create_product(tx, mug())
    price = Money(amount=249, currency="EUR")
    await service.record_price(tx, "MUG-1", price)
    await service.record_stock(tx, "MUG-1", 5)
    once = await service.get_product(tx, "MUG-1")

    await service.record_price(tx, "MUG-1", price)
    await service.record_stock(tx, "MUG-1", 5)

    assert await service.get_product(tx, "MUG-1") == once
    assert tx.events.emitted == tx.events.of_type(ProductCreated)  # facts cause no events


async def test_a_removed_price_reads_as_none_and_oversold_stock_as_none_available(
    tx: FakeTx[FakeStore],
) -> None:
    await service.create_product(tx, mug())
    await service.record_price(tx, "MUG-1", Money(amount=249, currency="EUR"))
    await service.record_price(tx, "MUG-1", None)
    await service.record_stock(tx, "MUG-1", -3)

    view = await service.get_product(tx, "MUG-1")

    assert view.price is None and view.availability == NONE_IN_STOCK
