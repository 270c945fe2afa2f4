"""Orders on the real PostgreSQL and Kafka, priced by the real pricing service: placing (idempotent,
token kept off the public topic and out of the database), the saga's answers deciding the order,
the deadline sweep, cancellation, shipping, and who may see what."""

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from pydantic import BaseModel
from sqlalchemy import text

from libs.events import topics
from libs.events.common import Line, Money
from libs.events.inventory import StockReleased, StockReservationFailed, StockReserved
from libs.events.payments import PaymentCaptured, PaymentFailed, PaymentRefunded
from services.orders.db import Store
from services.orders.handlers import sweep_overdue
from tests.integration.orders.conftest import Priced
from tests.support.auth import admin, bearer
from tests.support.eventually import eventually
from tests.support.kafka import TopicTail, make_event, of_type, publish

PROBLEM = "application/problem+json"


def customer() -> str:
    return f"cust-{uuid.uuid4().hex[:10]}"


def order_body(p: Priced, token: str = "tok_visa", mugs: int = 2) -> dict[str, Any]:
    return {
        "lines": [{"sku": p.mug, "quantity": mugs}, {"sku": p.tea, "quantity": 1}],
        "region": p.region,
        "shipping_address": {"name": "Ada Lovelace", "street": "1 Rue X", "city": "Paris"},
        "payment": {"token": token},
    }


async def place(
    client: httpx.AsyncClient,
    who: str,
    body: dict[str, Any],
    key: str | None = None,
    request_id: str | None = None,
) -> httpx.Response:
    headers = bearer(who, "customer", email=f"{who}@example.com")
    headers["Idempotency-Key"] = key or uuid.uuid4().hex
    if request_id:
        headers["X-Request-ID"] = request_id
    return await client.post("/orders", json=body, headers=headers)


async def placed(client: httpx.AsyncClient, p: Priced, who: str) -> dict[str, Any]:
    response = await place(client, who, order_body(p))
    assert response.status_code == 202, response.text
    order: dict[str, Any] = response.json()
    return order


async def read(client: httpx.AsyncClient, order_id: str) -> dict[str, Any]:
    response = await client.get(f"/orders/{order_id}", headers=admin())
    assert response.status_code == 200, response.text
    order: dict[str, Any] = response.json()
    return order


async def reaches(client: httpx.AsyncClient, order_id: str, status: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any]:
        order = await read(client, order_id)
        assert order["status"] == status, order["status"]
        return order

    return await eventually(probe, timeout=30, what=f"order {order_id} {status}")


async def fact(service: str, topic: str, data: BaseModel, order_id: str) -> None:
    """Publish what an upstream service would report about an order."""
    await publish(make_event(service, data, subject=order_id), topic)


def eur(amount: int) -> Money:
    return Money(amount=amount, currency="EUR")


async def stock_reserved(order: dict[str, Any]) -> None:
    lines = [Line(sku=ln["sku"], quantity=ln["quantity"]) for ln in order["lines"]]
    expires = datetime.now(UTC) + timedelta(minutes=30)
    data = StockReserved(order_id=order["id"], lines=lines, expires_at=expires)
    await fact("inventory", topics.INVENTORY, data, order["id"])


async def payment_captured(order: dict[str, Any]) -> None:
    data = PaymentCaptured(
        order_id=order["id"],
        payment_id=f"pay-{order['id']}",
        amount=eur(order["total"]["amount"]),
        provider_ref="sandbox-1",
    )
    await fact("payments", topics.PAYMENTS, data, order["id"])


async def confirmed(client: httpx.AsyncClient, p: Priced, who: str) -> dict[str, Any]:
    order = await placed(client, p, who)
    await stock_reserved(order)
    await payment_captured(order)
    return await reaches(client, order["id"], "confirmed")


def history(order: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(h["status"], h["reason"]) for h in order["history"]]


async def test_placing_prices_the_order_and_hands_the_token_to_payments_only(
    app: FastAPI, client: httpx.AsyncClient, pricing: Priced
) -> None:
    who, token, request_id = customer(), f"tok_{uuid.uuid4().hex}", uuid.uuid4().hex
    async with TopicTail(topics.ORDERS, topics.PAYMENT_INSTRUCTIONS) as tail:
        response = await place(client, who, order_body(pricing, token), request_id=request_id)
        assert response.status_code == 202, response.text
        order = response.json()
        assert order["status"] == "pending" and order["customer_id"] == who
        # 2 x 12.50 + 1 x 4.99, 20 % tax per line rounded half-up: 30.00 + 5.99.
        assert [(ln["sku"], ln["quantity"], ln["total"]["amount"]) for ln in order["lines"]] == [
            (pricing.mug, 2, 3000),
            (pricing.tea, 1, 599),
        ]
        assert order["total"] == {"amount": 3599, "currency": "EUR"}
        assert order["tax"]["amount"] == 600 and order["subtotal"]["amount"] == 2999
        assert order["email"] == f"{who}@example.com"
        assert history(order) == [("pending", None)]
        assert order["cancellation_requested"] is False
        assert token not in response.text
        assert await read(client, order["id"]) == order

        [event] = await tail.wait_for(of_type("OrderPlaced", order["id"]))
        assert event["_key"] == order["id"] and event["_topic"] == topics.ORDERS
        assert event["specversion"] == "1.0" and event["source"] == "backroom/orders"
        assert event["datacontenttype"] == "application/json"
        assert event["correlationid"] == request_id and event["id"] and event["time"]
        assert event["data"]["total"] == order["total"]
        assert event["data"]["reservation_deadline"]
        assert token not in json.dumps(event)

        [instruction] = await tail.wait_for(of_type("PaymentInstructionIssued", order["id"]))
        assert instruction["_key"] == order["id"]
        assert instruction["_topic"] == topics.PAYMENT_INSTRUCTIONS
        assert instruction["data"]["token"] == token
        assert instruction["data"]["amount"] == order["total"]

    # Once relayed (the outbox row is deleted after publication), the token is nowhere in the
    # orders database.
    async def token_gone() -> bool:
        async with app.state.runtime.db.transaction() as session:
            for table in ("orders", "order_history", "idempotency_keys", "outbox"):
                found = await session.scalar(
                    text(f"SELECT count(*) FROM {table} t WHERE t::text LIKE :token"),
                    {"token": f"%{token}%"},
                )
                assert found == 0, f"token found in {table}"
        return True

    await eventually(token_gone, what="no token in the orders database")


async def test_same_key_replays_the_order_and_another_body_conflicts(
    client: httpx.AsyncClient, pricing: Priced
) -> None:
    who, key = customer(), uuid.uuid4().hex
    async with TopicTail(topics.ORDERS) as tail:
        first = await place(client, who, order_body(pricing), key=key)
        assert first.status_code == 202
        again = await place(client, who, order_body(pricing), key=key)
        assert again.status_code == 200
        assert again.json()["id"] == first.json()["id"]

        other = await place(client, who, order_body(pricing, mugs=3), key=key)
        assert other.status_code == 409
        assert other.headers["content-type"].startswith(PROBLEM)

        # The same key is someone else's business for another customer.
        elsewhere = await place(client, customer(), order_body(pricing), key=key)
        assert elsewhere.status_code == 202
        assert elsewhere.json()["id"] != first.json()["id"]

        await tail.wait_for(of_type("OrderPlaced", elsewhere.json()["id"]))
        assert len(tail.events(of_type("OrderPlaced", first.json()["id"]))) == 1
    mine = await client.get("/orders", headers=bearer(who))
    assert [o["id"] for o in mine.json()["items"]] == [first.json()["id"]]


async def test_missing_idempotency_key_is_refused_naming_it(
    client: httpx.AsyncClient, pricing: Priced
) -> None:
    response = await client.post("/orders", json=order_body(pricing), headers=bearer(customer()))
    assert response.status_code == 422
    assert response.headers["content-type"].startswith(PROBLEM)
    assert [e["field"] for e in response.json()["errors"]] == ["Idempotency-Key"]


async def test_concurrent_identical_requests_make_one_order(
    client: httpx.AsyncClient, pricing: Priced
) -> None:
    who, key = customer(), uuid.uuid4().hex
    responses = await asyncio.gather(
        *(place(client, who, order_body(pricing), key=key) for _ in range(4))
    )
    assert sorted(r.status_code for r in responses) == [200, 200, 200, 202]
    assert len({r.json()["id"] for r in responses}) == 1
    mine = await client.get("/orders", headers=bearer(who))
    assert len(mine.json()["items"]) == 1


async def test_pricing_refusal_is_relayed_and_uses_up_nothing(
    client: httpx.AsyncClient, pricing: Priced
) -> None:
    who, key = customer(), uuid.uuid4().hex
    body = order_body(pricing)
    body["lines"][1]["sku"] = f"NOPE-{uuid.uuid4().hex[:8]}"
    refused = await place(client, who, body, key=key)
    assert refused.status_code == 422, refused.text
    assert "lines[1].sku" in [e["field"] for e in refused.json()["errors"]]

    unknown_region = await place(client, who, order_body(pricing) | {"region": "NOWHERE-X"})
    assert unknown_region.status_code == 422
    assert "region" in [e["field"] for e in unknown_region.json()["errors"]]

    # The key was not spent on the refused request.
    assert (await place(client, who, order_body(pricing), key=key)).status_code == 202


async def test_stock_and_capture_confirm_the_order(
    client: httpx.AsyncClient, pricing: Priced
) -> None:
    who = customer()
    async with TopicTail(topics.ORDERS) as tail:
        order = await confirmed(client, pricing, who)
        assert history(order) == [("pending", None), ("confirmed", None)]
        [event] = await tail.wait_for(of_type("OrderConfirmed", order["id"]))
        assert event["_key"] == order["id"]
        assert event["data"]["total"] == order["total"]
        assert event["data"]["email"] == f"{who}@example.com"
        assert [ln["sku"] for ln in event["data"]["lines"]] == [pricing.mug, pricing.tea]

        # A late failure report cannot take a confirmed order back.
        failed = PaymentFailed(order_id=order["id"], payment_id="p", reason="declined")
        await fact("payments", topics.PAYMENTS, failed, order["id"])
        marker = await placed(client, pricing, who)
        await stock_reserved(marker)
        await payment_captured(marker)
        await reaches(client, marker["id"], "confirmed")
        assert (await read(client, order["id"]))["status"] == "confirmed"


async def test_stock_reservation_failure_rejects_for_good(
    client: httpx.AsyncClient, pricing: Priced
) -> None:
    async with TopicTail(topics.ORDERS) as tail:
        order = await placed(client, pricing, customer())
        data = StockReservationFailed(order_id=order["id"], reason="insufficient_stock")
        await fact("inventory", topics.INVENTORY, data, order["id"])
        rejected = await reaches(client, order["id"], "rejected")
        assert rejected["reason"] == "out_of_stock"
        assert history(rejected) == [("pending", None), ("rejected", "out_of_stock")]
        [event] = await tail.wait_for(of_type("OrderRejected", order["id"]))
        assert event["data"]["reason"] == "out_of_stock"
        assert event["data"]["email"] == rejected["email"]

        # A capture that still comes in does not revive it (payments refunds on OrderRejected).
        await payment_captured(order)
        marker = await placed(client, pricing, customer())
        await stock_reserved(marker)
        await payment_captured(marker)
        await reaches(client, marker["id"], "confirmed")
        assert (await read(client, order["id"]))["status"] == "rejected"


async def test_payment_failure_rejects_as_declined(
    client: httpx.AsyncClient, pricing: Priced
) -> None:
    async with TopicTail(topics.ORDERS) as tail:
        order = await placed(client, pricing, customer())
        await stock_reserved(order)
        failed = PaymentFailed(order_id=order["id"], payment_id="p", reason="card_declined")
        await fact("payments", topics.PAYMENTS, failed, order["id"])
        rejected = await reaches(client, order["id"], "rejected")
        assert rejected["reason"] == "payment_declined"
        [event] = await tail.wait_for(of_type("OrderRejected", order["id"]))
        assert event["data"]["reason"] == "payment_declined"


async def test_deadline_sweep_rejects_overdue_orders(
    app: FastAPI, client: httpx.AsyncClient, pricing: Priced
) -> None:
    request_id = uuid.uuid4().hex
    async with TopicTail(topics.ORDERS) as tail:
        response = await place(client, customer(), order_body(pricing), request_id=request_id)
        order = response.json()
        deadline = datetime.fromisoformat(order["reservation_deadline"])
        db = app.state.runtime.db
        # Before the deadline nothing happens; a clock just past it rejects the order.
        await sweep_overdue(db, deadline - timedelta(seconds=1))
        assert (await read(client, order["id"]))["status"] == "pending"
        assert await sweep_overdue(db, deadline + timedelta(seconds=1)) >= 1
        rejected = await read(client, order["id"])
        assert (rejected["status"], rejected["reason"]) == ("rejected", "reservation_expired")
        [event] = await tail.wait_for(of_type("OrderRejected", order["id"]))
        assert event["data"]["reason"] == "reservation_expired"
        assert event["correlationid"] == request_id  # the checkout that placed it
        assert await sweep_overdue(db, deadline + timedelta(seconds=1)) == 0


async def test_cancelling_a_confirmed_order_waits_for_stock_and_refund(
    client: httpx.AsyncClient, pricing: Priced
) -> None:
    who = customer()
    async with TopicTail(topics.ORDERS) as tail:
        order = await confirmed(client, pricing, who)
        oid = order["id"]
        response = await client.post(f"/orders/{oid}/cancel", headers=bearer(who))
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "confirmed"
        assert response.json()["cancellation_requested"] is True
        [asked] = await tail.wait_for(of_type("OrderCancellationRequested", oid))
        assert asked["data"]["reason"] == "customer_request"
        assert asked["data"]["previous_status"] == "confirmed"

        again = await client.post(f"/orders/{oid}/cancel", json={}, headers=bearer(who))
        assert again.status_code == 202 and again.json()["cancellation_requested"] is True
        shipping = await client.post(
            f"/orders/{oid}/ship", json={"carrier": "UPS", "tracking_number": "1Z"}, headers=admin()
        )
        assert shipping.status_code == 409

        released = StockReleased(order_id=oid, lines=[], reason="cancelled")
        await fact("inventory", topics.INVENTORY, released, oid)
        refunded = PaymentRefunded(
            order_id=oid, payment_id="p", amount=eur(3599), provider_ref="r", reason="cancelled"
        )
        await fact("payments", topics.PAYMENTS, refunded, oid)
        cancelled = await reaches(client, oid, "cancelled")
        assert cancelled["reason"] == "customer_request"
        assert history(cancelled) == [
            ("pending", None),
            ("confirmed", None),
            ("cancelled", "customer_request"),
        ]
        [event] = await tail.wait_for(of_type("OrderCancelled", oid))
        assert event["data"]["reason"] == "customer_request"
        assert len(tail.events(of_type("OrderCancellationRequested", oid))) == 1

    late = await client.post(f"/orders/{oid}/cancel", headers=bearer(who))
    assert late.status_code == 409


async def test_a_capture_during_cancellation_does_not_confirm(
    client: httpx.AsyncClient, pricing: Priced
) -> None:
    who = customer()
    order = await placed(client, pricing, who)
    oid = order["id"]
    response = await client.post(
        f"/orders/{oid}/cancel", json={"reason": "found_cheaper"}, headers=bearer(who)
    )
    assert response.status_code == 202
    await stock_reserved(order)
    await payment_captured(order)
    await fact(
        "inventory",
        topics.INVENTORY,
        StockReleased(order_id=oid, lines=[], reason="cancelled"),
        oid,
    )
    refunded = PaymentRefunded(
        order_id=oid, payment_id="p", amount=eur(3599), provider_ref="r", reason="cancelled"
    )
    await fact("payments", topics.PAYMENTS, refunded, oid)
    cancelled = await reaches(client, oid, "cancelled")
    assert history(cancelled) == [("pending", None), ("cancelled", "found_cheaper")]


async def test_operator_ships_and_delivers(client: httpx.AsyncClient, pricing: Priced) -> None:
    who = customer()
    async with TopicTail(topics.ORDERS) as tail:
        order = await confirmed(client, pricing, who)
        oid = order["id"]
        tracking = {"carrier": "UPS", "tracking_number": "1Z999"}
        assert (await client.post(f"/orders/{oid}/deliver", headers=admin())).status_code == 409
        forbidden = await client.post(f"/orders/{oid}/ship", json=tracking, headers=bearer(who))
        assert forbidden.status_code == 403

        shipped = await client.post(f"/orders/{oid}/ship", json=tracking, headers=admin())
        assert shipped.status_code == 200, shipped.text
        assert shipped.json()["status"] == "shipped"
        assert shipped.json()["tracking"]["tracking_number"] == "1Z999"
        [event] = await tail.wait_for(of_type("OrderShipped", oid))
        assert event["data"]["tracking"]["carrier"] == "UPS"
        assert event["data"]["email"] == f"{who}@example.com"

        assert (await client.post(f"/orders/{oid}/cancel", headers=bearer(who))).status_code == 409
        delivered = await client.post(f"/orders/{oid}/deliver", headers=admin())
        assert delivered.json()["status"] == "delivered"
        # A later status change keeps the tracking the shipment wrote.
        assert delivered.json()["tracking"] == shipped.json()["tracking"]
        await tail.wait_for(of_type("OrderDelivered", oid))
        assert (await client.post(f"/orders/{oid}/deliver", headers=admin())).status_code == 409
        assert [s for s, _ in history(delivered.json())] == [
            "pending",
            "confirmed",
            "shipped",
            "delivered",
        ]


async def test_customers_see_their_own_orders_only(
    client: httpx.AsyncClient, pricing: Priced
) -> None:
    alice, bob = customer(), customer()
    first = await placed(client, pricing, alice)
    second = await placed(client, pricing, alice)

    assert (await client.get(f"/orders/{first['id']}")).status_code == 401
    assert (await client.get(f"/orders/{first['id']}", headers=bearer(bob))).status_code == 404
    cancel = await client.post(f"/orders/{first['id']}/cancel", headers=bearer(bob))
    assert cancel.status_code == 404
    assert (await client.get("/orders/no-such-order", headers=admin())).status_code == 404
    assert (await client.get(f"/orders/{first['id']}", headers=bearer(alice))).status_code == 200

    # Newest first, a page at a time; bob's filter cannot reach alice's orders.
    page = (await client.get("/orders?limit=1", headers=bearer(alice))).json()
    assert [o["id"] for o in page["items"]] == [second["id"]]
    rest = await client.get(f"/orders?limit=1&cursor={page['next_cursor']}", headers=bearer(alice))
    assert [o["id"] for o in rest.json()["items"]] == [first["id"]]
    assert rest.json()["next_cursor"] is None
    snoop = await client.get(f"/orders?customer_id={alice}", headers=bearer(bob))
    assert snoop.json()["items"] == []

    everything = await client.get(f"/orders?customer_id={alice}", headers=admin())
    assert {o["id"] for o in everything.json()["items"]} == {first["id"], second["id"]}
    # (The status is read back rather than assumed: a live inventory may already have answered.)
    status = (await read(client, first["id"]))["status"]
    by_status = await client.get(f"/orders?customer_id={alice}&status={status}", headers=admin())
    assert first["id"] in {o["id"] for o in by_status.json()["items"]}
    assert {o["status"] for o in by_status.json()["items"]} == {status}
    none = await client.get(f"/orders?customer_id={alice}&status=shipped", headers=admin())
    assert none.json()["items"] == []


async def test_the_sweep_skips_an_order_another_transaction_holds(
    app: FastAPI, client: httpx.AsyncClient, pricing: Priced
) -> None:
    order = await placed(client, pricing, customer())
    deadline = datetime.fromisoformat(order["reservation_deadline"])
    db = app.state.runtime.db
    async with db.transaction() as holder:
        assert await Store(holder).orders.lock(order["id"]) is not None
        # Another sweeper (or a fact being applied) holds the row: skipped, not waited for.
        await asyncio.wait_for(sweep_overdue(db, deadline + timedelta(seconds=1)), timeout=10)
        assert (await read(client, order["id"]))["status"] == "pending"
    assert await sweep_overdue(db, deadline + timedelta(seconds=1)) >= 1
    assert (await read(client, order["id"]))["status"] == "rejected"
