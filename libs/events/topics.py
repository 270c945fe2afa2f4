"""Kafka topic names: one public topic per owning service, plus restricted internal ones."""

CATALOG = "backroom.catalog"
PRICING = "backroom.pricing"
INVENTORY = "backroom.inventory"
ORDERS = "backroom.orders"
PAYMENTS = "backroom.payments"
NOTIFICATIONS = "backroom.notifications"

# Restricted, short-retention topic that carries payment tokens from orders to payments only;
# the public `backroom.orders` topic never sees a token (contract: OrderPlaced has no token).
PAYMENT_INSTRUCTIONS = "backroom.internal.payment-instructions"

PUBLIC_TOPICS = (CATALOG, PRICING, INVENTORY, ORDERS, PAYMENTS, NOTIFICATIONS)
INTERNAL_TOPICS = (PAYMENT_INSTRUCTIONS,)
ALL_TOPICS = PUBLIC_TOPICS + INTERNAL_TOPICS

DLQ_SUFFIX = ".dlq"


def dlq(topic: str) -> str:
    """The dead-letter topic of `topic`."""
    return topic + DLQ_SUFFIX
