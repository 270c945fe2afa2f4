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

# Issue 13: each sales channel's listing updates go to a topic of its own, so a marketplace's
# principal can be allowed its channel's topic and nothing else.
LISTINGS_PREFIX = "backroom.listings."


def listings(channel: str) -> str:
    """The topic of one channel's ListingChanged events."""
    return LISTINGS_PREFIX + channel


DLQ_SUFFIX = ".dlq"


def dlq(topic: str) -> str:
    """The dead-letter topic of `topic`."""
    return topic + DLQ_SUFFIX
