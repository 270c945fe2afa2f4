"""Events produced by the pricing service on `backroom.pricing` (key = sku)."""

from libs.events.common import Money, WireModel


class PriceChanged(WireModel):
    """The effective base price of a sku changed; `price` is null when it was removed."""

    sku: str
    price: Money | None
    previous: Money | None = None
