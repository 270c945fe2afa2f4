"""Events produced by the orders service on `backroom.orders` (key = order id), and the
payment instruction it sends to payments alone on the restricted internal topic."""

from datetime import datetime
from typing import Any

from libs.events.common import BackorderedLine, Line, Money, PricedLine, WireModel


class OrderPlaced(WireModel):
    """A customer placed an order. Never carries the payment token."""

    order_id: str
    customer_id: str
    email: str | None = None
    lines: list[PricedLine]
    region: str
    subtotal: Money
    discount: Money
    tax: Money
    total: Money
    quote_id: str | None = None
    reservation_deadline: datetime
    # v2 (issue 12): the shipping line's net price (its tax is in `tax`, both in `total`) and
    # the method; None from orders placed before shipping rates.
    shipping: Money | None = None
    shipping_method: str | None = None
    # v2 (issue 13): the sales channel the order came through (catalog's channel code).
    channel: str = "web"


class OrderConfirmed(WireModel):
    order_id: str
    customer_id: str
    email: str | None = None
    lines: list[PricedLine]
    total: Money
    # Additive (issue 12): the order's invoice, issued in the transaction that confirmed it.
    invoice: "Invoice | None" = None
    # Additive (issue 13): the order's channel, and the lines (or parts of lines) confirmed as
    # backorders: they ship once inventory's BackorderFilled says the incoming stock landed.
    channel: str = "web"
    backordered: list[BackorderedLine] = []


class OrderRejected(WireModel):
    order_id: str
    customer_id: str
    email: str | None = None
    reason: str


class OrderCancellationRequested(WireModel):
    order_id: str
    customer_id: str
    reason: str
    previous_status: str


class OrderCancelled(WireModel):
    order_id: str
    customer_id: str
    email: str | None = None
    reason: str


class OrderShipped(WireModel):
    order_id: str
    customer_id: str
    email: str | None = None
    tracking: dict[str, Any] = {}


class OrderDelivered(WireModel):
    order_id: str
    customer_id: str
    # Additive (issue 12): where the delivered email goes, as on OrderShipped.
    email: str | None = None


class PaymentInstructionIssued(WireModel):
    """Internal: how to charge an order. Travels only on the restricted internal topic."""

    order_id: str
    customer_id: str
    amount: Money
    token: str


# --- carts (issue 12) ---------------------------------------------------------------------------


class CartAbandoned(WireModel):
    """An open cart with lines stayed unchanged past the store's abandonment time (subject and
    key: the cart id). Once per idle period: a later change starts a new one. `subtotal` is at
    the catalog prices seen when the lines were last set (absent if one had none)."""

    cart_id: str
    customer_id: str
    email: str | None = None
    lines: list[Line]
    subtotal: Money | None = None
    idle_since: datetime


# --- shipments (issue 12) ---


class ShipmentCreated(WireModel):
    """A label was bought for the order: the carrier, its tracking number, where the label is
    (our label route for the sandbox's PDF, the carrier's URL otherwise)."""

    order_id: str
    shipment_id: str
    carrier: str
    tracking_number: str
    label_url: str
    tracking_url: str | None = None


class ShipmentUpdated(WireModel):
    """The shipment's status moved (a carrier's tracking update, or a failed label purchase):
    `status` is the shipment's new status, `at` when the carrier saw it."""

    order_id: str
    shipment_id: str
    carrier: str
    tracking_number: str | None = None
    status: str
    at: datetime
    detail: str | None = None


# --- returns (issue 12) ---


class ReturnLine(WireModel):
    """Units of one sku a customer sends back, and why (one of a fixed set of reasons)."""

    sku: str
    quantity: int
    reason: str


class ReceivedLine(WireModel):
    """Units of one sku that came back, in one condition: `resellable` or `damaged`."""

    sku: str
    quantity: int
    condition: str


class ReturnRequested(WireModel):
    order_id: str
    return_id: str
    customer_id: str
    email: str | None = None
    lines: list[ReturnLine]


class ReturnReceived(WireModel):
    """An operator received a return: inventory restocks resellable units and writes damaged ones
    off (StockReturned); payments refunds `refund` of the order's capture (PaymentRefunded with
    this `return_id`; nothing when it is 0)."""

    order_id: str
    return_id: str
    customer_id: str
    lines: list[ReceivedLine]
    refund: Money


class ReturnCompleted(WireModel):
    """Stock and refund of a return are both done."""

    order_id: str
    return_id: str
    customer_id: str
    email: str | None = None
    refund: Money


# --- invoices (issue 12) ---
# The invoice is a document as well as an event payload: OrderConfirmed carries it whole, so
# subscribers (accounting) and notifications (the receipt's PDF) need no call back to orders.
# Every amount is integer minor units of the invoice's `currency`.


class InvoiceSeller(WireModel):
    """Who issues the invoice (orders' settings: placeholders unless configured)."""

    name: str
    address_lines: list[str] = []
    vat_id: str | None = None
    email: str | None = None


class InvoiceBuyer(WireModel):
    customer_id: str
    email: str | None = None
    shipping_address: dict[str, str] = {}


class InvoiceLine(WireModel):
    """One invoiced line: `net` = quantity x unit_price - discount, `gross` = net + tax. A
    shipping charge is a line of its own with sku `shipping`."""

    sku: str
    description: str | None = None
    quantity: int
    unit_price: Money
    discount: Money
    net: Money
    tax_rate_bps: int
    tax: Money
    gross: Money


class TaxRateTotal(WireModel):
    """The taxable base and the tax of every line taxed at `rate_bps` (2000 = 20.00 %)."""

    rate_bps: int
    taxable: Money
    tax: Money


class Invoice(WireModel):
    number: str
    issued_at: datetime
    order_id: str
    seller: InvoiceSeller
    buyer: InvoiceBuyer
    lines: list[InvoiceLine]
    tax_breakdown: list[TaxRateTotal]
    subtotal: Money
    discount: Money
    shipping: Money | None = None
    tax: Money
    total: Money
    currency: str


class CreditNote(WireModel):
    """A refund of (part of) an invoiced order, as a document: `amount` is what was given back
    (tax included), `tax` its tax share, split per rate in `tax_breakdown`."""

    number: str
    issued_at: datetime
    order_id: str
    invoice_number: str
    seller: InvoiceSeller
    buyer: InvoiceBuyer
    reason: str
    refund_id: str
    tax_breakdown: list[TaxRateTotal]
    net: Money
    tax: Money
    amount: Money
    currency: str


class CreditNoteIssued(WireModel):
    """Orders issued a credit note for a refund (PaymentRefunded) of an invoiced order."""

    order_id: str
    number: str
    invoice_number: str
    amount: Money
    tax: Money
    reason: str
    issued_at: datetime
    refund_id: str | None = None
    credit_note: CreditNote | None = None


OrderConfirmed.model_rebuild()
