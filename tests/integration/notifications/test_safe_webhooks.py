"""Issue 9, safe webhooks, on the real database, Kafka and receivers: internal targets refused
(422 naming `url`) and refused again at delivery, Standard Webhooks signatures that the reference
library verifies with either secret during a rotation, a 4xx not retried, a redirect not
followed, an endless answer cut off, and an admin listing and redelivering deliveries."""

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from libs.events import topics
from libs.events.orders import OrderRejected
from libs.kit.transactions import DatabaseUnitOfWork
from services.notifications import service
from services.notifications.adapters import HttpxWebhookSender, SystemResolver
from services.notifications.db import Store
from services.notifications.main import WebhookWorker
from tests.integration.notifications.conftest import (
    Notifications,
    Receiver,
    Request,
    new_order_id,
    send,
)
from tests.support.auth import admin
from tests.support.eventually import eventually

PROBLEM = "application/problem+json"
SECRET = "whsec-" + "s" * 24
NEW_SECRET = "whsec-" + "n" * 24


def verifies(request: Request, secret: str) -> bool:
    try:
        Webhook(secret.encode()).verify(request.body, request.headers, json_parse=False)
    except WebhookVerificationError:
        return False
    return True


async def reject(order_id: str) -> None:
    rejected = OrderRejected(order_id=order_id, customer_id="hal", reason="invalid")
    await send("orders", topics.ORDERS, rejected, order_id)


async def test_the_metadata_url_is_refused_naming_url_and_not_stored(
    notifications: Notifications,
) -> None:
    response = await notifications.http.post(
        "/notifications/webhooks",
        json={
            "url": "http://169.254.169.254/latest/meta-data/",
            "events": ["OrderConfirmed"],
            "secret": SECRET,
        },
        headers=admin(),
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    [error] = response.json()["errors"]
    assert error["field"] == "url"
    assert "metadata" in error["message"]
    listed = await notifications.http.get(
        "/notifications/webhooks", params={"limit": 200}, headers=admin()
    )
    assert "169.254.169.254" not in listed.text


async def test_deliveries_verify_with_either_secret_while_rotating(
    notifications: Notifications, receiver: Receiver
) -> None:
    subscription = await notifications.subscribe(receiver.url, ["OrderRejected"], SECRET)
    http, hook = notifications.http, f"/notifications/webhooks/{subscription['id']}"
    try:
        assert subscription["active_secrets"] == 1
        before = new_order_id()
        await reject(before)

        def of(order_id: str) -> list[Request]:
            return [r for r in receiver.requests if json.loads(r.body)["subject"] == order_id]

        async def delivered_once(order_id: str) -> bool:
            return len(of(order_id)) == 1

        await eventually(lambda: delivered_once(before), timeout=30, what="first delivery")
        [first] = of(before)
        assert verifies(first, SECRET)
        assert first.headers["webhook-id"] == first.headers["x-backroom-delivery"]

        added = await http.post(f"{hook}/secrets", json={"secret": NEW_SECRET}, headers=admin())
        assert added.status_code == 201, added.text
        assert added.json()["active_secrets"] == 2
        third = await http.post(f"{hook}/secrets", json={"secret": "x" * 20}, headers=admin())
        assert third.status_code == 409
        assert third.headers["content-type"] == PROBLEM

        during = new_order_id()
        await reject(during)
        await eventually(lambda: delivered_once(during), timeout=30, what="rotation delivery")
        [rotating] = of(during)
        assert len(rotating.headers["webhook-signature"].split(" ")) == 2
        assert verifies(rotating, SECRET) and verifies(rotating, NEW_SECRET)

        retired = await http.delete(f"{hook}/secrets/previous", headers=admin())
        assert retired.status_code == 204
        again = await http.delete(f"{hook}/secrets/previous", headers=admin())
        assert again.status_code == 409

        after = new_order_id()
        await reject(after)
        await eventually(lambda: delivered_once(after), timeout=30, what="after rotation")
        [last] = of(after)
        assert verifies(last, NEW_SECRET) and not verifies(last, SECRET)
    finally:
        await notifications.unsubscribe(subscription["id"])


async def test_a_4xx_is_not_retried_and_an_admin_redelivers_it(
    notifications: Notifications, receiver: Receiver
) -> None:
    receiver.statuses = [404, 200]
    subscription = await notifications.subscribe(receiver.url, ["OrderRejected"], SECRET)
    try:
        order_id = new_order_id()
        await reject(order_id)

        async def failed() -> list[dict[str, Any]] | None:
            listed = await notifications.deliveries(subscription["id"])
            return listed if listed and listed[0]["status"] == "failed" else None

        [delivery] = await eventually(failed, timeout=30, what="the delivery failed")
        assert (delivery["attempts"], delivery["last_error"]) == (1, "HTTP 404")
        assert delivery["next_attempt_at"] is None
        # Nothing more is tried, however long we wait.
        await notifications.worker.run_once(datetime.now(UTC) + timedelta(hours=2))
        assert len(receiver.requests) == 1

        path = f"/notifications/webhooks/{subscription['id']}/deliveries/{delivery['id']}"
        response = await notifications.http.post(f"{path}/redeliver", headers=admin())
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "pending"

        async def sent() -> bool:
            log = await notifications.log(order_id)
            return [n["status"] for n in log if n["channel"] == "webhook"] == ["failed", "sent"]

        await eventually(sent, timeout=30, what="the redelivery")
        first, second = receiver.requests
        assert first.headers["webhook-id"] == second.headers["webhook-id"]
        assert first.body == second.body
        [redelivered] = await notifications.deliveries(subscription["id"])
        assert (redelivered["status"], redelivered["redeliveries"]) == ("delivered", 1)
        again = await notifications.http.post(f"{path}/redeliver", headers=admin())
        assert again.status_code == 202  # a delivered one may be sent again too
        missing = await notifications.http.post(
            f"/notifications/webhooks/{subscription['id']}/deliveries/nope/redeliver",
            headers=admin(),
        )
        assert missing.status_code == 404
    finally:
        await notifications.unsubscribe(subscription["id"])


async def test_deliveries_are_listed_newest_first_page_by_page_and_admin_only(
    notifications: Notifications, receiver: Receiver
) -> None:
    subscription = await notifications.subscribe(receiver.url, ["OrderRejected"], SECRET)
    path = f"/notifications/webhooks/{subscription['id']}/deliveries"
    try:
        orders = [new_order_id() for _ in range(3)]
        for order_id in orders:
            await reject(order_id)

        async def three() -> bool:
            return len(await notifications.deliveries(subscription["id"])) == 3

        await eventually(three, timeout=30, what="three deliveries")
        first = await notifications.http.get(path, params={"limit": 2}, headers=admin())
        assert first.status_code == 200
        page = first.json()
        assert len(page["items"]) == 2 and page["next_cursor"]
        rest = await notifications.http.get(
            path, params={"limit": 2, "cursor": page["next_cursor"]}, headers=admin()
        )
        items = page["items"] + rest.json()["items"]
        assert rest.json()["next_cursor"] is None
        assert [i["id"] for i in items] == [
            i["id"] for i in sorted(items, key=lambda i: i["created_at"], reverse=True)
        ]
        assert len({i["event_id"] for i in items}) == 3
        assert "payload" not in items[0]
        assert (await notifications.http.get(path)).status_code == 401
        missing = await notifications.http.get(
            "/notifications/webhooks/nope/deliveries", headers=admin()
        )
        assert missing.status_code == 404
    finally:
        await notifications.unsubscribe(subscription["id"])


async def test_a_redirect_is_a_failed_attempt_and_is_not_followed(
    notifications: Notifications, receiver: Receiver
) -> None:
    elsewhere = await Receiver(statuses=[200]).start()
    receiver.statuses = [302]
    receiver.location = elsewhere.url
    subscription = await notifications.subscribe(receiver.url, ["OrderRejected"], SECRET)
    try:
        await reject(new_order_id())

        async def attempted() -> list[dict[str, Any]] | None:
            listed = await notifications.deliveries(subscription["id"])
            return listed if listed and listed[0]["attempts"] >= 1 else None

        [delivery] = await eventually(attempted, timeout=30, what="an attempt")
        assert delivery["status"] == "pending", "a 3xx is retried like any failure"
        assert delivery["last_error"] == "HTTP 302 (redirects are not followed)"
        assert elsewhere.requests == []
    finally:
        await notifications.unsubscribe(subscription["id"])
        await elsewhere.stop()


async def test_an_endless_answer_is_cut_off_after_64_kib(notifications: Notifications) -> None:
    sent_bytes = 0

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent_bytes
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 500 X\r\nContent-Length: 1000000000\r\n\r\n")
        try:
            while sent_bytes < 1_000_000_000:
                writer.write(b"x" * 65536)
                sent_bytes += 65536
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(endless, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
    subscription = await notifications.subscribe(url, ["OrderRejected"], SECRET)
    try:
        started = time.monotonic()
        await reject(new_order_id())

        async def recorded() -> list[dict[str, Any]] | None:
            listed = await notifications.deliveries(subscription["id"])
            return listed if listed and listed[0]["attempts"] >= 1 else None

        [delivery] = await eventually(recorded, timeout=30, what="the attempt recorded")
        assert delivery["last_error"] == "HTTP 500"
        assert time.monotonic() - started < 5, "it did not wait for the whole answer"
        assert sent_bytes < 10 * 1024 * 1024, f"{sent_bytes} bytes were pulled"
    finally:
        await notifications.unsubscribe(subscription["id"])
        server.close()


async def test_a_target_no_longer_allowed_is_refused_at_delivery_time(
    notifications: Notifications, receiver: Receiver
) -> None:
    """Subscribed while loopback was allowed; a worker whose guard allows nothing (as if the
    name now resolved to an internal address) re-checks it and sends nothing."""
    notifications.clock.frozen = datetime.now(UTC) - timedelta(hours=1)  # the app's worker waits
    subscription = await notifications.subscribe(receiver.url, ["OrderRejected"], SECRET)
    sender = HttpxWebhookSender(timeout_s=2.0)
    strict = WebhookWorker(
        service.Delivering(
            DatabaseUnitOfWork(notifications.app.state.runtime.db, "notifications", Store.of),
            sender,
            service.Guard(SystemResolver(), ()),
        ),
        notifications.clock,
        1.0,
    )
    try:
        await reject(new_order_id())

        async def queued() -> bool:
            return len(await notifications.deliveries(subscription["id"])) == 1

        await eventually(queued, timeout=30, what="the delivery queued")
        assert await strict.run_once(datetime.now(UTC) + timedelta(minutes=1)) >= 1
        [delivery] = await notifications.deliveries(subscription["id"])
        assert delivery["status"] == "failed"
        assert "127.0.0.1 is a loopback address" in delivery["last_error"]
        assert receiver.requests == []
    finally:
        notifications.clock.frozen = None
        await notifications.unsubscribe(subscription["id"])
