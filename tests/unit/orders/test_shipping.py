"""Orders and shipping rates (issue 12): the method passes to pricing, the quote's shipping line is
recorded, shown and announced, the charge is the total including shipping and its tax, and an
unusable method is pricing's 422 with nothing written."""

import json
from dataclasses import replace

import httpx
import pytest

from libs.events.orders import OrderPlaced, PaymentInstructionIssued
from libs.kit.errors import Invalid
from libs.kit.idempotency import request_hash
from services.orders.adapters import HttpPricing
from services.orders.api import OrderIn, _absent_v2_fields
from tests.unit.orders.fakes import World, eur, order_request
from tests.unit.orders.test_pricing_adapter import LINES, QUOTE, money, pricing_answering


def shipping_world() -> World:
    world = World()
    world.pricing.shipping_rates = {"standard": 490, "express": 990}
    world.pricing.default_shipping = "standard"
    return world


async def test_an_order_with_a_method_charges_its_shipping_and_tax() -> None:
    world = shipping_world()
    placed = await world.place(replace(order_request(), shipping_method="express"))

    order = placed.order
    assert world.pricing.shipping_asked == ["express"]
    # Lines 2999 net + 600 tax; express 990 + 20 % = 198.
    assert order.shipping == eur(990) and order.shipping_method == "express"
    assert order.tax == eur(600 + 198)
    assert order.total == eur(2999 + 600 + 990 + 198)
    assert await world.view(order.id) == order

    [announced] = world.emitted(OrderPlaced)
    assert (announced.shipping, announced.shipping_method) == (eur(990), "express")
    assert announced.total == order.total
    [instruction] = world.emitted(PaymentInstructionIssued)
    assert instruction.amount == order.total  # payments charges the shipping too


async def test_an_order_without_a_method_ships_by_the_default_pricing_picks() -> None:
    world = shipping_world()
    order = (await world.place()).order
    assert world.pricing.shipping_asked == [None]  # orders leaves the choice to pricing
    assert (order.shipping, order.shipping_method) == (eur(490), "standard")
    assert order.total == eur(2999 + 600 + 490 + 98)


async def test_a_region_without_methods_records_no_shipping() -> None:
    world = World()
    order = (await world.place()).order
    assert (order.shipping, order.shipping_method) == (eur(0), None)
    assert order.total == eur(3599)
    [announced] = world.emitted(OrderPlaced)
    assert announced.shipping == eur(0) and announced.shipping_method is None


async def test_an_unknown_method_is_refused_with_nothing_written() -> None:
    world = shipping_world()
    with pytest.raises(Invalid) as refused:
        await world.place(replace(order_request(), shipping_method="teleport"))
    assert [e.field for e in refused.value.errors] == ["shipping_method"]
    assert not world.store.orders.rows and not world.events.emitted


async def test_the_adapter_sends_the_method_only_when_given_and_reads_the_line() -> None:
    bodies: list[dict[str, object]] = []
    answer = QUOTE | {
        "shipping": money(490),
        "shipping_tax": money(98),
        "shipping_method": "standard",
        "tax": money(480 + 98),
        "total": money(2880 + 490 + 98),
    }

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json=answer)

    pricing: HttpPricing = pricing_answering(handler)
    with_method = await pricing.quote(
        LINES, "FR", authorization=None, request_id="r", shipping_method="standard"
    )
    without = await pricing.quote(LINES, "FR", authorization=None, request_id="r")
    assert bodies[0]["shipping_method"] == "standard"
    assert "shipping_method" not in bodies[1]  # an older pricing refuses unknown fields
    assert with_method.shipping is not None and with_method.shipping.amount == 490
    assert with_method.shipping_tax is not None and with_method.shipping_tax.amount == 98
    assert without.shipping_method == "standard"

    v1 = await pricing_answering(lambda r: httpx.Response(200, json=QUOTE)).quote(
        LINES, "FR", authorization=None, request_id="r"
    )
    assert (v1.shipping, v1.shipping_tax, v1.shipping_method) == (None, None, None)


def test_a_v1_body_hashes_as_before_and_a_method_makes_another_body() -> None:
    v1 = {
        "lines": [{"sku": "MUG-1", "quantity": 2}],
        "region": "FR",
        "shipping_address": {"city": "Paris"},
        "payment": {"token": "tok_visa"},
        "email": None,
    }
    body = OrderIn.model_validate(v1)
    hashed = request_hash(body.model_dump(mode="json", exclude=_absent_v2_fields(body)))
    assert hashed == request_hash(v1)  # what the same body hashed to before shipping_method
    chosen = OrderIn.model_validate(v1 | {"shipping_method": "express"})
    assert request_hash(chosen.model_dump(mode="json", exclude=_absent_v2_fields(chosen))) != hashed
