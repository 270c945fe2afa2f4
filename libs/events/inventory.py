"""Events produced by the inventory service on `backroom.inventory`.

Stock level events are keyed by sku; reservation events by order id."""

from datetime import datetime

from libs.events.common import BackorderedLine, Line, WireModel


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
    # Additive (issue 13): what each capped sales channel may still sell of the sku,
    # min(cap - used, available); a channel not listed sells from `available`.
    channels: list["ChannelAvailability"] = []
    # Additive (issue 13): units on open purchase orders not yet received.
    on_order: int = 0


class StockLow(WireModel):
    """Available stock fell to or below the reorder point (once per crossing)."""

    sku: str
    available: int
    reorder_point: int


class StockReserved(WireModel):
    order_id: str
    lines: list[Line]
    expires_at: datetime
    # Additive (issue 13): the location(s) each line was taken from (their quantities add up
    # to the lines' less what is backordered), and the units promised from incoming stock.
    allocations: list["Allocation"] = []
    backordered: list[BackorderedLine] = []


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


# --- channels, locations, suppliers (issue 13) ---


class ChannelAvailability(WireModel):
    """A capped channel's view of one sku: it may hold at most `cap` units in live reservations
    and committed orders (`used` now), and can sell `available` = min(cap - used, pool)."""

    channel: str
    cap: int
    used: int
    available: int


class Allocation(WireModel):
    """Units of one sku a reservation took from one location."""

    sku: str
    location: str
    quantity: int


class BackorderFilled(WireModel):
    """Every backordered unit of the order is now reserved from received stock: it can ship.
    Key = order id."""

    order_id: str
    lines: list[Line]
    allocations: list[Allocation] = []


class PurchaseOrderLine(WireModel):
    sku: str
    quantity: int
    received: int = 0


class PurchaseOrderDrafted(WireModel):
    """A sku crossed its reorder point and its supplier's reorder quantity was drafted (once
    per crossing). Key = purchase order id."""

    purchase_order_id: str
    supplier_id: str
    location: str
    lines: list[PurchaseOrderLine]
    expected_at: datetime | None = None
    reason: str = "reorder_point"


class PurchaseOrderSent(WireModel):
    """An admin sent the purchase order: notifications emails it, and posts it to the
    supplier's webhook when it has one. Key = purchase order id."""

    purchase_order_id: str
    supplier_id: str
    supplier_name: str
    supplier_email: str | None = None
    supplier_webhook_url: str | None = None
    location: str
    lines: list[PurchaseOrderLine]
    expected_at: datetime | None = None


class PurchaseOrderReceived(WireModel):
    """Goods arrived against a purchase order, into `location`; `lines` are this receipt's
    quantities, `status` the order's after it (partially_received or received)."""

    purchase_order_id: str
    receipt_id: str
    supplier_id: str
    location: str
    lines: list[Line]
    status: str


StockLevelChanged.model_rebuild()
StockReserved.model_rebuild()
