"""`backroom reconcile` against the running system, as an operator runs it: after a normal
checkout nothing it reports is about that checkout (and the exit status says whether anything
was found at all); an inconsistency seeded in payments' database is reported with its ids, and
the exit status is 1."""

import asyncio
import json
import subprocess
import sys
import uuid
from typing import Any

import httpx
from sqlalchemy import text

from libs.kit.db import Database
from services.payments.settings import PaymentsSettings
from tests.e2e.conftest import ROOT, e2e_env
from tests.e2e.shop import new_product, place_order, settled, stock
from tests.support.eventually import eventually


async def reconcile(gateway_url: str, *args: str) -> tuple[int, dict[str, Any]]:
    done = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            *("-m", "libs.kit.cli", "reconcile", "--run", "--json"),
            *("--gateway", gateway_url, *args),
        ],
        capture_output=True,
        text=True,
        env=e2e_env(),
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def mentioning(findings: list[dict[str, Any]], *ids: str) -> list[dict[str, Any]]:
    return [f for f in findings if set(f["ids"].values()) & set(ids)]


async def test_a_normal_checkout_leaves_nothing_to_reconcile(
    gateway: httpx.AsyncClient, gateway_url: str
) -> None:
    sku = await new_product(gateway, stock=5)
    placed = await place_order(gateway, f"cust-{uuid.uuid4().hex[:8]}", [(sku, 2)])
    assert placed.status_code == 202, placed.text
    order_id = placed.json()["id"]
    assert (await settled(gateway, order_id))["status"] == "confirmed"

    async def committed() -> bool:
        item = await stock(gateway, sku)
        return bool(item["on_hand"] == 3 and item["reserved"] == 0)

    await eventually(committed, what=f"{sku} committed")

    status, answer = await reconcile(gateway_url)

    assert answer["errors"] == []
    assert set(answer["services"]) == {
        "catalog",
        "inventory",
        "pricing",
        "orders",
        "payments",
        "notifications",
    }
    assert mentioning(answer["findings"], sku, order_id) == []
    # Exit 0 exactly when nothing at all was found (other tests share these databases).
    assert status == (1 if answer["findings"] else 0), answer["findings"]


async def test_a_seeded_inconsistency_is_reported_with_its_ids_and_exit_1(
    gateway_url: str,
) -> None:
    db = Database.from_settings(PaymentsSettings())
    order_id, payment_id = f"ord-{uuid.uuid4().hex}", str(uuid.uuid4())
    try:
        async with db.transaction() as session:  # a rejected order's capture nobody refunded
            await session.execute(
                text(
                    "INSERT INTO payment_orders (order_id, amount, currency, closed_reason,"
                    " capture_status, updated_at)"
                    " VALUES (:o, 1000, 'EUR', 'rejected', 'captured', now() - interval '1 hour')"
                ),
                {"o": order_id},
            )
            await session.execute(
                text(
                    "INSERT INTO payments (id, order_id, customer_id, kind, amount, currency,"
                    " status, provider_ref) VALUES (:p, :o, 'cust-e2e-reconcile', 'capture',"
                    " 1000, 'EUR', 'captured', :ref)"
                ),
                {"p": payment_id, "o": order_id, "ref": f"ch_{payment_id}"},
            )

        status, answer = await reconcile(gateway_url, "--service", "payments")
    finally:
        async with db.transaction() as session:
            for table in ("payments", "payment_orders"):
                await session.execute(
                    text(f"DELETE FROM {table} WHERE order_id = :o"), {"o": order_id}
                )
        await db.dispose()

    assert status == 1
    [finding] = mentioning(answer["findings"], payment_id)
    assert finding["service"] == "payments" and finding["kind"] == "capture_not_refunded"
    assert finding["ids"] == {"payment_id": payment_id, "order_id": order_id}
