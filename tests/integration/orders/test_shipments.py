"""Shipments on the real PostgreSQL and Kafka (issue 12): a confirmed order gets its sandbox label
(a PDF served to its owner), the label claim skips rows another worker holds and fences a
claim overtaken after its lease, and the carrier webhook route verifies, deduplicates and moves
the order to shipped and delivered."""

import io
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pypdf import PdfReader

from libs.kit.db import Database
from services.orders.adapters import SandboxCarrier
from services.orders.db import Store
from services.orders.domain import ShipmentIntent, ShipmentStatus
from services.orders.main import create_app
from services.orders.settings import OrdersSettings
from tests.integration.orders.conftest import Priced
from tests.integration.orders.test_orders import confirmed, customer, placed, read
from tests.support.auth import admin, bearer
from tests.support.eventually import eventually
from tests.support.service import running

SECRET = "whsec_integration_carrier"


class RolledBack(Exception):
    """Ends a transaction block with a rollback."""


@pytest.fixture(scope="module")
def app(pricing: Priced) -> FastAPI:
    return create_app(
        OrdersSettings(
            pricing_url=pricing.url,
            relay_poll_interval_s=0.5,
            sandbox_carrier_webhook_secret=SECRET,
            # Only wakes (a confirmation) run the label worker: the claim tests below hold
            # shipments of their own that no poll must take from them.
            label_poll_interval_s=3600,
        )
    )


@pytest.fixture(scope="module")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with running(app) as http:
        yield http


async def labelled(client: httpx.AsyncClient, order_id: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any]:
        [shipment] = (await read(client, order_id))["shipments"]
        assert shipment["status"] == "label_created", shipment
        return dict(shipment)

    return await eventually(probe, timeout=20, what=f"label of order {order_id}")


def tracking(number: str, status: str, event_id: str | None = None) -> bytes:
    return json.dumps(
        {
            "id": event_id or f"evt-{uuid.uuid4().hex}",
            "type": "tracker.updated",
            "tracking_number": number,
            "status": status,
            "detail": f"parcel {status}",
        }
    ).encode()


async def webhook(
    client: httpx.AsyncClient, body: bytes, *, secret: str = SECRET, carrier: str = "sandbox"
) -> httpx.Response:
    headers = SandboxCarrier(secret).sign(body) | {"Content-Type": "application/json"}
    return await client.post(f"/orders/webhooks/carriers/{carrier}", content=body, headers=headers)


async def test_a_confirmed_order_gets_a_sandbox_label_its_owner_can_download(
    client: httpx.AsyncClient, pricing: Priced
) -> None:
    who = customer()
    order = await confirmed(client, pricing, who)

    shipment = await labelled(client, order["id"])

    assert shipment["carrier"] == "sandbox"
    assert shipment["tracking_number"].startswith("SBX")
    assert shipment["tracking_url"].endswith(shipment["tracking_number"])
    assert shipment["label_url"] == f"/orders/{order['id']}/shipments/{shipment['id']}/label"
    pdf = await client.get(shipment["label_url"], headers=bearer(who))
    assert pdf.status_code == 200, pdf.text
    assert pdf.headers["content-type"] == "application/pdf"
    text = PdfReader(io.BytesIO(pdf.content)).pages[0].extract_text()
    assert shipment["tracking_number"] in text and order["id"] in text
    assert (await client.get(shipment["label_url"], headers=admin())).status_code == 200
    stranger = await client.get(shipment["label_url"], headers=bearer(customer()))
    assert stranger.status_code == 404


async def test_tracking_webhooks_ship_and_deliver_the_order_once_each(
    client: httpx.AsyncClient, pricing: Priced
) -> None:
    order = await confirmed(client, pricing, customer())
    number = (await labelled(client, order["id"]))["tracking_number"]

    in_transit = tracking(number, "in_transit", f"evt-{uuid.uuid4().hex}")
    answer = await webhook(client, in_transit)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"received": True, "outcome": "in_transit"}
    shipped = await read(client, order["id"])
    assert shipped["status"] == "shipped"
    assert shipped["tracking"]["carrier"] == "sandbox"
    assert shipped["tracking"]["tracking_number"] == number
    assert shipped["tracking"]["tracking_url"].endswith(number)

    replay = await webhook(client, in_transit)
    assert replay.json()["outcome"] == "duplicate"
    assert await read(client, order["id"]) == shipped

    delivered = await webhook(client, tracking(number, "delivered"))
    assert delivered.json()["outcome"] == "delivered"
    final = await read(client, order["id"])
    assert final["status"] == "delivered"
    assert [h["status"] for h in final["history"]][-2:] == ["shipped", "delivered"]
    assert final["shipments"][0]["status"] == "delivered"


async def test_delivered_for_a_confirmed_order_records_shipped_then_delivered(
    client: httpx.AsyncClient, pricing: Priced
) -> None:
    order = await confirmed(client, pricing, customer())
    number = (await labelled(client, order["id"]))["tracking_number"]

    assert (await webhook(client, tracking(number, "delivered"))).status_code == 200

    final = await read(client, order["id"])
    assert [h["status"] for h in final["history"]][-3:] == ["confirmed", "shipped", "delivered"]


async def test_a_webhook_not_signed_by_the_carrier_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, pricing: Priced
) -> None:
    order = await confirmed(client, pricing, customer())
    number = (await labelled(client, order["id"]))["tracking_number"]

    forged = await webhook(client, tracking(number, "delivered"), secret="guessed")
    assert forged.status_code == 400
    assert forged.headers["content-type"].startswith("application/problem+json")
    assert "signature" in forged.text
    unsigned = await client.post(
        "/orders/webhooks/carriers/sandbox", content=tracking(number, "delivered")
    )
    assert unsigned.status_code == 400
    assert (await read(client, order["id"]))["status"] == "confirmed"


async def test_unknown_carriers_and_tracking_numbers(client: httpx.AsyncClient) -> None:
    unknown_carrier = await webhook(client, tracking("SBX1", "delivered"), carrier="ups")
    assert unknown_carrier.status_code == 404
    ignored = await webhook(client, tracking(f"SBX{uuid.uuid4().int}"[:20], "delivered"))
    assert ignored.status_code == 200
    assert ignored.json()["outcome"] == "ignored"
    garbage = b'{"id": "e", "status": "teleported"}'
    refused = await webhook(client, garbage)
    assert refused.status_code == 400


async def test_an_operator_can_ask_for_another_shipment_of_a_confirmed_order(
    client: httpx.AsyncClient, pricing: Priced
) -> None:
    order = await confirmed(client, pricing, customer())
    await labelled(client, order["id"])

    again = await client.post(f"/orders/{order['id']}/shipments", headers=admin())
    assert again.status_code == 202, again.text

    async def two() -> list[str]:
        statuses = [s["status"] for s in (await read(client, order["id"]))["shipments"]]
        assert statuses == ["label_created", "label_created"], statuses
        return statuses

    await eventually(two, timeout=20, what="second label")
    pending = await placed(client, pricing, customer())
    refused = await client.post(f"/orders/{pending['id']}/shipments", headers=admin())
    assert refused.status_code == 409
    customer_try = await client.post(f"/orders/{order['id']}/shipments", headers=bearer("x"))
    assert customer_try.status_code == 403


async def test_the_label_claim_skips_shipments_another_worker_holds(
    app: FastAPI, client: httpx.AsyncClient, pricing: Priced
) -> None:
    order = await placed(client, pricing, customer())  # pending: no automatic shipment
    db = app.state.runtime.db
    ours = [f"shp-{uuid.uuid4().hex}" for _ in range(2)]
    async with db.transaction() as session:
        for shipment_id in ours:
            assert await Store(session).shipments.add_intent(
                shipment_id, order["id"], automatic=False
            )

    held_ids: list[str] = []
    with pytest.raises(RolledBack):
        async with db.transaction() as holder:
            [held] = await Store(holder).shipments.claim_due("sandbox", 1, 60)
            assert held.id in ours
            held_ids.append(held.id)
            async with db.transaction() as other:
                taken = await Store(other).shipments.claim_due("sandbox", 10, 60)
            # The held row is skipped, not waited for; the other one is taken.
            assert {i.id for i in taken} & set(ours) == set(ours) - {held.id}
            raise RolledBack

    # The holder rolled back: its row is free again (never leased).
    async with db.transaction() as session:
        again = await Store(session).shipments.claim_due("sandbox", 10, 60)
    assert held_ids[0] in {i.id for i in again}


async def manual_shipment(
    app: FastAPI, client: httpx.AsyncClient, pricing: Priced
) -> tuple[Database, str]:
    """A shipment owed for a new (pending) order, claimed by no one yet, and the database."""
    order = await placed(client, pricing, customer())
    db: Database = app.state.runtime.db
    shipment_id = f"shp-{uuid.uuid4().hex}"
    async with db.transaction() as session:
        await Store(session).shipments.add_intent(shipment_id, order["id"], automatic=False)
    return db, shipment_id


async def claim(db: Database, shipment_id: str, lease_s: float) -> ShipmentIntent:
    """The label worker's claim of that shipment, for `lease_s`."""
    async with db.transaction() as session:
        [intent] = [
            i
            for i in await Store(session).shipments.claim_due("sandbox", 10, lease_s)
            if i.id == shipment_id
        ]
    return intent


async def test_a_claim_overtaken_after_its_lease_cannot_record_its_outcome(
    app: FastAPI, client: httpx.AsyncClient, pricing: Priced
) -> None:
    db, shipment_id = await manual_shipment(app, client, pricing)
    first = await claim(db, shipment_id, 0)
    second = await claim(db, shipment_id, 60)  # the lease (0 s) ran out: claimed again
    assert (first.attempts, second.attempts) == (1, 2)
    async with db.transaction() as session:
        late = await Store(session).shipments.record_label(
            shipment_id,
            first.attempts,
            tracking_number="LATE",
            carrier_ref="r",
            label_pdf=None,
            label_url="u",
            tracking_url=None,
        )
        current = await Store(session).shipments.record_label(
            shipment_id,
            second.attempts,
            tracking_number=f"NOW{uuid.uuid4().hex[:10]}",
            carrier_ref="r",
            label_pdf=b"%PDF",
            label_url="u",
            tracking_url=None,
        )
    assert late is None
    assert current is not None and current.status is ShipmentStatus.LABEL_CREATED


async def test_a_label_the_carrier_refused_leaves_the_shipment_failed_with_its_reason(
    app: FastAPI, client: httpx.AsyncClient, pricing: Priced
) -> None:
    db, shipment_id = await manual_shipment(app, client, pricing)
    claimed = await claim(db, shipment_id, 60)
    reason = "no rate for this address " + "x" * 600  # kept to the column's 500
    async with db.transaction() as session:
        shipments = Store(session).shipments
        stale = await shipments.record_not_bought(
            shipment_id, claimed.attempts - 1, ShipmentStatus.FAILED, reason
        )
        failed = await shipments.record_not_bought(
            shipment_id, claimed.attempts, ShipmentStatus.FAILED, reason
        )
        again = await shipments.record_not_bought(
            shipment_id, claimed.attempts, ShipmentStatus.FAILED, reason
        )
    assert stale is None and again is None  # another claim's, and a settled shipment's
    assert failed is not None and failed.id == shipment_id
    assert failed.status is ShipmentStatus.FAILED and failed.failure_reason == reason[:500]


async def test_a_shipment_recorded_claimed_is_no_one_elses_until_its_lease_runs_out(
    app: FastAPI, client: httpx.AsyncClient, pricing: Priced
) -> None:
    # Issue 10: a confirmation writes its shipment claimed for its own label worker.
    order = await placed(client, pricing, customer())
    db = app.state.runtime.db
    leased, lapsed = f"shp-{uuid.uuid4().hex}", f"shp-{uuid.uuid4().hex}"
    async with db.transaction() as session:
        shipments = Store(session).shipments
        assert await shipments.add_intent(
            leased, order["id"], automatic=False, carrier="sandbox", lease_s=60
        )
        assert await shipments.add_intent(
            lapsed, order["id"], automatic=False, carrier="sandbox", lease_s=0
        )
    async with db.transaction() as session:
        taken = {i.id: i for i in await Store(session).shipments.claim_due("sandbox", 10, 60)}
    assert leased not in taken  # held by the claim it was written with
    assert taken[lapsed].attempts == 2  # its first claim lapsed: this is the second
    assert taken[lapsed].carrier == "sandbox"
