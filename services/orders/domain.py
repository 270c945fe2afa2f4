"""Order rules: the status machine, the cancellation handshake, the deadline, request identity,
and the shapes an order takes when it is placed, changed and read."""

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, get_args

from libs.events.common import Money, PricedLine
from libs.events.orders import (
    CreditNote,
    Invoice,
    InvoiceBuyer,
    InvoiceLine,
    InvoiceSeller,
    TaxRateTotal,
)


class OrderStatus(StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


TERMINAL = frozenset({OrderStatus.REJECTED, OrderStatus.CANCELLED, OrderStatus.DELIVERED})
ALLOWED: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING: frozenset(
        {OrderStatus.CONFIRMED, OrderStatus.REJECTED, OrderStatus.CANCELLED}
    ),
    OrderStatus.CONFIRMED: frozenset({OrderStatus.SHIPPED, OrderStatus.CANCELLED}),
    OrderStatus.SHIPPED: frozenset({OrderStatus.DELIVERED}),
}
REJECTION_REASONS = ("out_of_stock", "payment_declined", "reservation_expired", "invalid")
CANCELLABLE = frozenset({OrderStatus.PENDING, OrderStatus.CONFIRMED})
# Why an order is cancelled when the money held for it lapsed before it shipped.
HOLD_LAPSED_REASON = "payment_issue"
# Why an order may be cancelled: a fixed set, so no text a customer typed ever reaches an email
# (notifications writes the reason into the cancellation mail).
CancellationReason = Literal[
    "customer_request",
    "changed_my_mind",
    "found_cheaper",
    "ordered_by_mistake",
    "delivery_too_slow",
    "duplicate_order",
    "payment_issue",
    "suspected_fraud",
    "other",
]
CANCELLATION_REASONS: tuple[str, ...] = get_args(CancellationReason)
DEFAULT_CANCEL_REASON: CancellationReason = "customer_request"
# Payment tokens are opaque provider references: a card token (`tok_…`, the sandbox's and
# Stripe's) or a Stripe PaymentMethod id (`pm_…`); anything else (a card number above all) is
# refused. The sandbox declines what it does not know (`invalid_token`).
TOKEN_PATTERN = r"^(?:tok|pm)_[A-Za-z0-9_]{1,60}$"


class IllegalTransition(Exception):
    """The order's state does not allow what was asked."""


def can_move(current: OrderStatus, target: OrderStatus) -> bool:
    return target in ALLOWED.get(current, frozenset())


@dataclass(frozen=True)
class Order:
    """The part of an order its fate depends on."""

    status: OrderStatus
    reservation_deadline: datetime
    reason: str | None = None
    stock_reserved: bool = False
    cancellation_requested: bool = False
    cancellation_reason: str | None = None
    # The two answers a cancellation waits for: inventory gave the stock back, payments
    # refunded or voided the charge.
    cancel_stock_returned: bool = False
    cancel_payment_returned: bool = False

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    def moved_to(self, target: OrderStatus, reason: str | None = None) -> "Order":
        if not can_move(self.status, target):
            raise IllegalTransition(f"order is {self.status}, it cannot become {target}")
        return replace(self, status=target, reason=reason)


# Reactions to facts reported by other services. Each returns the new order, or None when the
# fact changes nothing (late, duplicated or out of order): the handler then does nothing.


def note_stock_reserved(order: Order) -> Order | None:
    if order.status is not OrderStatus.PENDING or order.stock_reserved:
        return None
    return replace(order, stock_reserved=True)


def reject(order: Order, reason: str) -> Order | None:
    """Only a pending order can be rejected; a rejection that finds it pending wins over a
    cancellation still waiting for its answers."""
    if reason not in REJECTION_REASONS:
        raise ValueError(f"unknown rejection reason {reason!r}")
    if order.status is not OrderStatus.PENDING:
        return None
    return order.moved_to(OrderStatus.REJECTED, reason)


def payment_captured(order: Order, now: datetime) -> Order | None:
    """A capture confirms a pending order in time. After the deadline it rejects the order
    (payments refunds on OrderRejected); during a cancellation it changes nothing (payments
    refunds it as its answer to the cancellation)."""
    if order.status is not OrderStatus.PENDING or order.cancellation_requested:
        return None
    if now > order.reservation_deadline:
        return order.moved_to(OrderStatus.REJECTED, "reservation_expired")
    return order.moved_to(OrderStatus.CONFIRMED)


def is_overdue(order: Order, now: datetime) -> bool:
    return order.status is OrderStatus.PENDING and now > order.reservation_deadline


def expire(order: Order, now: datetime) -> Order | None:
    if not is_overdue(order, now):
        return None
    return order.moved_to(OrderStatus.REJECTED, "reservation_expired")


def request_cancellation(order: Order, reason: str = DEFAULT_CANCEL_REASON) -> Order:
    """Record the request (returns the order unchanged when it was already requested).
    Raises IllegalTransition once the order has shipped or reached a terminal state."""
    if order.status not in CANCELLABLE:
        raise IllegalTransition(f"an order that is {order.status} cannot be cancelled")
    if order.cancellation_requested:
        return order
    return replace(order, cancellation_requested=True, cancellation_reason=reason)


def cancellation_stock_returned(order: Order) -> Order | None:
    if order.is_terminal or not order.cancellation_requested or order.cancel_stock_returned:
        return None
    return _cancel_when_settled(replace(order, cancel_stock_returned=True))


def cancellation_payment_returned(order: Order) -> Order | None:
    if order.is_terminal or not order.cancellation_requested or order.cancel_payment_returned:
        return None
    return _cancel_when_settled(replace(order, cancel_payment_returned=True))


def _cancel_when_settled(order: Order) -> Order:
    if order.cancel_stock_returned and order.cancel_payment_returned:
        return order.moved_to(OrderStatus.CANCELLED, order.cancellation_reason)
    return order


# Operator actions: refused (IllegalTransition → 409) unless the order is where they apply.


def ship(order: Order) -> Order:
    if order.cancellation_requested and not order.is_terminal:
        raise IllegalTransition("the order is being cancelled")
    return order.moved_to(OrderStatus.SHIPPED)


def deliver(order: Order) -> Order:
    return order.moved_to(OrderStatus.DELIVERED)


# Request identity for Idempotency-Key.


def is_replay(stored_hash: str, new_hash: str) -> bool:
    """Same key and same body is a replay of the stored order; same key and another body is a
    conflict (the caller raises 409)."""
    return stored_hash == new_hash


def first_duplicate(values: list[str]) -> int | None:
    """Index of the first value seen before (duplicate skus would be priced and reserved twice)."""
    seen: set[str] = set()
    for index, value in enumerate(values):
        if value in seen:
            return index
        seen.add(value)
    return None


# What the repositories hand over and take: an order as it is placed, locked for a change, read.


@dataclass(frozen=True)
class PendingOrder:
    """A pending order about to be written: the quote's snapshot (charged exactly), where it goes,
    and its reservation deadline. The payment token is not here: it is never stored."""

    id: str
    customer_id: str
    region: str
    shipping_address: dict[str, str]
    email: str | None
    lines: tuple[PricedLine, ...]
    subtotal: Money
    discount: Money
    tax: Money
    total: Money
    quote_id: str | None
    reservation_deadline: datetime
    # The request that placed it: events the order's later moves cause without a request
    # of their own (the deadline sweep) carry it too.
    correlation_id: str


@dataclass(frozen=True)
class LockedOrder:
    """An order held for a change: what its events tell (who, what it charges) and its state."""

    id: str
    customer_id: str
    email: str | None
    lines: tuple[PricedLine, ...]
    total: Money
    correlation_id: str
    state: Order


@dataclass(frozen=True)
class HistoryEntry:
    status: OrderStatus
    reason: str | None
    at: datetime


@dataclass(frozen=True)
class OrderView:
    """An order as its owner reads it: the priced snapshot, where it stands, how it got there."""

    id: str
    customer_id: str
    status: OrderStatus
    reason: str | None
    lines: tuple[PricedLine, ...]
    subtotal: Money
    discount: Money
    tax: Money
    total: Money
    region: str
    shipping_address: dict[str, Any]
    email: str | None
    tracking: dict[str, Any] | None
    reservation_deadline: datetime
    cancellation_requested: bool
    quote_id: str | None
    created_at: datetime
    updated_at: datetime
    history: tuple[HistoryEntry, ...] = ()
    refunded: Money | None = None  # None: nothing was given back
    # Its invoice and credit notes (issue 12).
    documents: "OrderDocuments | None" = None


@dataclass(frozen=True)
class StoredKey:
    """An Idempotency-Key as the request that first used it left it."""

    request_hash: str
    order_id: str


# --- invoices and credit notes (issue 12) ---
# An invoice is issued in the transaction that confirms an order; a credit note in the one that
# records a refund of an invoiced order. Numbers are gap-free per (store, kind, year): db.py
# allocates them from a counter row (see `DocumentNumbers`), the format is decided here.

INVOICE = "invoice"
CREDIT_NOTE = "credit_note"
SHIPPING_SKU = "shipping"
_BPS = 10_000
# Rates tried first when a line's rate is worked out from its tax: whole percents, then
# halves, tenths and any basis point (see `rate_candidates`).
_ROUND_STEPS = (100, 50, 10, 1)


class InvoiceMismatch(Exception):
    """The invoice would not add up to the order it is issued for (a bug, never a client's)."""


@dataclass(frozen=True)
class Invoicing:
    """Who issues the documents and how they are numbered (orders' settings)."""

    store: str = "main"
    invoice_prefix: str = "INV"
    credit_note_prefix: str = "CN"
    seller_name: str = "Backroom Demo Store (set BACKROOM_SELLER_NAME)"
    seller_address_lines: tuple[str, ...] = ("1 Example Street", "75001 Paris", "France")
    seller_vat_id: str | None = "FR00000000000"
    seller_email: str | None = "billing@backroom.example"

    def prefix(self, kind: str) -> str:
        return self.invoice_prefix if kind == INVOICE else self.credit_note_prefix


@dataclass(frozen=True)
class DocumentNumber:
    """A number a counter gave out, with the moment it was given (the document's issue time)."""

    kind: str
    year: int
    sequence: int
    issued_at: datetime


def document_number(prefix: str, year: int, sequence: int) -> str:
    """`INV-2026-000001`: prefix, the year of issue and the sequence within it (six digits at
    least; a seventh appears after 999 999 documents in a year, the order stays readable)."""
    if sequence < 1:
        raise ValueError("document sequences start at 1")
    return f"{prefix}-{year}-{sequence:06d}"


def round_half_up(numerator: int, denominator: int) -> int:
    """numerator / denominator to the nearest integer, halves away from zero (as pricing)."""
    if denominator <= 0:
        raise ValueError("denominator must be positive")
    sign = -1 if numerator < 0 else 1
    return sign * ((2 * abs(numerator) + denominator) // (2 * denominator))


def rate_candidates(net: int, tax: int) -> tuple[int, int] | None:
    """The rates in basis points (lowest, highest) that give `tax` on `net` when rounded half
    up as pricing does, or None for a line without a base (net 0, any rate fits)."""
    if net <= 0:
        return None
    # round_half_up(net * r / BPS) == tax  <=>  (tax - 1/2) * BPS <= net * r < (tax + 1/2) * BPS
    low = max(0, -(-(2 * tax - 1) * _BPS // (2 * net)))
    high = ((2 * tax + 1) * _BPS - 1) // (2 * net)
    return (low, high) if low <= high else (round_half_up(tax * _BPS, net),) * 2


def _roundest(low: int, high: int) -> int:
    for step in _ROUND_STEPS:
        first = -(-low // step) * step
        if first <= high:
            return first
    return low


def derive_rates(bases: list[tuple[int, int]]) -> list[int]:
    """Each (net, tax) pair's tax rate in basis points. Orders keeps what pricing charged per
    line (net and tax, rounded), not the rate: the rate is worked out back from them. Lines that
    admit a common rate share one (the biggest bases decide first), and within what a group
    admits the roundest rate is taken (20 % rather than 19.87 %), so a rounding on a small line
    never shows as a rate of its own. A line without a base takes the biggest line's rate."""
    groups: list[list[int]] = []  # [low, high] per group, narrowed as lines join
    group_of: dict[int, int] = {}
    order = sorted(range(len(bases)), key=lambda i: -bases[i][0])
    for index in order:
        span = rate_candidates(*bases[index])
        if span is None:
            continue
        for number, group in enumerate(groups):
            low, high = max(group[0], span[0]), min(group[1], span[1])
            if low <= high:
                group[0], group[1] = low, high
                group_of[index] = number
                break
        else:
            group_of[index] = len(groups)
            groups.append([span[0], span[1]])
    rates = [_roundest(low, high) for low, high in groups]
    fallback = rates[0] if rates else 0
    return [rates[group_of[i]] if i in group_of else fallback for i in range(len(bases))]


def _m(amount: int, currency: str) -> Money:
    return Money(amount=amount, currency=currency)


def build_invoice(
    number: str,
    issued_at: datetime,
    invoicing: Invoicing,
    order: "InvoiceSource",
) -> Invoice:
    """The invoice of a confirmed order: a line per order line (and one for shipping, when the
    order charges it), the tax per rate, the totals. Raises InvoiceMismatch unless the lines
    add up to the order's total and the rates' taxes to the invoice's tax."""
    currency = order.total.currency
    raw: list[tuple[str, int, Money, Money, int, int]] = []  # sku, qty, unit, discount, net, tax
    for line in order.lines:
        net = line.quantity * line.unit_price.amount - line.discount.amount
        raw.append((line.sku, line.quantity, line.unit_price, line.discount, net, line.tax.amount))
    if order.shipping is not None and (order.shipping.amount or order.shipping_tax_amount):
        raw.append(
            (
                SHIPPING_SKU,
                1,
                order.shipping,
                _m(0, currency),
                order.shipping.amount,
                order.shipping_tax_amount,
            )
        )
    rates = derive_rates([(net, tax) for *_, net, tax in raw])
    lines = [
        InvoiceLine(
            sku=sku,
            description="Shipping" if sku == SHIPPING_SKU and order.shipping is not None else None,
            quantity=quantity,
            unit_price=unit,
            discount=discount,
            net=_m(net, currency),
            tax_rate_bps=rate,
            tax=_m(tax, currency),
            gross=_m(net + tax, currency),
        )
        for (sku, quantity, unit, discount, net, tax), rate in zip(raw, rates, strict=True)
    ]
    breakdown = tax_breakdown(
        [(ln.tax_rate_bps, ln.net.amount, ln.tax.amount) for ln in lines], currency
    )
    tax = sum(ln.tax.amount for ln in lines)
    gross = sum(ln.gross.amount for ln in lines)
    if sum(r.tax.amount for r in breakdown) != tax:  # pragma: no cover - by construction
        raise InvoiceMismatch("the tax per rate does not add up to the invoice's tax")
    if gross != order.total.amount:
        raise InvoiceMismatch(
            f"order {order.order_id}: invoice lines add up to {gross}, the order to "
            f"{order.total.amount}"
        )
    goods_tax = sum(ln.tax.amount for ln in order.lines)
    if order.tax.amount not in (goods_tax, tax):
        raise InvoiceMismatch(f"order {order.order_id}: line taxes do not add up to its tax")
    return Invoice(
        number=number,
        issued_at=issued_at,
        order_id=order.order_id,
        seller=seller_of(invoicing),
        buyer=InvoiceBuyer(
            customer_id=order.customer_id,
            email=order.email,
            shipping_address={str(k): str(v) for k, v in order.shipping_address.items()},
        ),
        lines=lines,
        tax_breakdown=breakdown,
        subtotal=order.subtotal,
        discount=order.discount,
        shipping=order.shipping,
        tax=_m(tax, currency),
        total=order.total,
        currency=currency,
    )


def seller_of(invoicing: Invoicing) -> InvoiceSeller:
    return InvoiceSeller(
        name=invoicing.seller_name,
        address_lines=list(invoicing.seller_address_lines),
        vat_id=invoicing.seller_vat_id,
        email=invoicing.seller_email,
    )


def tax_breakdown(lines: list[tuple[int, int, int]], currency: str) -> list[TaxRateTotal]:
    """(rate_bps, net, tax) per line summed per rate, highest rate first."""
    sums: dict[int, list[int]] = {}
    for rate, net, tax in lines:
        total = sums.setdefault(rate, [0, 0])
        total[0] += net
        total[1] += tax
    return [
        TaxRateTotal(rate_bps=rate, taxable=_m(net, currency), tax=_m(tax, currency))
        for rate, (net, tax) in sorted(sums.items(), reverse=True)
    ]


def split_largest_remainder(amount: int, weights: list[int]) -> list[int]:
    """`amount` shared in proportion to `weights` in whole minor units that add up exactly
    (the largest remainders get the units left over; ties go to the first)."""
    total = sum(weights)
    if total <= 0:
        return [0] * len(weights)
    shares = [amount * w // total for w in weights]
    left = amount - sum(shares)
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(amount * weights[i] % total), i))
    for i in by_remainder[:left]:
        shares[i] += 1
    return shares


def refunded_split(invoice: Invoice, refunded: int) -> list[tuple[int, int, int]]:
    """What `refunded` (cumulative, tax included) of the invoice is per rate: (rate_bps, net,
    tax), pro rata to each rate's gross on the invoice; the tax of a rate's share is rounded
    half up, except that the whole gross gives back exactly the invoice's tax of that rate."""
    refunded = max(0, min(refunded, invoice.total.amount))
    grosses = [r.taxable.amount + r.tax.amount for r in invoice.tax_breakdown]
    shares = split_largest_remainder(refunded, grosses)
    out = []
    for rate, share, gross in zip(invoice.tax_breakdown, shares, grosses, strict=True):
        tax = (
            rate.tax.amount
            if share == gross
            else (round_half_up(share * rate.tax.amount, gross) if gross else 0)
        )
        out.append((rate.rate_bps, share - tax, tax))
    return out


def build_credit_note(
    number: str,
    issued_at: datetime,
    invoice: Invoice,
    *,
    refund_id: str,
    amount: int,
    credited_before: int,
    reason: str,
) -> CreditNote:
    """The credit note of a refund of `amount`, after `credited_before` was credited by earlier
    notes of the same invoice. Its tax share per rate is the difference between the pro-rata
    split of everything credited after it and before it, so a series of partial notes adds up
    exactly to the invoice once all of it is refunded (no cent lost to rounding). A refund
    beyond what is left of the invoice is credited up to the invoice's total."""
    currency = invoice.currency
    credited_before = max(0, min(credited_before, invoice.total.amount))
    amount = max(0, min(amount, invoice.total.amount - credited_before))
    after = refunded_split(invoice, credited_before + amount)
    before = refunded_split(invoice, credited_before)
    rows = [
        (rate, net_a - net_b, tax_a - tax_b)
        for (rate, net_a, tax_a), (_, net_b, tax_b) in zip(after, before, strict=True)
    ]
    breakdown = tax_breakdown([r for r in rows if r[1] or r[2]], currency)
    tax = sum(r[2] for r in rows)
    return CreditNote(
        number=number,
        issued_at=issued_at,
        order_id=invoice.order_id,
        invoice_number=invoice.number,
        seller=invoice.seller,
        buyer=InvoiceBuyer.model_validate(invoice.buyer.model_dump()),
        reason=reason,
        refund_id=refund_id,
        tax_breakdown=breakdown,
        net=_m(amount - tax, currency),
        tax=_m(tax, currency),
        amount=_m(amount, currency),
        currency=currency,
    )


@dataclass(frozen=True)
class InvoiceSource:
    """What an invoice is made of: the order's priced snapshot and who bought it. `shipping`
    (net) and its tax are there when the order charges shipping (orders that predate shipping
    charges have none)."""

    order_id: str
    customer_id: str
    email: str | None
    shipping_address: dict[str, Any]
    lines: tuple[PricedLine, ...]
    subtotal: Money
    discount: Money
    tax: Money
    total: Money
    shipping: Money | None = None
    shipping_tax: Money | None = None

    @property
    def shipping_tax_amount(self) -> int:
        return self.shipping_tax.amount if self.shipping_tax is not None else 0


@dataclass(frozen=True)
class DocumentRef:
    """An issued document as the order lists it."""

    number: str
    issued_at: datetime
    amount: Money | None = None


@dataclass(frozen=True)
class OrderDocuments:
    """The documents issued for an order: its invoice (once confirmed) and its credit notes."""

    invoice: DocumentRef | None = None
    credit_notes: tuple[DocumentRef, ...] = ()
