"""Events produced by the inventory service on `backroom.inventory`.

Stock level events are keyed by sku; reservation events by order id."""

from datetime import datetime

from libs.events.common import Line, WireModel


class StockLevelChanged(WireModel):
    """One sku's counts after a change that moved `available`, or a new sku's first level.
    Not published when available stays the same: the commit of a reservation (on_hand and
    reserved fall together) is announced by StockCommitted alone, so `on_hand` and `reserved`
    are as of this event, not necessarily now."""

    sku: str
    on_hand: int
    reserved: int
    available: int
    reason: str


class StockLow(WireModel):
    """Available stock fell to or below the reorder point (once per crossing)."""

    sku: str
    available: int
    reorder_point: int


class StockReserved(WireModel):
    order_id: str
    lines: list[Line]
    expires_at: datetime


class ShortLine(WireModel):
    sku: str
    requested: int
    available: int


class StockReservationFailed(WireModel):
    order_id: str
    reason: str
    short_lines: list[ShortLine] = []


class StockCommitted(WireModel):
    order_id: str
    lines: list[Line]


class StockReleased(WireModel):
    order_id: str
    lines: list[Line]
    reason: str


# --- returns (issue 12) ---


class StockReturned(WireModel):
    """A received return's units are back: resellable ones restocked (on_hand up), damaged ones
    written off (a movement, on_hand unchanged: they left with the order). Key = order id."""

    order_id: str
    return_id: str
    restocked: list[Line] = []
    written_off: list[Line] = []
