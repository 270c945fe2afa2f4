"""Order rules: the status machine, the cancellation handshake, the deadline, request identity,
and the shapes an order takes when it is placed, changed and read."""

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal, get_args

from libs.events.common import BackorderedLine, Money, PricedLine
from libs.events.orders import (
    CreditNote,
    Invoice,
    InvoiceBuyer,
    InvoiceLine,
    InvoiceSeller,
    TaxRateTotal,
)
from libs.kit.findings import Finding
from libs.kit.signatures import (
    SignatureRejected,
    timestamped_signature,
    verify_timestamped_signature,
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
    # The capture (or, capture policy on_shipment, the authorization) came in time but before
    # StockReserved: orders reads inventory's and payments' topics side by side, so the one
    # can overtake the other. The order is confirmed when StockReserved (with its backordered
    # lines, which decide whether the shipment is held) is applied.
    paid: bool = False
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
    """StockReserved: noted on a pending order; it confirms one whose payment came first."""
    if order.status is not OrderStatus.PENDING or order.stock_reserved:
        return None
    reserved = replace(order, stock_reserved=True)
    if order.paid and not order.cancellation_requested:
        return reserved.moved_to(OrderStatus.CONFIRMED)
    return reserved


def reject(order: Order, reason: str) -> Order | None:
    """Only a pending order can be rejected; a rejection that finds it pending wins over a
    cancellation still waiting for its answers."""
    if reason not in REJECTION_REASONS:
        raise ValueError(f"unknown rejection reason {reason!r}")
    if order.status is not OrderStatus.PENDING:
        return None
    return order.moved_to(OrderStatus.REJECTED, reason)


def payment_captured(order: Order, now: datetime) -> Order | None:
    """A capture confirms a pending order in time, once its StockReserved is applied (before,
    it is noted: `paid`). After the deadline it rejects the order (payments refunds on
    OrderRejected); during a cancellation it changes nothing (payments refunds it as its answer
    to the cancellation)."""
    if order.status is not OrderStatus.PENDING or order.cancellation_requested:
        return None
    if now > order.reservation_deadline:
        return order.moved_to(OrderStatus.REJECTED, "reservation_expired")
    if not order.stock_reserved:
        # Payments charges only once the stock is reserved, so StockReserved is on its way:
        # the order waits for it (and for its backordered lines) to be confirmed.
        return None if order.paid else replace(order, paid=True)
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
    # The quote's shipping line (issue 12): its net price (its tax is in `tax`) and method.
    shipping: Money | None = None
    shipping_method: str | None = None
    # What the parcel weighs (grams, by the catalog weights pricing knows; 0: unknown).
    weight_g: int = 0
    channel: str = "web"  # issue 13: the sales channel it came through


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
    channel: str = "web"  # issue 13
    placed_at: datetime | None = None  # issue 14: for the placed-to-outcome latency metric
    # What its shipment is bought with (a confirmation hands it to the label worker, issue 10).
    shipping_address: dict[str, Any] = field(default_factory=dict)
    weight_g: int = 0


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
    shipments: "tuple[ShipmentView, ...]" = ()
    shipping: Money | None = None  # net; its tax is in `tax` and both are in `total`
    shipping_method: str | None = None
    returns: tuple["OrderReturn", ...] = ()  # issue 12
    # Its invoice and credit notes (issue 12).
    documents: "OrderDocuments | None" = None
    channel: str = "web"  # issue 13: the sales channel it came through

    # Issue 13: the (parts of) lines promised from incoming stock.
    backordered: tuple[BackorderedLine, ...] = ()


@dataclass(frozen=True)
class StoredKey:
    """An Idempotency-Key as the request that first used it left it."""

    request_hash: str
    order_id: str


# --- carts (issue 12) ---------------------------------------------------------------------------


class CartStatus(StrEnum):
    OPEN = "open"
    CHECKED_OUT = "checked_out"


# A line holds 1..999 units (0 in a PUT removes it); a cart holds at most as many lines as an
# order may (POST /orders takes 100).
MAX_CART_LINE_QUANTITY = 999
MAX_CART_LINES = 100


@dataclass(frozen=True)
class CartLine:
    """A sku in a cart, with the catalog price seen when the line was last set (what an
    abandonment event reports without asking catalog again)."""

    sku: str
    quantity: int
    seen_price: Money | None = None


@dataclass(frozen=True)
class Cart:
    """A cart as stored: its lines in the order they were first added. `revision` grows with
    every change, so a checkout closes exactly the lines it ordered."""

    id: str
    customer_id: str
    status: CartStatus
    email: str | None
    lines: tuple[CartLine, ...]
    revision: int
    order_id: str | None
    created_at: datetime
    updated_at: datetime
    abandoned_at: datetime | None = None


@dataclass(frozen=True)
class CatalogProduct:
    """What catalog's public product read says of a sku now: its state, base price, stock."""

    sku: str
    active: bool
    price: Money | None
    available: int
    in_stock: bool


@dataclass(frozen=True)
class LiveCartLine:
    """A cart line with what it costs and how much of it there is right now. `available` below
    `quantity` is allowed (stock moves; the order's reservation decides), it is only flagged."""

    sku: str
    quantity: int
    unit_price: Money | None
    line_total: Money | None
    available: int
    in_stock: bool
    # "active", "discontinued", or "unknown" (catalog no longer knows the sku).
    product_status: str


@dataclass(frozen=True)
class CartView:
    """A cart as its owner reads it: every line priced and stocked live, and the subtotal (None
    when some line has no price, or prices are in several currencies)."""

    cart: Cart
    lines: tuple[LiveCartLine, ...]
    subtotal: Money | None
    currency: str | None


def is_purchasable(product: CatalogProduct | None) -> bool:
    return product is not None and product.active


def live_cart(cart: Cart, products: dict[str, CatalogProduct | None]) -> CartView:
    """Price and stock each line from `products` (None: catalog does not know the sku)."""
    lines = tuple(_live_line(line, products.get(line.sku)) for line in cart.lines)
    subtotal, currency = _sum(
        [line.line_total for line in lines], empty=not lines, seen=[ln.unit_price for ln in lines]
    )
    return CartView(cart=cart, lines=lines, subtotal=subtotal, currency=currency)


def seen_subtotal(lines: tuple[CartLine, ...]) -> Money | None:
    """The lines' total at the prices seen when each was set (None if one had no price)."""
    subtotal, _ = _sum(
        [_times(ln.seen_price, ln.quantity) for ln in lines],
        empty=not lines,
        seen=[ln.seen_price for ln in lines],
    )
    return subtotal


def _live_line(line: CartLine, product: CatalogProduct | None) -> LiveCartLine:
    if product is None:
        return LiveCartLine(line.sku, line.quantity, None, None, 0, False, "unknown")
    # A discontinued product cannot be bought: no price is shown for it.
    price = product.price if product.active else None
    return LiveCartLine(
        sku=line.sku,
        quantity=line.quantity,
        unit_price=price,
        line_total=_times(price, line.quantity),
        available=product.available,
        in_stock=product.in_stock,
        product_status="active" if product.active else "discontinued",
    )


def _times(price: Money | None, quantity: int) -> Money | None:
    return None if price is None else Money(amount=price.amount * quantity, currency=price.currency)


def _sum(
    totals: list[Money | None], *, empty: bool, seen: list[Money | None]
) -> tuple[Money | None, str | None]:
    """(sum, currency) of line totals: None for the sum unless every line has a total in one
    currency; the currency is the one all priced lines share (None if none or several)."""
    currencies = {m.currency for m in seen if m is not None}
    currency = next(iter(currencies)) if len(currencies) == 1 else None
    if empty or currency is None or any(t is None for t in totals):
        return None, currency
    return Money(amount=sum(t.amount for t in totals if t is not None), currency=currency), currency


# --- shipments (issue 12) ---
# A shipment is a parcel of the order bought from a carrier: recorded `pending` in the
# transaction that confirms the order, its label bought outside any transaction by the label
# worker, then moved by the carrier's tracking webhooks.


class ShipmentStatus(StrEnum):
    PENDING = "pending"  # the label is still to be bought
    LABEL_CREATED = "label_created"
    FAILED = "failed"  # the carrier refused the label (the reason is kept)
    CANCELLED = "cancelled"  # the order was cancelled before its label was bought
    IN_TRANSIT = "in_transit"
    OUT_FOR_DELIVERY = "out_for_delivery"
    DELIVERED = "delivered"
    RETURNED = "returned"  # the carrier sends it back to us
    EXCEPTION = "exception"  # the carrier reports a failure (lost, damaged, undeliverable)
    # Issue 13: the order is backordered; its label is bought once BackorderFilled says so.
    AWAITING_STOCK = "awaiting_stock"


# The tracking statuses a carrier's webhook reports (EasyPost's Tracker statuses; the sandbox
# uses the same words), and what each makes of the shipment.
TrackingStatus = Literal[
    "pre_transit", "in_transit", "out_for_delivery", "delivered", "return_to_sender", "failure"
]
TRACKING_STATUSES: tuple[str, ...] = get_args(TrackingStatus)
SHIPMENT_STATUS_OF: dict[str, ShipmentStatus] = {
    "pre_transit": ShipmentStatus.LABEL_CREATED,
    "in_transit": ShipmentStatus.IN_TRANSIT,
    "out_for_delivery": ShipmentStatus.OUT_FOR_DELIVERY,
    "delivered": ShipmentStatus.DELIVERED,
    "return_to_sender": ShipmentStatus.RETURNED,
    "failure": ShipmentStatus.EXCEPTION,
}
# Shipments whose parcel has moved on: tracking updates apply to these only.
TRACKED = frozenset(
    {
        ShipmentStatus.LABEL_CREATED,
        ShipmentStatus.IN_TRANSIT,
        ShipmentStatus.OUT_FOR_DELIVERY,
        ShipmentStatus.EXCEPTION,
    }
)
# Tracking statuses that tell the parcel left the warehouse: the order is `shipped` then.
LEFT_THE_WAREHOUSE = frozenset({"in_transit", "out_for_delivery", "delivered"})


class WebhookRejected(Exception):
    """An inbound carrier webhook that is not the carrier's (bad or missing signature, stale
    timestamp) or cannot be read. Its message names the problem, never the payload."""


@dataclass(frozen=True)
class TrackingEvent:
    """One verified tracking update of a carrier: its own event id (deduplication), the
    tracking number it is about, the status and when the carrier saw it."""

    event_id: str
    event_type: str
    tracking_number: str
    status: TrackingStatus
    at: datetime
    detail: str | None = None


def next_shipment_status(current: ShipmentStatus, tracking: str) -> ShipmentStatus | None:
    """The shipment's status after a tracking update, or None when the update changes nothing:
    a repeat, an update for a shipment that ended (delivered, returned) or was never bought,
    or an older status arriving late (pre-transit after in-transit, in-transit after
    out-for-delivery)."""
    target = SHIPMENT_STATUS_OF.get(tracking)
    if target is None or current not in TRACKED or target is current:
        return None
    if target is ShipmentStatus.LABEL_CREATED:
        return None  # pre_transit is where a bought label starts: never a step back to it
    if target is ShipmentStatus.IN_TRANSIT and current is ShipmentStatus.OUT_FOR_DELIVERY:
        return None
    return target


def tracking_moves(order: Order, tracking: str) -> list[OrderStatus]:
    """The order statuses a tracking update moves the order through, in order: the parcel
    leaving the warehouse ships a confirmed order; its delivery delivers it (passing through
    `shipped` first when no update said it left). An order being cancelled, or one that ended,
    is not moved (the shipment still records the update)."""
    if order.cancellation_requested or order.is_terminal:
        return []
    moves: list[OrderStatus] = []
    status = order.status
    if tracking in LEFT_THE_WAREHOUSE and status is OrderStatus.CONFIRMED:
        moves.append(OrderStatus.SHIPPED)
        status = OrderStatus.SHIPPED
    if tracking == "delivered" and status is OrderStatus.SHIPPED:
        moves.append(OrderStatus.DELIVERED)
    return moves


def may_buy_label(status: OrderStatus, cancellation_requested: bool) -> bool:
    """A label is bought for an order on its way out only: not one being cancelled or ended."""
    return not cancellation_requested and status in (OrderStatus.CONFIRMED, OrderStatus.SHIPPED)


def label_path(order_id: str, shipment_id: str) -> str:
    """Where the gateway serves a label we hold (the sandbox's PDF): the shipment's label_url."""
    return f"/orders/{order_id}/shipments/{shipment_id}/label"


@dataclass(frozen=True)
class ShipmentView:
    """A shipment as the order shows it."""

    id: str
    order_id: str
    carrier: str | None  # None until the label worker takes it up
    status: ShipmentStatus
    tracking_number: str | None
    label_url: str | None
    tracking_url: str | None
    created_at: datetime
    failure_reason: str | None = None


@dataclass(frozen=True)
class ShipmentIntent:
    """A pending shipment the label worker claimed: what to buy for which order, and the claim
    (`attempts`, the fencing token of its outcome)."""

    id: str
    order_id: str
    carrier: str
    attempts: int
    order_status: OrderStatus
    cancellation_requested: bool
    shipping_address: dict[str, Any]
    lines: tuple[PricedLine, ...]
    correlation_id: str
    # The parcel's weight as pricing weighed the order (0: unknown, the worker estimates).
    weight_g: int = 0


def shipment_claimed_in_place(
    shipment_id: str, order: LockedOrder, after: Order, carrier: str
) -> ShipmentIntent:
    """The shipment a confirmation records, claimed by that same transaction (its first claim)
    for the label worker of this process, with what the order says as it commits."""
    return ShipmentIntent(
        id=shipment_id,
        order_id=order.id,
        carrier=carrier,
        attempts=1,
        order_status=after.status,
        cancellation_requested=after.cancellation_requested,
        shipping_address=order.shipping_address,
        lines=order.lines,
        correlation_id=order.correlation_id,
        weight_g=order.weight_g,
    )


@dataclass(frozen=True)
class TrackedShipment:
    """A shipment found by its carrier's tracking number, locked for a tracking update."""

    id: str
    order_id: str
    carrier: str
    tracking_number: str
    tracking_url: str | None
    status: ShipmentStatus


def sandbox_carrier_signature(secret: str, timestamp: int, payload: bytes) -> str:
    """`t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<payload>">`, Stripe's scheme."""
    return timestamped_signature(secret, timestamp, payload)


def verify_sandbox_carrier_signature(
    secret: str, header: str | None, payload: bytes, now: int, tolerance_s: int
) -> None:
    """Raises WebhookRejected unless `header` signs `payload` with `secret` within tolerance."""
    try:
        verify_timestamped_signature(secret, header, payload, now, tolerance_s)
    except SignatureRejected as exc:
        raise WebhookRejected(str(exc)) from exc


# --- returns (issue 12) ---
# A return is a sub-resource of a delivered order (which stays `delivered`): requested by its
# customer within the return window, received by an operator with each unit's condition, and
# completed once inventory has taken the units back and payments has refunded their share.


class ReturnStatus(StrEnum):
    REQUESTED = "requested"
    RECEIVED = "received"
    COMPLETED = "completed"


# Why a customer returns a line: a fixed set, like CancellationReason, so no text a customer
# typed ever reaches an email.
ReturnReason = Literal["damaged", "wrong_item", "not_as_described", "no_longer_needed", "other"]
RETURN_REASONS: tuple[str, ...] = get_args(ReturnReason)
ReturnCondition = Literal["resellable", "damaged"]
RETURN_CONDITIONS: tuple[str, ...] = get_args(ReturnCondition)
ShippingRefundPolicy = Literal["never", "when_all_returned"]


@dataclass(frozen=True)
class ReturnLine:
    """Units of one sku the customer sends back, and why."""

    sku: str
    quantity: int
    reason: str


@dataclass(frozen=True)
class ReceivedLine:
    """Units of one sku that arrived back, in one condition."""

    sku: str
    quantity: int
    condition: str


@dataclass(frozen=True)
class OrderReturn:
    """One return of an order, as stored and shown on the order."""

    id: str
    order_id: str
    status: ReturnStatus
    lines: tuple[ReturnLine, ...]
    requested_at: datetime
    received: tuple[ReceivedLine, ...] = ()
    refund: Money | None = None
    received_at: datetime | None = None
    completed_at: datetime | None = None
    # The two halves a received return waits for: inventory took the units back (StockReturned),
    # payments refunded their share (PaymentRefunded with this return's id; done at once when the
    # share is 0).
    stock_done: bool = False
    refund_done: bool = False


@dataclass(frozen=True)
class LineProblem:
    """Why a requested or received line is refused: the field at fault and why (a 422)."""

    field: str
    message: str


class ReturnNotAllowed(Exception):
    """The order cannot take this return now (not delivered, outside the window: a 409)."""


def check_return_window(
    status: OrderStatus, delivered_at: datetime | None, now: datetime, window_days: int
) -> None:
    """A return is requested of a delivered order, at most `window_days` after its delivery."""
    if status is not OrderStatus.DELIVERED or delivered_at is None:
        raise ReturnNotAllowed(
            f"an order that is {status} cannot be returned; it must be delivered"
        )
    if now > delivered_at + timedelta(days=window_days):
        raise ReturnNotAllowed(
            f"the return window of {window_days} day(s) after delivery "
            f"({delivered_at.isoformat()}) has closed"
        )


def units_held_by(order_return: OrderReturn) -> dict[str, int]:
    """Units per sku a return counts against the order: what was asked while it waits to be
    received, what arrived once received (units that never arrived can be asked for again)."""
    held: dict[str, int] = {}
    if order_return.status is ReturnStatus.REQUESTED:
        for line in order_return.lines:
            held[line.sku] = held.get(line.sku, 0) + line.quantity
    else:
        for got in order_return.received:
            held[got.sku] = held.get(got.sku, 0) + got.quantity
    return held


def returnable(lines: tuple[PricedLine, ...], returns: tuple[OrderReturn, ...]) -> dict[str, int]:
    """Per sku of the order: what was ordered minus what its returns hold."""
    left = {line.sku: line.quantity for line in lines}
    for order_return in returns:
        for sku, quantity in units_held_by(order_return).items():
            left[sku] = left.get(sku, 0) - quantity
    return left


def return_line_problem(lines: list[ReturnLine], left: dict[str, int]) -> LineProblem | None:
    """The first requested line that cannot be returned: a sku twice, not on the order, a
    reason outside the fixed set, or more units than are still returnable."""
    seen: set[str] = set()
    for index, line in enumerate(lines):
        if line.sku in seen:
            return LineProblem(f"lines[{index}].sku", "duplicate sku; put its quantity on one line")
        seen.add(line.sku)
        if line.sku not in left:
            return LineProblem(f"lines[{index}].sku", f"{line.sku} is not on the order")
        if line.reason not in RETURN_REASONS:
            return LineProblem(f"lines[{index}].reason", f"must be one of {list(RETURN_REASONS)}")
        if line.quantity < 1:
            return LineProblem(f"lines[{index}].quantity", "must be at least 1")
        if line.quantity > left[line.sku]:
            return LineProblem(
                f"lines[{index}].quantity",
                f"at most {max(left[line.sku], 0)} unit(s) of {line.sku} can still be returned",
            )
    return None


def received_line_problem(
    received: list[ReceivedLine], requested: tuple[ReturnLine, ...]
) -> LineProblem | None:
    """Received lines name skus of the return, each (sku, condition) once, and per sku at most
    the units requested (fewer may arrive: the rest is not refunded and may be asked again)."""
    asked = {line.sku: line.quantity for line in requested}
    seen: set[tuple[str, str]] = set()
    got: dict[str, int] = {}
    for index, line in enumerate(received):
        if line.sku not in asked:
            return LineProblem(f"lines[{index}].sku", f"{line.sku} is not on this return")
        if line.condition not in RETURN_CONDITIONS:
            return LineProblem(
                f"lines[{index}].condition", f"must be one of {list(RETURN_CONDITIONS)}"
            )
        if (line.sku, line.condition) in seen:
            return LineProblem(
                f"lines[{index}].sku", "duplicate sku and condition; put the quantity on one line"
            )
        seen.add((line.sku, line.condition))
        if line.quantity < 1:
            return LineProblem(f"lines[{index}].quantity", "must be at least 1")
        got[line.sku] = got.get(line.sku, 0) + line.quantity
        if got[line.sku] > asked[line.sku]:
            return LineProblem(
                f"lines[{index}].quantity",
                f"at most {asked[line.sku]} unit(s) of {line.sku} were requested on this return",
            )
    return None


def charged_share(line_total: int, quantity: int, before: int, units: int) -> int:
    """What `units` more units of a line charged `line_total` for `quantity` units refund, after
    `before` of its units were refunded: the cumulative share floor(total * n / quantity) of the
    units refunded after minus before. Remainders fall on the later units, deterministically, so
    refunding every unit of a line (in any number of returns) gives back exactly its total, and
    never more."""
    if quantity <= 0 or units <= 0:
        return 0
    after = min(before + units, quantity)
    before = min(before, quantity)
    return line_total * after // quantity - line_total * before // quantity


def shipping_refund(
    policy: ShippingRefundPolicy,
    shipping: int,
    lines: tuple[PricedLine, ...],
    returned_before: dict[str, int],
    returned_now: dict[str, int],
) -> int:
    """The order's shipping charge given back with this return: `never`, or
    `when_all_returned` (once every unit of every line is back, counting this return: that
    happens once, as nothing is returnable after it)."""
    if policy != "when_all_returned" or shipping <= 0:
        return 0
    for line in lines:
        back = returned_before.get(line.sku, 0) + returned_now.get(line.sku, 0)
        if back < line.quantity:
            return 0
    return shipping


def refund_for_received(
    lines: tuple[PricedLine, ...],
    returned_before: dict[str, int],
    received: list[ReceivedLine],
    left_to_refund: int,
) -> int:
    """The received units' share of their lines as charged (discount and tax included), whatever
    their condition, capped at what is left unrefunded of the order."""
    by_sku = {line.sku: line for line in lines}
    now: dict[str, int] = {}
    for got in received:
        now[got.sku] = now.get(got.sku, 0) + got.quantity
    total = 0
    for sku, units in now.items():
        line = by_sku[sku]
        total += charged_share(line.total.amount, line.quantity, returned_before.get(sku, 0), units)
    return max(0, min(total, left_to_refund))


def units_received(returns: tuple[OrderReturn, ...]) -> dict[str, int]:
    """Per sku, the units earlier returns received back (what was refunded or is being)."""
    back: dict[str, int] = {}
    for order_return in returns:
        for got in order_return.received:
            back[got.sku] = back.get(got.sku, 0) + got.quantity
    return back


def return_settled(order_return: OrderReturn, *, stock: bool, refund: bool) -> OrderReturn | None:
    """A received return with one more half done; completed when both are. None when it changes
    nothing (not received yet, completed already, or that half was done: a duplicate)."""
    if order_return.status is not ReturnStatus.RECEIVED:
        return None
    if (stock and order_return.stock_done) or (refund and order_return.refund_done):
        return None
    after = replace(
        order_return,
        stock_done=order_return.stock_done or stock,
        refund_done=order_return.refund_done or refund,
    )
    if after.stock_done and after.refund_done:
        after = replace(after, status=ReturnStatus.COMPLETED)
    return after


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


# --- channels (issue 13) ---

DEFAULT_CHANNEL = "web"
# Catalog's channel codes (a channel's listings topic is named after its code).
CHANNEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
# Kinds a customer may order on; marketplace and pos orders come from the channel's own
# integration (its `channel` principal) or an admin.
CUSTOMER_CHANNEL_KINDS = frozenset({"web", "social"})


@dataclass(frozen=True)
class Channel:
    """A sales channel as catalog announced it (ChannelChanged)."""

    code: str
    name: str
    kind: str
    active: bool = True


# `web` is known before catalog says anything about it (v1 orders are web orders).
BUILT_IN_WEB = Channel(code=DEFAULT_CHANNEL, name="Web", kind="web")


class ChannelRefused(Exception):
    """An order cannot go through this channel: 422 (unknown, inactive) or 403 (not yours)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def requested_channel(asked: str | None, bound: str | None) -> str:
    """The channel an order is placed on: a channel principal's own (`bound`: naming another is
    a 403), else the one asked for, else web."""
    if bound is None:
        return asked or DEFAULT_CHANNEL
    if asked is not None and asked != bound:
        raise ChannelRefused(403, f"this token places orders for channel {bound} only")
    return bound


def known_channel(code: str, stored: Channel | None) -> Channel | None:
    """What orders knows of a channel: catalog's last word, or the built-in web."""
    if stored is None and code == DEFAULT_CHANNEL:
        return BUILT_IN_WEB
    return stored


def check_channel_use(code: str, channel: Channel | None, *, privileged: bool) -> None:
    """Unknown or inactive → 422; a marketplace or pos channel for anyone but its own principal
    or an admin (`privileged`) → 403."""
    if channel is None:
        raise ChannelRefused(422, f"unknown channel {code}")
    if not channel.active:
        raise ChannelRefused(422, f"channel {code} is not active")
    if not privileged and channel.kind not in CUSTOMER_CHANNEL_KINDS:
        raise ChannelRefused(
            403, f"channel {code} ({channel.kind}) takes orders from its integration only"
        )


def may_read_order(
    *, sub: str, is_admin: bool, bound: str | None, customer_id: str, channel: str
) -> bool:
    """Admins read every order, customers their own, a channel principal its channel's."""
    if bound is not None:
        return bound == channel
    return is_admin or sub == customer_id


# --- backorders (issue 13) ---


def holds_shipment(backordered: bool, filled: bool) -> bool:
    """A confirmed order's shipment waits (awaiting_stock) while part of it is backordered and
    inventory has not said the incoming stock landed (BackorderFilled may come first)."""
    return backordered and not filled


# --- reconciliation (issue 14) ---

# Orders' reconciliation kinds (besides the kit's outbox_stuck), in one place.
ORDER_OVERDUE = "order_overdue"
RECONCILIATION_KINDS = (ORDER_OVERDUE,)


@dataclass(frozen=True)
class OverdueOrder:
    order_id: str
    reservation_deadline: datetime
    stock_reserved: bool


def overdue_findings(
    pending: Iterable[OverdueOrder], now: datetime, grace: timedelta
) -> list[Finding]:
    """Pending orders more than `grace` past their reservation deadline: the deadline sweep
    should have rejected them (whatever they hold: a capture that came too late is refunded on
    the rejection)."""
    return [
        Finding(
            ORDER_OVERDUE,
            {"order_id": p.order_id},
            f"pending {int((now - p.reservation_deadline).total_seconds())}s past its deadline"
            f" ({'stock reserved' if p.stock_reserved else 'stock not reserved'})",
            p.reservation_deadline,
        )
        for p in pending
        if p.reservation_deadline + grace < now
    ]


# --- timeline (issue 14) ---

Direction = Literal["emitted", "consumed"]


@dataclass(frozen=True)
class JournalEntry:
    """One event orders emitted or consumed about an order, as its journal keeps it."""

    seq: int  # the journal's insertion order: the stable tiebreak of equal times
    direction: Direction
    id: str
    type: str
    topic: str
    source: str
    time: datetime
    subject: str
    correlationid: str | None
    causationid: str | None
    data: dict[str, Any]


@dataclass(frozen=True)
class Waiting:
    """What a live order waits for, from whom, since when, and by when it should have come."""

    waiting_for: str
    source: str
    since: datetime
    deadline: datetime | None
    overdue: bool


# Fields shown in an event's one-line summary, in this order, when its data has them.
_SUMMARY_FIELDS = (
    "reason",
    "status",
    "decline_code",
    "amount",
    "total",
    "refund",
    "fully_refunded",
    "expires_at",
    "carrier",
    "tracking_number",
    "number",
    "return_id",
)


def _shown(value: Any) -> str:
    if isinstance(value, dict) and "amount" in value and "currency" in value:
        return f"{value['currency']} {value['amount']}"
    return str(value)


def event_summary(event_type: str, data: dict[str, Any]) -> str:
    """A short readable line about an event's data (never the whole payload)."""
    parts = [f"{k}={_shown(data[k])}" for k in _SUMMARY_FIELDS if data.get(k) is not None]
    lines = data.get("lines")
    if isinstance(lines, list) and lines:
        parts.append(f"lines={len(lines)}")
    return ", ".join(parts) if parts else event_type


def timeline_order(entries: list[JournalEntry]) -> list[JournalEntry]:
    """Events in the order they happened: their time, then the journal's own order."""
    return sorted(entries, key=lambda e: (e.time, e.seq))


def _first(entries: list[JournalEntry], *types: str) -> JournalEntry | None:
    return next((e for e in timeline_order(entries) if e.type in types), None)


def _entered(
    history: tuple[HistoryEntry, ...], status: OrderStatus, fallback: datetime
) -> datetime:
    return next((h.at for h in reversed(history) if h.status is status), fallback)


def waiting_for(
    *,
    status: OrderStatus,
    cancellation_requested: bool,
    created_at: datetime,
    reservation_deadline: datetime,
    history: tuple[HistoryEntry, ...],
    events: list[JournalEntry],
    now: datetime,
) -> Waiting | None:
    """What a live order waits for (None once it is terminal). Pending: inventory's
    StockReserved, then payments' PaymentCaptured, both by the reservation deadline. A
    cancellation under way: the half (stock released, payment returned) not yet answered.
    Confirmed: an operator's shipment (OrderShipped); shipped: the carrier's delivery."""
    if status in TERMINAL:
        return None
    if cancellation_requested:
        asked = _first(events, "OrderCancellationRequested")
        since = asked.time if asked is not None else created_at
        stock = _first(events, "StockReleased")
        payment = _first(events, "PaymentRefunded", "PaymentVoided")
        if stock is None:
            return Waiting("StockReleased", "inventory", since, None, False)
        if payment is None:
            return Waiting("PaymentRefunded", "payments", since, None, False)
        return Waiting("OrderCancelled", "orders", max(stock.time, payment.time), None, False)
    if status is OrderStatus.PENDING:
        overdue = now > reservation_deadline
        reserved = _first(events, "StockReserved")
        if reserved is None:
            return Waiting("StockReserved", "inventory", created_at, reservation_deadline, overdue)
        return Waiting("PaymentCaptured", "payments", reserved.time, reservation_deadline, overdue)
    if status is OrderStatus.CONFIRMED:
        since = _entered(history, OrderStatus.CONFIRMED, created_at)
        return Waiting("OrderShipped", "orders", since, None, False)
    since = _entered(history, OrderStatus.SHIPPED, created_at)
    return Waiting("OrderDelivered", "carrier", since, None, False)
