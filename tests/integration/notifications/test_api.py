"""The admin API: the notifications log and webhook subscriptions, their auth and validation."""

from typing import Any

import pytest

from libs.events import topics
from libs.events.orders import OrderShipped
from tests.integration.notifications.conftest import Notifications, new_order_id, send
from tests.integration.notifications.test_email import confirmed
from tests.support.auth import admin, bearer
from tests.support.eventually import eventually

PROBLEM = "application/problem+json"
SECRET = "a-long-enough-secret"


async def test_log_is_admin_only_and_paginated(notifications: Notifications) -> None:
    order_id = new_order_id()
    await send("orders", topics.ORDERS, confirmed(order_id), order_id)
    shipped = OrderShipped(order_id=order_id, customer_id="carol", tracking={"number": "Z9"})
    await send("orders", topics.ORDERS, shipped, order_id)

    async def two_rows() -> bool:
        return len(await notifications.log(order_id)) == 2

    await eventually(two_rows, timeout=30, what="two notifications")

    http = notifications.http
    customer = await http.get(
        "/notifications", params={"order_id": order_id}, headers=bearer("carol")
    )
    assert customer.status_code == 403
    assert customer.headers["content-type"] == PROBLEM
    assert (await http.get("/notifications", params={"order_id": order_id})).status_code == 401

    first = await http.get(
        "/notifications", params={"order_id": order_id, "limit": 1}, headers=admin()
    )
    assert first.status_code == 200
    page = first.json()
    assert [n["template"] for n in page["items"]] == ["order_confirmed"]
    assert set(page["items"][0]) >= {"id", "channel", "template", "to", "status", "at"}
    assert page["items"][0]["to"] == "carol@customers.backroom.local"
    second = await http.get(
        "/notifications",
        params={"order_id": order_id, "limit": 1, "cursor": page["next_cursor"]},
        headers=admin(),
    )
    assert [n["template"] for n in second.json()["items"]] == ["order_shipped"]
    assert second.json()["next_cursor"] is None

    bad_cursor = await http.get("/notifications", params={"cursor": "nope"}, headers=admin())
    assert bad_cursor.status_code == 400
    too_many = await http.get("/notifications", params={"limit": 201}, headers=admin())
    assert too_many.status_code == 422
    assert too_many.json()["errors"][0]["field"] == "limit"


async def test_subscriptions_are_listed_without_secret_and_deleted(
    notifications: Notifications,
) -> None:
    http = notifications.http
    ids = []
    for n in range(2):
        created = await notifications.subscribe(
            f"http://127.0.0.1:9/hooks/{n}",
            ["OrderConfirmed", "OrderConfirmed", "StockLow"],
            SECRET,
        )
        # `channel` (issue 13): None for a subscription of no sales channel.
        assert set(created) == {"id", "url", "events", "created_at", "active_secrets", "channel"}
        assert created["channel"] is None
        assert created["events"] == ["OrderConfirmed", "StockLow"]
        ids.append(created["id"])

    listed: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 200} | ({"cursor": cursor} if cursor else {})
        response = await http.get("/notifications/webhooks", params=params, headers=admin())
        assert response.status_code == 200
        listed += response.json()["items"]
        cursor = response.json()["next_cursor"]
        if cursor is None:
            break
    mine = [s for s in listed if s["id"] in ids]
    assert [s["url"] for s in mine] == ["http://127.0.0.1:9/hooks/0", "http://127.0.0.1:9/hooks/1"]
    assert all("secret" not in s for s in listed)
    one = await http.get("/notifications/webhooks", params={"limit": 1}, headers=admin())
    assert one.json()["next_cursor"] is not None

    customer = await http.get("/notifications/webhooks", headers=bearer("carol"))
    assert customer.status_code == 403
    assert (
        await http.delete(f"/notifications/webhooks/{ids[0]}", headers=bearer("carol"))
    ).status_code == 403

    for subscription_id in ids:
        await notifications.unsubscribe(subscription_id)
    again = await http.delete(f"/notifications/webhooks/{ids[0]}", headers=admin())
    assert again.status_code == 404
    assert again.headers["content-type"] == PROBLEM


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://hooks.example/x", "events": ["OrderConfirmed"]}, "url"),
        ({"url": "not a url", "events": ["OrderConfirmed"]}, "url"),
        # Issue 9: internal targets (no DNS needed: the hosts are addresses).
        ({"url": "http://169.254.169.254/latest/meta-data/", "events": ["OrderPlaced"]}, "url"),
        ({"url": "http://[fd00:ec2::254]/latest/meta-data/", "events": ["OrderPlaced"]}, "url"),
        ({"url": "http://[::ffff:169.254.169.254]/", "events": ["OrderPlaced"]}, "url"),
        ({"url": "http://10.0.0.1:5432/", "events": ["OrderPlaced"]}, "url"),
        ({"url": "http://192.168.1.1/", "events": ["OrderPlaced"]}, "url"),
        ({"url": "http://0.0.0.0:8106/", "events": ["OrderPlaced"]}, "url"),
        ({"url": "http://user:pw@127.0.0.1:9/", "events": ["OrderPlaced"]}, "url"),
        ({"url": "https://hooks.example/" + " " * 700 + "x", "events": ["OrderConfirmed"]}, "url"),
        ({"url": "https://hooks.example/x", "events": []}, "events"),
        ({"url": "https://hooks.example/x", "events": ["OrderConfirmed"] * 31}, "events"),
        ({"url": "https://hooks.example/x", "events": ["OrderExploded"]}, "events[0]"),
        (
            {
                "url": "https://hooks.example/x",
                "events": ["OrderPlaced", "PaymentInstructionIssued"],
            },
            "events[1]",
        ),
        (
            {"url": "https://hooks.example/x", "events": ["OrderPlaced"], "secret": "short"},
            "secret",
        ),
        ({"url": "https://hooks.example/x", "events": ["OrderPlaced"], "extra": 1}, "extra"),
    ],
)
async def test_bad_subscriptions_are_refused_naming_the_field(
    notifications: Notifications, body: dict[str, Any], field: str
) -> None:
    response = await notifications.http.post(
        "/notifications/webhooks", json={"secret": SECRET} | body, headers=admin()
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    assert field in [e["field"] for e in response.json()["errors"]]


async def test_only_admins_subscribe(notifications: Notifications) -> None:
    body = {"url": "https://hooks.example/x", "events": ["OrderPlaced"], "secret": SECRET}
    response = await notifications.http.post(
        "/notifications/webhooks", json=body, headers=bearer("carol")
    )
    assert response.status_code == 403
