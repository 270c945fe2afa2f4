"""Channel price lists (issue 13), on in-memory repositories: what a channel's quote charges, what
PUT and DELETE announce, and that the base price fills every gap."""

from typing import Any

import pytest

from libs.events.common import Money
from libs.events.pricing import PriceChanged
from libs.kit.errors import Invalid, NotFound
from services.pricing import domain, service
from services.pricing.domain import BasePrice, ChannelPrice
from tests.support.fakes import FakeTx
from tests.unit.pricing.fakes import FakeStore
from tests.unit.pricing.test_quotes import priced_product, product

Tx = FakeTx[FakeStore]


def eur(amount: int) -> Money:
    return Money(amount=amount, currency="EUR")


async def channel_quote(tx: Tx, lines: list[tuple[str, int]], channel: str) -> dict[str, Any]:
    return await service.create_quote(
        tx,
        lines=lines,
        region="DE",
        groups=frozenset(),
        customer_id=None,
        now=tx.store.clock(),
        ttl_s=900,
        channel=channel,
    )


@pytest.fixture
async def taxed(tx: Tx) -> Tx:
    await service.set_tax_rate(tx, "DE", 1900)
    return tx


def test_the_channel_price_wins_and_the_base_price_fills_the_gaps() -> None:
    at = FakeStore().clock()
    base = {"A": BasePrice("A", eur(1000), at), "B": BasePrice("B", eur(500), at)}
    listed = {"A": ChannelPrice("amazon", "A", eur(1200), at)}
    assert domain.unit_prices(base, listed) == {"A": eur(1200), "B": eur(500)}
    # A price only the channel's list has still sells there.
    only = {"C": ChannelPrice("amazon", "C", eur(90), at)}
    assert domain.unit_prices({}, only) == {"C": eur(90)}


async def test_a_quote_for_a_channel_charges_its_price_list(taxed: Tx) -> None:
    tx = taxed
    await priced_product(tx, "MUG", 1000)
    await priced_product(tx, "TEA", 500)
    await service.set_channel_price(tx, "amazon", "MUG", eur(1200))

    quote = await channel_quote(tx, [("MUG", 2), ("TEA", 1)], "amazon")

    assert quote["channel"] == "amazon"
    units = {line["sku"]: line["unit_price"]["amount"] for line in quote["lines"]}
    assert units == {"MUG": 1200, "TEA": 500}
    assert quote["subtotal"]["amount"] == 2900
    assert quote["tax"]["amount"] == 551  # 19 % of 2900
    # Other channels (and web, the default) keep the base price.
    web = await channel_quote(tx, [("MUG", 2)], "web")
    assert web["channel"] == "web"
    assert web["lines"][0]["unit_price"]["amount"] == 1000


async def test_a_channel_price_in_another_currency_is_refused_like_any_mix(taxed: Tx) -> None:
    tx = taxed
    await priced_product(tx, "MUG", 1000)
    await priced_product(tx, "TEA", 500)
    await service.set_channel_price(tx, "amazon", "TEA", Money(amount=600, currency="USD"))
    with pytest.raises(Invalid) as refused:
        await channel_quote(tx, [("MUG", 1), ("TEA", 1)], "amazon")
    assert [e.field for e in refused.value.errors] == ["lines[1].sku"]


async def test_a_sku_without_a_base_price_is_quotable_where_the_channel_prices_it(
    taxed: Tx,
) -> None:
    tx = taxed
    await product(tx, "MUG")
    await service.set_channel_price(tx, "amazon", "MUG", eur(700))
    assert (await channel_quote(tx, [("MUG", 1)], "amazon"))["total"]["amount"] == 833
    with pytest.raises(Invalid):
        await channel_quote(tx, [("MUG", 1)], "web")


async def test_setting_a_channel_price_announces_it_with_its_channel_once(tx: Tx) -> None:
    first = await service.set_channel_price(tx, "amazon", "MUG", eur(1200))
    again = await service.set_channel_price(tx, "amazon", "MUG", eur(1200))
    await service.set_channel_price(tx, "amazon", "MUG", eur(1100))

    assert first.price == eur(1200) and again.updated_at == first.updated_at
    assert tx.events.emitted == [
        PriceChanged(sku="MUG", price=eur(1200), previous=None, channel="amazon"),
        PriceChanged(sku="MUG", price=eur(1100), previous=eur(1200), channel="amazon"),
    ]
    assert (await service.get_channel_price(tx, "amazon", "MUG")).price == eur(1100)


async def test_deleting_a_channel_price_falls_back_to_the_base_and_says_so(taxed: Tx) -> None:
    tx = taxed
    await priced_product(tx, "MUG", 1000)
    await service.set_channel_price(tx, "amazon", "MUG", eur(1200))

    await service.delete_channel_price(tx, "amazon", "MUG")

    assert tx.events.emitted[-1] == PriceChanged(
        sku="MUG", price=None, previous=eur(1200), channel="amazon"
    )
    quote = await channel_quote(tx, [("MUG", 1)], "amazon")
    assert quote["lines"][0]["unit_price"]["amount"] == 1000
    with pytest.raises(NotFound):
        await service.get_channel_price(tx, "amazon", "MUG")
    with pytest.raises(NotFound):
        await service.delete_channel_price(tx, "amazon", "MUG")
    # The base price was never touched.
    assert (await service.get_price(tx, "MUG")).price == eur(1000)
