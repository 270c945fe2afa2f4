"""Pricing use cases on in-memory repositories: base prices and PriceChanged, rules, tax rates."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from libs.events.common import Money
from libs.events.pricing import PriceChanged
from libs.kit.errors import Conflict, NotFound
from services.pricing import service
from services.pricing.domain import BasePrice
from tests.support.fakes import FakeTx
from tests.unit.pricing.fakes import FakePrices, FakeStore

Tx = FakeTx[FakeStore]


def eur(amount: int) -> Money:
    return Money(amount=amount, currency="EUR")


# ---- base prices ----


async def test_a_first_price_is_stored_and_announced_without_previous(tx: Tx) -> None:
    base = await service.set_price(tx, "SKU-1", eur(1999))

    assert (base.sku, base.price) == ("SKU-1", eur(1999))
    assert tx.events.emitted == [PriceChanged(sku="SKU-1", price=eur(1999), previous=None)]
    assert tx.events.envelopes[0].subject == "SKU-1"
    assert await service.get_price(tx, "SKU-1") == base


async def test_setting_the_same_price_again_announces_nothing_and_keeps_its_time(tx: Tx) -> None:
    first = await service.set_price(tx, "SKU-1", eur(1999))
    tx.store.clock.advance(60)

    again = await service.set_price(tx, "SKU-1", eur(1999))

    assert again == first  # updated_at is the time of the last real change
    assert len(tx.events.emitted) == 1


@pytest.mark.parametrize("new", [eur(2499), Money(amount=1999, currency="USD")])
async def test_a_new_amount_or_currency_is_announced_with_the_previous_price(
    tx: Tx, new: Money
) -> None:
    first = await service.set_price(tx, "SKU-1", eur(1999))
    tx.store.clock.advance(60)

    changed = await service.set_price(tx, "SKU-1", new)

    assert changed.price == new and changed.updated_at > first.updated_at
    assert tx.events.emitted[-1] == PriceChanged(sku="SKU-1", price=new, previous=eur(1999))
    assert [e.subject for e in tx.events.envelopes] == ["SKU-1", "SKU-1"]


class RacedPrices(FakePrices):
    """A concurrent PUT inserts its price between our look and our insert."""

    def __init__(self, theirs: BasePrice) -> None:
        super().__init__(clock=lambda: theirs.updated_at)
        self.theirs = theirs
        self.looked = False

    async def lock(self, sku: str) -> BasePrice | None:
        if not self.looked:
            self.looked = True
            self.rows[sku] = self.theirs
            return None
        return await super().lock(sku)


@pytest.mark.parametrize(("mine", "announced"), [(eur(100), False), (eur(200), True)])
async def test_a_price_set_concurrently_first_is_what_ours_is_compared_with(
    mine: Money, announced: bool
) -> None:
    theirs = BasePrice("SKU-1", eur(100), datetime(2026, 1, 1, tzinfo=UTC))
    store = FakeStore()
    store.prices = RacedPrices(theirs)
    tx = FakeTx(store)

    base = await service.set_price(tx, "SKU-1", mine)

    assert base.price == mine
    expected = [PriceChanged(sku="SKU-1", price=mine, previous=eur(100))] if announced else []
    assert tx.events.emitted == expected


async def test_a_sku_without_price_is_not_found(tx: Tx) -> None:
    with pytest.raises(NotFound, match="price of SKU-9 not found"):
        await service.get_price(tx, "SKU-9")


# ---- rules ----

VOLUME: dict[str, Any] = {
    "kind": "volume",
    "sku": "SKU-1",
    "tiers": [{"min_quantity": 5, "percent_off": 2.5}],
}


def group_price(group: str, sku: str = "SKU-1", amount: int = 1) -> dict[str, Any]:
    return {"kind": "customer_group", "group": group, "sku": sku, "amount": amount}


def promotion(**target: Any) -> dict[str, Any]:
    return {
        "kind": "promotion",
        **target,
        "percent_off": 5,
        "starts_at": "2026-01-01T00:00:00+00:00",
        "ends_at": "2026-02-01T00:00:00+00:00",
    }


async def test_a_rule_is_stored_as_posted_under_a_new_id(tx: Tx) -> None:
    stored = await service.create_rule(tx, VOLUME)

    assert stored.definition == VOLUME and stored.id
    assert await service.get_rule(tx, stored.id) == stored
    assert tx.events.emitted == []


async def test_a_second_volume_rule_for_a_sku_is_a_conflict_naming_the_first(tx: Tx) -> None:
    first = await service.create_rule(tx, VOLUME)

    with pytest.raises(Conflict, match=f"volume rule for this sku already exists .*{first.id}"):
        await service.create_rule(tx, VOLUME | {"tiers": [{"min_quantity": 9, "percent_off": 1}]})

    page = await service.list_rules(tx, kind=None, sku="SKU-1", after=None, limit=50)
    assert [r.id for r in page.items] == [first.id]


async def test_group_prices_are_unique_per_group_and_sku_while_promotions_may_overlap(
    tx: Tx,
) -> None:
    vip = await service.create_rule(tx, group_price("vip"))
    await service.create_rule(tx, group_price("staff"))
    await service.create_rule(tx, group_price("vip", sku="SKU-2"))
    await service.create_rule(tx, promotion(skus=["SKU-1"]))
    await service.create_rule(tx, promotion(skus=["SKU-1"]))

    with pytest.raises(Conflict, match=f"group price for this sku already exists .*{vip.id}"):
        await service.create_rule(tx, group_price("vip", amount=5))

    assert len(tx.store.rules.rows) == 5


async def test_a_deleted_rule_is_gone_and_deleting_it_again_is_not_found(tx: Tx) -> None:
    stored = await service.create_rule(tx, VOLUME)

    await service.delete_rule(tx, stored.id)

    with pytest.raises(NotFound, match=f"rule {stored.id} not found"):
        await service.get_rule(tx, stored.id)
    with pytest.raises(NotFound):
        await service.delete_rule(tx, stored.id)
    await service.create_rule(tx, VOLUME)  # the sku is free for a new schedule


async def test_rules_are_paged_in_creation_order_and_filtered(tx: Tx) -> None:
    created = []
    for definition in (
        VOLUME,
        group_price("a"),
        promotion(category="tools"),
        group_price("b"),
        group_price("a", sku="SKU-2"),
    ):
        created.append(await service.create_rule(tx, definition))
        tx.store.clock.advance(1)

    seen, after, pages = [], None, 0
    while True:
        page = await service.list_rules(tx, kind=None, sku="SKU-1", after=after, limit=2)
        pages += 1
        seen += [r.id for r in page.items]
        if not page.more:
            break
        after = (page.items[-1].created_at, page.items[-1].id)

    assert seen == [created[0].id, created[1].id, created[3].id] and pages == 2
    groups = await service.list_rules(tx, kind="customer_group", sku=None, after=None, limit=50)
    assert [r.id for r in groups.items] == [created[1].id, created[3].id, created[4].id]
    assert not groups.more


# ---- tax rates ----


async def test_a_tax_rate_is_set_replaced_and_read(tx: Tx) -> None:
    first = await service.set_tax_rate(tx, "DE", 1900)
    tx.store.clock.advance(60)

    replaced = await service.set_tax_rate(tx, "DE", 700)

    assert (first.region, first.rate_bps) == ("DE", 1900)
    assert replaced.rate_bps == 700 and replaced.updated_at == first.updated_at + timedelta(
        seconds=60
    )
    assert await service.get_tax_rate(tx, "DE") == replaced
    assert tx.events.emitted == []


async def test_a_region_without_tax_rate_is_not_found(tx: Tx) -> None:
    with pytest.raises(NotFound, match="tax rate of region XX not found"):
        await service.get_tax_rate(tx, "XX")
