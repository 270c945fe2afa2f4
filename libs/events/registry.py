"""Every event type Backroom publishes, mapped to its data model and topic."""

from pydantic import BaseModel

from libs.events import catalog, inventory, notifications, orders, payments, pricing, topics

EVENT_TYPES: dict[str, tuple[str, type[BaseModel]]] = {
    model.__name__: (topic, model)
    for topic, models in (
        (
            topics.CATALOG,
            # ListingChanged is registered here for its schema; it is emitted to its channel's
            # topic (topics.listings) instead.
            (
                catalog.ProductCreated,
                catalog.ProductUpdated,
                catalog.ChannelChanged,
                catalog.ListingChanged,
            ),
        ),
        (topics.PRICING, (pricing.PriceChanged,)),
        (
            topics.INVENTORY,
            (
                inventory.StockLevelChanged,
                inventory.StockLow,
                inventory.StockReserved,
                inventory.StockReservationFailed,
                inventory.StockCommitted,
                inventory.StockReleased,
                inventory.StockReturned,
                inventory.BackorderFilled,
                inventory.PurchaseOrderDrafted,
                inventory.PurchaseOrderSent,
                inventory.PurchaseOrderReceived,
            ),
        ),
        (
            topics.ORDERS,
            (
                orders.OrderPlaced,
                orders.OrderConfirmed,
                orders.OrderRejected,
                orders.OrderCancellationRequested,
                orders.OrderCancelled,
                orders.OrderShipped,
                orders.OrderDelivered,
                orders.CartAbandoned,
                orders.ShipmentCreated,
                orders.ShipmentUpdated,
                orders.ReturnRequested,
                orders.ReturnReceived,
                orders.ReturnCompleted,
                orders.CreditNoteIssued,
            ),
        ),
        (topics.PAYMENT_INSTRUCTIONS, (orders.PaymentInstructionIssued,)),
        (
            topics.PAYMENTS,
            (
                payments.PaymentCaptured,
                payments.PaymentAuthorized,
                payments.PaymentFailed,
                payments.PaymentRefunded,
                payments.PaymentVoided,
                payments.PaymentDisputed,
            ),
        ),
        (topics.NOTIFICATIONS, (notifications.NotificationSent,)),
    )
    for model in models
}


def data_model_for(event_type: str) -> type[BaseModel]:
    return EVENT_TYPES[event_type][1]


def topic_for(event_type: str) -> str:
    return EVENT_TYPES[event_type][0]
