"""After the e2e flows (file order: checkouts, cancellations, webhooks, admin changes), no service
has run a statement SQLAlchemy had to compile from scratch: every statement has a cache key, so
none pays a full SQL compile per call (issue 10; ADR 0009)."""

import httpx

from tests.e2e.conftest import PORT_BASE, SERVICES

METRIC = "backroom_db_uncacheable_statements_total"


def _value(exposition: str, name: str) -> float:
    for line in exposition.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


async def test_no_service_ran_a_statement_without_a_cache_key(gateway_url: str) -> None:
    counts = {}
    async with httpx.AsyncClient(timeout=10) as client:
        for index, service in enumerate(SERVICES, start=1):
            response = await client.get(f"http://127.0.0.1:{PORT_BASE + index}/metrics")
            response.raise_for_status()
            counts[service] = _value(response.text, METRIC)
    assert counts == dict.fromkeys(SERVICES, 0.0), (
        "statements compiled on every call; the service's log names them"
    )
