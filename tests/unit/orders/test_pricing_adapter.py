"""Orders' pricing adapter: quotes read, pricing's verdicts relayed as Invalid (its field errors,
422 or 400), outages and untrustworthy answers as Unavailable (503)."""

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from libs.kit.errors import FieldError, Invalid, Unavailable
from libs.kit.problems import domain_problem
from services.orders.adapters import HttpPricing

LINES = [("MUG-1", 2), ("TEA-9", 1)]


def money(amount: int) -> dict[str, Any]:
    return {"amount": amount, "currency": "EUR"}


QUOTE: dict[str, Any] = {
    "id": "q-1",
    "lines": [
        {
            "sku": "TEA-9",
            "quantity": 1,
            "unit_price": money(500),
            "discount": money(0),
            "total": money(500),
        },
        {
            "sku": "MUG-1",
            "quantity": 2,
            "unit_price": money(1000),
            "discount": money(100),
            "tax": money(380),
            "total": money(1900),
        },
    ],
    "subtotal": money(2500),
    "discount": money(100),
    "tax": money(480),
    "total": money(2880),
    "expires_at": "2026-01-01T00:00:00Z",
}


def pricing_answering(handler: Callable[[httpx.Request], httpx.Response]) -> HttpPricing:
    pricing = HttpPricing("http://pricing", 1.0)
    pricing.client = httpx.AsyncClient(
        base_url="http://pricing", transport=httpx.MockTransport(handler)
    )
    return pricing


async def quote(pricing: HttpPricing, auth: str | None = "Bearer t") -> Any:
    return await pricing.quote(LINES, "FR", authorization=auth, request_id="req-1")


async def test_quote_is_read_and_the_callers_token_is_forwarded() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=QUOTE)

    result = await quote(pricing_answering(handler))
    assert result.id == "q-1" and result.total.amount == 2880
    [request] = seen
    assert request.url.path == "/pricing/quotes"
    assert request.headers["authorization"] == "Bearer t"
    assert request.headers["x-request-id"] == "req-1"
    assert b'"region":"FR"' in request.content.replace(b" ", b"")


async def test_pricing_field_errors_are_relayed_as_422() -> None:
    problem = {
        "type": "about:blank",
        "title": "Unprocessable Content",
        "status": 422,
        "detail": "lines[1].sku: unknown sku",
        "errors": [{"field": "lines[1].sku", "message": "unknown sku"}],
    }
    pricing = pricing_answering(lambda r: httpx.Response(422, json=problem))
    with pytest.raises(Invalid) as caught:
        await quote(pricing)
    assert caught.value.errors == [FieldError("lines[1].sku", "unknown sku")]
    answer = domain_problem(caught.value)
    assert answer.status == 422 and answer.detail == "lines[1].sku: unknown sku"
    assert answer.errors == problem["errors"]


@pytest.mark.parametrize(("status", "answered"), [(400, 400), (404, 422), (422, 422)])
async def test_pricing_refusals_keep_their_kind(status: int, answered: int) -> None:
    pricing = pricing_answering(lambda r: httpx.Response(status, json={"detail": "no"}))
    with pytest.raises(Invalid) as caught:
        await quote(pricing)
    assert domain_problem(caught.value).status == answered
    assert caught.value.detail == "no"


async def test_a_refusal_without_a_problem_body_still_reads() -> None:
    with pytest.raises(Invalid) as caught:
        await quote(pricing_answering(lambda r: httpx.Response(422, content=b"<html>")))
    assert caught.value.detail == "pricing refused the order lines"
    assert caught.value.errors == []


@pytest.mark.parametrize("status", [500, 502, 401])
async def test_pricing_failures_are_503(status: int) -> None:
    pricing = pricing_answering(lambda r: httpx.Response(status, json={}))
    with pytest.raises(Unavailable):
        await quote(pricing)


async def test_unreachable_pricing_is_503() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(Unavailable):
        await quote(pricing_answering(refuse))


async def test_a_quote_for_other_lines_is_not_trusted() -> None:
    other = QUOTE | {"lines": QUOTE["lines"][:1]}
    with pytest.raises(Unavailable):
        await quote(pricing_answering(lambda r: httpx.Response(200, json=other)))


async def test_unreadable_quote_is_503() -> None:
    with pytest.raises(Unavailable):
        await quote(pricing_answering(lambda r: httpx.Response(200, json={"lines": "?"})))


async def test_a_client_not_started_is_unavailable() -> None:
    with pytest.raises(Unavailable):
        await quote(HttpPricing("http://pricing", 1.0))
