"""Shipping rates (issue 12): weights in grams, bands, thresholds, free-shipping promotions, the
shipping line of a quote and its tax, and the one default method per region."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from libs.events.catalog import ProductCreated
from libs.kit.errors import Conflict, Invalid
from services.pricing import service
from services.pricing.domain import (
    FreeShippingRule,
    RateBand,
    ShippingMethod,
    ShippingMethodSpec,
    ShippingNotOffered,
    band_for,
    shipping_charge,
    weight_in_grams,
)
from services.pricing.handlers import on_product_created
from tests.unit.pricing.test_quotes import Tx, eur, priced_product, quote

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
BANDS = (RateBand(500, 490), RateBand(2000, 690), RateBand(None, 990))


def method(
    *,
    code: str = "standard",
    rate_by: str = "weight",
    bands: tuple[RateBand, ...] = BANDS,
    free_over: int | None = None,
    region: str = "DE",
    currency: str = "EUR",
) -> ShippingMethod:
    return ShippingMethod(
        code=code,
        region=region,
        name=code.title(),
        currency=currency,
        rate_by=rate_by,  # type: ignore[arg-type]
        bands=bands,
        free_over=free_over,
        is_default=True,
        active=True,
        created_at=NOW,
        updated_at=NOW,
    )


def charge(m: ShippingMethod, *, weight_g: int = 0, order_value: int = 0, **kw: Any) -> Any:
    return shipping_charge(
        m,
        weight_g=weight_g,
        order_value=order_value,
        currency=kw.get("currency", "EUR"),
        rate_bps=kw.get("rate_bps", 1900),
        promotions=kw.get("promotions", ()),
        now=kw.get("now", NOW),
    )


# ---- domain ----


@pytest.mark.parametrize(
    ("weight", "grams"),
    [
        ({"value": 250, "unit": "g"}, 250),
        ({"value": 1.2345, "unit": "kg"}, 1235),  # 1234.5 g rounds half-up
        ({"value": 1, "unit": "lb"}, 454),  # 453.59237 g
        ({"value": 1, "unit": "oz"}, 28),  # 28.349523125 g
        ({"value": 0.5, "unit": "g"}, 1),
        ({"value": "1", "unit": "kg"}, 0),  # not a number: unreadable, no weight
        ({"value": 1, "unit": "stone"}, 0),
        ("heavy", 0),
    ],
)
def test_weights_become_whole_grams_half_up(weight: Any, grams: int) -> None:
    assert weight_in_grams({"weight": weight}) == grams
    assert weight_in_grams({}) == 0


@pytest.mark.parametrize(
    ("measure", "amount"), [(0, 490), (500, 490), (501, 690), (2000, 690), (10**9, 990)]
)
def test_the_first_band_whose_inclusive_bound_is_not_exceeded_applies(
    measure: int, amount: int
) -> None:
    band = band_for(BANDS, measure)
    assert band is not None and band.amount == amount


def test_beyond_every_band_the_method_is_not_offered() -> None:
    assert band_for(BANDS[:2], 2001) is None
    with pytest.raises(ShippingNotOffered, match="2001 g"):
        charge(method(bands=BANDS[:2]), weight_g=2001)


def test_rates_by_order_value_read_the_value_net_of_tax() -> None:
    by_value = method(rate_by="order_value", bands=(RateBand(4999, 590), RateBand(None, 290)))
    assert charge(by_value, order_value=4999, weight_g=10**6).amount == 590
    assert charge(by_value, order_value=5000).amount == 290


def test_shipping_is_taxed_at_the_region_rate_rounded_half_up() -> None:
    # 690 * 19 % = 131.1 -> 131; 490 * 19 % = 93.1 -> 93; 250 * 10.5 % = 26.25 -> 26; 10 * 5 % = .5 -> 1
    assert charge(method(), weight_g=1000).tax == 131
    assert charge(method(), weight_g=1).tax == 93
    assert charge(method(bands=(RateBand(None, 250),)), rate_bps=1050).tax == 26
    assert charge(method(bands=(RateBand(None, 10),)), rate_bps=500).tax == 1


def test_free_over_makes_shipping_free_at_and_over_the_threshold() -> None:
    m = method(free_over=5000)
    assert charge(m, weight_g=100, order_value=4999).amount == 490
    at = charge(m, weight_g=100, order_value=5000)
    assert (at.amount, at.tax, at.free_because) == (0, 0, "threshold")


def test_a_free_shipping_promotion_frees_only_what_it_covers_while_active() -> None:
    promo = FreeShippingRule(
        id="r1",
        starts_at=NOW - timedelta(hours=1),
        ends_at=NOW + timedelta(hours=1),
        region="DE",
        methods=frozenset({"standard"}),
        min_order_value=3000,
    )
    m = method()
    assert charge(m, order_value=3000, promotions=[promo]).free_because == "promotion"
    assert charge(m, order_value=2999, promotions=[promo]).amount == 490
    assert charge(method(code="express"), order_value=3000, promotions=[promo]).amount == 490
    assert charge(method(region="FR"), order_value=3000, promotions=[promo]).amount == 490
    later = NOW + timedelta(hours=1)  # the window is half-open
    assert charge(m, order_value=3000, promotions=[promo], now=later).amount == 490
    anywhere = FreeShippingRule(id="r2", starts_at=NOW, ends_at=NOW + timedelta(days=1))
    assert charge(method(code="x", region="FR"), promotions=[anywhere]).amount == 0


def test_a_method_in_another_currency_than_the_order_is_not_offered() -> None:
    with pytest.raises(ShippingNotOffered, match="USD"):
        charge(method(currency="USD"))


# ---- use cases ----


def spec(code: str = "standard", **kw: Any) -> ShippingMethodSpec:
    fields: dict[str, Any] = {
        "region": "DE",
        "name": code.title(),
        "currency": "EUR",
        "rate_by": "weight",
        "bands": BANDS,
    }
    return ShippingMethodSpec(code=code, **(fields | kw))


async def test_the_first_method_of_a_region_is_its_default_and_a_new_default_unsets_it(
    tx: Tx,
) -> None:
    standard = await service.put_shipping_method(tx, spec("standard"))
    express = await service.put_shipping_method(tx, spec("express"))
    assert standard.is_default and not express.is_default
    fr = await service.put_shipping_method(tx, spec("fr-post", region="FR"))
    assert fr.is_default  # each region its own default

    moved = await service.put_shipping_method(tx, spec("express", default=True))
    assert moved.is_default
    assert not (await service.get_shipping_method(tx, "standard")).is_default
    kept = await service.put_shipping_method(tx, spec("express", name="Express 24h"))
    assert kept.is_default and kept.name == "Express 24h"  # absent `default` keeps it
    assert (await service.get_shipping_method(tx, "fr-post")).is_default


async def test_the_default_can_neither_be_unset_nor_deactivated_directly(tx: Tx) -> None:
    await service.put_shipping_method(tx, spec("standard"))
    for change, field in (({"default": False}, "default"), ({"active": False}, "active")):
        with pytest.raises(Invalid) as refused:
            await service.put_shipping_method(tx, spec("standard", **change))
        assert [e.field for e in refused.value.errors] == [field]
    with pytest.raises(Invalid) as refused:
        await service.put_shipping_method(tx, spec("other", region="NL", default=False))
    assert [e.field for e in refused.value.errors] == ["default"]
    with pytest.raises(Conflict):
        await service.put_shipping_method(tx, spec("standard", region="FR"))


async def test_listing_shows_active_methods_by_region_then_code(tx: Tx) -> None:
    await service.put_shipping_method(tx, spec("standard"))
    await service.put_shipping_method(tx, spec("express"))
    await service.put_shipping_method(tx, spec("retired", active=False))
    await service.put_shipping_method(tx, spec("colissimo", region="FR"))
    page = await service.list_shipping_methods(tx, region=None, after=None, limit=2)
    assert [(m.region, m.code) for m in page.items] == [("DE", "express"), ("DE", "standard")]
    assert page.more
    rest = await service.list_shipping_methods(tx, region=None, after=("DE", "standard"), limit=2)
    assert [m.code for m in rest.items] == ["colissimo"] and not rest.more
    de = await service.list_shipping_methods(tx, region="DE", after=None, limit=50)
    assert [m.code for m in de.items] == ["express", "standard"]


async def weighed_product(tx: Tx, sku: str, amount: int, grams: int) -> None:
    await priced_product(tx, sku, amount)
    facts = tx.store.products.rows[sku][0]
    tx.store.products.rows[sku] = (
        type(facts)(sku=sku, category=facts.category, status=facts.status, weight_g=grams),
        tx.store.products.rows[sku][1],
    )


async def test_a_quote_without_a_method_ships_by_the_region_default(tx: Tx) -> None:
    await weighed_product(tx, "MUG", 1250, 400)
    await service.set_tax_rate(tx, "DE", 1900)
    await service.put_shipping_method(tx, spec("standard"))
    await service.put_shipping_method(tx, spec("express", bands=(RateBand(None, 1490),)))

    body = await quote(tx, [("MUG", 3)])  # 1200 g: the 690 band

    # lines: 3750 net, tax 712.5 -> 713; shipping 690, tax 131.1 -> 131
    assert body["shipping_method"] == "standard"
    assert body["shipping"] == eur(690) and body["shipping_tax"] == eur(131)
    assert body["subtotal"] == eur(3750) and body["discount"] == eur(0)
    assert body["tax"] == eur(713 + 131)
    assert body["total"] == eur(3750 + 713 + 690 + 131)
    assert await service.get_quote(tx, body["id"]) == body

    express = await service.create_quote(
        tx,
        lines=[("MUG", 3)],
        region="DE",
        groups=frozenset(),
        customer_id=None,
        now=tx.store.clock(),
        ttl_s=900,
        shipping_method="express",
    )
    assert express["shipping"] == eur(1490) and express["shipping_tax"] == eur(283)
    assert express["total"] == eur(3750 + 713 + 1490 + 283)


async def test_a_region_without_methods_quotes_as_v1_did(tx: Tx) -> None:
    await weighed_product(tx, "MUG", 1250, 400)
    await service.set_tax_rate(tx, "DE", 1900)
    await service.put_shipping_method(tx, spec("fr-post", region="FR"))
    body = await quote(tx, [("MUG", 2)])
    assert body["shipping_method"] is None
    assert body["shipping"] == eur(0) and body["shipping_tax"] == eur(0)
    assert body["total"] == eur(2500 + 475)


async def test_thresholds_and_promotions_read_the_value_after_discount(tx: Tx) -> None:
    await weighed_product(tx, "MUG", 1000, 100)
    await service.set_tax_rate(tx, "DE", 1900)
    await service.put_shipping_method(tx, spec("standard", free_over=5000))
    now = tx.store.clock()
    await service.create_rule(
        tx,
        {
            "kind": "volume",
            "sku": "MUG",
            "tiers": [{"min_quantity": 5, "percent_off": 10}],
        },
    )
    # 5 mugs: 5000 gross, 500 off -> 4500 < 5000: shipping is charged.
    assert (await quote(tx, [("MUG", 5)]))["shipping"] == eur(490)
    assert (await quote(tx, [("MUG", 6)]))["shipping"] == eur(0)  # 5400 after discount

    await service.create_rule(
        tx,
        {
            "kind": "free_shipping",
            "region": "DE",
            "min_order_value": 4500,
            "starts_at": (now - timedelta(minutes=1)).isoformat(),
            "ends_at": (now + timedelta(days=1)).isoformat(),
        },
    )
    free = await quote(tx, [("MUG", 5)])
    assert free["shipping"] == eur(0) and free["shipping_tax"] == eur(0)
    assert free["shipping_method"] == "standard"
    assert free["total"] == eur(4500 + 855)
    assert (await quote(tx, [("MUG", 4)]))["shipping"] == eur(490)  # 3600: under the minimum


async def test_unusable_methods_are_refused_naming_shipping_method(tx: Tx) -> None:
    await weighed_product(tx, "ANVIL", 9999, 50_000)
    await service.set_tax_rate(tx, "DE", 1900)
    await service.put_shipping_method(tx, spec("standard"))
    await service.put_shipping_method(tx, spec("retired", active=False))
    await service.put_shipping_method(tx, spec("light", bands=(RateBand(1000, 390),)))
    await service.put_shipping_method(tx, spec("colissimo", region="FR"))
    for code, reason in (
        ("nope", "unknown"),
        ("retired", "not offered"),
        ("colissimo", "serves region FR"),
        ("light", "beyond its bands"),
    ):
        with pytest.raises(Invalid) as refused:
            await service.create_quote(
                tx,
                lines=[("ANVIL", 1)],
                region="DE",
                groups=frozenset(),
                customer_id=None,
                now=tx.store.clock(),
                ttl_s=900,
                shipping_method=code,
            )
        assert [e.field for e in refused.value.errors] == ["shipping_method"]
        assert reason in refused.value.errors[0].message
    assert not tx.store.quotes.rows


async def test_catalog_events_teach_pricing_the_weight(tx: Tx) -> None:
    class Ctx:
        """What the handler reads of an EventContext: its transaction and the event's time."""

        def __init__(self) -> None:
            self.event = type("E", (), {"time": tx.store.clock()})()

        def tx(self, _store: object) -> Tx:
            return tx

    event = ProductCreated(
        sku="KETTLE",
        name="Kettle",
        category="kitchen",
        attributes={"weight": {"value": 1.5, "unit": "kg"}},
    )
    await on_product_created(event, Ctx())  # type: ignore[arg-type]
    assert tx.store.products.rows["KETTLE"][0].weight_g == 1500
