"""Tracing (issue 14): OpenTelemetry for one service process, configured from its settings.

Off by default (BACKROOM_TRACING=off): no SDK provider, no instrumentation, no trace context in
events or headers; every hook below is then a check of one module global. On:

- `otlp`: spans go to an OTLP/HTTP collector (the standard OTEL_EXPORTER_OTLP_ENDPOINT,
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS ... are honoured) in batches;
- `file`: finished spans are appended as JSON lines to BACKROOM_TRACE_FILE (a `{service}` in the
  path gives each service its own file; several processes appending to one file work too, one
  write per span).

What is instrumented: FastAPI (server spans, not /health* nor /metrics), httpx (client spans:
orders' quote to pricing, PSP, carrier and webhook calls), asyncpg (the SQLAlchemy engine's and the
relay's statements) and aiokafka (send and receive spans, the `traceparent` Kafka header). Across
Kafka the trace travels in the CloudEvent itself (the CloudEvents distributed-tracing extension):
an event emitted in a span carries that span's `traceparent`; the relay publishes each outbox row
as a child of the row's `traceparent`, and the consumer runs each handler in a span whose parent
is the event's `traceparent`, so what the handler emits continues the same trace.

Work done outside any traced operation (timers: the relay's polls, sweeps, metrics, a batch's
inbox claim) records no database or Kafka spans of its own: root spans of those kinds are not
sampled. An event emitted by a background worker (payments' charger, say) joins the trace of the
event that caused it when this process handled that one recently (`remember`), else it carries
none and its consumers start a new trace.
"""

import contextlib
import json
import logging
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager as ContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import SpanContext, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from libs.events import envelope
from libs.kit.settings import ServiceSettings

if TYPE_CHECKING:
    from fastapi import FastAPI
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger(__name__)

TRACER_NAME = "backroom"
TRACING_MODES = ("off", "otlp", "file")
# URLs (regular expressions, as the FastAPI instrumentation takes them) that get no server span.
EXCLUDED_URLS = "/health.*,/metrics"
# How many handled events' span contexts a process keeps for its workers (see `remember`).
REMEMBERED_EVENTS = 10_000
# CloudEvents semantic conventions: what each of our Kafka spans says about its event.
EVENT_ID = "cloudevents.event_id"
EVENT_TYPE = "cloudevents.event_type"
EVENT_SUBJECT = "cloudevents.event_subject"
EVENT_SOURCE = "cloudevents.event_source"

_PROPAGATOR = TraceContextTextMapPropagator()
_NOTHING: ContextManager[None] = contextlib.nullcontext()


class _Tracing:
    """What is configured while tracing is on (one per process)."""

    def __init__(self, provider: "TracerProvider") -> None:
        self.provider = provider
        self.tracer = provider.get_tracer(TRACER_NAME)
        self.remembered: OrderedDict[str, SpanContext] = OrderedDict()


_active: _Tracing | None = None


def enabled() -> bool:
    return _active is not None


def service_resource_name(service: str) -> str:
    return f"backroom-{service}"


def trace_file_path(settings: ServiceSettings) -> Path:
    assert settings.trace_file is not None
    return Path(str(settings.trace_file).replace("{service}", settings.service_name))


def instrument_app(app: "FastAPI", settings: ServiceSettings) -> None:
    """Server spans for the app's routes (not health and metrics), when tracing is on. Only the
    app changes here: the provider is set when the process starts (`start`)."""
    if settings.tracing == "off":
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app, excluded_urls=EXCLUDED_URLS, exclude_spans=["receive", "send"]
    )


def start(settings: ServiceSettings) -> bool:
    """Configure tracing for this process from `settings`; False (and nothing done) when off."""
    global _active
    if settings.tracing == "off" or _active is not None:
        return _active is not None
    provider = new_provider(settings)
    trace.set_tracer_provider(provider)
    _instrument_libraries()
    _active = _Tracing(provider)
    envelope.trace_context = event_trace_context
    log.info(
        "tracing on (%s) as %s", settings.tracing, service_resource_name(settings.service_name)
    )
    return True


def stop() -> None:
    """Flush what is pending and stop exporting (the process is ending)."""
    global _active
    active, _active = _active, None
    envelope.trace_context = None
    if active is not None:
        with contextlib.suppress(Exception):
            active.provider.shutdown()


def new_provider(settings: ServiceSettings) -> "TracerProvider":
    """The SDK provider for these settings: the service's resource, the sampler, the exporter."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

    resource = Resource.create({SERVICE_NAME: service_resource_name(settings.service_name)})
    provider = TracerProvider(resource=resource, sampler=RootFilter(settings.trace_sample_ratio))
    exporter: SpanExporter
    if settings.tracing == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    else:
        exporter = file_exporter(trace_file_path(settings))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def file_exporter(path: Path) -> Any:
    """Finished spans as JSON lines appended to `path` (one write per span)."""
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    path.parent.mkdir(parents=True, exist_ok=True)
    out = path.open("a", encoding="utf-8")

    def one_line(span: ReadableSpan) -> str:
        return str(span.to_json(indent=None)) + "\n"

    return ConsoleSpanExporter(out=out, formatter=one_line)


def _instrument_libraries() -> None:
    from opentelemetry.instrumentation.aiokafka import AIOKafkaInstrumentor
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    asyncpg = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]
    for instrumentor in (HTTPXClientInstrumentor(), asyncpg, AIOKafkaInstrumentor()):
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument()


class RootFilter(Sampler):
    """The sampler: a span with a parent follows its parent's decision; a root span is sampled at
    `ratio` (BACKROOM_TRACE_SAMPLE_RATIO), except the database and Kafka spans of work that no
    traced operation started (timers' polls), which are never sampled. Our own Kafka spans (which
    name their event) may be roots."""

    def __init__(self, ratio: float = 1.0) -> None:
        self.delegate = ParentBased(TraceIdRatioBased(ratio))

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Mapping[str, Any] | None = None,
        links: Sequence[Any] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        if not parent.is_valid and _untraced_work(kind, attributes or {}):
            return SamplingResult(Decision.DROP)
        return self.delegate.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"RootFilter({self.delegate.get_description()})"  # type: ignore[no-untyped-call]


def _untraced_work(kind: SpanKind | None, attributes: Mapping[str, Any]) -> bool:
    if "db.system" in attributes or "db.system.name" in attributes:
        return True
    return kind in (SpanKind.PRODUCER, SpanKind.CONSUMER) and EVENT_ID not in attributes


# --- the trace context in events ---


def traceparent_of(context: SpanContext) -> str:
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def event_trace_context(causation_id: str | None) -> tuple[str | None, str | None]:
    """(traceparent, tracestate) for an event emitted now (libs/events/envelope.py calls it while
    tracing is on): the current span's, or, outside any span, that of the handled event that
    caused it, if this process remembers it."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid and causation_id is not None and _active is not None:
        context = _active.remembered.get(causation_id, context)
    if not context.is_valid:
        return None, None
    state = context.trace_state.to_header() if context.trace_state else ""
    return traceparent_of(context), state or None


def parent_context(traceparent: str | None, tracestate: str | None = None) -> Context:
    """A fresh context whose parent is this W3C trace context (none: a root), whatever the caller's
    context holds (suppression included)."""
    if not traceparent:
        return Context()
    carrier = {"traceparent": traceparent}
    if tracestate:
        carrier["tracestate"] = tracestate
    return _PROPAGATOR.extract(carrier, context=Context())


def remember(event_id: str, context: SpanContext) -> None:
    """Keep the span a handled event ran in, for a worker that later acts on it (bounded)."""
    if _active is None:
        return
    remembered = _active.remembered
    remembered[event_id] = context
    if len(remembered) > REMEMBERED_EVENTS:
        remembered.popitem(last=False)


def _event_attributes(event: envelope.CloudEvent) -> dict[str, str]:
    return {
        EVENT_ID: event.id,
        EVENT_TYPE: event.type,
        EVENT_SUBJECT: event.subject,
        EVENT_SOURCE: event.source,
        "messaging.system": "kafka",
    }


def handling(event: envelope.CloudEvent, topic: str) -> ContextManager[None]:
    """The span a consumed event's handler runs in, child of the event's traceparent (or a root);
    nothing when tracing is off."""
    if _active is None:
        return _NOTHING
    return _handling(_active, event, topic)


@contextlib.contextmanager
def _handling(active: _Tracing, event: envelope.CloudEvent, topic: str) -> Iterator[None]:
    attributes = _event_attributes(event) | {
        "messaging.destination.name": topic,
        "messaging.operation.type": "process",
    }
    with active.tracer.start_as_current_span(
        f"{event.type} process",
        context=parent_context(event.traceparent, event.tracestate),
        kind=SpanKind.CONSUMER,
        attributes=attributes,
    ) as span:
        remember(event.id, span.get_span_context())
        yield


def publishing(payload: str, topic: str) -> ContextManager[None]:
    """The span an outbox row is published in, child of its event's traceparent (the aiokafka
    send span below it sets the Kafka `traceparent` header); a row without one is published
    without spans. Nothing when tracing is off."""
    if _active is None:
        return _NOTHING
    try:
        event = json.loads(payload)
    except ValueError:
        return _NOTHING
    if not isinstance(event, dict) or not isinstance(event.get("traceparent"), str):
        return _NOTHING
    return _publishing(_active, event, topic)


@contextlib.contextmanager
def _publishing(active: _Tracing, event: dict[str, Any], topic: str) -> Iterator[None]:
    attributes = {
        EVENT_ID: str(event.get("id")),
        EVENT_TYPE: str(event.get("type")),
        EVENT_SUBJECT: str(event.get("subject")),
        EVENT_SOURCE: str(event.get("source")),
        "messaging.system": "kafka",
        "messaging.destination.name": topic,
        "messaging.operation.type": "publish",
    }
    tracestate = event.get("tracestate")
    with active.tracer.start_as_current_span(
        f"{topic} publish",
        context=parent_context(
            event["traceparent"], tracestate if isinstance(tracestate, str) else None
        ),
        kind=SpanKind.PRODUCER,
        attributes=attributes,
    ):
        yield


def read_spans(path: Path) -> list[dict[str, Any]]:
    """The spans a `file` exporter wrote (tests, operators' scripts); a torn last line is skipped."""
    spans: list[dict[str, Any]] = []
    if not path.exists():
        return spans
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError):
            spans.append(json.loads(line))
    return spans
