"""Issue 12 returns through the gateway: a delivered order of two lines returns one of them; of its
two units one comes back resellable and one damaged: inventory restocks exactly one and writes
the other off, payments refunds exactly that line's charged total as a partial refund, and the
return completes while the order stays delivered and shows it."""

from typing import Any

import httpx

from tests.e2e.shop import (
    new_product,
    notifications,
    order,
    payments,
    place_order,
    settled,
    stock,
)
from tests.support.auth import admin, bearer
from tests.support.eventually import eventually
from tests.support.kafka import TopicTail, of_type

CUSTOMER = "return-rosa"


async def _delivered_order(gateway: httpx.AsyncClient, lines: list[tuple[str, int]]) -> str:
    placed = await place_order(gateway, CUSTOMER, lines)
    assert placed.status_code == 202, placed.text
    order_id = str(placed.json()["id"])
    assert (await settled(gateway, order_id))["status"] == "confirmed"
    # Not delivered yet: no return.
    early = await _ask_return(gateway, order_id, [{"sku": lines[0][0], "quantity": 1}])
    assert early.status_code == 409, early.text
    shipped = await gateway.post(
        f"/orders/{order_id}/ship",
        json={"carrier": "e2e-post", "tracking_number": "TRK-1"},
        headers=admin(),
    )
    assert shipped.status_code == 200, shipped.text
    delivered = await gateway.post(f"/orders/{order_id}/deliver", headers=admin())
    assert delivered.status_code == 200, delivered.text
    return order_id


async def _ask_return(
    gateway: httpx.AsyncClient, order_id: str, lines: list[dict[str, Any]]
) -> httpx.Response:
    return await gateway.post(
        f"/orders/{order_id}/returns",
        json={"lines": [{"reason": "damaged"} | line for line in lines]},
        headers=bearer(CUSTOMER, "customer"),
    )


def _field(response: httpx.Response) -> str:
    body = response.json()
    return str(body["errors"][0]["field"]) if body.get("errors") else str(body)


async def test_a_return_of_one_line_restocks_one_unit_writes_one_off_and_refunds_the_line(
    gateway: httpx.AsyncClient, event_stream: TopicTail
) -> None:
    sku_a = await new_product(gateway, stock=5, price=1000)
    sku_b = await new_product(gateway, stock=5, price=700)
    order_id = await _delivered_order(gateway, [(sku_a, 2), (sku_b, 1)])
    placed = await order(gateway, order_id)
    [line_a] = [ln for ln in placed["lines"] if ln["sku"] == sku_a]
    on_hand_before = (await stock(gateway, sku_a))["on_hand"]

    too_many = await _ask_return(gateway, order_id, [{"sku": sku_a, "quantity": 3}])
    assert too_many.status_code == 422, too_many.text
    assert _field(too_many) == "lines[0].quantity"
    not_ordered = await _ask_return(gateway, order_id, [{"sku": "E2E-NOT-ON-IT", "quantity": 1}])
    assert (not_ordered.status_code, _field(not_ordered)) == (422, "lines[0].sku")
    free_text = await _ask_return(
        gateway, order_id, [{"sku": sku_a, "quantity": 1, "reason": "<b>call me</b>"}]
    )
    assert free_text.status_code == 422, free_text.text
    stranger = await gateway.post(
        f"/orders/{order_id}/returns",
        json={"lines": [{"sku": sku_a, "quantity": 1, "reason": "other"}]},
        headers=bearer("someone-else", "customer"),
    )
    assert stranger.status_code == 404, stranger.text

    asked = await _ask_return(gateway, order_id, [{"sku": sku_a, "quantity": 2}])
    assert asked.status_code == 201, asked.text
    requested = asked.json()
    assert requested["status"] == "requested"
    assert requested["lines"] == [{"sku": sku_a, "quantity": 2, "reason": "damaged"}]
    return_id = requested["id"]
    # Both units of A are held by the return: no more of A can be asked for.
    again = await _ask_return(gateway, order_id, [{"sku": sku_a, "quantity": 1}])
    assert (again.status_code, _field(again)) == (422, "lines[0].quantity")

    by_customer = await gateway.post(
        f"/orders/{order_id}/returns/{return_id}/receive",
        json={"lines": [{"sku": sku_a, "quantity": 2, "condition": "resellable"}]},
        headers=bearer(CUSTOMER, "customer"),
    )
    assert by_customer.status_code == 403, by_customer.text
    received = await gateway.post(
        f"/orders/{order_id}/returns/{return_id}/receive",
        json={
            "lines": [
                {"sku": sku_a, "quantity": 1, "condition": "resellable"},
                {"sku": sku_a, "quantity": 1, "condition": "damaged"},
            ]
        },
        headers=admin(),
    )
    assert received.status_code == 200, received.text
    assert received.json()["status"] == "received"
    assert received.json()["refund"] == line_a["total"]

    async def completed() -> dict[str, Any] | None:
        current = await order(gateway, order_id)
        done = [r for r in current["returns"] if r["status"] == "completed"]
        return current if done else None

    final = await eventually(completed, timeout=30, what="return completed")
    assert final["status"] == "delivered"
    [shown] = final["returns"]
    assert (shown["id"], shown["refund"]) == (return_id, line_a["total"])
    assert shown["received_at"] and shown["completed_at"]
    assert final["refunded"] == line_a["total"]

    assert (await stock(gateway, sku_a))["on_hand"] == on_hand_before + 1
    [returned] = await event_stream.wait_for(of_type("StockReturned", order_id))
    assert returned["data"]["restocked"] == [{"sku": sku_a, "quantity": 1}]
    assert returned["data"]["written_off"] == [{"sku": sku_a, "quantity": 1}]
    [refunded] = await event_stream.wait_for(of_type("PaymentRefunded", order_id))
    assert refunded["data"]["return_id"] == return_id
    assert refunded["data"]["amount"] == line_a["total"]
    assert refunded["data"]["fully_refunded"] is False
    [payment] = await payments(gateway, order_id)
    assert (payment["status"], payment["refunded"]) == ("partially_refunded", line_a["total"])
    [done] = await event_stream.wait_for(of_type("ReturnCompleted", order_id))
    assert done["data"]["refund"] == line_a["total"]

    async def return_mail() -> list[dict[str, Any]] | None:
        sent = [
            n
            for n in await notifications(gateway, order_id)
            if n["template"] == "return_completed" and n["status"] == "sent"
        ]
        return sent or None

    [mail] = await eventually(return_mail, timeout=20, what="return email sent")
    assert mail["to"] == f"{CUSTOMER}@shoppers.test"

    # Received already: a second receipt is a conflict, and nothing is refunded twice.
    twice = await gateway.post(
        f"/orders/{order_id}/returns/{return_id}/receive",
        json={"lines": [{"sku": sku_a, "quantity": 1, "condition": "resellable"}]},
        headers=admin(),
    )
    assert twice.status_code == 409, twice.text
