"""Issue 9, item 7: the gateway's limits, through the real nginx of the e2e system.

The e2e system runs with the limits of E2E_SETTINGS (checkout limits at nginx.sh's defaults);
every request here comes from 127.0.0.1, as from one office behind one address."""

import asyncio
import uuid

import httpx

from tests.e2e.conftest import E2E_SETTINGS
from tests.e2e.shop import REGION, new_product, order_body, place_order
from tests.support.auth import bearer

CLIENT_BURST = int(E2E_SETTINGS["GATEWAY_CHECKOUT_CLIENT_BURST"])
ADDRESS_RATE = int(E2E_SETTINGS["GATEWAY_CHECKOUT_ADDRESS_RATE"])
ADDRESS_BURST = int(E2E_SETTINGS["GATEWAY_CHECKOUT_ADDRESS_BURST"])
BODY_LIMIT = int(E2E_SETTINGS["GATEWAY_CHECKOUT_BODY_KB"]) * 1024
ALLOWED_ORIGIN = E2E_SETTINGS["GATEWAY_CORS_ORIGINS"]


async def refilled() -> None:
    """Wait until the per-address checkout buckets are full again (for the tests after us)."""
    await asyncio.sleep(ADDRESS_BURST / ADDRESS_RATE + 1)


def assert_rate_limited(response: httpx.Response) -> None:
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 429
    assert int(response.headers["retry-after"]) >= 1


async def test_thirty_customers_from_one_address_all_get_their_order(
    gateway: httpx.AsyncClient,
) -> None:
    await refilled()
    sku = await new_product(gateway, stock=30)
    buyers = [f"office-{i}-{uuid.uuid4().hex[:6]}" for i in range(30)]
    responses = await asyncio.gather(*(place_order(gateway, b, [(sku, 1)]) for b in buyers))
    assert [r.status_code for r in responses] == [202] * 30, [
        r.text for r in responses if r.status_code != 202
    ]


async def test_one_customer_flooding_checkout_gets_429_problem_json(
    gateway: httpx.AsyncClient,
) -> None:
    await refilled()
    sku = await new_product(gateway, stock=100)
    credential = bearer(f"flooder-{uuid.uuid4().hex[:6]}", "customer")  # one token throughout
    responses = await asyncio.gather(
        *(
            gateway.post(
                "/orders",
                json=order_body([(sku, 1)]),
                headers=credential | {"Idempotency-Key": uuid.uuid4().hex},
            )
            for _ in range(4 * CLIENT_BURST)
        )
    )
    statuses = [r.status_code for r in responses]
    assert set(statuses) == {202, 429}, statuses
    # The burst (and what refilled at 2/s while the flood was in flight) passes, the rest not.
    assert 1 <= statuses.count(202) <= CLIENT_BURST + 4, statuses
    for response in responses:
        if response.status_code == 429:
            assert_rate_limited(response)
    # Another customer at the same address is not held up by the flood.
    other = await place_order(gateway, f"bystander-{uuid.uuid4().hex[:6]}", [(sku, 1)])
    assert other.status_code == 202, other.text


async def test_a_too_large_order_body_is_413_problem_json(gateway: httpx.AsyncClient) -> None:
    body = order_body([("E2E-NONE", 1)])
    body["shipping_address"]["name"] = "x" * (BODY_LIMIT + 1024)
    response = await gateway.post(
        "/orders",
        json=body,
        headers=bearer(f"big-{uuid.uuid4().hex[:6]}", "customer")
        | {"Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code == 413, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 413
    assert "x-request-id" in response.headers


async def test_cors_preflight_is_answered_for_the_configured_origin_only(
    gateway: httpx.AsyncClient,
) -> None:
    asking = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,idempotency-key",
    }
    allowed = await gateway.options("/orders", headers={"Origin": ALLOWED_ORIGIN} | asking)
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "POST" in allowed.headers["access-control-allow-methods"]
    offered = allowed.headers["access-control-allow-headers"].lower()
    assert {"authorization", "content-type", "idempotency-key"} <= {
        h.strip() for h in offered.split(",")
    }
    assert "access-control-allow-credentials" not in allowed.headers

    other = await gateway.options("/orders", headers={"Origin": "https://evil.test"} | asking)
    assert not [h for h in other.headers if h.lower().startswith("access-control-")]

    # Actual requests: the allowed origin may read the answer, another origin gets no header.
    read = await gateway.get("/catalog/products", headers={"Origin": ALLOWED_ORIGIN})
    assert read.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    foreign = await gateway.get("/catalog/products", headers={"Origin": "https://evil.test"})
    assert not [h for h in foreign.headers if h.lower().startswith("access-control-")]


async def test_x_forwarded_for_from_an_untrusted_peer_does_not_change_the_client_address(
    gateway: httpx.AsyncClient,
) -> None:
    """No trusted proxy is configured: each request claims another client address, and all of
    them still count against the one per-address bucket of POST /pricing/quotes."""
    await refilled()
    quote = {"lines": [{"sku": "E2E-NONE", "quantity": 1}], "region": REGION}
    responses = await asyncio.gather(
        *(
            gateway.post(
                "/pricing/quotes", json=quote, headers={"X-Forwarded-For": f"198.51.100.{i}"}
            )
            for i in range(ADDRESS_BURST + 30)
        )
    )
    limited = [r for r in responses if r.status_code == 429]
    assert limited, [r.status_code for r in responses]
    assert_rate_limited(limited[0])
    await refilled()
