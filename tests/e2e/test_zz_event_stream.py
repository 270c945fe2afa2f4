"""What downstream subscribers see: every contract event type, as CloudEvents keyed by aggregate id.

Runs after the checkout flows (file order), which produced most of the stream."""

import uuid

import httpx

from libs.events import topics
from tests.e2e.shop import new_product, place_order, settled
from tests.support.auth import admin
from tests.support.kafka import TopicTail

CONTRACT_TYPES = {
    "ProductCreated",
    "ProductUpdated",
    "PriceChanged",
    "StockLevelChanged",
    "StockLow",
    "StockReserved",
    "StockReservationFailed",
    "StockCommitted",
    "StockReleased",
    "OrderPlaced",
    "OrderConfirmed",
    "OrderRejected",
    "OrderCancellationRequested",
    "OrderCancelled",
    "OrderShipped",
    # Issue 12: every confirmation's shipment gets its label.
    "ShipmentCreated",
    "PaymentCaptured",
    "PaymentFailed",
    "PaymentRefunded",
    "NotificationSent",
    # Issue 12 returns (tests/e2e/test_returns.py runs before this file).
    "ReturnRequested",
    "ReturnReceived",
    "ReturnCompleted",
    "StockReturned",
}
OWNER = {
    "backroom/catalog": topics.CATALOG,
    "backroom/pricing": topics.PRICING,
    "backroom/inventory": topics.INVENTORY,
    "backroom/orders": topics.ORDERS,
    "backroom/payments": topics.PAYMENTS,
    "backroom/notifications": topics.NOTIFICATIONS,
}


async def test_every_contract_event_is_published_as_a_keyed_cloudevent(
    gateway: httpx.AsyncClient, event_stream: TopicTail
) -> None:
    # Fill in what the checkout flows do not: a shipment, a product update, a low-stock crossing.
    sku = await new_product(gateway, stock=2, reorder_point=1)
    request_id = f"e2e-{uuid.uuid4().hex}"
    placed = await place_order(gateway, "stream-stella", [(sku, 1)], request_id=request_id)
    assert placed.headers["x-request-id"] == request_id
    order_id = placed.json()["id"]
    assert (await settled(gateway, order_id))["status"] == "confirmed"
    shipped = await gateway.post(
        f"/orders/{order_id}/ship",
        json={"carrier": "DHL", "tracking_number": "JD0123456789"},
        headers=admin(),
    )
    assert shipped.status_code in (200, 202), shipped.text
    patched = await gateway.patch(
        f"/catalog/products/{sku}", json={"name": "Renamed"}, headers=admin()
    )
    assert patched.status_code == 200

    await event_stream.wait_for(
        lambda e: e.get("type") == "OrderShipped" and e["subject"] == order_id
    )
    await event_stream.wait_for(lambda e: e.get("type") == "ProductUpdated" and e["subject"] == sku)
    await event_stream.wait_for(lambda e: e.get("type") == "StockLow" and e["subject"] == sku)
    await event_stream.wait_for(
        lambda e: e.get("type") == "NotificationSent" and e["data"].get("order_id") == order_id
    )
    events = event_stream.events()
    missing = CONTRACT_TYPES - {e["type"] for e in events}
    assert not missing, f"never published during the e2e run: {sorted(missing)}"

    for event in events:
        assert event["specversion"] == "1.0"
        for attribute in (
            "id",
            "source",
            "type",
            "subject",
            "time",
            "datacontenttype",
            "correlationid",
            "data",
        ):
            assert event.get(attribute) not in (None, ""), (attribute, event)
        assert "dataschema" in event or "dataversion" in event
        assert event["_key"] == event["subject"], f"key must be the aggregate id: {event}"
        assert OWNER[event["source"]] == event["_topic"], event
        assert event["_headers"].get("ce_type") == event["type"]

    # One request's id follows its order through every service's events.
    caused = [e for e in events if e["correlationid"] == request_id]
    assert {"OrderPlaced", "StockReserved", "PaymentCaptured", "OrderConfirmed"} <= {
        e["type"] for e in caused
    }
    # No payment token ever reaches a public topic.
    assert not [e for e in events if "tok_" in str(e["data"])]
