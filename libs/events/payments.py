"""Events produced by the payments service on `backroom.payments` (key = order id)."""

from libs.events.common import Money, WireModel


class PaymentCaptured(WireModel):
    order_id: str
    payment_id: str
    amount: Money
    provider_ref: str


class PaymentFailed(WireModel):
    order_id: str
    payment_id: str
    reason: str


class PaymentRefunded(WireModel):
    order_id: str
    payment_id: str
    amount: Money
    provider_ref: str
    reason: str


class PaymentVoided(WireModel):
    """Answer to a cancellation when nothing was captured: nothing ever will be for this order."""

    order_id: str
    reason: str
