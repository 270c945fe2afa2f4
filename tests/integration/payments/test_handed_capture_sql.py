"""A capture claimed by the event's own transaction, on the real PostgreSQL (issue 10): the row
is written leased (no other claim takes it while the lease holds), the handed intent is carried
out by this process's charger without a claim, and the row ends captured, lease cleared.

Runs before the package's service starts (its charger would claim these rows too)."""

import uuid

import pytest
from sqlalchemy import select

from libs.events.common import Money
from libs.kit.db import Database
from services.payments import service
from services.payments.db import payment_orders, payments
from services.payments.domain import Trace
from services.payments.service import Charger
from tests.integration.payments.conftest import own_charger


@pytest.fixture
def charger(db: Database) -> Charger:
    return own_charger(db)


async def test_a_handed_capture_is_leased_in_the_event_transaction_and_charged_once(
    db: Database, charger: Charger
) -> None:
    order_id = str(uuid.uuid4())
    trace = Trace("req-handed", f"evt-{order_id}")
    async with charger.uow() as tx:
        await service.record_instruction(
            tx,
            order_id=order_id,
            customer_id="cust-handed",
            amount=Money(amount=2100, currency="EUR"),
            token="tok_visa",
            trace=trace,
            wake=lambda: None,
            charger=charger,
        )
        await service.record_stock_reserved(
            tx, order_id, trace=trace, wake=lambda: None, charger=charger
        )
    async with db.transaction() as session:
        leased = (
            await session.execute(
                select(
                    payment_orders.c.capture_status,
                    payment_orders.c.attempts,
                    payment_orders.c.lease_until > payment_orders.c.updated_at,
                    payment_orders.c.causation_id,
                ).where(payment_orders.c.order_id == order_id)
            )
        ).one()
    assert tuple(leased) == ("pending", 1, True, f"evt-{order_id}")
    # Another claimer finds nothing of it to take while the lease holds.
    async with charger.uow() as tx:
        claimed = await tx.store.orders.claim_due(100, 30.0)
    assert order_id not in {i.order_id for i in claimed}

    await charger.step()
    await charger.idle()
    async with db.transaction() as session:
        order = (
            await session.execute(
                select(payment_orders).where(payment_orders.c.order_id == order_id)
            )
        ).one()
        [payment] = (
            await session.execute(select(payments).where(payments.c.order_id == order_id))
        ).all()
    assert (order.capture_status, order.lease_until, order.token) == ("captured", None, None)
    assert (payment.status, payment.amount) == ("captured", 2100)
