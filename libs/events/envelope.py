"""The CloudEvents 1.0 structured-mode envelope every Backroom event travels in."""

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SPEC_VERSION: Literal["1.0"] = "1.0"
CONTENT_TYPE = "application/json"


class CloudEvent(BaseModel):
    """A CloudEvent in structured JSON mode, with Backroom's correlation extensions."""

    model_config = ConfigDict(extra="allow")

    specversion: Literal["1.0"] = SPEC_VERSION
    id: str = Field(min_length=1)
    source: str = Field(min_length=1)
    type: str = Field(min_length=1)
    subject: str = Field(min_length=1)
    time: datetime
    datacontenttype: str = CONTENT_TYPE
    dataversion: str = "1"
    correlationid: str
    causationid: str | None = None
    data: dict[str, Any]
    # Issue 14: where the data's JSON Schema is, a path on the gateway (schema_path).
    dataschema: str | None = None
    # Issue 14: the CloudEvents distributed-tracing extension (W3C trace context of the span the
    # event was emitted in); None while tracing is off.
    traceparent: str | None = Field(
        default=None, description="W3C trace context of the span the event was emitted in"
    )
    tracestate: str | None = Field(default=None, description="W3C tracestate, with traceparent")

    def to_json(self) -> bytes:
        """Serialise for the wire (RFC 3339 UTC times)."""
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> "CloudEvent":
        return cls.model_validate_json(raw)


def new_event_id() -> str:
    return str(uuid.uuid4())


def new_event(
    *,
    service: str,
    data: BaseModel,
    subject: str,
    correlation_id: str | None = None,
    causation_id: str | None = None,
    event_type: str | None = None,
    at: datetime | None = None,
) -> CloudEvent:
    """Wrap a data model in an envelope; the type defaults to the model's class name."""
    event_id = new_event_id()
    event_type = event_type or type(data).__name__
    traceparent, tracestate = (None, None) if trace_context is None else trace_context(causation_id)
    return CloudEvent(
        id=event_id,
        source=f"backroom/{service}",
        type=event_type,
        subject=subject,
        time=at or datetime.now(UTC),
        correlationid=correlation_id or event_id,
        causationid=causation_id,
        data=data.model_dump(mode="json"),
        dataschema=schema_path(event_type),
        traceparent=traceparent,
        tracestate=tracestate,
    )


# --- event catalog (issue 14) ---

SCHEMA_PATH_PREFIX = "/schemas/events/"


def schema_path(event_type: str) -> str:
    """The gateway path of an event type's data JSON Schema (served from `backroom apidocs`)."""
    return f"{SCHEMA_PATH_PREFIX}{event_type}.json"


# --- tracing (issue 14) ---

# Set by libs/kit/tracing.py while tracing is on: (traceparent, tracestate) for an event emitted
# now, given its causation id. None (tracing off): new_event does no trace work at all.
trace_context: Callable[[str | None], tuple[str | None, str | None]] | None = None
