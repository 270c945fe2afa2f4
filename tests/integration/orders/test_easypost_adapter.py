"""The EasyPost carrier against answers recorded from EasyPost's documented API (easypost/README.md):
the `responses` library answers the SDK's own requests session, so these tests see exactly what
the SDK sends (method, path, body) and how the adapter reads what EasyPost answers."""

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
import responses

from services.orders.adapters import (
    EasyPostCarrier,
    PermanentCarrierError,
    ShipmentRequest,
    TransientCarrierError,
)
from services.orders.domain import WebhookRejected

RECORDED = Path(__file__).parent / "easypost"
API = "https://api.easypost.com/v2"
API_KEY = "EZTK_test_key_never_logged"
WEBHOOK_SECRET = "easypost-webhook-secret"
FROM = {
    "name": "Backroom Warehouse",
    "street1": "417 Montgomery Street",
    "city": "San Francisco",
    "state": "CA",
    "zip": "94104",
    "country": "US",
    "phone": "4153334444",
}
REQUEST = ShipmentRequest(
    idempotency_key="5b7c0d1e-shipment-intent",
    order_id="ord-1",
    address={
        "name": "Ada Lovelace",
        "line1": "179 N Harbor Dr",
        "city": "Redondo Beach",
        "state": "CA",
        "postal_code": "90277",
        "country": "US",
        "note": "leave at the door",
    },
    lines=(("MUG-1", 3),),
    weight_grams=1500,
)


def recorded(name: str) -> Any:
    return json.loads((RECORDED / name).read_text())


def carrier(**options: Any) -> EasyPostCarrier:
    return EasyPostCarrier(API_KEY, WEBHOOK_SECRET, FROM, **options)


def sent(call: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(call.request.body)
    return body


@responses.activate
async def test_a_label_is_created_and_the_lowest_rate_bought() -> None:
    created = recorded("shipment_created.json")
    responses.post(f"{API}/shipments", json=created, status=201)
    responses.post(f"{API}/shipments/{created['id']}/buy", json=recorded("shipment_bought.json"))

    label = await carrier().create_shipment(REQUEST)

    create, buy = responses.calls
    assert (create.request.method, create.request.url) == ("POST", f"{API}/shipments")
    assert create.request.headers["Authorization"] == f"Bearer {API_KEY}"
    shipment = sent(create)["shipment"]
    assert shipment["reference"] == REQUEST.idempotency_key
    assert shipment["to_address"] == {
        "name": "Ada Lovelace",
        "street1": "179 N Harbor Dr",
        "city": "Redondo Beach",
        "state": "CA",
        "zip": "90277",
        "country": "US",
    }
    assert shipment["from_address"] == FROM
    assert shipment["parcel"] == {"weight": 52.9}  # 1500 g in ounces
    assert shipment["options"] == {"label_format": "PDF"}
    assert buy.request.url == f"{API}/shipments/{created['id']}/buy"
    # USPS GroundAdvantage at 6.07 is the lowest of the three rates.
    assert sent(buy) == {"rate": {"id": "rate_7f1e2d3c4b5a49e8a7f6e5d4c3b2a190"}}
    assert label.tracking_number == "9400100208271112573426"
    assert label.carrier_ref == created["id"]
    assert label.label_pdf is None
    assert label.label_url is not None and label.label_url.endswith(".pdf")
    assert label.tracking_url == (
        "https://track.easypost.com/djE6dHJrXzVhNGIzYzJkMWUwZjQ5YThiN2M2ZDVlNGYzYTJiMWMw"
    )


@responses.activate
async def test_a_configured_service_is_bought_instead_of_the_lowest() -> None:
    created = recorded("shipment_created.json")
    responses.post(f"{API}/shipments", json=created, status=201)
    responses.post(f"{API}/shipments/{created['id']}/buy", json=recorded("shipment_bought.json"))

    await carrier(service="Priority").create_shipment(REQUEST)

    assert sent(responses.calls[1]) == {"rate": {"id": "rate_9c8b7a6f5e4d43c2b1a0f9e8d7c6b5a4"}}


@responses.activate
async def test_no_fitting_rate_is_a_permanent_refusal_and_nothing_is_bought() -> None:
    responses.post(f"{API}/shipments", json=recorded("shipment_created.json"), status=201)

    with pytest.raises(PermanentCarrierError, match="no rate"):
        await carrier(service="NextDayAirEarlyAM").create_shipment(REQUEST)
    assert len(responses.calls) == 1


@responses.activate
async def test_an_address_easypost_refuses_is_permanent() -> None:
    responses.post(f"{API}/shipments", json=recorded("error_address_invalid.json"), status=422)

    with pytest.raises(PermanentCarrierError, match="422"):
        await carrier().create_shipment(REQUEST)


@responses.activate
async def test_an_easypost_outage_is_transient() -> None:
    responses.post(f"{API}/shipments", json=recorded("error_internal.json"), status=500)

    with pytest.raises(TransientCarrierError):
        await carrier().create_shipment(REQUEST)


@responses.activate
async def test_a_rate_limit_is_transient() -> None:
    responses.post(f"{API}/shipments", json=recorded("error_internal.json"), status=429)

    with pytest.raises(TransientCarrierError):
        await carrier().create_shipment(REQUEST)


def signed(body: bytes, secret: str = WEBHOOK_SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"x-hmac-signature": f"hmac-sha256-hex={digest}"}


def test_a_tracker_updated_event_is_read_as_a_tracking_update() -> None:
    body = (RECORDED / "event_tracker_updated.json").read_bytes()

    event = carrier().parse_webhook(signed(body), body)

    assert event is not None
    assert event.event_id == "evt_3f2e1d0c9b8a47f6a5e4d3c2b1a09f8e"
    assert event.event_type == "tracker.updated"
    assert (event.tracking_number, event.status) == ("9400100208271112573426", "in_transit")
    assert event.at.isoformat() == "2026-12-02T09:14:00+00:00"  # the latest tracking detail
    assert event.detail == "arrived_at_facility"


def test_a_delivered_tracker_is_read() -> None:
    body = (RECORDED / "event_tracker_delivered.json").read_bytes()
    event = carrier().parse_webhook(signed(body), body)
    assert event is not None and event.status == "delivered"


@pytest.mark.parametrize(
    "headers",
    [{}, {"x-hmac-signature": "hmac-sha256-hex=00"}],
    ids=["missing", "wrong"],
)
def test_an_unsigned_or_badly_signed_event_is_rejected(headers: dict[str, str]) -> None:
    body = (RECORDED / "event_tracker_updated.json").read_bytes()
    with pytest.raises(WebhookRejected):
        carrier().parse_webhook(headers, body)


def test_an_event_signed_with_another_secret_is_rejected() -> None:
    body = (RECORDED / "event_tracker_updated.json").read_bytes()
    with pytest.raises(WebhookRejected):
        carrier().parse_webhook(signed(body, "another"), body)


def test_other_events_are_not_tracking_updates() -> None:
    event = recorded("event_tracker_updated.json")
    event["description"] = "batch.updated"
    body = json.dumps(event).encode()
    assert carrier().parse_webhook(signed(body), body) is None


def test_the_key_and_secret_are_never_in_the_carriers_repr() -> None:
    shown = repr(carrier()) + str(carrier())
    assert API_KEY not in shown and WEBHOOK_SECRET not in shown
