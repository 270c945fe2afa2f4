"""Kafka in: events are queued for webhook subscribers; order and stock events become emails."""

from pydantic import BaseModel

from libs.events import topics
from libs.events.registry import EVENT_TYPES
from libs.kit.inbox import EventContext, EventHandler, EventProcessor
from services.notifications import domain, service
from services.notifications.settings import NotificationsSettings

# Every public topic but our own, so that any event a webhook may subscribe to reaches us.
SUBSCRIBES_TO = (topics.CATALOG, topics.PRICING, topics.INVENTORY, topics.ORDERS, topics.PAYMENTS)

# The Kafka record's bytes of the event being handled, set by main around the kit's processor:
# webhooks forward the CloudEvent exactly as received, and EventContext carries only the parsed one.


def on_event(settings: NotificationsSettings) -> EventHandler[BaseModel]:
    """The handler of every consumed type: webhook rows first, the email (if any) last, so that
    between the SMTP server's accepting a mail and the commit there are only a few row writes."""

    async def handle(_: BaseModel, ctx: EventContext) -> None:
        raw = ctx.raw
        await service.enqueue_deliveries(ctx.session, ctx.event.type, ctx.event.id, raw.decode())
        email = domain.plan_email(
            ctx.event.type, ctx.event.data, ctx.event.id, settings.warehouse_email
        )
        if email is not None:
            await service.notify_by_email(ctx.session, ctx.emitter, settings, email)

    return handle


def register(processor: EventProcessor, settings: NotificationsSettings) -> None:
    handle = on_event(settings)
    for event_type in domain.WEBHOOK_EVENT_TYPES:
        topic, model = EVENT_TYPES[event_type]
        if topic in SUBSCRIBES_TO:
            processor.on(model)(handle)
