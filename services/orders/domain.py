"""Order rules: the status machine, the cancellation handshake, the deadline, request identity,
and the shapes an order takes when it is placed, changed and read."""

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, get_args

from libs.events.common import Money, PricedLine


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
    # The quote's shipping line (issue 12): its net price (its tax is in `tax`) and method.
    shipping: Money | None = None
    shipping_method: str | None = None


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
    shipping: Money | None = None  # net; its tax is in `tax` and both are in `total`
    shipping_method: str | None = None


@dataclass(frozen=True)
class StoredKey:
    """An Idempotency-Key as the request that first used it left it."""

    request_hash: str
    order_id: str
