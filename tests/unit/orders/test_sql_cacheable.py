"""The statements orders' repositories rewrote for SQLAlchemy's statement cache are cacheable and
given exactly their parameters (no database: a recording session)."""

from datetime import UTC, datetime
from typing import cast

import pytest

from libs.events.common import Money, PricedLine
from libs.kit.db import DbSession
from services.orders import db
from services.orders.db import Carts, Orders, Shipments
from services.orders.domain import CartLine, Order, OrderStatus, PendingOrder
from tests.support.statements import RecordingSession, assert_cacheable

DEADLINE = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def eur(amount: int) -> Money:
    return Money(amount=amount, currency="EUR")


async def test_placing_claims_the_key_and_writes_order_and_history_in_one_statement() -> None:
    session = RecordingSession()
    order = PendingOrder(
        id="o-1",
        customer_id="c-1",
        region="FR",
        shipping_address={"city": "Paris"},
        email=None,
        lines=(
            PricedLine(
                sku="MUG-1",
                quantity=1,
                unit_price=eur(100),
                discount=eur(0),
                tax=eur(0),
                total=eur(100),
            ),
        ),
        subtotal=eur(100),
        discount=eur(0),
        tax=eur(0),
        total=eur(100),
        quote_id=None,
        reservation_deadline=DEADLINE,
        correlation_id="req-1",
    )

    placed = await Orders(cast(DbSession, session)).add(order, "k-1", "h")

    assert placed is None  # the recording session returns no row: the key was taken
    [sent] = session.sent
    assert sent.statement is db.PLACE_ORDER
    assert_cacheable(sent)


@pytest.mark.parametrize("tracking", [None, {"carrier": "UPS"}], ids=["no-tracking", "tracking"])
async def test_a_status_change_writes_order_and_history_in_one_statement(
    tracking: dict[str, str] | None,
) -> None:
    session = RecordingSession()
    state = Order(status=OrderStatus.SHIPPED, reservation_deadline=DEADLINE)

    await Orders(cast(DbSession, session)).save_status_change("o-1", state, tracking)

    [sent] = session.sent
    assert sent.statement is db.SAVE_STATUS_CHANGE
    assert_cacheable(sent)


# --- carts (issue 12) ---------------------------------------------------------------------------


async def test_a_cart_line_is_upserted_in_one_cacheable_statement() -> None:
    session = RecordingSession()
    line = CartLine("MUG-1", 2, eur(1250))

    await Carts(cast(DbSession, session)).set_line("cart-1", line)

    [sent] = session.sent
    assert sent.statement is db.SET_CART_LINE
    assert_cacheable(sent)


async def test_the_abandonment_sweep_marks_carts_in_one_cacheable_statement() -> None:
    session = RecordingSession()

    found = await Carts(cast(DbSession, session)).mark_abandoned(DEADLINE, DEADLINE, 50)

    assert found == []  # the recording session returns no row: nothing was due
    [sent] = session.sent
    assert sent.statement is db.MARK_ABANDONED
    assert_cacheable(sent)


async def test_a_shipment_intent_is_written_in_one_cacheable_statement() -> None:
    session = RecordingSession()

    await Shipments(cast(DbSession, session)).add_intent("shp-1", "order-1", automatic=True)

    [sent] = session.sent
    assert sent.statement is db.ADD_SHIPMENT
    assert_cacheable(sent)
