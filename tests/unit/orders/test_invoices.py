"""Invoices and credit notes: numbers, the tax per rate, the pro-rata tax of a refund, and the
use cases that issue them (confirmation, refund) and answer their PDFs."""

from datetime import UTC, datetime

import pytest

from libs.events.common import Money, PricedLine
from libs.events.orders import CreditNoteIssued, Invoice, OrderConfirmed
from libs.kit.errors import NotFound
from services.orders import domain, service
from services.orders.domain import InvoiceSource, Invoicing
from tests.unit.orders.fakes import ALICE, BOB, OPERATOR, World, eur

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SHOP = Invoicing(store="paris", invoice_prefix="INV", credit_note_prefix="CN", seller_name="S")


class Renderer:
    """Stands in for the PDF renderer: the document's number as its bytes."""

    def invoice(self, invoice: object) -> bytes:
        return f"pdf:{invoice.number}".encode()  # type: ignore[attr-defined]

    def credit_note(self, note: object) -> bytes:
        return f"pdf:{note.number}".encode()  # type: ignore[attr-defined]


def line(sku: str, quantity: int, unit: int, discount: int, tax: int) -> PricedLine:
    net = quantity * unit - discount
    return PricedLine(
        sku=sku,
        quantity=quantity,
        unit_price=eur(unit),
        discount=eur(discount),
        tax=eur(tax),
        total=eur(net + tax),
    )


def source(*lines: PricedLine, shipping: tuple[int, int] | None = None) -> InvoiceSource:
    subtotal = sum(ln.quantity * ln.unit_price.amount for ln in lines)
    discount = sum(ln.discount.amount for ln in lines)
    tax = sum(ln.tax.amount for ln in lines) + (shipping[1] if shipping else 0)
    total = subtotal - discount + tax + (shipping[0] if shipping else 0)
    return InvoiceSource(
        order_id="o-1",
        customer_id="alice",
        email="alice@example.com",
        shipping_address={"city": "Paris"},
        lines=tuple(lines),
        subtotal=eur(subtotal),
        discount=eur(discount),
        tax=eur(tax),
        total=eur(total),
        shipping=eur(shipping[0]) if shipping else None,
        shipping_tax=eur(shipping[1]) if shipping else None,
    )


# --- rules --------------------------------------------------------------------------------------


def test_numbers_carry_prefix_year_and_a_six_digit_sequence() -> None:
    assert domain.document_number("INV", 2026, 1) == "INV-2026-000001"
    assert domain.document_number("CN", 2027, 123456) == "CN-2027-123456"
    assert domain.document_number("INV", 2026, 1234567) == "INV-2026-1234567"
    with pytest.raises(ValueError):
        domain.document_number("INV", 2026, 0)


def test_rates_are_worked_out_from_the_charged_tax_and_rounded_to_what_pricing_used() -> None:
    # 499 at 20 % is 99.8 -> 100; 99 with 19 tax cannot be 20 % (19.8 -> 20): it is 19 %.
    assert domain.derive_rates([(2500, 500), (499, 100), (99, 19), (1000, 55)]) == [
        2000,
        2000,
        1900,
        550,
    ]
    # A free line (nothing to tax) takes the main rate instead of showing a 0 % of its own.
    assert domain.derive_rates([(0, 0), (1000, 200)]) == [2000, 2000]
    assert domain.derive_rates([(1000, 0)]) == [0]


def test_the_invoice_adds_up_per_rate_and_to_the_order() -> None:
    invoice = domain.build_invoice(
        "INV-2026-000001",
        AT,
        SHOP,
        source(line("MUG-1", 2, 1250, 100, 480), line("BOOK-7", 1, 1000, 0, 55)),
    )
    assert [(r.rate_bps, r.taxable.amount, r.tax.amount) for r in invoice.tax_breakdown] == [
        (2000, 2400, 480),
        (550, 1000, 55),
    ]
    assert sum(r.tax.amount for r in invoice.tax_breakdown) == invoice.tax.amount == 535
    assert sum(ln.gross.amount for ln in invoice.lines) == invoice.total.amount == 3935
    assert (invoice.subtotal.amount, invoice.discount.amount, invoice.shipping) == (3500, 100, None)
    assert [ln.sku for ln in invoice.lines] == ["MUG-1", "BOOK-7"]
    assert invoice.seller.name == "S" and invoice.buyer.customer_id == "alice"


def test_shipping_is_a_line_of_its_own_taxed_at_its_rate() -> None:
    invoice = domain.build_invoice(
        "INV-2026-000001", AT, SHOP, source(line("MUG-1", 1, 1000, 0, 200), shipping=(500, 100))
    )
    assert [(ln.sku, ln.net.amount, ln.tax_rate_bps, ln.tax.amount) for ln in invoice.lines] == [
        ("MUG-1", 1000, 2000, 200),
        ("shipping", 500, 2000, 100),
    ]
    assert invoice.shipping == eur(500)
    assert [(r.taxable.amount, r.tax.amount) for r in invoice.tax_breakdown] == [(1500, 300)]
    assert invoice.total.amount == 1800


def test_an_invoice_that_would_not_match_the_order_is_refused() -> None:
    wrong = source(line("MUG-1", 1, 1000, 0, 200))
    wrong = InvoiceSource(**{**wrong.__dict__, "total": eur(1300)})
    with pytest.raises(domain.InvoiceMismatch):
        domain.build_invoice("INV-2026-000001", AT, SHOP, wrong)


def two_rate_invoice() -> Invoice:
    # 20 %: 2400 + 480 = 2880 gross; 5.5 %: 1000 + 55 = 1055 gross; total 3935.
    return domain.build_invoice(
        "INV-2026-000001",
        AT,
        SHOP,
        source(line("MUG-1", 2, 1250, 100, 480), line("BOOK-7", 1, 1000, 0, 55)),
    )


def test_a_partial_credit_takes_its_tax_pro_rata_to_the_invoice_rates() -> None:
    note = domain.build_credit_note(
        "CN-2026-000001",
        AT,
        two_rate_invoice(),
        refund_id="r-1",
        amount=1000,
        credited_before=0,
        reason="goodwill",
    )
    # 1000 shared 2880 : 1055 -> 732 and 268; tax 732 x 480/2880 = 122, 268 x 55/1055 = 13.97 -> 14
    assert [(r.rate_bps, r.taxable.amount, r.tax.amount) for r in note.tax_breakdown] == [
        (2000, 610, 122),
        (550, 254, 14),
    ]
    assert (note.amount.amount, note.tax.amount, note.net.amount) == (1000, 136, 864)
    assert note.invoice_number == "INV-2026-000001" and note.reason == "goodwill"


def test_partial_credits_add_up_exactly_to_the_invoice() -> None:
    invoice = two_rate_invoice()
    credited, tax = 0, 0
    for amount in (333, 1001, 7, 2594):
        note = domain.build_credit_note(
            "CN", AT, invoice, refund_id="r", amount=amount, credited_before=credited, reason=""
        )
        credited += note.amount.amount
        tax += note.tax.amount
    assert (credited, tax) == (3935, 535)
    # A refund beyond the invoice is credited up to what is left of it.
    over = domain.build_credit_note(
        "CN", AT, invoice, refund_id="r", amount=5000, credited_before=3000, reason=""
    )
    assert over.amount.amount == 935


def test_rounding_half_up_and_largest_remainder() -> None:
    assert [domain.round_half_up(n, 2) for n in (1, 3, -1, 4)] == [1, 2, -1, 2]
    assert domain.split_largest_remainder(100, [1, 1, 1]) == [34, 33, 33]
    assert domain.split_largest_remainder(10, [0, 0]) == [0, 0]
    assert sum(domain.split_largest_remainder(999, [7, 13, 29])) == 999


# --- use cases ----------------------------------------------------------------------------------


async def test_a_confirmed_order_is_invoiced_and_its_event_carries_the_invoice() -> None:
    world = World()
    first = await world.confirmed()
    second = await world.confirmed(BOB)
    [one, two] = world.emitted(OrderConfirmed)
    assert one.invoice is not None and two.invoice is not None
    year = world.clock().year
    assert (one.invoice.number, two.invoice.number) == (
        f"INV-{year}-000001",
        f"INV-{year}-000002",
    )
    assert one.invoice.order_id == first and two.invoice.order_id == second
    assert one.invoice.total == eur(3599) and one.invoice.tax == eur(600)
    assert [(r.rate_bps, r.taxable.amount) for r in one.invoice.tax_breakdown] == [(2000, 2999)]
    view = await world.view(first)
    assert view.documents is not None and view.documents.invoice is not None
    assert view.documents.invoice.number == one.invoice.number


async def test_an_order_that_pays_for_shipping_is_invoiced_with_its_shipping_line() -> None:
    world = World()
    world.pricing.shipping_rates = {"std": 490}
    world.pricing.default_shipping = "std"
    await world.confirmed()
    [confirmed] = world.emitted(OrderConfirmed)
    invoice = confirmed.invoice
    assert invoice is not None
    # 3599 for the goods, 490 + 98 tax for shipping: the invoice is the order's total.
    assert invoice.total == eur(4187) and invoice.tax == eur(698)
    shipping = invoice.lines[-1]
    assert (shipping.description, shipping.net, shipping.tax) == ("Shipping", eur(490), eur(98))
    assert [(r.rate_bps, r.taxable.amount, r.tax.amount) for r in invoice.tax_breakdown] == [
        (2000, 3489, 698)
    ]


async def test_the_invoice_pdf_is_for_the_owner_and_admins_once_confirmed() -> None:
    world = World()
    pending = await world.placed()
    with pytest.raises(NotFound):
        await service.invoice_pdf(world.tx(), ALICE, pending, Renderer())
    await service.stock_reservation_failed(world.tx(), pending)  # rejected: never invoiced
    with pytest.raises(NotFound):
        await service.invoice_pdf(world.tx(), ALICE, pending, Renderer())
    confirmed = await world.confirmed()
    document = await service.invoice_pdf(world.tx(), ALICE, confirmed, Renderer())
    number = world.store.invoices.invoices[confirmed].number
    assert (document.filename, document.content) == (f"{number}.pdf", f"pdf:{number}".encode())
    assert (await service.invoice_pdf(world.tx(), OPERATOR, confirmed, Renderer())) == document
    with pytest.raises(NotFound):
        await service.invoice_pdf(world.tx(), BOB, confirmed, Renderer())
    assert world.store.invoices.counters == {("main", "invoice", world.clock().year): 1}


async def test_a_refund_of_an_invoiced_order_issues_one_credit_note_per_refund() -> None:
    world = World()
    oid = await world.confirmed()
    for _ in range(2):  # the same refund reported twice
        await service.payment_refunded(
            world.tx(), oid, 1200, fully=False, refund_id="re-1", reason="damaged"
        )
    await service.payment_refunded(world.tx(), oid, 2399, fully=True, refund_id="re-2", reason="")
    notes = world.emitted(CreditNoteIssued)
    year = world.clock().year
    assert [(n.number, n.amount.amount, n.reason) for n in notes] == [
        (f"CN-{year}-000001", 1200, "damaged"),
        (f"CN-{year}-000002", 2399, "refund"),
    ]
    assert sum(n.tax.amount for n in notes) == 600  # the whole invoice's tax, no cent lost
    assert {n.invoice_number for n in notes} == {f"INV-{year}-000001"}
    view = await world.view(oid)
    assert view.documents is not None
    assert [(c.number, c.amount) for c in view.documents.credit_notes] == [
        (f"CN-{year}-000001", eur(1200)),
        (f"CN-{year}-000002", eur(2399)),
    ]
    document = await service.credit_note_pdf(
        world.tx(), ALICE, oid, f"CN-{year}-000002", Renderer()
    )
    assert document.filename == f"CN-{year}-000002.pdf"
    with pytest.raises(NotFound):
        await service.credit_note_pdf(world.tx(), BOB, oid, f"CN-{year}-000002", Renderer())
    with pytest.raises(NotFound):
        await service.credit_note_pdf(world.tx(), ALICE, oid, "CN-1999-000001", Renderer())


async def test_a_refund_of_an_order_never_invoiced_issues_no_credit_note() -> None:
    world = World()
    oid = await world.placed()
    await service.payment_refunded(world.tx(), oid, 3599, fully=True, refund_id="re-1")
    assert world.emitted(CreditNoteIssued) == []
    assert world.store.invoices.counters == {}  # no number spent


async def test_the_configured_store_and_prefixes_number_the_documents() -> None:
    world = World()
    oid = await world.placed()
    await service.stock_reserved(world.tx(), oid)
    await service.payment_captured(world.tx(), oid, world.clock, SHOP)
    [confirmed] = world.emitted(OrderConfirmed)
    assert confirmed.invoice is not None and confirmed.invoice.seller.name == "S"
    assert ("paris", "invoice", world.clock().year) in world.store.invoices.counters
    assert isinstance(confirmed.invoice.total, Money)


async def test_a_refund_id_is_per_order_and_a_repeated_full_refund_still_settles_a_cancel() -> None:
    world = World()
    first, second = await world.confirmed(), await world.confirmed(BOB)
    await service.payment_refunded(world.tx(), first, 100, fully=False, refund_id="same")
    await service.payment_refunded(world.tx(), second, 100, fully=False, refund_id="same")
    assert [n.order_id for n in world.emitted(CreditNoteIssued)] == [first, second]

    await service.request_cancellation(world.tx(), ALICE, first, "changed_my_mind")
    await service.stock_released(world.tx(), first, "cancelled")
    # The refund that settles the cancellation was credited already (reported before, under
    # another event): it is not counted again, and it still answers the cancellation.
    await service.payment_refunded(world.tx(), first, 100, fully=True, refund_id="same")
    view = await world.view(first)
    assert view.status.value == "cancelled" and view.refunded == eur(100)
    assert len(world.emitted(CreditNoteIssued)) == 2
