"""Typed dispatch: handlers are registered by event model, the registry decides the topics, and
event data is validated once by the kit (without ever quoting what it refused)."""

import pytest
from aiokafka import ConsumerRecord
from pydantic import BaseModel, ValidationError

from libs.events import topics
from libs.events.common import Money
from libs.events.envelope import new_event
from libs.events.inventory import StockReserved
from libs.events.orders import OrderPlaced, PaymentInstructionIssued
from libs.kit.inbox import EventContext, EventProcessor, InvalidEventData, UnknownEventType


def processor() -> EventProcessor:
    return EventProcessor("test", db=None, producer=None)  # type: ignore[arg-type]


async def ignore(_: BaseModel, __: EventContext) -> None:
    return None


def test_subscriptions_are_the_topics_of_the_handled_types() -> None:
    p = processor()
    p.on(StockReserved)(ignore)
    p.on(OrderPlaced)(ignore)
    p.on(PaymentInstructionIssued)(ignore)
    assert p.topics == sorted([topics.INVENTORY, topics.ORDERS, topics.PAYMENT_INSTRUCTIONS])


def test_a_model_that_is_no_event_type_fails_at_registration() -> None:
    class StockReservd(BaseModel):  # a typo'd look-alike of a real event
        order_id: str

    with pytest.raises(UnknownEventType):
        processor().on(StockReservd)


def test_a_look_alike_under_a_real_name_is_refused_too() -> None:
    class StockReserved(BaseModel):
        order_id: str

    with pytest.raises(UnknownEventType):
        processor().on(StockReserved)


def test_a_registered_type_cannot_be_read_from_another_topic() -> None:
    with pytest.raises(UnknownEventType):
        processor().on(StockReserved, topic=topics.ORDERS)


def test_a_type_outside_the_registry_needs_its_topic_named() -> None:
    class Ping(BaseModel):
        n: int

    p = processor()
    p.on(Ping, topic="test.ping")(ignore)
    assert p.topics == ["test.ping"]


def test_one_handler_per_type() -> None:
    p = processor()
    p.on(StockReserved)(ignore)
    with pytest.raises(ValueError, match="already has a handler"):
        p.on(StockReserved)


def test_invalid_data_is_refused_naming_fields_but_never_quoting_values() -> None:
    secret = "tok_visa_secret_value"
    instruction = PaymentInstructionIssued(
        order_id="o-1", customer_id="c", amount=Money(amount=1, currency="EUR"), token=secret
    )
    event = new_event(service="orders", data=instruction, subject="o-1")
    # pydantic's own message for a missing field quotes the whole input, token included.
    event.data = {"customer_id": "c", "amount": "lots", "token": secret}
    with pytest.raises(ValidationError) as raw:
        PaymentInstructionIssued.model_validate(event.data)
    assert secret in str(raw.value)
    p = processor()
    p.on(PaymentInstructionIssued)(ignore)

    with pytest.raises(InvalidEventData) as caught:
        p.routes["PaymentInstructionIssued"].parse(event)

    assert "order_id" in str(caught.value) and "amount" in str(caught.value)
    assert secret not in repr(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


async def test_a_type_without_a_handler_is_ignored_on_its_header_without_parsing() -> None:
    p = processor()
    p.on(StockReserved)(ignore)
    # Not even JSON: the header alone says no handler wants it (no database, no dead letter).
    record: ConsumerRecord[bytes, bytes] = ConsumerRecord(
        topic=topics.INVENTORY,
        partition=0,
        offset=7,
        timestamp=0,
        timestamp_type=0,
        key=b"SKU-1",
        value=b"not json",
        checksum=None,
        serialized_key_size=5,
        serialized_value_size=8,
        headers=[("ce_type", b"StockLevelChanged")],
    )
    assert await p.process_record(record) == "ignored"
    assert await p.process_batch([record, record]) == ["ignored", "ignored"]
