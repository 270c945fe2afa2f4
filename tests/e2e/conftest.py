"""The whole system for end-to-end tests: six services and the nginx gateway on their own ports
(so a `make run` on the default ports is left alone), on the shared local Kafka and PostgreSQL.

Set BACKROOM_E2E_GATEWAY=http://host:port to test an already running system instead."""

import asyncio
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from bench.invariants import subscriptions
from libs.events import topics
from libs.kit.settings import ServiceSettings
from tests.support.kafka import TopicTail
from tests.support.service import group_caught_up

ROOT = Path(__file__).resolve().parents[2]
LOCAL = ROOT / "deploy" / "local"
PORT_BASE = 18100
GATEWAY_PORT = 18000
SERVICES = ("catalog", "inventory", "pricing", "orders", "payments", "notifications")

# Settings the e2e system runs with: short deadlines so expiry is tested in seconds, not minutes.
E2E_SETTINGS = {
    "BACKROOM_RESERVATION_TTL_S": "10",
    "BACKROOM_DEADLINE_SWEEP_INTERVAL_S": "0.5",
    # Carts (issue 12): an idle cart is reported abandoned within seconds.
    "BACKROOM_CART_ABANDON_AFTER_S": "5",
    "BACKROOM_CART_SWEEP_INTERVAL_S": "0.5",
    "BACKROOM_SANDBOX_SLOW_S": "13",
    # What the sandbox signs its webhooks with: the tests sign provider webhooks with it too.
    "BACKROOM_SANDBOX_WEBHOOK_SECRET": "whsec_e2e_sandbox_" + "0" * 24,
    # What the sandbox carrier signs its tracking webhooks with (tests/e2e/test_shipments.py).
    "BACKROOM_SANDBOX_CARRIER_WEBHOOK_SECRET": "whsec_e2e_carrier_" + "0" * 24,
    "BACKROOM_WEBHOOK_BACKOFF_BASE_S": "0.2",
    # Listing sync (issue 13): a burst of stock moves through the gateway, on a machine shared
    # with other work, fits well inside this; the first change of a burst starts the clock.
    "BACKROOM_LISTING_SYNC_DELAY_S": "3",
    "BACKROOM_DELIVERY_INTERVAL_S": "0.2",
    # The webhook receivers of these tests listen on loopback: allowed here (as under
    # `make run`), refused by default.
    "BACKROOM_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8,::1/128",
    # Gateway limits (deploy/local/nginx.sh), spelled out for test_security_gateway.py. The
    # checkout limits are nginx.sh's defaults: the e2e tests prove them (one customer flooding
    # POST /orders gets 429, thirty customers from one address do not).
    "GATEWAY_CHECKOUT_CLIENT_RATE": "2",
    "GATEWAY_CHECKOUT_CLIENT_BURST": "10",
    "GATEWAY_CHECKOUT_ADDRESS_RATE": "30",
    "GATEWAY_CHECKOUT_ADDRESS_BURST": "60",
    "GATEWAY_CHECKOUT_BODY_KB": "64",
    # Raised above the defaults (50/s per credential, 500/s per address): every e2e test polls
    # through one admin token from one address (thirty `settled` waits at 5/s each in the rush).
    "GATEWAY_CLIENT_RATE": "2000",
    "GATEWAY_CLIENT_BURST": "4000",
    "GATEWAY_ADDRESS_RATE": "5000",
    "GATEWAY_ADDRESS_BURST": "10000",
    # No trusted proxy (the default): X-Forwarded-For never names the client here.
    "GATEWAY_TRUSTED_PROXIES": "",
    "GATEWAY_CORS_ORIGINS": "https://shop.e2e.test",
    # Issue 14: the state gauges (consumer lag, outbox) refresh every second (default 15 s).
    "BACKROOM_METRICS_INTERVAL_S": "1",
}


def e2e_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(E2E_SETTINGS)
    env["BACKROOM_RUN_DIR"] = str(ROOT / ".run" / "e2e")
    # Development auth: the services accept HS256 tokens signed with the checkout's generated
    # secret (.run/dev-jwt-secret, whatever BACKROOM_RUN_DIR says), as tests/support/auth.py mints.
    env["BACKROOM_ENV"] = "dev"
    env["BACKROOM_PORT_BASE"] = str(PORT_BASE)
    env["GATEWAY_PORT"] = str(GATEWAY_PORT)
    for i, svc in enumerate(SERVICES, start=1):
        env[f"{svc.upper()}_PORT"] = str(PORT_BASE + i)
    env.update(tracing_env())  # issue 14
    return env


async def _all_caught_up() -> None:
    """Let every service chew through what earlier tests left on the topics before the clock of
    any e2e deadline starts."""
    bootstrap = ServiceSettings().kafka_bootstrap
    for svc, topics_read in subscriptions().items():
        await group_caught_up(bootstrap, svc, list(topics_read), 300)


def _run(*args: str) -> None:
    subprocess.run(["bash", *args], check=True, env=e2e_env(), cwd=ROOT)


# Package scope: the e2e system stops when the e2e tests are done, so its consumers never
# compete with the in-process services of the integration tests in the same pytest session.
@pytest.fixture(scope="package")
def gateway_url(migrated_databases: None) -> Iterator[str]:
    external = os.environ.get("BACKROOM_E2E_GATEWAY")
    if external:
        yield external
        return
    try:
        shutil.rmtree(TRACE_DIR, ignore_errors=True)  # issue 14: this run's spans only
        _run(str(LOCAL / "services.sh"), "up")
        _run(str(LOCAL / "nginx.sh"), "up")
        asyncio.run(_all_caught_up())
        yield f"http://127.0.0.1:{GATEWAY_PORT}"
    finally:
        subprocess.run(["bash", str(LOCAL / "nginx.sh"), "down"], env=e2e_env(), cwd=ROOT)
        subprocess.run(["bash", str(LOCAL / "services.sh"), "down"], env=e2e_env(), cwd=ROOT)


@pytest.fixture(scope="session")
def smtp_maildir() -> Path:
    run_dir = Path(os.environ.get("BACKROOM_RUN_DIR", ROOT / ".run"))
    return run_dir / "smtp" / "maildir"


@pytest.fixture(scope="package")
async def event_stream(gateway_url: str) -> AsyncIterator[TopicTail]:
    """Every public topic, read from the start of the e2e session as a downstream subscriber would."""
    async with TopicTail(*topics.PUBLIC_TOPICS) as tail:
        yield tail


@pytest.fixture
async def gateway(gateway_url: str, event_stream: TopicTail) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        yield client


# --- tracing (issue 14) ---

# Every e2e service traces to a file of its own here (tests/e2e/test_tracing.py reads them).
TRACE_DIR = ROOT / ".run" / "e2e" / "traces"


def tracing_env() -> dict[str, str]:
    """BACKROOM_E2E_TRACING=off runs the e2e system untraced (tests/e2e/test_tracing.py skips)."""
    if os.environ.get("BACKROOM_E2E_TRACING", "file") == "off":
        return {}
    return {
        "BACKROOM_TRACING": "file",
        "BACKROOM_TRACE_FILE": str(TRACE_DIR / "{service}.jsonl"),
        # Finished spans reach the files within half a second (the SDK's default is 5 s).
        "OTEL_BSP_SCHEDULE_DELAY": "500",
    }
