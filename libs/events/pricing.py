"""Events produced by the pricing service on `backroom.pricing` (key = sku)."""

from libs.events.common import Money, WireModel


class PriceChanged(WireModel):
    """The effective base price of a sku changed; `price` is null when it was removed."""

    sku: str
    price: Money | None
    previous: Money | None = None
    # Additive (issue 13): the channel's price list this price is in; None is the base list,
    # which every channel without its own price for the sku sells at.
    channel: str | None = None
