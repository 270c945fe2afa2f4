"""Shipping rates end to end (issue 12), through the gateway: an admin sets a region's methods, a
weighed product is ordered with and without `shipping_method`; the confirmed order's total
includes the shipping and its tax, and payments charges exactly that total. A v1 body ships by
the region's default; an unknown method is a 422 naming `shipping_method`.

The region is this test's own: the other e2e tests' region (E2E-LAND) keeps no shipping methods,
so their totals stay those of v1."""

import uuid
from typing import Any

import httpx

from tests.e2e.shop import admin_put, eur, order, payments, settled
from tests.support.auth import admin, bearer
from tests.support.eventually import eventually

TAX_BPS = 2000


async def weighed_product(gw: httpx.AsyncClient, region: str, price: int) -> str:
    """On sale and known to pricing with its weight, 1.5 kg."""
    sku = f"E2E-SHIP-{uuid.uuid4().hex[:8].upper()}"
    created = await gw.post(
        "/catalog/products",
        json={
            "sku": sku,
            "name": f"Heavy thing {sku}",
            "category": "e2e-shipping",
            "attributes": {"weight": {"value": 1.5, "unit": "kg"}},
        },
        headers=admin(),
    )
    assert created.status_code == 201, created.text
    await admin_put(gw, f"/pricing/prices/{sku}", {"amount": price, "currency": "EUR"})
    await admin_put(gw, f"/inventory/items/{sku}", {"on_hand": 50})

    async def weighed() -> bool:
        # Two units weigh 3000 g: the 2000-5000 g band (690) once pricing has the weight (a
        # product without one would be 0 g and land in the first band).
        quote = await gw.post(
            "/pricing/quotes",
            json={"lines": [{"sku": sku, "quantity": 2}], "region": region},
        )
        return quote.status_code == 201 and quote.json()["shipping"]["amount"] == 690

    await eventually(weighed, what=f"pricing knows the weight of {sku}")
    return sku


async def checkout(
    gw: httpx.AsyncClient, customer: str, region: str, sku: str, quantity: int, **extra: Any
) -> httpx.Response:
    headers = bearer(customer, "customer", email=f"{customer}@shoppers.test")
    body = {
        "lines": [{"sku": sku, "quantity": quantity}],
        "region": region,
        "shipping_address": {"name": "Test Shopper", "street": "1 Test Way", "city": "Testville"},
        "payment": {"token": "tok_visa"},
        **extra,
    }
    return await gw.post(
        "/orders", json=body, headers=headers | {"Idempotency-Key": uuid.uuid4().hex}
    )


async def test_orders_pay_for_shipping_by_the_chosen_or_default_method(
    gateway: httpx.AsyncClient,
) -> None:
    region = f"E2E-SHIP-{uuid.uuid4().hex[:8]}"
    await admin_put(gateway, f"/pricing/tax-rates/{region}", {"rate_bps": TAX_BPS})
    weight_bands = [
        {"up_to": 2000, "amount": 490},
        {"up_to": 5000, "amount": 690},
        {"up_to": None, "amount": 1290},
    ]
    standard = await admin_put(
        gateway,
        f"/pricing/shipping-methods/std-{region}",
        {
            "region": region,
            "name": "Standard",
            "currency": "EUR",
            "rate": {"by": "weight", "bands": weight_bands},
            "free_over": 10_000,
            "default": True,
        },
    )
    express = await admin_put(
        gateway,
        f"/pricing/shipping-methods/exp-{region}",
        {
            "region": region,
            "name": "Express",
            "currency": "EUR",
            "rate": {"by": "weight", "bands": [{"up_to": 10_000, "amount": 1490}]},
        },
    )
    assert standard["default"] and not express["default"]
    listed = await gateway.get("/pricing/shipping-methods", params={"region": region})
    assert listed.status_code == 200, listed.text
    assert [(m["code"], m["default"]) for m in listed.json()["items"]] == [
        (express["code"], False),
        (standard["code"], True),
    ]
    sku = await weighed_product(gateway, region, price=2000)

    # Express, chosen: 2 x 20.00 = 40.00 net, 8.00 tax; express 14.90 + 2.98 tax.
    chosen = await checkout(gateway, "ship-sue", region, sku, 2, shipping_method=express["code"])
    assert chosen.status_code == 202, chosen.text
    confirmed = await settled(gateway, chosen.json()["id"])
    assert confirmed["status"] == "confirmed", confirmed
    assert (confirmed["shipping"], confirmed["shipping_method"]) == (eur(1490), express["code"])
    assert confirmed["subtotal"] == eur(4000)
    assert confirmed["tax"] == eur(800 + 298)
    assert confirmed["total"] == eur(4000 + 800 + 1490 + 298)
    [payment] = await payments(gateway, confirmed["id"])
    assert payment["status"] == "captured" and payment["amount"] == confirmed["total"]

    # A v1 body (no shipping_method): the region's default, standard, 3000 g -> 6.90 + 1.38.
    v1 = await checkout(gateway, "ship-sue", region, sku, 2)
    assert v1.status_code == 202, v1.text
    assert v1.json()["shipping_method"] == standard["code"]
    default = await settled(gateway, v1.json()["id"])
    assert default["status"] == "confirmed", default
    assert default["shipping"] == eur(690)
    assert default["total"] == eur(4000 + 800 + 690 + 138)
    [payment] = await payments(gateway, default["id"])
    assert payment["amount"] == default["total"]
    shown = await gateway.get(f"/orders/{default['id']}", headers=bearer("ship-sue", "customer"))
    assert shown.status_code == 200
    assert (shown.json()["shipping"], shown.json()["shipping_method"]) == (
        eur(690),
        standard["code"],
    )

    # 5 x 20.00 = 100.00: at standard's free_over, shipping is free (and so is its tax).
    free = await checkout(gateway, "ship-sue", region, sku, 5)
    assert free.status_code == 202, free.text
    assert (await settled(gateway, free.json()["id"]))["total"] == eur(10_000 + 2000)
    assert free.json()["shipping"] == eur(0)

    unknown = await checkout(gateway, "ship-sue", region, sku, 1, shipping_method="teleport")
    assert unknown.status_code == 422, unknown.text
    assert unknown.headers["content-type"].startswith("application/problem+json")
    assert [e["field"] for e in unknown.json()["errors"]] == ["shipping_method"]
    assert (await order(gateway, default["id"]))["status"] == "confirmed"
