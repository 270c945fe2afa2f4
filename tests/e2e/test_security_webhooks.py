"""Issue 9, safe webhooks, through the gateway: the cloud metadata URL is refused with 422 naming
`url`; a receiver on loopback (allowed by the test configuration, as under `make run`) gets its
delivery with Standard Webhooks headers that the reference library verifies, and the admin sees
it in the subscription's deliveries."""

import uuid

import httpx

from tests.support.auth import admin
from tests.support.eventually import eventually
from tests.support.webhook_receiver import WebhookReceiver

PROBLEM = "application/problem+json"


async def test_the_cloud_metadata_url_is_refused_naming_url(gateway: httpx.AsyncClient) -> None:
    for url in (
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://10.0.0.1:5432/",
    ):
        response = await gateway.post(
            "/notifications/webhooks",
            json={"url": url, "events": ["OrderConfirmed"], "secret": uuid.uuid4().hex},
            headers=admin(),
        )
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == PROBLEM
        assert [e["field"] for e in response.json()["errors"]] == ["url"]


async def test_an_allowed_loopback_receiver_gets_a_delivery_that_verifies(
    gateway: httpx.AsyncClient,
) -> None:
    secret = uuid.uuid4().hex
    sku = f"E2E-WH-{uuid.uuid4().hex[:8].upper()}"
    async with WebhookReceiver() as receiver:
        hook = await gateway.post(
            "/notifications/webhooks",
            json={"url": receiver.url, "events": ["ProductCreated"], "secret": secret},
            headers=admin(),
        )
        assert hook.status_code == 201, hook.text
        hook_url = f"/notifications/webhooks/{hook.json()['id']}"
        try:
            created = await gateway.post(
                "/catalog/products",
                json={"sku": sku, "name": f"Webhook product {sku}", "category": "e2e"},
                headers=admin(),
            )
            assert created.status_code == 201, created.text

            async def delivered() -> bool:
                return any(d.json()["subject"] == sku for d in receiver.deliveries)

            await eventually(delivered, timeout=30, what="webhook delivery")
            [delivery] = [d for d in receiver.deliveries if d.json()["subject"] == sku]
            assert delivery.json()["type"] == "ProductCreated"
            assert delivery.standard_signature_valid(secret)
            assert not delivery.standard_signature_valid(uuid.uuid4().hex)
            assert delivery.signature_valid(secret)  # v1's header is kept
            assert delivery.headers["webhook-id"] == delivery.headers["x-backroom-delivery"]

            async def listed() -> list[dict[str, object]] | None:
                page = await gateway.get(f"{hook_url}/deliveries", headers=admin())
                assert page.status_code == 200, page.text
                items: list[dict[str, object]] = page.json()["items"]
                return items if items and items[0]["status"] == "delivered" else None

            [record] = await eventually(listed, timeout=30, what="the delivery listed")
            assert record["id"] == delivery.headers["webhook-id"]
        finally:
            removed = await gateway.delete(hook_url, headers=admin())
            assert removed.status_code == 204, removed.text
