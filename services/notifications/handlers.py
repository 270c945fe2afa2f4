"""Kafka in: every consumed event may be queued for webhook subscribers; order and stock events
also queue an email. Nothing is sent from here: the workers send after the commit."""

from pydantic import BaseModel

from libs.events import topics
from libs.events.registry import EVENT_TYPES
from libs.kit import kafka_acl
from libs.kit.inbox import EventContext, EventHandler, EventProcessor
from services.notifications import domain, service
from services.notifications.db import Store

# Every public topic but our own, so that any event a webhook may subscribe to reaches us.
SUBSCRIBES_TO = (topics.CATALOG, topics.PRICING, topics.INVENTORY, topics.ORDERS, topics.PAYMENTS)


def on_event(intake: service.Intake) -> EventHandler[BaseModel]:
    """The handler of every consumed type: one use case, in the event's transaction."""

    async def handle(_: BaseModel, ctx: EventContext) -> None:
        event = service.ReceivedEvent(
            type=ctx.event.type,
            id=ctx.event.id,
            correlation_id=ctx.event.correlationid,
            data=ctx.event.data,
            # Webhooks forward the CloudEvent exactly as received, byte for byte.
            raw=ctx.raw.decode(),
        )
        await service.take_event(ctx.tx(Store.of), intake, event)

    return handle


def register(processor: EventProcessor, intake: service.Intake) -> None:
    handle = on_event(intake)
    for event_type in domain.WEBHOOK_EVENT_TYPES:
        topic, model = EVENT_TYPES[event_type]
        if topic in SUBSCRIBES_TO:
            processor.on(model)(handle)


# --- channel webhooks (issue 13) ---

# Each sales channel's ListingChanged come on a topic of its own (topics.listings), created when
# the channel is: a second consumer subscribes to them all by pattern (FastStream cannot mix
# topics and a pattern in one subscriber), in a group of its own so that a new channel's topic
# (a rebalance of that group) never pauses the main consumer. The ListingChanged handler itself
# is registered above with every other type; its records are handled by the same processor
# (inbox, retries, dead letters to `<topic>.dlq`). FastStream hands the pattern to aiokafka as
# written (it has no `{param}`): every listing topic, never a dead-letter twin (`.dlq` has a dot,
# which a channel code has not).
LISTING_TOPICS_PATTERN = r"^backroom\.listings\.[a-z0-9][a-z0-9-]*$"
LISTINGS_GROUP = kafka_acl.NOTIFICATIONS_LISTINGS_GROUP
