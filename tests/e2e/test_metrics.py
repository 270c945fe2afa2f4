"""Issue 14: what an operator reads after checkouts. The services' /metrics count the orders by
outcome and reason, the money captured, the consumer lag per partition and the outbox; and the
Prometheus `make run` starts (deploy/local/prometheus.sh) scrapes all six services with the
alert rules loaded."""

import os
import re
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conftest import LOCAL, PORT_BASE, ROOT, SERVICES, e2e_env
from tests.e2e.shop import new_product, place_order, settled
from tests.support.eventually import eventually

PROMETHEUS_PORT = 18090
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


async def scrape(service: str) -> dict[str, float]:
    """`name{labels}` -> value of the service's /metrics."""
    port = PORT_BASE + 1 + SERVICES.index(service)
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"http://127.0.0.1:{port}/metrics")
    response.raise_for_status()
    samples = {}
    for line in response.text.splitlines():
        found = SAMPLE.match(line)
        if found:
            samples[found[1] + (found[2] or "")] = float(found[3])
    return samples


def value(samples: dict[str, float], name: str, **labels: str) -> float:
    """The sample with exactly these labels (prometheus_client writes them sorted by name)."""
    rendered = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return samples.get(f"{name}{{{rendered}}}" if labels else name, 0.0)


async def test_checkouts_show_up_as_outcomes_money_lag_and_outbox(
    gateway: httpx.AsyncClient,
) -> None:
    sku = await new_product(gateway, stock=10, price=1234)
    orders_before = await scrape("orders")
    payments_before = await scrape("payments")

    good = await place_order(gateway, "metrics-alice", [(sku, 2)])
    declined = await place_order(gateway, "metrics-bob", [(sku, 1)], token="tok_chargeDeclined")
    assert good.status_code == declined.status_code == 202
    confirmed = await settled(gateway, good.json()["id"])
    rejected = await settled(gateway, declined.json()["id"])
    assert (confirmed["status"], rejected["status"], rejected["reason"]) == (
        "confirmed",
        "rejected",
        "payment_declined",
    )
    total = confirmed["total"]["amount"]

    orders = await scrape("orders")
    counted = "backroom_orders_total"
    for outcome, reason in (("confirmed", "none"), ("rejected", "payment_declined")):
        labels = {"outcome": outcome, "reason": reason, "channel": "web"}
        assert value(orders, counted, **labels) >= value(orders_before, counted, **labels) + 1
    latency = "backroom_order_completion_seconds_count"
    assert value(orders, latency, outcome="confirmed") >= (
        value(orders_before, latency, outcome="confirmed") + 1
    )

    async def captured() -> bool:
        payments = await scrape("payments")
        minor = "backroom_payments_captured_minor_total"
        before = value(payments_before, minor, currency="EUR")
        return value(payments, minor, currency="EUR") >= before + float(total)

    await eventually(captured, what="the capture counted in payments' /metrics")

    async def lag_and_outbox() -> bool:
        orders = await scrape("orders")
        lag = [k for k in orders if k.startswith('backroom_consumer_lag{group="orders"')]
        return bool(lag) and "backroom_outbox_depth" in orders

    await eventually(lag_and_outbox, what="orders reports its consumer lag and outbox depth")


@pytest.fixture(scope="module")
def prometheus(gateway_url: str) -> Iterator[str]:
    env = e2e_env() | {"PROMETHEUS_PORT": str(PROMETHEUS_PORT), "PROMETHEUS_SCRAPE_S": "1"}
    script = str(LOCAL / "prometheus.sh")
    subprocess.run(["bash", script, "up"], check=True, env=env, cwd=ROOT)
    try:
        yield f"http://127.0.0.1:{PROMETHEUS_PORT}"
    finally:
        subprocess.run(["bash", script, "down"], env=env, cwd=ROOT)


@pytest.mark.skipif(bool(os.environ.get("BACKROOM_E2E_GATEWAY")), reason="a system of its own")
async def test_prometheus_scrapes_every_service_with_the_rules(prometheus: str) -> None:
    async with httpx.AsyncClient(base_url=prometheus, timeout=10) as client:

        async def all_up() -> bool:
            targets = (await client.get("/api/v1/targets")).json()["data"]["activeTargets"]
            up = {t["labels"]["job"] for t in targets if t["health"] == "up"}
            return up == set(SERVICES)

        await eventually(all_up, timeout=60, what="Prometheus scrapes all six services")
        rules = (await client.get("/api/v1/rules")).json()["data"]["groups"]
        alerts = {r["name"] for g in rules for r in g["rules"] if r["type"] == "alerting"}
        assert {"CheckoutErrorBudgetBurnFast", "OutboxStuck", "ConsumerLagGrowing"} <= alerts
        assert all(r["health"] != "err" for g in rules for r in g["rules"])

        async def orders_counted() -> bool:
            query = {"query": 'sum(backroom_orders_total{outcome="confirmed"})'}
            result = (await client.get("/api/v1/query", params=query)).json()["data"]["result"]
            return bool(result) and float(result[0]["value"][1]) >= 1

        await eventually(orders_counted, timeout=60, what="Prometheus has the order counts")
