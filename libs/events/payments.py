"""Events produced by the payments service on `backroom.payments` (key = order id)."""

from libs.events.common import Money, WireModel


class PaymentCaptured(WireModel):
    order_id: str
    payment_id: str
    amount: Money
    provider_ref: str


class PaymentAuthorized(WireModel):
    """Capture policy on_shipment: the money is held on the payment method (captured when the
    order ships, released if it closes first). Orders confirms on it as on PaymentCaptured."""

    order_id: str
    payment_id: str
    amount: Money
    provider_ref: str


class PaymentFailed(WireModel):
    order_id: str
    payment_id: str
    reason: str
    # Additive: the provider's own decline code (card_declined, invalid_token, ...) and the amount.
    decline_code: str | None = None
    amount: Money | None = None


class PaymentRefunded(WireModel):
    order_id: str
    payment_id: str
    amount: Money
    provider_ref: str
    reason: str
    # Additive: the refund's own payment id (`payment_id` is the capture it gives back).
    refund_id: str | None = None
    # Additive (issue 11): false for a partial refund that leaves money captured (an operator's
    # refund of part of an order); only a full one answers a cancellation. `amount` is what this
    # refund gave back.
    fully_refunded: bool = True
    # Additive (issue 12): the return (orders' return id) this refund gives the share of.
    return_id: str | None = None


class PaymentVoided(WireModel):
    """Answer to a cancellation when nothing was captured: nothing ever will be for this order."""

    order_id: str
    reason: str


class PaymentDisputed(WireModel):
    """The shopper's bank opened a dispute (chargeback) on a captured payment; an operator must
    answer it at the provider before its deadline."""

    order_id: str
    payment_id: str
    amount: Money
    reason: str
    provider_ref: str
    provider: str
