"""Wire contracts of Backroom: the CloudEvents envelope, topics and every event's data model."""

from libs.events.envelope import CloudEvent, new_event
from libs.events.registry import EVENT_TYPES, data_model_for

__all__ = ["EVENT_TYPES", "CloudEvent", "data_model_for", "new_event"]
