"""PDF documents of the shop (invoices, credit notes), rendered the same way wherever they are
needed: orders answers them on GET, notifications attaches them to the receipt email."""

import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime

from fpdf import FPDF

from libs.events.common import Money
from libs.events.orders import CreditNote, Invoice, InvoiceBuyer, InvoiceSeller, TaxRateTotal
from libs.kit.money import format_money


def format_rate(rate_bps: int) -> str:
    """A tax rate in basis points as a percentage: 2000 -> "20%", 550 -> "5.5%"."""
    whole, rest = divmod(rate_bps, 100)
    return f"{whole}%" if rest == 0 else f"{whole}.{rest:02d}".rstrip("0") + "%"


def render_invoice(invoice: Invoice) -> bytes:
    """The invoice as a PDF. Deterministic: the same invoice gives the same bytes (the PDF's
    creation date is the invoice's issue time), so every service that renders it agrees."""
    pdf = _Document(f"Invoice {invoice.number}", invoice.issued_at)
    pdf.heading(f"Invoice {invoice.number}")
    pdf.facts(
        [
            ("Invoice number", invoice.number),
            ("Issued", _date(invoice.issued_at)),
            ("Order", invoice.order_id),
            ("Currency", invoice.currency),
        ]
    )
    pdf.parties(invoice.seller, invoice.buyer)
    pdf.table(
        ["SKU", "Qty", "Unit price", "Discount", "Net", "Rate", "Tax", "Gross"],
        [
            [
                line.sku,
                str(line.quantity),
                _money(line.unit_price),
                _money(line.discount),
                _money(line.net),
                format_rate(line.tax_rate_bps),
                _money(line.tax),
                _money(line.gross),
            ]
            for line in invoice.lines
        ],
        widths=[38, 12, 24, 22, 24, 14, 22, 24],
    )
    pdf.breakdown(invoice.tax_breakdown)
    totals = [("Subtotal", _money(invoice.subtotal)), ("Discount", _money(invoice.discount))]
    if invoice.shipping is not None:
        totals.append(("Shipping", _money(invoice.shipping)))
    totals += [("Tax", _money(invoice.tax)), ("Total", _money(invoice.total))]
    pdf.totals(totals)
    return pdf.bytes()


def render_credit_note(note: CreditNote) -> bytes:
    """The credit note as a PDF, deterministic like `render_invoice`."""
    pdf = _Document(f"Credit note {note.number}", note.issued_at)
    pdf.heading(f"Credit note {note.number}")
    pdf.facts(
        [
            ("Credit note number", note.number),
            ("Issued", _date(note.issued_at)),
            ("Credits invoice", note.invoice_number),
            ("Order", note.order_id),
            ("Refund", note.refund_id),
            ("Reason", note.reason),
            ("Currency", note.currency),
        ]
    )
    pdf.parties(note.seller, note.buyer)
    pdf.breakdown(note.tax_breakdown)
    pdf.totals(
        [
            ("Net", _money(note.net)),
            ("Tax", _money(note.tax)),
            ("Total credited", _money(note.amount)),
        ]
    )
    return pdf.bytes()


def _money(value: Money) -> str:
    return format_money(value.amount, value.currency)


def _date(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


# Letters outside Latin-1 that have no decomposition to one inside it.
_PLAIN = str.maketrans(
    {
        "Ł": "L",
        "ł": "l",
        "Đ": "D",
        "đ": "d",
        "Ħ": "H",
        "ħ": "h",
        "\u0131": "i",
        "Œ": "OE",
        "œ": "oe",
    }
)


def _latin1(text: str) -> str:
    """What the PDF core fonts can show (Latin-1): accents are kept where Latin-1 has them,
    other letters lose their marks (NFKD, or a plain twin), anything else becomes '?'. No font
    file is needed, so the documents render the same on every host."""
    out = []
    for char in text.translate(_PLAIN):
        try:
            char.encode("latin-1")
            out.append(char)
        except UnicodeEncodeError:
            plain = (
                unicodedata.normalize("NFKD", char).encode("latin-1", "ignore").decode("latin-1")
            )
            out.append(plain or "?")
    return "".join(out)


def text_width(pdf: FPDF, text: str) -> float:
    """`FPDF.get_string_width` for the core fonts' Latin-1, read off the font's character
    widths (get_string_width first splits the text into styled fragments, most of its cost)."""
    font = pdf.current_font
    widths = getattr(font, "cw", None)
    if getattr(font, "type", None) != "core" or not isinstance(widths, dict):
        return pdf.get_string_width(text)
    try:
        return float(sum(widths[char] for char in text) * pdf.font_size * 0.001)
    except KeyError:
        return pdf.get_string_width(text)


def write_line(pdf: FPDF, height: float, text: str) -> None:
    """One line of text across the page at the cursor, wrapped only when it does not fit. A
    line that fits is placed with `FPDF.text` (a positioned string: about a tenth of what a
    `cell` costs, which lays out styled fragments); the rare longer one goes to `multi_cell`.
    Issue 10's profile: cells were most of the CPU of a receipt and of a label."""
    if "\n" not in text and text_width(pdf, text) <= pdf.epw - 2 * pdf.c_margin:
        if pdf.will_page_break(height):
            pdf.add_page()
        # cell's own placement: the baseline a third of the font below the middle of the line
        pdf.text(pdf.l_margin + pdf.c_margin, pdf.y + 0.5 * height + 0.3 * pdf.font_size, text)
        pdf.set_xy(pdf.l_margin, pdf.y + height)
    else:
        pdf.set_x(pdf.l_margin)
        pdf.multi_cell(0, height, text, new_x="LMARGIN", new_y="NEXT")


class _Document:
    """An A4 page in Helvetica with the few blocks a shop document has."""

    def __init__(self, title: str, issued_at: datetime) -> None:
        self.pdf = FPDF(format="A4")
        self.pdf.set_creation_date(issued_at.astimezone(UTC))
        self.pdf.set_title(_latin1(title))
        self.pdf.set_auto_page_break(auto=True, margin=15)
        self.pdf.add_page()
        self.pdf.set_font("Helvetica", size=10)
        self._font: tuple[str, int] = ("", 10)

    def _set_font(self, style: str, size: int) -> None:
        if self._font != (style, size):  # set_font re-resolves the font on every call
            self.pdf.set_font("Helvetica", style=style, size=size)
            self._font = (style, size)

    def text(self, value: str, *, bold: bool = False, size: int = 10) -> None:
        self._set_font("B" if bold else "", size)
        write_line(self.pdf, 5, _latin1(value))

    def heading(self, value: str) -> None:
        self.text(value, bold=True, size=16)
        self.pdf.ln(3)

    def facts(self, pairs: Sequence[tuple[str, str]]) -> None:
        for label, value in pairs:
            self.text(f"{label}: {value}")
        self.pdf.ln(3)

    def parties(self, seller: InvoiceSeller, buyer: InvoiceBuyer) -> None:
        self.text("Seller", bold=True)
        self.text(seller.name)
        for line in seller.address_lines:
            self.text(line)
        if seller.vat_id:
            self.text(f"VAT id: {seller.vat_id}")
        if seller.email:
            self.text(seller.email)
        self.pdf.ln(2)
        self.text("Buyer", bold=True)
        self.text(f"Customer: {buyer.customer_id}")
        if buyer.email:
            self.text(buyer.email)
        for key, value in buyer.shipping_address.items():
            self.text(f"{key.replace('_', ' ').capitalize()}: {value}")
        self.pdf.ln(3)

    def table(self, header: list[str], rows: list[list[str]], widths: list[int]) -> None:
        self._set_font("B", 8)
        self._row(header, widths)
        self._set_font("", 8)
        for row in rows:
            self._row([_latin1(value)[:40] for value in row], widths)
        self.pdf.ln(3)

    def _row(self, values: list[str], widths: list[int], height: float = 6) -> None:
        """One bordered row of cells, drawn as rectangles and positioned strings (what
        `cell(border=1)` draws, for a tenth of its cost); a value wider than its cell is cut."""
        pdf = self.pdf
        if pdf.will_page_break(height):
            pdf.add_page()
        x, y = pdf.l_margin, pdf.y
        baseline = y + 0.5 * height + 0.3 * pdf.font_size
        for value, width in zip(values, widths, strict=True):
            pdf.rect(x, y, width, height)
            room = width - 2 * pdf.c_margin
            while value and text_width(self.pdf, value) > room:
                value = value[:-1]
            pdf.text(x + pdf.c_margin, baseline, value)
            x += width
        pdf.set_xy(pdf.l_margin, y + height)

    def breakdown(self, rates: Sequence[TaxRateTotal]) -> None:
        self.text("Tax per rate", bold=True)
        for rate in rates:
            self.text(
                f"{format_rate(rate.rate_bps)}: taxable {_money(rate.taxable)}, "
                f"tax {_money(rate.tax)}"
            )
        self.pdf.ln(3)

    def totals(self, pairs: Sequence[tuple[str, str]]) -> None:
        for label, value in pairs:
            self.text(f"{label}: {value}", bold=label.startswith("Total"))

    def bytes(self) -> bytes:
        return bytes(self.pdf.output())
