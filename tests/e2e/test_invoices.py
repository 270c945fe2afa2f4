"""Issue 12, invoices, through the gateway: a confirmed order's invoice is a PDF whose text shows
its number and totals, the receipt email carries the same PDF, and an operator's refunds give
credit notes that read right; numbers run without gaps."""

import subprocess
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx

from deploy.local.smtp_sink import read_messages
from tests.e2e.shop import new_product, order, payments, place_order, settled
from tests.support.auth import admin, bearer
from tests.support.eventually import eventually

PDF = "application/pdf"


def pdftotext(pdf: bytes) -> str:
    done = subprocess.run(
        ["/usr/bin/pdftotext", "-layout", "-", "-"], input=pdf, capture_output=True, check=True
    )
    return done.stdout.decode()


def sequence(number: str) -> int:
    return int(number.rsplit("-", 1)[1])


def receipt(maildir: Path, order_id: str) -> EmailMessage | None:
    for message in read_messages(maildir):
        if order_id in str(message["Subject"]) and "confirmed" in str(message["Subject"]):
            return message
    return None


async def invoiced(gateway: httpx.AsyncClient, customer: str, sku: str) -> dict[str, Any]:
    placed = await place_order(gateway, customer, [(sku, 2)])
    assert placed.status_code == 202, placed.text
    confirmed = await settled(gateway, placed.json()["id"])
    assert confirmed["status"] == "confirmed", confirmed
    return confirmed


async def test_the_invoice_pdf_the_receipt_attachment_and_credit_notes(
    gateway: httpx.AsyncClient, smtp_maildir: Path
) -> None:
    sku = await new_product(gateway, stock=20, price=1250)
    who = f"invoice-ivy-{uuid.uuid4().hex[:6]}"
    confirmed = await invoiced(gateway, who, sku)
    order_id = confirmed["id"]
    invoice = confirmed["invoice"]
    number = invoice["number"]
    assert invoice["url"] == f"/orders/{order_id}/invoice"
    assert confirmed["credit_notes"] == []

    response = await gateway.get(invoice["url"], headers=bearer(who))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == PDF
    assert response.headers["content-disposition"] == f'inline; filename="{number}.pdf"'
    text = pdftotext(response.content)
    # 2 x 12.50 at the region's 20 %: 25.00 + 5.00 = 30.00.
    for expected in (
        f"Invoice {number}",
        sku,
        "Subtotal: EUR 25.00",
        "Tax: EUR 5.00",
        "Total: EUR 30.00",
        "20%: taxable EUR 25.00, tax EUR 5.00",
        f"{who}@shoppers.test",
    ):
        assert expected in text, expected
    stranger = await gateway.get(invoice["url"], headers=bearer(f"{who}-not"))
    assert stranger.status_code == 404

    # The receipt email carries the very same file.
    message = await eventually(
        lambda: _found(receipt(smtp_maildir, order_id)), timeout=30, what="receipt email"
    )
    [attachment] = list(message.iter_attachments())
    assert attachment.get_content_type() == PDF
    assert attachment.get_filename() == f"{number}.pdf"
    assert attachment.get_content() == response.content
    body = message.get_body(("plain",))
    assert body is not None and number in body.get_content()

    # Two refunds by an operator: two credit notes, numbered one after the other.
    [payment] = await payments(gateway, order_id)
    for amount, reason in ((1200, "damaged mug"), (600, "late delivery")):
        refund = await gateway.post(
            f"/payments/{payment['id']}/refunds",
            json={"amount": {"amount": amount, "currency": "EUR"}, "reason": reason},
            headers=admin() | {"Idempotency-Key": uuid.uuid4().hex},
        )
        assert refund.status_code == 201, refund.text

    async def two_notes() -> list[dict[str, Any]] | None:
        notes: list[dict[str, Any]] = (await order(gateway, order_id))["credit_notes"]
        return notes if len(notes) == 2 else None

    first, second = await eventually(two_notes, timeout=30, what="two credit notes")
    assert [first["amount"]["amount"], second["amount"]["amount"]] == [1200, 600]
    assert sequence(second["number"]) == sequence(first["number"]) + 1
    response = await gateway.get(first["url"], headers=bearer(who))
    assert response.status_code == 200 and response.headers["content-type"] == PDF
    text = pdftotext(response.content)
    # 12.00 of an invoice at 20 %: 10.00 net + 2.00 tax.
    for expected in (
        f"Credit note {first['number']}",
        f"Credits invoice: {number}",
        "damaged mug",
        "20%: taxable EUR 10.00, tax EUR 2.00",
        "Total credited: EUR 12.00",
    ):
        assert expected in text, expected
    assert (await gateway.get(first["url"], headers=bearer(f"{who}-not"))).status_code == 404


async def test_invoice_numbers_run_without_gaps(gateway: httpx.AsyncClient) -> None:
    sku = await new_product(gateway, stock=20, price=500)
    numbers = [
        (await invoiced(gateway, f"gapless-gus-{i}", sku))["invoice"]["number"] for i in range(3)
    ]
    sequences = [sequence(n) for n in numbers]
    assert sequences == list(range(sequences[0], sequences[0] + 3)), numbers
    # A rejected order (declined card) takes no number.
    declined = await place_order(gateway, "gapless-gus-x", [(sku, 1)], token="tok_chargeDeclined")
    rejected = await settled(gateway, declined.json()["id"])
    assert rejected["status"] == "rejected" and rejected["invoice"] is None
    after = (await invoiced(gateway, "gapless-gus-4", sku))["invoice"]["number"]
    assert sequence(after) == sequences[-1] + 1


async def _found(message: EmailMessage | None) -> EmailMessage | None:
    return message
