"""POST /orders and cancel refuse what the security findings of issue 9 sent: control characters
(items 6), a card number as the token (6), an email other than the customer's own and a free-text
cancellation reason (8). All answered before any database, pricing or event."""

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from libs.events.orders import OrderPlaced
from libs.kit.auth import Principal
from services.orders import domain
from services.orders.api import receipt_address
from services.orders.main import create_app
from services.orders.settings import OrdersSettings
from tests.support.auth import bearer
from tests.unit.orders.fakes import World

GOOD: dict[str, Any] = {
    "lines": [{"sku": "MUG-1", "quantity": 2}],
    "region": "FR",
    "shipping_address": {"name": "Ada", "city": "Paris"},
    "payment": {"token": "tok_visa"},
}


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
async def client(world: World) -> AsyncIterator[httpx.AsyncClient]:
    # No lifespan: POST /orders runs on the fakes (pricing, store, unit of work).
    app = create_app(OrdersSettings(pricing_url="http://127.0.0.1:9"))
    app.state.unit_of_work = world.uow
    app.state.pricing = world.pricing
    app.state.clock = world.clock
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://orders") as c:
        yield c


def headers(email: str | None = "alice@example.com") -> dict[str, str]:
    return bearer("alice", "customer", email=email) | {"Idempotency-Key": "k-1"}


def refused(response: httpx.Response, world: World | None = None) -> list[str]:
    assert response.status_code == 422, response.text
    if world is not None:  # nothing was written, nothing published
        assert world.store.orders.rows == {} and world.events.emitted == []
    assert response.headers["content-type"].startswith("application/problem+json")
    return [e["field"] for e in response.json()["errors"]]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"shipping_address": {"city": "Pa\u0000ris"}}, "shipping_address.city"),
        ({"lines": [{"sku": "MUG\u0000", "quantity": 1}]}, "lines[0].sku"),
        ({"region": "F\u0007R"}, "region"),
        ({"payment": {"token": "tok_\u0000visa"}}, "payment.token"),
    ],
)
async def test_a_nul_or_control_character_is_a_422_naming_the_field(
    client: httpx.AsyncClient, world: World, change: dict[str, Any], field: str
) -> None:
    response = await client.post("/orders", json=GOOD | change, headers=headers())
    assert refused(response, world) == [field]


async def test_a_nul_in_the_idempotency_key_or_the_order_id_is_named(
    client: httpx.AsyncClient,
) -> None:
    raw = [(k.encode(), v.encode()) for k, v in headers().items() if k != "Idempotency-Key"]
    response = await client.post(
        "/orders", json=GOOD, headers=[*raw, (b"Idempotency-Key", b"k\x85")]
    )
    assert refused(response) == ["Idempotency-Key"]
    assert refused(await client.get("/orders/o%00rd", headers=headers())) == ["order_id"]


@pytest.mark.parametrize(
    "token",
    [
        "tok_4242424242424242",
        "tok_4242_4242_4242_4242",
        "tok_visa_378282246310005",
        "pm_4242424242424242",
        "pm_card_4000002500003155",
    ],
)
async def test_a_token_holding_a_card_number_is_refused_and_never_echoed(
    client: httpx.AsyncClient, token: str
) -> None:
    response = await client.post(
        "/orders", json=GOOD | {"payment": {"token": token}}, headers=headers()
    )
    assert refused(response) == ["payment.token"]
    digits = "".join(c for c in token if c.isdigit())
    assert digits[:8] not in response.text and token not in response.text


@pytest.mark.parametrize(
    "token", ["tok_1N3T00LkdIwHu7ixt44h1F8k", "pm_1PgafyB7WZ01zgkWSjxsAJo3", "pm_card_visa"]
)
async def test_a_provider_token_with_digits_is_placed(
    client: httpx.AsyncClient, token: str
) -> None:
    body = GOOD | {"payment": {"token": token}}
    response = await client.post("/orders", json=body, headers=headers())
    assert response.status_code == 202, response.text


@pytest.mark.parametrize(
    ("email", "claim"),
    [
        ("victim@example.org", "alice@example.com"),
        ("victim@example.org", None),
        ("alice@example.com", None),
    ],
)
async def test_an_email_other_than_the_tokens_is_refused(
    client: httpx.AsyncClient, world: World, email: str, claim: str | None
) -> None:
    response = await client.post("/orders", json=GOOD | {"email": email}, headers=headers(claim))
    assert refused(response, world) == ["email"]


async def test_the_tokens_own_email_in_the_body_is_still_accepted(
    client: httpx.AsyncClient, world: World
) -> None:
    # v1 clients that send the customer's own address keep working (any letter case); the
    # order keeps the claim's spelling.
    body = GOOD | {"email": "Alice@Example.com"}
    response = await client.post("/orders", json=body, headers=headers())
    assert response.status_code == 202, response.text
    assert response.json()["email"] == "alice@example.com"
    placed = world.events.emitted[0]
    assert isinstance(placed, OrderPlaced) and placed.email == "alice@example.com"


async def test_without_a_body_email_the_receipt_goes_to_the_claim_or_nowhere(
    client: httpx.AsyncClient,
) -> None:
    with_claim = await client.post("/orders", json=GOOD, headers=headers())
    assert with_claim.json()["email"] == "alice@example.com"
    no_claim = await client.post(
        "/orders", json=GOOD, headers=headers(None) | {"Idempotency-Key": "k-2"}
    )
    assert no_claim.status_code == 202 and no_claim.json()["email"] is None


def test_an_unverified_email_claim_is_no_receipt_address() -> None:
    verified = Principal(sub="a", email="a@example.com", claims={"email_verified": True})
    unverified = Principal(sub="a", email="a@example.com", claims={"email_verified": False})
    ours = Principal(sub="a", email="a@example.com")
    assert receipt_address(verified) == receipt_address(ours) == "a@example.com"
    assert receipt_address(unverified) is None


@pytest.mark.parametrize(
    "reason", ["you are all crooks, see http://evil.example", "", "CUSTOMER_REQUEST"]
)
async def test_a_free_text_cancellation_reason_is_refused_listing_the_allowed_ones(
    client: httpx.AsyncClient, world: World, reason: str
) -> None:
    response = await client.post("/orders/o-1/cancel", json={"reason": reason}, headers=headers())
    assert refused(response, world) == ["reason"]
    message = response.json()["errors"][0]["message"]
    assert all(allowed in message for allowed in domain.CANCELLATION_REASONS)


def test_the_default_reason_is_one_of_the_set() -> None:
    assert domain.DEFAULT_CANCEL_REASON in domain.CANCELLATION_REASONS
    assert "found_cheaper" in domain.CANCELLATION_REASONS  # a reason v1 clients already send
