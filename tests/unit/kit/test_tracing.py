"""Tracing (issue 14): off costs nothing and carries nothing; on, an event carries the W3C trace
context of the span it was emitted in, and the relay and the consumer continue that trace."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from libs.events import envelope
from libs.events.envelope import new_event
from libs.events.orders import OrderRejected
from libs.kit import tracing
from libs.kit.settings import ServiceSettings


def _rejected(causation_id: str | None = None) -> envelope.CloudEvent:
    return new_event(
        service="orders",
        data=OrderRejected(order_id="o-1", customer_id="c", reason="out_of_stock"),
        subject="o-1",
        causation_id=causation_id,
    )


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Tracing on, as `tracing.start` leaves it, but with spans kept in memory and without the
    process-wide provider (which can be set once only)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=tracing.RootFilter())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_active", tracing._Tracing(provider))
    monkeypatch.setattr(envelope, "trace_context", tracing.event_trace_context)
    yield exporter
    provider.shutdown()


def _tracer() -> trace.Tracer:
    assert tracing._active is not None
    return tracing._active.tracer


def test_off_by_default_means_no_provider_no_instrumentation_and_no_traceparent() -> None:
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.sdk.trace import TracerProvider as SdkProvider

    settings = ServiceSettings(service_name="orders")
    assert settings.tracing == "off"
    assert tracing.start(settings) is False
    assert not tracing.enabled()
    assert not isinstance(trace.get_tracer_provider(), SdkProvider)
    assert not AsyncPGInstrumentor().is_instrumented_by_opentelemetry  # type: ignore[no-untyped-call]
    assert envelope.trace_context is None
    # Even inside someone's span, an event carries no trace context while tracing is off.
    provider = SdkProvider()
    with provider.get_tracer("t").start_as_current_span("outer"):
        event = _rejected()
    assert (event.traceparent, event.tracestate) == (None, None)
    assert tracing.publishing(event.model_dump_json(), "orders") is tracing._NOTHING
    assert tracing.handling(event, "orders") is tracing._NOTHING


def test_an_event_emitted_in_a_span_carries_its_traceparent(spans: InMemorySpanExporter) -> None:
    with _tracer().start_as_current_span("POST /orders", kind=SpanKind.SERVER) as span:
        event = _rejected()
    context = span.get_span_context()
    flags = int(context.trace_flags)
    assert flags & 1  # sampled
    assert event.traceparent == f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags:02x}"
    # It travels on the wire and back.
    assert envelope.CloudEvent.from_json(event.to_json()).traceparent == event.traceparent


def test_an_event_emitted_outside_any_span_carries_none(spans: InMemorySpanExporter) -> None:
    assert _rejected().traceparent is None


def test_the_handler_runs_as_a_child_of_the_events_traceparent_and_its_emits_continue_it(
    spans: InMemorySpanExporter,
) -> None:
    with _tracer().start_as_current_span("POST /orders", kind=SpanKind.SERVER) as root:
        placed = _rejected()
    with tracing.handling(placed, "orders"):
        emitted = _rejected(causation_id=placed.id)
    [handler] = [s for s in spans.get_finished_spans() if s.name == "OrderRejected process"]
    assert handler.context is not None and handler.parent is not None
    assert handler.context.trace_id == root.get_span_context().trace_id
    assert handler.parent.span_id == root.get_span_context().span_id
    assert handler.kind is SpanKind.CONSUMER
    assert handler.attributes is not None
    assert handler.attributes[tracing.EVENT_SUBJECT] == "o-1"
    assert emitted.traceparent == tracing.traceparent_of(handler.context)


def test_a_worker_emit_after_the_handler_joins_the_trace_of_the_event_that_caused_it(
    spans: InMemorySpanExporter,
) -> None:
    with _tracer().start_as_current_span("POST /orders", kind=SpanKind.SERVER):
        placed = _rejected()
    with tracing.handling(placed, "orders"):
        pass
    later = _rejected(causation_id=placed.id)  # a worker: no span of its own
    [handler] = [s for s in spans.get_finished_spans() if s.name == "OrderRejected process"]
    assert handler.context is not None
    assert later.traceparent == tracing.traceparent_of(handler.context)
    assert _rejected(causation_id="someone-else").traceparent is None


def test_the_relay_publishes_a_row_as_a_child_of_its_traceparent(
    spans: InMemorySpanExporter,
) -> None:
    with _tracer().start_as_current_span("POST /orders", kind=SpanKind.SERVER) as root:
        event = _rejected()
    with tracing.publishing(event.model_dump_json(), "orders"):
        pass
    [publish] = [s for s in spans.get_finished_spans() if s.name == "orders publish"]
    assert publish.parent is not None and publish.context is not None
    assert publish.parent.span_id == root.get_span_context().span_id
    assert publish.context.trace_id == root.get_span_context().trace_id
    # A row without one (a timer's event) is published without a span.
    assert tracing.publishing(_rejected().model_dump_json(), "orders") is tracing._NOTHING


def test_an_events_without_traceparent_handler_is_a_root(spans: InMemorySpanExporter) -> None:
    with tracing.handling(_rejected(), "orders"):
        pass
    [handler] = spans.get_finished_spans()
    assert handler.parent is None


def test_database_and_kafka_spans_of_untraced_work_are_not_recorded(
    spans: InMemorySpanExporter,
) -> None:
    tracer = _tracer()
    with tracer.start_as_current_span(
        "SELECT", kind=SpanKind.CLIENT, attributes={"db.system": "postgresql"}
    ):
        pass
    with tracer.start_as_current_span("orders send", kind=SpanKind.PRODUCER):
        pass
    with (
        tracer.start_as_current_span("GET /quote", kind=SpanKind.SERVER),
        tracer.start_as_current_span(
            "SELECT", kind=SpanKind.CLIENT, attributes={"db.system": "postgresql"}
        ),
    ):
        pass
    assert sorted(s.name for s in spans.get_finished_spans()) == ["GET /quote", "SELECT"]


def test_file_mode_needs_a_file_and_writes_json_lines(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="BACKROOM_TRACE_FILE"):
        ServiceSettings(service_name="orders", tracing="file")
    with pytest.raises(ValueError, match="BACKROOM_TRACING"):
        ServiceSettings(service_name="orders", tracing="jaeger")
    settings = ServiceSettings(
        service_name="orders", tracing="file", trace_file=tmp_path / "t" / "{service}.jsonl"
    )
    path = tracing.trace_file_path(settings)
    assert path == tmp_path / "t" / "orders.jsonl"
    provider = tracing.new_provider(settings)
    with provider.get_tracer("t").start_as_current_span("POST /orders", kind=SpanKind.SERVER):
        pass
    provider.shutdown()  # flushes the batch
    [span] = tracing.read_spans(path)
    assert span["name"] == "POST /orders"
    assert span["resource"]["attributes"]["service.name"] == "backroom-orders"
    assert span["parent_id"] is None
