"""Returns on the real PostgreSQL and Kafka (issue 12): concurrent requests never return more
than was ordered (the order's row lock), the window is measured from the `delivered` history
entry, and StockReturned plus PaymentRefunded (with the return's id) complete a return once."""

import asyncio
import uuid
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from libs.events import topics
from libs.events.common import Line
from libs.events.inventory import StockReturned
from libs.events.payments import PaymentRefunded
from tests.integration.orders.conftest import Priced
from tests.integration.orders.test_orders import confirmed, customer, eur, fact, read
from tests.support.auth import admin, bearer
from tests.support.eventually import eventually
from tests.support.kafka import TopicTail, of_type


async def delivered(client: httpx.AsyncClient, p: Priced, who: str) -> dict[str, Any]:
    order = await confirmed(client, p, who)
    shipped = await client.post(
        f"/orders/{order['id']}/ship",
        json={"carrier": "UPS", "tracking_number": "1Z"},
        headers=admin(),
    )
    assert shipped.status_code == 200, shipped.text
    done = await client.post(f"/orders/{order['id']}/deliver", headers=admin())
    assert done.status_code == 200, done.text
    return dict(done.json())


async def ask(
    client: httpx.AsyncClient, order_id: str, who: str, lines: list[tuple[str, int]], **headers: str
) -> httpx.Response:
    return await client.post(
        f"/orders/{order_id}/returns",
        json={"lines": [{"sku": s, "quantity": q, "reason": "other"} for s, q in lines]},
        headers=bearer(who, "customer") | headers,
    )


async def test_concurrent_returns_never_exceed_the_ordered_quantity(
    client: httpx.AsyncClient, pricing: Priced
) -> None:
    who = customer()
    order = await delivered(client, pricing, who)  # 2 mugs, 1 tea
    answers = await asyncio.gather(
        *(ask(client, order["id"], who, [(pricing.mug, 1)]) for _ in range(6))
    )
    codes = sorted(a.status_code for a in answers)
    assert codes == [201, 201, 422, 422, 422, 422], [a.text for a in answers]
    shown = await read(client, order["id"])
    assert sum(r["lines"][0]["quantity"] for r in shown["returns"]) == 2
    assert shown["status"] == "delivered"


async def test_the_window_is_counted_from_the_delivery_entry(
    app: FastAPI, client: httpx.AsyncClient, pricing: Priced
) -> None:
    who = customer()
    order = await delivered(client, pricing, who)
    async with app.state.runtime.db.transaction() as session:
        await session.execute(
            text(
                "UPDATE order_history SET at = at - interval '31 days'"
                " WHERE order_id = :id AND status = 'delivered'"
            ),
            {"id": order["id"]},
        )
    late = await ask(client, order["id"], who, [(pricing.tea, 1)])
    assert late.status_code == 409, late.text
    assert "window" in late.json()["detail"]


async def test_an_idempotency_key_replays_the_return(
    client: httpx.AsyncClient, pricing: Priced
) -> None:
    who = customer()
    order = await delivered(client, pricing, who)
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = await ask(client, order["id"], who, [(pricing.tea, 1)], **key)
    again = await ask(client, order["id"], who, [(pricing.tea, 1)], **key)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    other = await ask(client, order["id"], who, [(pricing.mug, 1)], **key)
    assert other.status_code == 409, other.text


async def test_stock_and_refund_complete_the_return_once(
    client: httpx.AsyncClient, pricing: Priced
) -> None:
    who = customer()
    order = await delivered(client, pricing, who)
    order_id = order["id"]
    asked = await ask(client, order_id, who, [(pricing.mug, 2)])
    return_id = asked.json()["id"]
    async with TopicTail(topics.ORDERS) as tail:
        received = await client.post(
            f"/orders/{order_id}/returns/{return_id}/receive",
            json={
                "lines": [
                    {"sku": pricing.mug, "quantity": 1, "condition": "resellable"},
                    {"sku": pricing.mug, "quantity": 1, "condition": "damaged"},
                ]
            },
            headers=admin(),
        )
        assert received.status_code == 200, received.text
        assert received.json()["refund"] == {"amount": 3000, "currency": "EUR"}

        [announced] = await tail.wait_for(of_type("ReturnReceived", order_id))
        assert announced["data"]["refund"]["amount"] == 3000
        stock = StockReturned(
            order_id=order_id,
            return_id=return_id,
            restocked=[Line(sku=pricing.mug, quantity=1)],
            written_off=[Line(sku=pricing.mug, quantity=1)],
        )
        refund = PaymentRefunded(
            order_id=order_id,
            payment_id=f"pay-{order_id}",
            amount=eur(3000),
            provider_ref="re_1",
            reason="return",
            fully_refunded=False,
            return_id=return_id,
        )
        for _ in range(2):  # each fact twice (distinct events): the return completes once
            await fact("inventory", topics.INVENTORY, stock, order_id)
            await fact("payments", topics.PAYMENTS, refund, order_id)

        async def completed() -> dict[str, Any] | None:
            current = await read(client, order_id)
            return current if current["returns"][0]["status"] == "completed" else None

        final = await eventually(completed, timeout=30, what="return completed")
        [done] = await tail.wait_for(of_type("ReturnCompleted", order_id))
        await asyncio.sleep(1)
        await tail.poll()
        assert len(tail.events(of_type("ReturnCompleted", order_id))) == 1
    assert done["data"]["refund"] == {"amount": 3000, "currency": "EUR"}
    assert final["status"] == "delivered"
    assert final["returns"][0]["completed_at"]
