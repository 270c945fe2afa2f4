"""The checkout saga end to end, through the gateway, on real Kafka and PostgreSQL."""

import asyncio
import uuid
from pathlib import Path

import httpx

from deploy.local.smtp_sink import read_messages
from tests.e2e.shop import (
    new_product,
    notifications,
    order,
    order_body,
    payments,
    place_order,
    settled,
    stock,
)
from tests.support.auth import admin, bearer
from tests.support.eventually import eventually
from tests.support.webhook_receiver import WebhookReceiver


def mails_for(maildir: Path, order_id: str) -> list[str]:
    """Subjects of the emails in the sink that mention the order."""
    found = []
    for message in read_messages(maildir):
        text = message.as_string()
        if order_id in text:
            found.append(str(message["Subject"]))
    return found


async def test_happy_path_confirms_charges_once_emails_and_calls_webhooks(
    gateway: httpx.AsyncClient, smtp_maildir: Path
) -> None:
    sku = await new_product(gateway, stock=10, price=1250)
    secret = uuid.uuid4().hex
    async with WebhookReceiver() as receiver:
        hook = await gateway.post(
            "/notifications/webhooks",
            json={"url": receiver.url, "events": ["OrderConfirmed"], "secret": secret},
            headers=admin(),
        )
        assert hook.status_code == 201, hook.text
        # Removed at the end: a subscription left behind would make every later confirmation
        # in this database queue deliveries to a dead URL.
        hook_url = f"/notifications/webhooks/{hook.json()['id']}"
        try:
            placed = await place_order(gateway, "happy-hannah", [(sku, 2)])
            assert placed.status_code == 202, placed.text
            assert placed.json()["status"] == "pending"
            order_id = placed.json()["id"]

            confirmed = await settled(gateway, order_id)
            assert confirmed["status"] == "confirmed", confirmed
            assert [h["status"] for h in confirmed["history"]] == ["pending", "confirmed"]
            # 2 x 12.50 + 20 % tax
            assert confirmed["total"] == {"amount": 3000, "currency": "EUR"}

            async def committed() -> bool:
                item = await stock(gateway, sku)
                return bool(item["on_hand"] == 8 and item["reserved"] == 0)

            await eventually(committed, what="stock committed")
            [capture] = await payments(gateway, order_id)
            assert capture["status"] == "captured"
            assert capture["amount"] == confirmed["total"]

            await eventually(
                lambda: _async(
                    any("confirm" in s.lower() for s in mails_for(smtp_maildir, order_id))
                ),
                what="confirmation email",
            )

            async def hooked() -> bool:
                return any(d.json()["subject"] == order_id for d in receiver.deliveries)

            await eventually(hooked, what="webhook delivery")
            [delivery] = [d for d in receiver.deliveries if d.json()["subject"] == order_id]
            assert delivery.signature_valid(secret)
            assert delivery.standard_signature_valid(secret)
            assert delivery.json()["type"] == "OrderConfirmed"
            sent = await notifications(gateway, order_id)
            assert {(n["channel"], n["status"]) for n in sent} >= {
                ("email", "sent"),
                ("webhook", "sent"),
            }
        finally:
            removed = await gateway.delete(hook_url, headers=admin())
            assert removed.status_code == 204, removed.text


async def _async(value: bool) -> bool:
    return value


async def test_a_line_short_of_stock_rejects_without_touching_stock_or_charging(
    gateway: httpx.AsyncClient,
) -> None:
    plenty = await new_product(gateway, stock=50)
    scarce = await new_product(gateway, stock=1)
    placed = await place_order(gateway, "short-sam", [(plenty, 3), (scarce, 2)])
    assert placed.status_code == 202
    rejected = await settled(gateway, placed.json()["id"])
    assert (rejected["status"], rejected["reason"]) == ("rejected", "out_of_stock")
    assert await _stock_is(gateway, plenty, on_hand=50, reserved=0)
    assert (await stock(gateway, scarce))["available"] == 1
    assert await payments(gateway, rejected["id"]) == []


async def test_declined_card_rejects_and_releases_the_reservation(
    gateway: httpx.AsyncClient,
) -> None:
    sku = await new_product(gateway, stock=5)
    placed = await place_order(gateway, "declined-dora", [(sku, 2)], token="tok_chargeDeclined")
    rejected = await settled(gateway, placed.json()["id"])
    assert (rejected["status"], rejected["reason"]) == ("rejected", "payment_declined")

    async def released() -> bool:
        item = await stock(gateway, sku)
        return bool(item["on_hand"] == 5 and item["reserved"] == 0)

    await eventually(released, what="reservation released")
    assert [p["status"] for p in await payments(gateway, rejected["id"])] == ["failed"]


async def test_processing_errors_are_retried_into_exactly_one_capture(
    gateway: httpx.AsyncClient,
) -> None:
    sku = await new_product(gateway, stock=5)
    placed = await place_order(gateway, "flaky-fred", [(sku, 1)], token="tok_processingError")
    confirmed = await settled(gateway, placed.json()["id"])
    assert confirmed["status"] == "confirmed"
    captures = await payments(gateway, confirmed["id"])
    assert [p["status"] for p in captures] == ["captured"]


async def test_cancel_after_confirmation_refunds_restocks_and_emails(
    gateway: httpx.AsyncClient, smtp_maildir: Path
) -> None:
    sku = await new_product(gateway, stock=4)
    placed = await place_order(gateway, "cancel-carl", [(sku, 3)])
    order_id = placed.json()["id"]
    assert (await settled(gateway, order_id))["status"] == "confirmed"
    await eventually(lambda: _stock_is(gateway, sku, on_hand=1, reserved=0), what="stock committed")

    cancel = await gateway.post(
        f"/orders/{order_id}/cancel", headers=bearer("cancel-carl", "customer")
    )
    assert cancel.status_code == 202, cancel.text

    async def cancelled() -> bool:
        return bool((await order(gateway, order_id))["status"] == "cancelled")

    await eventually(cancelled, what="order cancelled")
    assert (await order(gateway, order_id))["reason"] == "customer_request"
    assert [p["status"] for p in await payments(gateway, order_id)] == ["refunded"]
    await eventually(lambda: _stock_is(gateway, sku, on_hand=4, reserved=0), what="stock restored")
    await eventually(
        lambda: _async(any("cancel" in s.lower() for s in mails_for(smtp_maildir, order_id))),
        what="cancellation email",
    )
    again = await gateway.post(
        f"/orders/{order_id}/cancel", headers=bearer("cancel-carl", "customer")
    )
    assert again.status_code == 409


async def _stock_is(gateway: httpx.AsyncClient, sku: str, *, on_hand: int, reserved: int) -> bool:
    item = await stock(gateway, sku)
    return bool(item["on_hand"] == on_hand and item["reserved"] == reserved)


async def test_missed_reservation_deadline_rejects_releases_and_refunds_the_late_capture(
    gateway: httpx.AsyncClient,
) -> None:
    # The e2e system runs with a 10 s reservation deadline and a 13 s slow authorization.
    sku = await new_product(gateway, stock=3)
    placed = await place_order(gateway, "slow-sue", [(sku, 1)], token="tok_slowAuthorization")
    order_id = placed.json()["id"]
    rejected = await settled(gateway, order_id, timeout=40)
    assert (rejected["status"], rejected["reason"]) == ("rejected", "reservation_expired")
    await eventually(lambda: _stock_is(gateway, sku, on_hand=3, reserved=0), what="stock released")

    async def refunded() -> bool:
        return [p["status"] for p in await payments(gateway, order_id)] == ["refunded"]

    await eventually(refunded, timeout=40, what="late capture refunded")
    assert (await order(gateway, order_id))["status"] == "rejected"


async def test_thirty_buyers_for_five_units(gateway: httpx.AsyncClient) -> None:
    sku = await new_product(gateway, stock=5)
    buyers = [f"rush-{i}-{uuid.uuid4().hex[:6]}" for i in range(30)]
    responses = await asyncio.gather(*(place_order(gateway, b, [(sku, 1)]) for b in buyers))
    assert all(r.status_code == 202 for r in responses), [
        r.text for r in responses if r.status_code != 202
    ]
    outcomes = await asyncio.gather(
        *(settled(gateway, r.json()["id"], timeout=90) for r in responses)
    )
    confirmed = [o for o in outcomes if o["status"] == "confirmed"]
    rejected = [o for o in outcomes if o["status"] == "rejected"]
    assert len(confirmed) == 5 and len(rejected) == 25
    assert {o["reason"] for o in rejected} == {"out_of_stock"}
    await eventually(lambda: _stock_is(gateway, sku, on_hand=0, reserved=0), what="stock all sold")
    captures = [p for o in confirmed for p in await payments(gateway, o["id"])]
    assert len(captures) == 5 and all(p["status"] == "captured" for p in captures)
    for o in rejected:
        assert await payments(gateway, o["id"]) == []


async def test_idempotency_key_replays_the_same_order_and_refuses_a_changed_body(
    gateway: httpx.AsyncClient,
) -> None:
    sku = await new_product(gateway, stock=10)
    key = uuid.uuid4().hex
    ida = f"idem-ida-{key[:8]}"
    first = await place_order(gateway, ida, [(sku, 1)], key=key)
    assert first.status_code == 202
    replay = await place_order(gateway, ida, [(sku, 1)], key=key)
    assert replay.status_code == 200
    assert replay.json()["id"] == first.json()["id"]
    changed = await place_order(gateway, ida, [(sku, 2)], key=key)
    assert changed.status_code == 409
    assert changed.headers["content-type"] == "application/problem+json"
    mine = await gateway.get("/orders", headers=bearer(ida, "customer"))
    assert [o["id"] for o in mine.json()["items"]].count(first.json()["id"]) == 1


async def test_security_and_bad_input(gateway: httpx.AsyncClient) -> None:
    sku = await new_product(gateway, stock=10)
    run = uuid.uuid4().hex[:8]
    alice_id, mallory_id = f"sec-alice-{run}", f"sec-mallory-{run}"
    alice, mallory = bearer(alice_id, "customer"), bearer(mallory_id, "customer")

    assert (await gateway.post("/orders", json=order_body([(sku, 1)]))).status_code == 401
    bad_token = {"Authorization": "Bearer not.a.jwt"}
    assert (await gateway.get("/orders", headers=bad_token)).status_code == 401
    forbidden = await gateway.put(
        f"/pricing/prices/{sku}", json={"amount": 1, "currency": "EUR"}, headers=alice
    )
    assert forbidden.status_code == 403
    assert (await gateway.get("/notifications", headers=alice)).status_code == 403

    placed = await place_order(gateway, alice_id, [(sku, 1)])
    order_id = placed.json()["id"]
    assert (await gateway.get(f"/orders/{order_id}", headers=mallory)).status_code == 404
    assert (await gateway.post(f"/orders/{order_id}/cancel", headers=mallory)).status_code == 404
    await settled(gateway, order_id)
    # Payments answers for an order once it has heard of it (an unknown order is an empty page).
    assert (
        await gateway.get("/payments", params={"order_id": order_id}, headers=mallory)
    ).status_code == 404
    assert (
        await gateway.get("/payments", params={"order_id": order_id}, headers=alice)
    ).status_code == 200

    async def refused(body: dict[str, object], headers: dict[str, str] | None = None) -> set[str]:
        response = await gateway.post(
            "/orders",
            json=body,
            headers=(
                headers if headers is not None else alice | {"Idempotency-Key": uuid.uuid4().hex}
            ),
        )
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        return {e["field"] for e in response.json()["errors"]}

    assert "lines[0].quantity" in await refused(order_body([(sku, -1)]))
    assert "lines[0].sku" in await refused(order_body([("NO-SUCH-SKU-" + uuid.uuid4().hex[:6], 1)]))
    assert "Idempotency-Key" in await refused(order_body([(sku, 1)]), headers=alice)
    assert "region" in await refused(order_body([(sku, 1)]) | {"region": "R" * 5000})
    assert "payment.token" in await refused(order_body([(sku, 1)], token="4242424242424242"))
    nothing_charged = await gateway.get("/orders", headers=alice)
    assert len(nothing_charged.json()["items"]) == 1
