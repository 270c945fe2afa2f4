"""Quotes and the catalog products projection, on in-memory repositories: what is quoted, what is
refused (every bad field at once), and which catalog fact wins."""

from datetime import datetime, timedelta
from typing import Any

import pytest

from libs.events.common import Money
from libs.kit.errors import Invalid, NotFound
from services.pricing import service
from services.pricing.domain import ProductFacts
from tests.support.fakes import FakeTx
from tests.unit.pricing.fakes import FakeStore

Tx = FakeTx[FakeStore]
TTL_S = 900


def eur(amount: int) -> dict[str, Any]:
    return {"amount": amount, "currency": "EUR"}


async def product(
    tx: Tx, sku: str, *, category: str = "tools", status: str = "active", at: datetime | None = None
) -> None:
    facts = ProductFacts(sku=sku, category=category, status=status)
    await service.record_product(tx, facts, at or tx.store.clock())


async def priced_product(tx: Tx, sku: str, amount: int, currency: str = "EUR", **kw: Any) -> None:
    await product(tx, sku, **kw)
    await service.set_price(tx, sku, Money(amount=amount, currency=currency))


async def quote(
    tx: Tx,
    lines: list[tuple[str, int]],
    region: str = "DE",
    groups: frozenset[str] = frozenset(),
    customer_id: str | None = None,
) -> dict[str, Any]:
    return await service.create_quote(
        tx,
        lines=lines,
        region=region,
        groups=groups,
        customer_id=customer_id,
        now=tx.store.clock(),
        ttl_s=TTL_S,
    )


async def refusal(tx: Tx, lines: list[tuple[str, int]], region: str = "DE") -> dict[str, str]:
    with pytest.raises(Invalid) as refused:
        await quote(tx, lines, region)
    assert not tx.store.quotes.rows, "a refused quote was stored"
    return {e.field: e.message for e in refused.value.errors}


async def test_a_quote_applies_the_volume_tier_then_tax_and_is_stored(tx: Tx) -> None:
    await priced_product(tx, "DRILL", 1999)
    await priced_product(tx, "NAILS", 500)
    tiers = [{"min_quantity": 10, "percent_off": 5}, {"min_quantity": 50, "percent_off": 10}]
    rule = await service.create_rule(tx, {"kind": "volume", "sku": "DRILL", "tiers": tiers})
    await service.set_tax_rate(tx, "DE", 2000)

    body = await quote(tx, [("DRILL", 12), ("NAILS", 3)])

    # drill: gross 23988, 5 % = 1199.4 -> 1199, tax 20 % of 22789 = 4557.8 -> 4558
    drill, nails = body["lines"]
    assert drill == {
        "sku": "DRILL",
        "quantity": 12,
        "unit_price": eur(1999),
        "discount": eur(1199),
        "tax": eur(4558),
        "total": eur(23988 - 1199 + 4558),
        "applied_rule": {"id": rule.id, "kind": "volume"},
    }
    assert nails["discount"] == eur(0) and nails["tax"] == eur(300) and nails["total"] == eur(1800)
    assert nails["applied_rule"] is None
    assert (body["subtotal"], body["discount"], body["tax"]) == (eur(25488), eur(1199), eur(4858))
    assert body["total"] == eur(25488 - 1199 + 4858)
    assert (body["region"], body["currency"], body["tax_rate_bps"]) == ("DE", "EUR", 2000)
    created = datetime.fromisoformat(body["created_at"])
    assert created == tx.store.clock()
    assert datetime.fromisoformat(body["expires_at"]) - created == timedelta(seconds=TTL_S)
    assert await service.get_quote(tx, body["id"]) == body
    stored = tx.store.quotes.rows[body["id"]]
    assert stored.expires_at == created + timedelta(seconds=TTL_S)


async def test_the_best_single_discount_wins_and_group_prices_need_membership(tx: Tx) -> None:
    now = tx.store.clock()
    await priced_product(tx, "SKU-1", 1000, category="garden")
    await service.set_tax_rate(tx, "DE", 0)
    window = {"starts_at": (now - timedelta(hours=1)).isoformat()}
    promo = await service.create_rule(
        tx,
        {
            "kind": "promotion",
            "category": "garden",
            "percent_off": 12.5,
            **window,
            "ends_at": (now + timedelta(hours=1)).isoformat(),
        },
    )
    group = await service.create_rule(
        tx, {"kind": "customer_group", "group": "vip", "sku": "SKU-1", "amount": 800}
    )

    anonymous = await quote(tx, [("SKU-1", 2)])
    member = await quote(tx, [("SKU-1", 2)], groups=frozenset({"vip"}), customer_id="alice")
    other = await quote(tx, [("SKU-1", 2)], groups=frozenset({"other"}), customer_id="bob")

    assert anonymous["lines"][0]["applied_rule"] == {"id": promo.id, "kind": "promotion"}
    assert anonymous["discount"] == eur(250) and anonymous["customer_id"] is None
    assert member["lines"][0]["applied_rule"] == {"id": group.id, "kind": "customer_group"}
    assert member["discount"] == eur(400)  # (1000 - 800) * 2, never 400 + 250
    assert member["total"] == eur(1600) and member["customer_id"] == "alice"
    assert other["discount"] == eur(250)
    assert tx.store.quotes.rows[member["id"]].customer_id == "alice"


async def test_promotions_apply_only_inside_their_window(tx: Tx) -> None:
    now = tx.store.clock()
    await priced_product(tx, "SKU-1", 1000)
    await service.set_tax_rate(tx, "DE", 0)
    for starts, ends in ((-2, -1), (1, 2)):  # over already; not started yet
        await service.create_rule(
            tx,
            {
                "kind": "promotion",
                "skus": ["SKU-1"],
                "percent_off": 90,
                "starts_at": (now + timedelta(hours=starts)).isoformat(),
                "ends_at": (now + timedelta(hours=ends)).isoformat(),
            },
        )

    assert (await quote(tx, [("SKU-1", 1)]))["discount"] == eur(0)
    tx.store.clock.advance(3600 + 1)
    assert (await quote(tx, [("SKU-1", 1)]))["discount"] == eur(900)


async def test_tax_is_charged_on_what_is_left_after_the_discount_rounded_half_up(tx: Tx) -> None:
    await priced_product(tx, "SKU-1", 333)
    await service.set_tax_rate(tx, "DE", 1950)  # 19.50 %
    await service.create_rule(
        tx, {"kind": "volume", "sku": "SKU-1", "tiers": [{"min_quantity": 1, "percent_off": 10}]}
    )

    [line] = (await quote(tx, [("SKU-1", 3)]))["lines"]

    # gross 999, 10 % = 99.9 -> 100, tax 19.5 % of 899 = 175.305 -> 175
    assert (line["discount"], line["tax"], line["total"]) == (eur(100), eur(175), eur(1074))


async def test_unknown_unpriced_skus_and_an_unknown_region_are_refused_together(tx: Tx) -> None:
    await product(tx, "UNPRICED")
    await service.set_price(tx, "NEVER-SEEN", Money(amount=100, currency="EUR"))

    fields = await refusal(tx, [("NEVER-SEEN", 1), ("UNPRICED", 1)], region="NOWHERE")

    assert fields == {
        "lines[0].sku": "unknown sku",
        "lines[1].sku": "unknown sku: no price is set",
        "region": "unknown region: no tax rate is set",
    }


async def test_a_discontinued_product_cannot_be_quoted(tx: Tx) -> None:
    await priced_product(tx, "OLD", 100, status="discontinued")
    await priced_product(tx, "NEW", 100)
    await service.set_tax_rate(tx, "DE", 0)

    assert await refusal(tx, [("NEW", 1), ("OLD", 1)]) == {"lines[1].sku": "discontinued"}


async def test_a_sku_twice_is_refused_naming_the_repeated_line(tx: Tx) -> None:
    await priced_product(tx, "SKU-1", 100)
    await service.set_tax_rate(tx, "DE", 0)

    fields = await refusal(tx, [("SKU-1", 1), ("SKU-1", 2)])

    assert fields == {"lines[1].sku": "duplicate sku SKU-1: one line per sku"}


async def test_lines_in_two_currencies_are_refused_naming_the_first_other_one(tx: Tx) -> None:
    await priced_product(tx, "EUR-1", 100)
    await priced_product(tx, "EUR-2", 100)
    await priced_product(tx, "USD-1", 100, currency="USD")
    await service.set_tax_rate(tx, "DE", 0)

    fields = await refusal(tx, [("EUR-1", 1), ("EUR-2", 1), ("USD-1", 1)])

    assert fields == {"lines[2].sku": "priced in USD, other lines in EUR: quote them separately"}


async def test_an_unknown_quote_is_not_found(tx: Tx) -> None:
    with pytest.raises(NotFound, match="quote q-1 not found"):
        await service.get_quote(tx, "q-1")


# ---- the catalog products projection ----


async def test_a_price_set_before_catalog_announces_the_product_is_quoted_once_it_does(
    tx: Tx,
) -> None:
    await service.set_price(tx, "SKU-1", Money(amount=100, currency="EUR"))
    await service.set_tax_rate(tx, "DE", 0)
    assert await refusal(tx, [("SKU-1", 1)]) == {"lines[0].sku": "unknown sku"}

    await product(tx, "SKU-1")

    assert (await quote(tx, [("SKU-1", 1)]))["total"] == eur(100)


async def test_a_newer_catalog_fact_replaces_the_older_one(tx: Tx) -> None:
    await priced_product(tx, "SKU-1", 100)
    await service.set_tax_rate(tx, "DE", 0)
    tx.store.clock.advance(60)

    await product(tx, "SKU-1", status="discontinued")

    assert await refusal(tx, [("SKU-1", 1)]) == {"lines[0].sku": "discontinued"}


async def test_a_replayed_older_catalog_fact_does_not_undo_a_newer_one(tx: Tx) -> None:
    now = tx.store.clock()
    await service.set_price(tx, "SKU-1", Money(amount=100, currency="EUR"))
    await service.set_tax_rate(tx, "DE", 0)
    await product(tx, "SKU-1", status="discontinued", at=now)

    await product(tx, "SKU-1", status="active", at=now - timedelta(minutes=1))

    assert await refusal(tx, [("SKU-1", 1)]) == {"lines[0].sku": "discontinued"}


async def test_a_redelivered_catalog_fact_is_harmless(tx: Tx) -> None:
    now = tx.store.clock()
    await service.set_price(tx, "SKU-1", Money(amount=1000, currency="EUR"))
    await service.set_tax_rate(tx, "DE", 0)
    await service.create_rule(
        tx,
        {
            "kind": "promotion",
            "category": "garden",
            "percent_off": 10,
            "starts_at": (now - timedelta(hours=1)).isoformat(),
            "ends_at": (now + timedelta(hours=1)).isoformat(),
        },
    )
    await product(tx, "SKU-1", category="garden", at=now)
    await product(tx, "SKU-1", category="garden", at=now)

    assert (await quote(tx, [("SKU-1", 1)]))["discount"] == eur(100)  # its category counts
