"""The receipt attaches the invoice PDF an OrderConfirmed carries (the same file orders
answers on GET /orders/{id}/invoice); an older event without one sends the receipt as before."""

import io
from datetime import UTC, datetime

from pypdf import PdfReader

from libs.events.common import Money
from libs.events.orders import Invoice, InvoiceBuyer, InvoiceLine, InvoiceSeller, TaxRateTotal
from libs.kit.documents import render_invoice
from services.notifications.adapters import JinjaTemplates, OutgoingEmail, build_message
from services.notifications.domain import Attachment
from services.notifications.service import Intake
from tests.unit.notifications.test_email_use_cases import WAREHOUSE, World, order_event


def eur(amount: int) -> Money:
    return Money(amount=amount, currency="EUR")


INVOICE = Invoice(
    number="INV-2026-000007",
    issued_at=datetime(2026, 12, 1, 9, 0, tzinfo=UTC),
    order_id="o-7",
    seller=InvoiceSeller(name="Backroom Ltd"),
    buyer=InvoiceBuyer(customer_id="carol", email="o-7@example.com"),
    lines=[
        InvoiceLine(
            sku="MUG-1",
            quantity=1,
            unit_price=eur(100),
            discount=eur(0),
            net=eur(100),
            tax_rate_bps=0,
            tax=eur(0),
            gross=eur(100),
        )
    ],
    tax_breakdown=[TaxRateTotal(rate_bps=0, taxable=eur(100), tax=eur(0))],
    subtotal=eur(100),
    discount=eur(0),
    tax=eur(0),
    total=eur(100),
    currency="EUR",
)


def real_templates(world: World) -> None:
    world.intake = Intake(JinjaTemplates(), WAREHOUSE, world.clock)


async def test_the_receipt_attaches_the_invoice_pdf() -> None:
    world = World()
    real_templates(world)
    event = order_event("OrderConfirmed", "o-7", invoice=INVOICE.model_dump(mode="json"))
    assert await world.consume(event)
    await world.send()
    [sent] = world.mailer.sent
    [attachment] = sent.attachments
    assert (attachment.filename, attachment.content_type) == (
        "INV-2026-000007.pdf",
        "application/pdf",
    )
    assert attachment.content == render_invoice(INVOICE)  # byte for byte what orders answers
    text = PdfReader(io.BytesIO(attachment.content)).pages[0].extract_text()
    assert "INV-2026-000007" in text and "Total: EUR 1.00" in text
    assert "Your invoice INV-2026-000007 is attached" in sent.text


async def test_a_receipt_without_an_invoice_has_no_attachment() -> None:
    world = World()
    real_templates(world)
    assert await world.consume(order_event("OrderConfirmed", "o-8"))
    await world.send()
    [sent] = world.mailer.sent
    assert sent.attachments == ()
    assert "invoice" not in sent.text.lower()


def test_the_message_carries_the_attachment_as_a_mime_part() -> None:
    pdf = render_invoice(INVOICE)
    outgoing = OutgoingEmail(
        to="carol@example.com",
        subject="Your order",
        text="Thanks",
        message_id="<o-7/order_confirmed@backroom>",
        template="order_confirmed",
        date=datetime(2026, 12, 1, tzinfo=UTC),
        attachments=(Attachment("INV-2026-000007.pdf", "application/pdf", pdf),),
    )
    message = build_message("shop@backroom.local", outgoing)
    [part] = list(message.iter_attachments())
    assert part.get_content_type() == "application/pdf"
    assert part.get_filename() == "INV-2026-000007.pdf"
    assert part.get_content() == pdf
    assert message.get_body(("plain",)).get_content().strip() == "Thanks"  # type: ignore[union-attr]
