"""Shipments with fakes (issue 12): the confirmation records the shipment, the label worker buys
it outside any transaction (transient errors retried, permanent ones recorded), and carrier
tracking updates move the shipment and the order; the sandbox's label is a real PDF and its
webhooks must be signed."""

import io
import json
import time
from datetime import UTC, datetime

import pydantic
import pytest
from pypdf import PdfReader

from libs.events.orders import (
    OrderDelivered,
    OrderShipped,
    ShipmentCreated,
    ShipmentUpdated,
)
from libs.kit.errors import Conflict
from libs.kit.retry import RetryPolicy
from services.orders import domain, service
from services.orders.adapters import (
    PermanentCarrierError,
    PurchasedLabel,
    SandboxCarrier,
    ShipmentRequest,
    TransientCarrierError,
)
from services.orders.domain import OrderStatus, ShipmentStatus, TrackingEvent, WebhookRejected
from services.orders.settings import OrdersSettings
from tests.unit.orders.fakes import ALICE, OPERATOR, FakeCarrier, World

AT = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
NO_WAIT = RetryPolicy(attempts=3, initial_s=0.0, max_s=0.0)


def worker(world: World, carrier: FakeCarrier, retry: RetryPolicy = NO_WAIT) -> service.LabelWorker:
    return service.LabelWorker(world.uow, carrier, retry, lease_s=30, batch=10, clock=world.clock)


def label(number: str = "TRK1") -> PurchasedLabel:
    return PurchasedLabel(
        tracking_number=number,
        carrier_ref="ref-1",
        label_pdf=b"%PDF-1",
        tracking_url=f"https://track.example/{number}",
    )


def update(status: domain.TrackingStatus, number: str, event_id: str = "evt-1") -> TrackingEvent:
    return TrackingEvent(event_id, "tracker.updated", number, status, AT, detail=f"now {status}")


async def labelled(world: World, carrier: FakeCarrier | None = None) -> tuple[str, str]:
    """A confirmed order whose label was bought: its id and tracking number."""
    carrier = carrier or FakeCarrier()
    order_id = await world.confirmed()
    await worker(world, carrier).step()
    [shipment] = (await world.view(order_id)).shipments
    assert shipment.tracking_number is not None
    return order_id, shipment.tracking_number


# --- intent, call, outcome -------------------------------------------------------------------


async def test_the_parcel_weighs_what_pricing_weighed_the_lines() -> None:
    world = World()
    world.pricing.weights = {"MUG-1": 350, "TEA-9": 120}
    await world.confirmed()
    carrier = FakeCarrier(answers=[label("TRK-7")])
    await worker(world, carrier).step()
    [request] = carrier.calls
    assert request.weight_grams == 2 * 350 + 120


async def test_a_confirmed_order_gets_one_pending_shipment_and_wakes_the_label_worker() -> None:
    world = World()
    order_id = await world.placed()
    await service.stock_reserved(world.tx(), order_id)
    tx = world.tx()
    assert await service.payment_captured(tx, order_id, world.clock)
    # A redelivered capture changes nothing: still one shipment.
    await service.payment_captured(world.tx(), order_id, world.clock)

    [shipment] = (await world.view(order_id)).shipments
    assert shipment.status is ShipmentStatus.PENDING
    assert shipment.tracking_number is None


async def test_the_label_worker_buys_the_label_outside_any_transaction_and_records_it() -> None:
    world = World()
    order_id = await world.confirmed()
    open_during_call: list[int] = []
    carrier = FakeCarrier(answers=[label("TRK-42")])
    original = carrier.create_shipment

    async def watched(request: ShipmentRequest) -> PurchasedLabel:
        open_during_call.append(world.uow.open)
        return await original(request)

    carrier.create_shipment = watched  # type: ignore[method-assign]

    await worker(world, carrier).step()

    [shipment] = (await world.view(order_id)).shipments
    assert open_during_call == [0]
    [request] = carrier.calls
    assert request.idempotency_key == shipment.id  # the shipment id makes a repeat the same buy
    assert request.order_id == order_id
    assert request.address == {"name": "Ada Lovelace", "city": "Paris"}
    assert request.weight_grams == 3 * 500  # two mugs and a tea, 500 g a unit
    assert shipment.status is ShipmentStatus.LABEL_CREATED
    assert shipment.tracking_number == "TRK-42"
    assert shipment.carrier == "fake"
    assert shipment.label_url == f"/orders/{order_id}/shipments/{shipment.id}/label"
    [created] = world.events.of_type(ShipmentCreated)
    assert created == ShipmentCreated(
        order_id=order_id,
        shipment_id=shipment.id,
        carrier="fake",
        tracking_number="TRK-42",
        label_url=shipment.label_url,
        tracking_url="https://track.example/TRK-42",
    )
    # The label PDF is served to the owner, not to another customer.
    tx = world.tx()
    assert await service.shipment_label(tx, ALICE, order_id, shipment.id) == b"%PDF-1"
    # Nothing is left to buy: a second pass calls no carrier.
    await worker(world, carrier).step()
    assert len(carrier.calls) == 1


async def test_transient_carrier_errors_are_retried_with_the_same_key() -> None:
    world = World()
    order_id = await world.confirmed()
    carrier = FakeCarrier(
        answers=[TransientCarrierError("503"), TransientCarrierError("timeout"), label()]
    )

    await worker(world, carrier).step()

    assert len(carrier.calls) == 3
    assert len({c.idempotency_key for c in carrier.calls}) == 1
    [shipment] = (await world.view(order_id)).shipments
    assert (shipment.status, shipment.tracking_number) == (ShipmentStatus.LABEL_CREATED, "TRK1")


async def test_a_carrier_still_down_after_the_retries_leaves_the_shipment_for_the_next_lease() -> (
    None
):
    world = World()
    order_id = await world.confirmed()
    carrier = FakeCarrier(answers=[TransientCarrierError("down")] * 3)

    await worker(world, carrier).step()
    [pending] = (await world.view(order_id)).shipments
    assert pending.status is ShipmentStatus.PENDING
    assert not world.events.of_type(ShipmentCreated)
    await worker(world, carrier).step()  # its lease still holds: nobody takes it
    assert len(carrier.calls) == 3

    world.store.shipments.expire_leases()
    await worker(world, carrier).step()

    [bought] = (await world.view(order_id)).shipments
    assert bought.status is ShipmentStatus.LABEL_CREATED
    assert {c.idempotency_key for c in carrier.calls} == {pending.id}
    assert len(world.events.of_type(ShipmentCreated)) == 1


async def test_a_permanent_refusal_fails_the_shipment_with_the_reason() -> None:
    world = World()
    order_id = await world.confirmed()
    carrier = FakeCarrier(answers=[PermanentCarrierError("address not deliverable")])

    await worker(world, carrier).step()

    [shipment] = (await world.view(order_id)).shipments
    assert shipment.status is ShipmentStatus.FAILED
    assert shipment.failure_reason == "address not deliverable"
    assert len(carrier.calls) == 1  # a refusal is not retried
    [failed] = world.events.of_type(ShipmentUpdated)
    assert isinstance(failed, ShipmentUpdated)
    assert (failed.status, failed.detail) == ("failed", "address not deliverable")
    assert (await world.view(order_id)).status is OrderStatus.CONFIRMED

    # An operator asks for a new one; it is bought.
    woken: list[bool] = []
    tx = world.tx()
    await service.request_shipment(tx, OPERATOR, order_id, lambda: woken.append(True))
    tx.commit()
    assert woken == [True]
    await worker(world, carrier).step()
    statuses = [s.status for s in (await world.view(order_id)).shipments]
    assert statuses == [ShipmentStatus.FAILED, ShipmentStatus.LABEL_CREATED]


async def test_the_pending_shipment_of_an_order_being_cancelled_is_not_bought() -> None:
    world = World()
    order_id = await world.confirmed()
    await service.request_cancellation(world.tx(), ALICE, order_id, "customer_request")
    carrier = FakeCarrier()

    await worker(world, carrier).step()

    assert carrier.calls == []
    [shipment] = (await world.view(order_id)).shipments
    assert shipment.status is ShipmentStatus.CANCELLED
    assert not world.events.of_type(ShipmentCreated)


async def test_an_operator_cannot_ask_for_a_shipment_of_a_pending_order() -> None:
    world = World()
    order_id = await world.placed()
    with pytest.raises(Conflict):
        await service.request_shipment(world.tx(), OPERATOR, order_id, lambda: None)


# --- tracking updates ------------------------------------------------------------------------


async def test_in_transit_ships_the_order_with_the_carriers_tracking() -> None:
    world = World()
    order_id, number = await labelled(world)

    outcome = await service.apply_tracking(world.tx(), "fake", update("in_transit", number))

    assert outcome == "in_transit"
    view = await world.view(order_id)
    assert view.status is OrderStatus.SHIPPED
    assert view.tracking is not None
    assert view.tracking["carrier"] == "fake"
    assert view.tracking["tracking_number"] == number
    assert view.tracking["tracking_url"].startswith("https://track.example/")
    [shipped] = world.events.of_type(OrderShipped)
    assert isinstance(shipped, OrderShipped)
    assert shipped.tracking["tracking_number"] == number
    [updated] = world.events.of_type(ShipmentUpdated)
    assert isinstance(updated, ShipmentUpdated)
    assert (updated.status, updated.tracking_number, updated.at) == ("in_transit", number, AT)
    assert view.shipments[0].status is ShipmentStatus.IN_TRANSIT


async def test_out_for_delivery_after_in_transit_moves_the_shipment_not_the_order_again() -> None:
    world = World()
    order_id, number = await labelled(world)
    await service.apply_tracking(world.tx(), "fake", update("in_transit", number, "e1"))
    await service.apply_tracking(world.tx(), "fake", update("out_for_delivery", number, "e2"))

    view = await world.view(order_id)
    assert view.status is OrderStatus.SHIPPED
    assert [h.status for h in view.history].count(OrderStatus.SHIPPED) == 1
    assert view.shipments[0].status is ShipmentStatus.OUT_FOR_DELIVERY
    # A late in_transit is stale: nothing changes, no event.
    stale = await service.apply_tracking(world.tx(), "fake", update("in_transit", number, "e3"))
    assert stale == "stale"
    assert len(world.events.of_type(ShipmentUpdated)) == 2


async def test_delivered_for_a_confirmed_order_passes_through_shipped_first() -> None:
    world = World()
    order_id, number = await labelled(world)

    await service.apply_tracking(world.tx(), "fake", update("delivered", number))

    view = await world.view(order_id)
    assert view.status is OrderStatus.DELIVERED
    assert [h.status for h in view.history][-2:] == [OrderStatus.SHIPPED, OrderStatus.DELIVERED]
    moves = [e for e in world.events.emitted if isinstance(e, OrderShipped | OrderDelivered)]
    assert [type(e) for e in moves] == [OrderShipped, OrderDelivered]
    delivered = moves[1]
    assert isinstance(delivered, OrderDelivered) and delivered.email == ALICE.email
    assert view.shipments[0].status is ShipmentStatus.DELIVERED


async def test_a_duplicate_event_changes_nothing() -> None:
    world = World()
    order_id, number = await labelled(world)
    await service.apply_tracking(world.tx(), "fake", update("in_transit", number, "e1"))
    before = (await world.view(order_id), len(world.events.emitted))

    again = await service.apply_tracking(world.tx(), "fake", update("in_transit", number, "e1"))

    assert again == "duplicate"
    assert (await world.view(order_id), len(world.events.emitted)) == before


async def test_an_unknown_tracking_number_is_ignored() -> None:
    world = World()
    order_id, _ = await labelled(world)
    before = len(world.events.emitted)

    outcome = await service.apply_tracking(world.tx(), "fake", update("delivered", "NOPE"))

    assert outcome == "ignored"
    assert len(world.events.emitted) == before
    assert (await world.view(order_id)).status is OrderStatus.CONFIRMED


async def test_another_carriers_number_is_not_ours() -> None:
    world = World()
    _, number = await labelled(world)
    assert await service.apply_tracking(world.tx(), "other", update("delivered", number)) == (
        "ignored"
    )


async def test_a_cancelled_orders_shipment_records_the_update_and_the_order_stays() -> None:
    world = World()
    order_id, number = await labelled(world)
    await service.request_cancellation(world.tx(), ALICE, order_id, "customer_request")

    outcome = await service.apply_tracking(world.tx(), "fake", update("in_transit", number))

    assert outcome == "in_transit"
    view = await world.view(order_id)
    assert view.status is OrderStatus.CONFIRMED and view.cancellation_requested
    assert view.shipments[0].status is ShipmentStatus.IN_TRANSIT
    assert not world.events.of_type(OrderShipped)


@pytest.mark.parametrize(
    ("current", "tracking", "expected"),
    [
        (ShipmentStatus.LABEL_CREATED, "pre_transit", None),
        (ShipmentStatus.LABEL_CREATED, "in_transit", ShipmentStatus.IN_TRANSIT),
        (ShipmentStatus.IN_TRANSIT, "out_for_delivery", ShipmentStatus.OUT_FOR_DELIVERY),
        (ShipmentStatus.OUT_FOR_DELIVERY, "in_transit", None),
        (ShipmentStatus.IN_TRANSIT, "failure", ShipmentStatus.EXCEPTION),
        (ShipmentStatus.EXCEPTION, "in_transit", ShipmentStatus.IN_TRANSIT),
        (ShipmentStatus.IN_TRANSIT, "return_to_sender", ShipmentStatus.RETURNED),
        (ShipmentStatus.DELIVERED, "in_transit", None),
        (ShipmentStatus.PENDING, "in_transit", None),
        (ShipmentStatus.FAILED, "delivered", None),
    ],
)
def test_shipment_status_moves_forward_only(
    current: ShipmentStatus, tracking: str, expected: ShipmentStatus | None
) -> None:
    assert domain.next_shipment_status(current, tracking) is expected


# --- the sandbox carrier ---------------------------------------------------------------------

SECRET = "whsec_unit_test"


def sandbox() -> SandboxCarrier:
    return SandboxCarrier(SECRET, tracking_url="https://track.example/{tracking_number}")


async def test_the_sandbox_label_is_a_pdf_with_the_tracking_number_and_the_address() -> None:
    request = ShipmentRequest(
        idempotency_key="shp-1",
        order_id="ord-1",
        address={"name": "Ada Lovelace", "city": "Paris"},
        lines=(("MUG-1", 2),),
        weight_grams=1000,
    )
    bought = await sandbox().create_shipment(request)
    again = await sandbox().create_shipment(request)

    assert bought.tracking_number.startswith("SBX") and bought.tracking_number[3:].isdigit()
    assert again.tracking_number == bought.tracking_number  # the same key buys the same label
    assert bought.tracking_url == f"https://track.example/{bought.tracking_number}"
    assert bought.label_pdf is not None and bought.label_pdf.startswith(b"%PDF")
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(bought.label_pdf)).pages)
    assert bought.tracking_number in text
    assert "Ada Lovelace" in text and "ord-1" in text


def _body(**fields: object) -> bytes:
    return json.dumps(
        {"id": "evt-9", "type": "tracker.updated", "tracking_number": "SBX1", **fields}
    ).encode()


def test_a_signed_sandbox_webhook_is_read() -> None:
    carrier = sandbox()
    body = _body(status="in_transit", at="2026-12-01T12:00:00Z", detail="left the depot")
    event = carrier.parse_webhook(carrier.sign(body), body)
    assert event == TrackingEvent(
        "evt-9", "tracker.updated", "SBX1", "in_transit", AT, "left the depot"
    )


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"sandbox-signature": "t=1,v1=00"},
        {"sandbox-signature": "v1=abc"},
        {"sandbox-signature": "garbage"},
    ],
    ids=["missing", "wrong", "no-timestamp", "garbage"],
)
def test_an_unsigned_or_badly_signed_webhook_is_rejected(headers: dict[str, str]) -> None:
    with pytest.raises(WebhookRejected):
        sandbox().parse_webhook(headers, _body(status="delivered"))


def test_a_webhook_signed_with_another_secret_or_long_ago_is_rejected() -> None:
    body = _body(status="delivered")
    with pytest.raises(WebhookRejected, match="does not match"):
        sandbox().parse_webhook(SandboxCarrier("other").sign(body), body)
    with pytest.raises(WebhookRejected, match="tolerance"):
        sandbox().parse_webhook(sandbox().sign(body, int(time.time()) - 301), body)
    tampered = _body(status="in_transit")
    with pytest.raises(WebhookRejected):
        sandbox().parse_webhook(sandbox().sign(body), tampered)


def test_a_signed_body_that_is_not_a_tracking_event_is_rejected() -> None:
    body = _body(status="teleported")
    with pytest.raises(WebhookRejected):
        sandbox().parse_webhook(sandbox().sign(body), body)


def test_easypost_without_its_secrets_refuses_to_start_naming_the_setting() -> None:
    with pytest.raises(pydantic.ValidationError, match="BACKROOM_EASYPOST_API_KEY"):
        OrdersSettings(carrier="easypost", pg_password="x")
    with pytest.raises(pydantic.ValidationError, match="BACKROOM_EASYPOST_WEBHOOK_SECRET"):
        OrdersSettings(carrier="easypost", easypost_api_key="k", pg_password="x")
