"""Notifications on the real PostgreSQL: a control character in a webhook subscription or a log
query is a 422 naming it, and no subscription is stored (issue 9, item 6)."""

import httpx
from sqlalchemy import text

from tests.integration.notifications.conftest import Notifications
from tests.support.auth import admin


def named(response: httpx.Response) -> list[str]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return [e["field"] for e in response.json()["errors"]]


async def subscriptions(service: Notifications) -> int:
    async with service.app.state.runtime.db.transaction() as session:
        return int(await session.scalar(text("SELECT count(*) FROM webhook_subscriptions")) or 0)


async def test_a_nul_in_a_subscription_is_named_and_nothing_is_stored(
    notifications: Notifications,
) -> None:
    before = await subscriptions(notifications)
    body = {
        "url": "http://127.0.0.1:9/hook",
        "events": ["OrderConfirmed"],
        "secret": "s3cret-s3cret-s3cret\u0000",
    }
    response = await notifications.http.post("/notifications/webhooks", json=body, headers=admin())
    assert named(response) == ["secret"]
    assert "s3cret" not in response.text
    assert await subscriptions(notifications) == before


async def test_a_nul_in_a_query_or_path_parameter_is_named(notifications: Notifications) -> None:
    assert named(await notifications.http.get("/notifications?order_id=o%00", headers=admin())) == [
        "order_id"
    ]
    response = await notifications.http.delete("/notifications/webhooks/w%00", headers=admin())
    assert named(response) == ["subscription_id"]
