"""Every call the Stripe adapter makes, against stripe-mock (Stripe's own mock: it validates each
request against Stripe's OpenAPI for the SDK's API version, and answers canned objects that
reflect what was sent). `infra.sh up` starts it on STRIPE_MOCK_PORT (default 12111).

stripe-mock is stateless (a capture after an authorize does not see the authorize; every
PaymentIntent it returns is `requires_payment_method`), so these tests prove that each call is
a valid Stripe call carrying what we mean (asserted on the request as sent and on what
stripe-mock reflects) and that its answer maps; the flows are proven on the sandbox."""

import os
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import stripe

from services.payments.adapters import StripeProvider, stripe_intent_result
from services.payments.domain import ProviderResult, TransientProviderError
from tests.support.stripe_http import RecordingHTTPClient, Sent

API_KEY = "sk_test_backroomIntegration"


def stripe_mock_base() -> str:
    port = int(os.environ.get("STRIPE_MOCK_PORT", "12111"))
    with socket.socket() as probe:
        probe.settimeout(1)
        if probe.connect_ex(("127.0.0.1", port)) != 0:
            pytest.fail(
                f"stripe-mock is not listening on 127.0.0.1:{port} "
                "(bash deploy/local/stripe-mock.sh up, or infra.sh up)"
            )
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def base() -> str:
    return stripe_mock_base()


@pytest.fixture
def http() -> RecordingHTTPClient:
    return RecordingHTTPClient()


@pytest.fixture
async def provider(base: str, http: RecordingHTTPClient) -> AsyncIterator[StripeProvider]:
    adapter = StripeProvider(API_KEY, "whsec_integration", api_base=base, http_client=http)
    yield adapter
    await adapter.aclose()


@pytest.fixture
def order_id() -> str:
    return str(uuid.uuid4())


def the_request(http: RecordingHTTPClient, path: str) -> tuple[Sent, dict[str, Any]]:
    """The one request to `path`, and what stripe-mock answered (its JSON)."""
    found = [(s, a) for s, a in zip(http.sent, http.answers, strict=True) if s.path == path]
    assert len(found) == 1, [s.path for s in http.sent]
    return found[0]


async def test_capture_creates_and_confirms_an_automatic_payment_intent(
    provider: StripeProvider, http: RecordingHTTPClient, order_id: str
) -> None:
    result = await provider.capture(order_id, 1250, "EUR", "pm_card_visa")

    sent, answer = the_request(http, "/v1/payment_intents")
    assert sent.method == "POST"
    assert sent.header("Idempotency-Key") == order_id
    assert sent.form == {
        "amount": "1250",
        "currency": "eur",
        "payment_method": "pm_card_visa",
        "payment_method_types[0]": "card",
        "confirm": "true",
        "capture_method": "automatic",
        "metadata[order_id]": order_id,
        "metadata[backroom_key]": order_id,
    }
    # stripe-mock reflects the parameters into its canned PaymentIntent.
    assert answer["object"] == "payment_intent"
    assert (answer["amount"], answer["currency"]) == (1250, "eur")
    assert (answer["capture_method"], answer["payment_method"]) == ("automatic", "pm_card_visa")
    # Its canned status is requires_payment_method: a decline, mapped as any answer is.
    assert result == stripe_intent_result(answer) == ProviderResult.declined("card_declined")


async def test_a_card_token_is_made_a_payment_method_then_charged(
    provider: StripeProvider, http: RecordingHTTPClient, order_id: str
) -> None:
    await provider.capture(order_id, 990, "USD", "tok_visa")

    made, method = the_request(http, "/v1/payment_methods")
    assert made.form == {"type": "card", "card[token]": "tok_visa"}
    assert made.header("Idempotency-Key") == f"{order_id}:payment_method"
    assert method["object"] == "payment_method" and method["id"].startswith("pm_")
    paid, answer = the_request(http, "/v1/payment_intents")
    assert paid.form["payment_method"] == method["id"] == answer["payment_method"]
    assert [s.path for s in http.sent] == ["/v1/payment_methods", "/v1/payment_intents"]


async def test_authorize_creates_a_manual_capture_payment_intent(
    provider: StripeProvider, http: RecordingHTTPClient, order_id: str
) -> None:
    key = f"authorize:{order_id}"
    result = await provider.authorize(key, 4200, "EUR", "pm_card_visa")

    sent, answer = the_request(http, "/v1/payment_intents")
    assert sent.form["capture_method"] == "manual" and sent.form["confirm"] == "true"
    assert sent.form["metadata[order_id]"] == order_id
    assert sent.form["metadata[backroom_key]"] == key
    assert sent.header("Idempotency-Key") == key
    assert (answer["capture_method"], answer["amount"]) == ("manual", 4200)
    assert result == stripe_intent_result(answer)


async def test_capture_authorized_captures_part_of_the_intent(
    provider: StripeProvider, http: RecordingHTTPClient, order_id: str
) -> None:
    key = f"capture:{order_id}"
    result = await provider.capture_authorized(key, "pi_backroomAuth", 700)

    sent, answer = the_request(http, "/v1/payment_intents/pi_backroomAuth/capture")
    assert sent.method == "POST" and sent.header("Idempotency-Key") == key
    assert sent.form == {
        "amount_to_capture": "700",
        "metadata[order_id]": order_id,
        "metadata[backroom_key]": key,
    }
    assert answer["id"] == "pi_backroomAuth"  # the path's id, reflected
    assert result == stripe_intent_result(answer)


async def test_void_cancels_the_intent(
    provider: StripeProvider, http: RecordingHTTPClient, order_id: str
) -> None:
    key = f"void:{order_id}"
    result = await provider.void(key, "pi_backroomVoid")

    sent, answer = the_request(http, "/v1/payment_intents/pi_backroomVoid/cancel")
    assert sent.method == "POST" and sent.header("Idempotency-Key") == key
    assert sent.form == {}
    assert answer["id"] == "pi_backroomVoid"
    assert result == ProviderResult.succeeded("pi_backroomVoid")


async def test_refund_gives_back_part_of_a_payment_intent(
    provider: StripeProvider, http: RecordingHTTPClient, order_id: str
) -> None:
    key = f"refund:{order_id}"
    result = await provider.refund(key, "pi_backroomPaid", 300)

    sent, answer = the_request(http, "/v1/refunds")
    assert sent.method == "POST" and sent.header("Idempotency-Key") == key
    # Only our key in a refund's metadata: an operator's refund is keyed by its own id.
    assert sent.form == {
        "payment_intent": "pi_backroomPaid",
        "amount": "300",
        "metadata[backroom_key]": key,
    }
    assert answer["object"] == "refund"
    assert (answer["amount"], answer["payment_intent"]) == (300, "pi_backroomPaid")
    assert answer["status"] == "succeeded"
    assert result == ProviderResult.succeeded(answer["id"])


async def test_find_capture_searches_payment_intents_by_our_key(
    provider: StripeProvider, http: RecordingHTTPClient, order_id: str
) -> None:
    found = await provider.find_capture(order_id)

    sent, answer = the_request(http, "/v1/payment_intents/search")
    assert sent.method == "GET" and sent.header("Idempotency-Key") is None
    assert sent.query == {"query": f"metadata['backroom_key']:'{order_id}'", "limit": "100"}
    assert answer["object"] == "search_result"
    # stripe-mock's canned result is an intent with none of our metadata: not ours.
    assert [i["metadata"] for i in answer["data"]] == [{}]
    assert found is None


async def test_find_capture_cancels_through_a_valid_cancel_call(
    base: str, http: RecordingHTTPClient, order_id: str
) -> None:
    # stripe-mock never answers an undecided intent of ours; queue the search result (an
    # intent of this key in requires_capture) and let the cancel it causes go to stripe-mock.
    adapter = StripeProvider(API_KEY, "whsec_integration", api_base=base, http_client=http)
    intent = {
        "object": "payment_intent",
        "id": "pi_backroomOpen",
        "status": "requires_capture",
        "metadata": {"order_id": order_id, "backroom_key": order_id},
    }
    http.answer(200, {"object": "search_result", "data": [intent], "has_more": False})
    try:
        assert await adapter.find_capture(order_id) is None
    finally:
        await adapter.aclose()
    sent, answer = the_request(http, "/v1/payment_intents/pi_backroomOpen/cancel")
    assert sent.header("Idempotency-Key") == f"{order_id}:cancel"
    assert answer["id"] == "pi_backroomOpen"  # stripe-mock answered the cancel


async def test_every_mutating_call_carries_an_idempotency_key_derived_from_ours(
    provider: StripeProvider, http: RecordingHTTPClient, order_id: str
) -> None:
    await provider.capture(order_id, 100, "EUR", "tok_visa")
    await provider.authorize(f"authorize:{order_id}", 100, "EUR", "pm_card_visa")
    await provider.capture_authorized(f"capture:{order_id}", "pi_a", 100)
    await provider.void(f"void:{order_id}", "pi_a")
    await provider.refund(f"refund:{order_id}", "pi_a", 100)
    await provider.find_capture(order_id)

    posts = http.mutating()
    assert len(posts) == 6  # payment method, two intents, capture, cancel, refund
    for sent in posts:
        key = sent.header("Idempotency-Key")
        assert key is not None and order_id in key, (sent.path, key)
    assert len({s.header("Idempotency-Key") for s in posts}) == len(posts)
    assert all(s.header("Stripe-Version") == stripe.api_version for s in http.sent)


async def test_stripe_mock_refuses_a_parameter_stripe_does_not_have(base: str) -> None:
    # What makes this suite catch a bad call: stripe-mock validates against Stripe's OpenAPI.
    client = stripe.StripeClient(API_KEY, base_addresses={"api": base})
    unknown_param: Any = {"amount": 100, "currency": "eur", "capture_later": True}
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        await client.v1.payment_intents.create_async(unknown_param)
    assert unknown.value.http_status == 400
    assert "additional properties are not allowed" in str(unknown.value)
    bad_enum: Any = {"amount": 100, "currency": "eur", "capture_method": "later"}
    with pytest.raises(stripe.InvalidRequestError):
        await client.v1.payment_intents.create_async(bad_enum)
    bad_type: Any = {"payment_intent": "pi_1", "amount": "all"}
    with pytest.raises(stripe.InvalidRequestError):
        await client.v1.refunds.create_async(bad_type)


async def test_stripe_mock_refuses_another_api_version(base: str) -> None:
    # Started with -strict-version-check: an SDK upgraded past the mock's spec fails here
    # instead of being validated against the wrong spec.
    client = stripe.StripeClient(API_KEY, base_addresses={"api": base}, stripe_version="2020-08-27")
    with pytest.raises(stripe.InvalidRequestError, match="Stripe-Version"):
        await client.v1.payment_intents.search_async({"query": "status:'succeeded'"})


async def test_an_answer_that_never_comes_is_transient(order_id: str) -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        base = f"http://127.0.0.1:{silent.getsockname()[1]}"
        adapter = StripeProvider(API_KEY, "whsec_integration", api_base=base, timeout_s=0.5)
        try:
            with pytest.raises(TransientProviderError) as raised:
                await adapter.capture(order_id, 100, "EUR", "pm_card_visa")
        finally:
            await adapter.aclose()
    assert "APIConnectionError" in str(raised.value) and API_KEY not in str(raised.value)


async def test_a_refused_connection_is_transient(order_id: str) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, not listening: connections are refused
        adapter = StripeProvider(API_KEY, "whsec_integration", api_base=f"http://127.0.0.1:{port}")
        try:
            with pytest.raises(TransientProviderError, match="APIConnectionError"):
                await adapter.refund(f"refund:{order_id}", "pi_1", 100)
        finally:
            await adapter.aclose()
