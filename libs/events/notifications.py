"""Events produced by the notifications service on `backroom.notifications` (key = order id or sku)."""

from typing import Literal

from libs.events.common import WireModel


class NotificationSent(WireModel):
    notification_id: str
    order_id: str | None = None
    channel: Literal["email", "webhook"]
    template: str
    to: str
    status: Literal["sent", "failed"]
