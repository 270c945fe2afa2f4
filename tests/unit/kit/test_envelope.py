"""The CloudEvents envelope carries what downstream subscribers rely on."""

import json

from libs.events.envelope import CloudEvent, new_event
from libs.events.orders import OrderRejected


def test_new_event_fills_the_contract_attributes() -> None:
    event = new_event(
        service="orders",
        data=OrderRejected(order_id="o1", customer_id="c1", reason="out_of_stock"),
        subject="o1",
        correlation_id="req-1",
        causation_id="evt-0",
    )
    wire = json.loads(event.to_json())
    assert wire["specversion"] == "1.0"
    assert wire["source"] == "backroom/orders"
    assert wire["type"] == "OrderRejected"
    assert wire["subject"] == "o1"
    assert wire["time"].endswith("Z") or wire["time"].endswith("+00:00")
    assert wire["datacontenttype"] == "application/json"
    assert wire["dataversion"] == "1"
    assert (wire["correlationid"], wire["causationid"]) == ("req-1", "evt-0")
    assert wire["data"]["reason"] == "out_of_stock"
    assert CloudEvent.from_json(event.to_json()) == event


def test_events_without_a_correlation_start_their_own() -> None:
    event = new_event(
        service="x", data=OrderRejected(order_id="o", customer_id="c", reason="r"), subject="o"
    )
    assert event.correlationid == event.id


def test_unknown_attributes_are_kept_for_forward_compatibility() -> None:
    raw = new_event(
        service="x", data=OrderRejected(order_id="o", customer_id="c", reason="r"), subject="o"
    )
    wire = json.loads(raw.to_json()) | {"sequence": "42"}
    assert CloudEvent.model_validate(wire).model_extra == {"sequence": "42"}
