"""Events produced by the orders service on `backroom.orders` (key = order id), and the
payment instruction it sends to payments alone on the restricted internal topic."""

from datetime import datetime
from typing import Any

from libs.events.common import Money, PricedLine, WireModel


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


class OrderConfirmed(WireModel):
    order_id: str
    customer_id: str
    email: str | None = None
    lines: list[PricedLine]
    total: Money


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


class PaymentInstructionIssued(WireModel):
    """Internal: how to charge an order. Travels only on the restricted internal topic."""

    order_id: str
    customer_id: str
    amount: Money
    token: str
