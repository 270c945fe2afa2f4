"""The shared PDF renderer: what a reader of the invoice and credit note sees (text as pypdf
extracts it), money in each currency's minor units, and the same bytes every time."""

import io
from datetime import UTC, datetime

from pypdf import PdfReader

from libs.events.common import Money
from libs.events.orders import (
    CreditNote,
    Invoice,
    InvoiceBuyer,
    InvoiceLine,
    InvoiceSeller,
    TaxRateTotal,
)
from libs.kit.documents import format_rate, render_credit_note, render_invoice
from libs.kit.money import format_money

ISSUED = datetime(2026, 12, 1, 10, 30, tzinfo=UTC)


def m(amount: int, currency: str = "EUR") -> Money:
    return Money(amount=amount, currency=currency)


def invoice(currency: str = "EUR") -> Invoice:
    return Invoice(
        number="INV-2026-000042",
        issued_at=ISSUED,
        order_id="order-1",
        seller=InvoiceSeller(
            name="Backroom Ltd",
            address_lines=["1 Rue de la Paix", "75002 Paris"],
            vat_id="FR12345678901",
            email="billing@backroom.example",
        ),
        buyer=InvoiceBuyer(
            customer_id="alice",
            email="alice@example.com",
            shipping_address={"name": "Zoë Ångström", "city": "Łódź"},
        ),
        lines=[
            InvoiceLine(
                sku="MUG-1",
                quantity=2,
                unit_price=m(1250, currency),
                discount=m(100, currency),
                net=m(2400, currency),
                tax_rate_bps=2000,
                tax=m(480, currency),
                gross=m(2880, currency),
            ),
            InvoiceLine(
                sku="BOOK-7",
                quantity=1,
                unit_price=m(1000, currency),
                discount=m(0, currency),
                net=m(1000, currency),
                tax_rate_bps=550,
                tax=m(55, currency),
                gross=m(1055, currency),
            ),
        ],
        tax_breakdown=[
            TaxRateTotal(rate_bps=2000, taxable=m(2400, currency), tax=m(480, currency)),
            TaxRateTotal(rate_bps=550, taxable=m(1000, currency), tax=m(55, currency)),
        ],
        subtotal=m(3500, currency),
        discount=m(100, currency),
        tax=m(535, currency),
        total=m(3935, currency),
        currency=currency,
    )


def text_of(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


def test_money_is_written_in_the_currency_s_minor_units() -> None:
    assert format_money(1234, "EUR") == "EUR 12.34"
    assert format_money(5, "EUR") == "EUR 0.05"
    assert format_money(1234, "JPY") == "JPY 1234"
    assert format_money(1234, "KWD") == "KWD 1.234"
    assert format_money(-250, "USD") == "USD -2.50"
    assert [format_rate(r) for r in (2000, 550, 1925, 0)] == ["20%", "5.5%", "19.25%", "0%"]


def test_the_invoice_shows_number_parties_lines_rates_and_totals() -> None:
    text = text_of(render_invoice(invoice()))
    for expected in (
        "Invoice INV-2026-000042",
        "2026-12-01 10:30 UTC",
        "Backroom Ltd",
        "1 Rue de la Paix",
        "VAT id: FR12345678901",
        "alice@example.com",
        "Zoë Ångström",
        "MUG-1",
        "BOOK-7",
        "20%: taxable EUR 24.00, tax EUR 4.80",
        "5.5%: taxable EUR 10.00, tax EUR 0.55",
        "Subtotal: EUR 35.00",
        "Discount: EUR 1.00",
        "Tax: EUR 5.35",
        "Total: EUR 39.35",
    ):
        assert expected in text, expected
    assert "Shipping" not in text  # none charged, no line for it
    # Letters the core fonts lack are written without their marks, never dropped silently.
    assert "Lódz" in text


def test_yen_amounts_have_no_decimals() -> None:
    text = text_of(render_invoice(invoice("JPY")))
    assert "Total: JPY 3935" in text and "JPY 39.35" not in text


def test_the_same_invoice_renders_to_the_same_bytes() -> None:
    # orders (GET) and notifications (the attachment) render it separately: they must agree.
    assert render_invoice(invoice()) == render_invoice(invoice())
    assert render_invoice(invoice()) != render_invoice(invoice().model_copy(update={"number": "X"}))


def test_a_credit_note_names_the_invoice_it_credits_and_its_tax() -> None:
    note = CreditNote(
        number="CN-2026-000003",
        issued_at=ISSUED,
        order_id="order-1",
        invoice_number="INV-2026-000042",
        seller=invoice().seller,
        buyer=invoice().buyer,
        reason="damaged on arrival",
        refund_id="ref-1",
        tax_breakdown=[TaxRateTotal(rate_bps=2000, taxable=m(1000), tax=m(200))],
        net=m(1000),
        tax=m(200),
        amount=m(1200),
        currency="EUR",
    )
    pdf = render_credit_note(note)
    text = text_of(pdf)
    for expected in (
        "Credit note CN-2026-000003",
        "Credits invoice: INV-2026-000042",
        "damaged on arrival",
        "20%: taxable EUR 10.00, tax EUR 2.00",
        "Total credited: EUR 12.00",
    ):
        assert expected in text, expected
    assert pdf == render_credit_note(note)


def test_a_line_too_long_for_the_page_wraps_and_loses_nothing() -> None:
    # Lines that fit are single cells (cheap); a longer one still wraps onto several lines.
    long_street = " ".join(f"Building{n}" for n in range(40))
    buyer = invoice().buyer.model_copy(
        update={"shipping_address": {"line1": long_street, "city": "Lyon"}}
    )
    text = text_of(render_invoice(invoice().model_copy(update={"buyer": buyer})))
    assert "Building0" in text and "Building39" in text and "City: Lyon" in text
    # The line is wider than the page: it took more than one line of text.
    lines_with_buildings = [line for line in text.splitlines() if "Building" in line]
    assert len(lines_with_buildings) > 1


def test_an_invoice_longer_than_a_page_goes_on_and_keeps_every_line() -> None:
    # Rows and lines are placed by hand (not cells): the page break must still happen.
    line = invoice().lines[0]
    lines = [line.model_copy(update={"sku": f"SKU-{n:03d}"}) for n in range(100)]
    pdf = render_invoice(invoice().model_copy(update={"lines": lines}))
    pages = PdfReader(io.BytesIO(pdf)).pages
    assert len(pages) >= 3
    text = text_of(pdf)
    assert all(f"SKU-{n:03d}" in text for n in range(100))
    assert "Total: EUR 39.35" in pages[-1].extract_text()
    assert "Invoice INV-2026-000042" in pages[0].extract_text()


def test_a_value_wider_than_its_column_is_cut_to_fit() -> None:
    wide = invoice().lines[0].model_copy(update={"sku": "W" * 40})
    text = text_of(render_invoice(invoice().model_copy(update={"lines": [wide]})))
    assert "W" * 10 in text and "W" * 20 not in text
