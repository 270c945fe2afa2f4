"""Seed a small demo catalog through the gateway (idempotent): products (with weights), prices, tax
rates, shipping methods, stock, a promotion, a second warehouse, a marketplace channel and a
supplier; then print a customer token, a channel token and the first step of a checkout."""

import sys
from datetime import UTC, datetime, timedelta

import httpx

from libs.kit.auth import mint_dev_token
from libs.kit.settings import ServiceSettings

PRODUCTS = [
    ("TSHIRT-BLK-M", "Backroom T-shirt, black, M", "apparel", 1999, 120, 10),
    ("TSHIRT-WHT-M", "Backroom T-shirt, white, M", "apparel", 1999, 80, 10),
    ("HOODIE-GRY-L", "Backroom hoodie, grey, L", "apparel", 4999, 40, 5),
    ("MUG-STEEL", "Enamel steel mug", "kitchen", 1250, 200, 20),
    ("NOTEBOOK-A5", "Dot-grid notebook A5", "stationery", 899, 300, 30),
    ("PEN-GEL-BLK", "Gel pen, black", "stationery", 249, 1000, 100),
    ("STICKER-PACK", "Sticker pack (12)", "stationery", 499, 500, 50),
    ("CAP-NAVY", "Baseball cap, navy", "apparel", 2499, 3, 2),
]
TAX_RATES = {"DE": 1900, "FR": 2000, "NL": 2100, "IE": 2300, "US-NY": 888}
# attributes.weight of each demo product (shipping rates go by weight).
WEIGHTS = {
    "TSHIRT-BLK-M": {"value": 180, "unit": "g"},
    "TSHIRT-WHT-M": {"value": 180, "unit": "g"},
    "HOODIE-GRY-L": {"value": 0.65, "unit": "kg"},
    "MUG-STEEL": {"value": 350, "unit": "g"},
    "NOTEBOOK-A5": {"value": 7, "unit": "oz"},
    "PEN-GEL-BLK": {"value": 12, "unit": "g"},
    "STICKER-PACK": {"value": 30, "unit": "g"},
    "CAP-NAVY": {"value": 0.25, "unit": "lb"},
}


def shipping_methods(region: str) -> dict[str, dict[str, object]]:
    """Each demo region: standard (its default, by weight, free from 50.00 of goods) and express
    (by weight, up to 10 kg)."""
    prefix = region.lower()
    return {
        f"{prefix}-standard": {
            "region": region,
            "name": "Standard (3-5 days)",
            "currency": "EUR",
            "rate": {
                "by": "weight",
                "bands": [
                    {"up_to": 500, "amount": 495},
                    {"up_to": 2000, "amount": 695},
                    {"up_to": None, "amount": 1295},
                ],
            },
            "free_over": 5000,
            "default": True,
        },
        f"{prefix}-express": {
            "region": region,
            "name": "Express (next day)",
            "currency": "EUR",
            "rate": {
                "by": "weight",
                "bands": [{"up_to": 2000, "amount": 1290}, {"up_to": 10000, "amount": 1990}],
            },
        },
    }


# Issue 13: a second warehouse, a marketplace channel with a few listings (one at its own price,
# one capped), and a supplier that restocks the cap when it runs low.
SECOND_WAREHOUSE = "fr-lyon"
MARKETPLACE = "marketplace"
MARKETPLACE_LISTINGS = {"TSHIRT-BLK-M": None, "MUG-STEEL": 1350, "NOTEBOOK-A5": None}
MARKETPLACE_CAPS = {"TSHIRT-BLK-M": 20}
SUPPLIER = ("acme-headwear", "Acme Headwear", "orders@acme-headwear.example", 7)
SUPPLIER_ITEMS = [("CAP-NAVY", 24)]


def sell_everywhere(http: httpx.Client) -> None:
    """Locations, channel, listings, caps and a supplier; every call a PUT, so seeding twice
    changes nothing."""
    http.put(
        f"/inventory/locations/{SECOND_WAREHOUSE}",
        json={"name": "Lyon warehouse", "kind": "warehouse", "priority": 10, "regions": ["FR"]},
    ).raise_for_status()
    http.put(
        f"/inventory/items/HOODIE-GRY-L/locations/{SECOND_WAREHOUSE}", json={"on_hand": 15}
    ).raise_for_status()
    http.put(
        f"/catalog/channels/{MARKETPLACE}", json={"name": "Demo marketplace", "kind": "marketplace"}
    ).raise_for_status()
    for sku, own_price in MARKETPLACE_LISTINGS.items():
        http.put(
            f"/catalog/products/{sku}/listings/{MARKETPLACE}", json={"published": True}
        ).raise_for_status()
        if own_price is not None:
            http.put(
                f"/pricing/channels/{MARKETPLACE}/prices/{sku}",
                json={"amount": own_price, "currency": "EUR"},
            ).raise_for_status()
    for sku, cap in MARKETPLACE_CAPS.items():
        http.put(
            f"/inventory/items/{sku}/channels/{MARKETPLACE}", json={"cap": cap}
        ).raise_for_status()
    supplier_id, name, email, lead_time = SUPPLIER
    http.put(
        f"/inventory/suppliers/{supplier_id}",
        json={
            "name": name,
            "email": email,
            "lead_time_days": lead_time,
            "items": [{"sku": sku, "reorder_quantity": q} for sku, q in SUPPLIER_ITEMS],
        },
    ).raise_for_status()


def main(gateway: str) -> None:
    settings = ServiceSettings()
    admin = mint_dev_token(settings, "seed-admin", ["admin"])
    headers = {"Authorization": f"Bearer {admin}"}
    with httpx.Client(base_url=gateway, headers=headers, timeout=10) as http:
        for sku, name, category, price, stock, reorder in PRODUCTS:
            created = http.post(
                "/catalog/products",
                json={
                    "sku": sku,
                    "name": name,
                    "category": category,
                    "description": f"{name}. Demo product.",
                    "attributes": {"demo": True, "weight": WEIGHTS[sku]},
                },
            )
            if created.status_code == 409:  # seeded before: give it its weight (a no-op if set)
                http.patch(
                    f"/catalog/products/{sku}",
                    json={"attributes": {"demo": True, "weight": WEIGHTS[sku]}},
                ).raise_for_status()
            elif created.status_code != 201:
                created.raise_for_status()
            http.put(
                f"/pricing/prices/{sku}", json={"amount": price, "currency": "EUR"}
            ).raise_for_status()
            http.put(
                f"/inventory/items/{sku}", json={"on_hand": stock, "reorder_point": reorder}
            ).raise_for_status()
        for region, bps in TAX_RATES.items():
            http.put(f"/pricing/tax-rates/{region}", json={"rate_bps": bps}).raise_for_status()
            for code, method in shipping_methods(region).items():
                http.put(f"/pricing/shipping-methods/{code}", json=method).raise_for_status()
        sell_everywhere(http)
        existing = http.get("/pricing/rules", params={"limit": 200})
        existing.raise_for_status()
        kinds = {rule["kind"] for rule in existing.json()["items"]}
        now = datetime.now(UTC)
        if "promotion" not in kinds:  # promotions may overlap, so only seed one once
            http.post(
                "/pricing/rules",
                json={
                    "kind": "promotion",
                    "category": "stationery",
                    "percent_off": 10,
                    "starts_at": now.isoformat(),
                    "ends_at": (now + timedelta(days=30)).isoformat(),
                },
            ).raise_for_status()
        if "volume" not in kinds:
            http.post(
                "/pricing/rules",
                json={
                    "kind": "volume",
                    "sku": "PEN-GEL-BLK",
                    "tiers": [
                        {"min_quantity": 10, "percent_off": 15},
                        {"min_quantity": 50, "percent_off": 25},
                    ],
                },
            ).raise_for_status()
    channel_token = mint_dev_token(
        settings, "marketplace-demo", ["channel"], ttl_s=86400, channel=MARKETPLACE
    )
    customer = mint_dev_token(
        settings, "alice", ["customer"], ttl_s=86400, email="alice@example.com"
    )
    print(
        f"seeded {len(PRODUCTS)} products, {len(TAX_RATES)} tax rates,"
        f" {2 * len(TAX_RATES)} shipping methods, 2 pricing rules, a second warehouse,"
        f" the {MARKETPLACE} channel ({len(MARKETPLACE_LISTINGS)} listings), a supplier"
    )
    print(f"\nchannel token ({MARKETPLACE}, 24 h):\n  export CHANNEL_TOKEN={channel_token}")
    print(f"\ncustomer token (alice, 24 h):\n  export TOKEN={customer}")
    print(
        "  curl -s -X POST " + gateway + '/orders -H "Authorization: Bearer $TOKEN" '
        "-H 'Idempotency-Key: demo-1' -H 'Content-Type: application/json' "
        '-d \'{"lines":[{"sku":"MUG-STEEL","quantity":2}],"region":"DE",'
        '"shipping_address":{"name":"Alice","city":"Berlin"},"shipping_method":"de-express",'
        '"payment":{"token":"tok_visa"}}\''
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000")
