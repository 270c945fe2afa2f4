"""Issue 12's shipments through the gateway: a confirmed order gets a sandbox label (a PDF whose
text shows the tracking number), the carrier's signed tracking webhooks ship it (the shipped
email carries the tracking link) and deliver it (the delivered email); a replayed webhook
changes nothing and a forged one is refused."""

import asyncio
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx

from deploy.local.smtp_sink import read_messages
from services.orders.adapters import SandboxCarrier
from tests.e2e.conftest import E2E_SETTINGS
from tests.e2e.shop import new_product, order, place_order, settled
from tests.support.auth import bearer
from tests.support.eventually import eventually

CARRIER = SandboxCarrier(E2E_SETTINGS["BACKROOM_SANDBOX_CARRIER_WEBHOOK_SECRET"])


def mail_texts(maildir: Path, order_id: str, subject_word: str) -> list[str]:
    """The plain text of each email about the order whose subject has `subject_word`."""
    texts = []
    for message in read_messages(maildir):
        subject = str(message["Subject"])
        if order_id in subject and subject_word in subject.lower():
            body = message.get_body(preferencelist=("plain",))
            texts.append(body.get_content() if body is not None else "")
    return texts


def pdf_text(pdf: Path) -> str:
    done = subprocess.run(["pdftotext", str(pdf), "-"], check=True, capture_output=True, text=True)
    return done.stdout


def tracking_event(number: str, status: str) -> bytes:
    return json.dumps(
        {
            "id": f"evt_{uuid.uuid4().hex}",
            "type": "tracker.updated",
            "tracking_number": number,
            "status": status,
            "detail": f"e2e {status}",
        }
    ).encode()


async def carrier_says(gateway: httpx.AsyncClient, body: bytes, **headers: str) -> httpx.Response:
    signed = CARRIER.sign(body) | {"Content-Type": "application/json"} | headers
    return await gateway.post("/orders/webhooks/carriers/sandbox", content=body, headers=signed)


async def test_a_confirmed_order_is_labelled_tracked_shipped_and_delivered(
    gateway: httpx.AsyncClient, smtp_maildir: Path, tmp_path: Path
) -> None:
    sku = await new_product(gateway, stock=5, price=1800)
    placed = await place_order(gateway, "parcel-pat", [(sku, 2)])
    assert placed.status_code == 202, placed.text
    order_id = placed.json()["id"]
    assert (await settled(gateway, order_id))["status"] == "confirmed"

    async def labelled() -> dict[str, Any] | None:
        shipments = (await order(gateway, order_id))["shipments"]
        return shipments[0] if shipments and shipments[0]["status"] == "label_created" else None

    shipment = await eventually(labelled, timeout=20, what="the shipment's label")
    number = shipment["tracking_number"]
    assert shipment["carrier"] == "sandbox" and number.startswith("SBX")

    # The label is a PDF the customer downloads through the gateway; pdftotext reads it.
    label = await gateway.get(shipment["label_url"], headers=bearer("parcel-pat"))
    assert label.status_code == 200, label.text
    assert label.headers["content-type"] == "application/pdf"
    pdf = tmp_path / "label.pdf"
    pdf.write_bytes(label.content)
    text = await asyncio.to_thread(pdf_text, pdf)
    assert number in text and order_id in text
    assert (await gateway.get(shipment["label_url"], headers=bearer("nosy-ned"))).status_code == 404

    # A forged webhook is refused and moves nothing.
    forged = tracking_event(number, "in_transit")
    refused = await gateway.post(
        "/orders/webhooks/carriers/sandbox",
        content=forged,
        headers={"sandbox-signature": "t=1,v1=00", "Content-Type": "application/json"},
    )
    assert refused.status_code == 400
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert (await order(gateway, order_id))["status"] == "confirmed"

    in_transit = tracking_event(number, "in_transit")
    answer = await carrier_says(gateway, in_transit)
    assert answer.status_code == 200, answer.text
    shipped = await order(gateway, order_id)
    assert shipped["status"] == "shipped"
    assert shipped["tracking"]["tracking_number"] == number
    link = shipped["tracking"]["tracking_url"]
    assert number in link

    async def shipped_mail() -> str | None:
        texts = mail_texts(smtp_maildir, order_id, "shipped")
        return texts[0] if texts else None

    mail = await eventually(shipped_mail, timeout=20, what="the shipped email")
    assert f"Track your parcel: {link}" in mail
    assert f"Tracking number: {number}" in mail

    # The carrier delivers the same event again: nothing changes.
    replay = await carrier_says(gateway, in_transit)
    assert replay.status_code == 200 and replay.json()["outcome"] == "duplicate"
    assert await order(gateway, order_id) == shipped

    delivered = await carrier_says(gateway, tracking_event(number, "delivered"))
    assert delivered.status_code == 200 and delivered.json()["outcome"] == "delivered"
    final = await order(gateway, order_id)
    assert final["status"] == "delivered"
    assert [h["status"] for h in final["history"]][-3:] == ["confirmed", "shipped", "delivered"]
    assert final["shipments"][0]["status"] == "delivered"

    async def delivered_mail() -> str | None:
        texts = mail_texts(smtp_maildir, order_id, "delivered")
        return texts[0] if texts else None

    assert "has been delivered" in await eventually(
        delivered_mail, timeout=20, what="the delivered email"
    )
    assert len(mail_texts(smtp_maildir, order_id, "shipped")) == 1
