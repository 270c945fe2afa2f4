"""Returns taken back by the running inventory service (issue 12): ReturnReceived from Kafka
restocks the resellable units, writes the damaged ones off (movements on the real table), and
answers StockReturned once, however often the return is announced."""

import asyncio
import uuid

from sqlalchemy import select

from libs.events import topics
from libs.events.common import Money
from libs.events.orders import ReceivedLine, ReturnReceived
from services.inventory.db import stock_movements
from tests.integration.inventory.conftest import Inventory, new_order_id, new_sku, send
from tests.integration.inventory.test_reservations import counts
from tests.support.kafka import TopicTail, of_type


def received(order_id: str, return_id: str, *lines: tuple[str, int, str]) -> ReturnReceived:
    return ReturnReceived(
        order_id=order_id,
        return_id=return_id,
        customer_id="cust-inventory-tests",
        lines=[ReceivedLine(sku=s, quantity=q, condition=c) for s, q, c in lines],
        refund=Money(amount=1000, currency="EUR"),
    )


async def test_a_received_return_restocks_and_writes_off_once(inventory: Inventory) -> None:
    sku, order_id, return_id = new_sku(), new_order_id(), f"ret-{uuid.uuid4().hex}"
    await inventory.set_stock(sku, 3)
    event = received(order_id, return_id, (sku, 1, "resellable"), (sku, 1, "damaged"))

    async with TopicTail(topics.INVENTORY) as tail:
        await send(event, order_id)
        await send(event, order_id)  # announced again (a new event id): taken back once
        [returned] = await tail.wait_for(of_type("StockReturned", order_id))
        levels = await tail.wait_for(
            lambda e: e["type"] == "StockLevelChanged"
            and e["data"]["reason"] == "return_restock"
            and e["subject"] == sku
        )
        await asyncio.sleep(1.5)
        await tail.poll()
        assert len(tail.events(of_type("StockReturned", order_id))) == 1

    assert [e["data"]["on_hand"] for e in levels] == [4]
    assert returned["_key"] == order_id
    assert returned["data"]["restocked"] == [{"sku": sku, "quantity": 1}]
    assert returned["data"]["written_off"] == [{"sku": sku, "quantity": 1}]
    assert counts(await inventory.item(sku)) == (4, 0, 4)
    async with inventory.runtime.db.transaction() as session:
        rows = await session.execute(
            select(stock_movements)
            .where(stock_movements.c.sku == sku)
            .order_by(stock_movements.c.id)
        )
        audit = [(r.delta_on_hand, r.on_hand, r.reason, r.order_id) for r in rows]
    assert audit == [
        (3, 3, "set", None),
        (1, 4, "return_restock", order_id),
        (0, 4, "return_write_off", order_id),
    ]
