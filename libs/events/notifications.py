"""Events produced by the notifications service on `backroom.notifications` (key: order or sku)."""

from typing import Literal

from libs.events.common import WireModel


class NotificationSent(WireModel):
    """An email or webhook delivery was sent (or, for webhooks, given up on: status failed)."""

    notification_id: str
    order_id: str | None = None
    channel: Literal["email", "webhook"]
    template: str
    to: str
    status: Literal["sent", "failed"]
    sku: str | None = None  # low-stock alerts
    subscription_id: str | None = None  # webhook deliveries
