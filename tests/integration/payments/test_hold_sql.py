"""Capture policy on_shipment on the real PostgreSQL (issue 11): the hold's statements (authorized
with its reference, captured when the order ships, voided when it closes first), driven through
the use cases and a charger of this test's own.

Runs before the package's service starts (its charger would claim these rows too)."""

import uuid
from typing import Any

import pytest
from sqlalchemy import select

from libs.events.common import Money
from libs.kit.db import Database
from services.payments import service
from services.payments.db import Store, payment_orders, payments
from services.payments.domain import Trace
from services.payments.service import Charger
from tests.integration.payments.conftest import own_charger


@pytest.fixture
def charger(db: Database) -> Charger:
    return own_charger(db, "on_shipment")


async def _run(charger: Charger) -> None:
    while await charger.step():
        pass
    await charger.idle()


async def _authorized(charger: Charger) -> str:
    order_id = str(uuid.uuid4())
    trace = Trace("req-hold", f"evt-{order_id}")
    async with charger.uow() as tx:
        await service.record_instruction(
            tx,
            order_id=order_id,
            customer_id="cust-hold",
            amount=Money(amount=1800, currency="EUR"),
            token="tok_visa",
            trace=trace,
            wake=lambda: None,
        )
        await service.record_stock_reserved(tx, order_id, trace=trace, wake=lambda: None)
    await _run(charger)
    return order_id


async def _rows(db: Database, order_id: str) -> tuple[Any, list[Any]]:
    async with db.transaction() as session:
        order = (
            await session.execute(
                select(payment_orders).where(payment_orders.c.order_id == order_id)
            )
        ).one()
        moves = (
            await session.execute(select(payments).where(payments.c.order_id == order_id))
        ).all()
    return order, list(moves)


async def test_a_hold_is_captured_when_the_order_ships(db: Database, charger: Charger) -> None:
    order_id = await _authorized(charger)
    order, [payment] = await _rows(db, order_id)
    assert (order.capture_status, order.hold_ref) == ("authorized", payment.provider_ref)
    assert order.hold_ref.startswith("auth_sbx_") and payment.status == "authorized"

    async with charger.uow() as tx:
        await service.record_shipped(tx, order_id, trace=Trace(None, None), wake=lambda: None)
    await _run(charger)

    order, [captured] = await _rows(db, order_id)
    assert (order.capture_status, captured.status, captured.id) == (
        "captured",
        "captured",
        payment.id,
    )
    assert (
        captured.provider_ref.startswith("ch_sbx_") and order.capture_ref == captured.provider_ref
    )


async def test_a_hold_is_voided_when_the_order_closes_before_shipping(
    db: Database, charger: Charger
) -> None:
    order_id = await _authorized(charger)
    async with charger.uow() as tx:
        await service.close_order(
            tx,
            order_id=order_id,
            customer_id="cust-hold",
            reason="customer_request",
            cancellation=True,
            trace=Trace(None, None),
            wake=lambda: None,
        )
    await _run(charger)

    order, [payment] = await _rows(db, order_id)
    assert (order.capture_status, order.refund_status, payment.status) == (
        "voided",
        "refunded",
        "voided",
    )


async def test_a_hold_past_its_lifetime_is_reported_once(db: Database, charger: Charger) -> None:
    order_id = await _authorized(charger)
    await service.lapse_holds(charger.uow, lifetime_s=3600)  # too young to lapse
    order, _ = await _rows(db, order_id)
    assert not order.hold_lapsed and order.authorized_at is not None

    await service.lapse_holds(charger.uow, lifetime_s=0.0)
    order, [payment] = await _rows(db, order_id)
    assert order.hold_lapsed and payment.status == "authorized"  # released by the cancellation
    async with db.transaction() as session:
        lapsed_again = await Store(session).orders.lapse_holds(0.0, 1000)
    assert order_id not in {o.order_id for o in lapsed_again}
