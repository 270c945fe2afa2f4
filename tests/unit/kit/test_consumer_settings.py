"""The consumer settings a service is configured with reach the Kafka consumers it creates."""

from typing import Any

from libs.kit.runtime import PatternConsumer, Runtime
from libs.kit.settings import ServiceSettings


def consumer_args(runtime: Runtime) -> list[dict[str, Any]]:
    # What FastStream hands to aiokafka's AIOKafkaConsumer when the broker starts.
    return [subscriber._connection_args for subscriber in runtime.broker.subscribers]  # type: ignore[attr-defined]


def test_every_consumer_long_polls_for_the_configured_time() -> None:
    runtime = Runtime(ServiceSettings(service_name="kit-test", kafka_fetch_max_wait_ms=1234))
    runtime._subscribe(["some.topic"])
    PatternConsumer(runtime, r"^some\.pattern\..*$", "kit-test.pattern")

    args = consumer_args(runtime)

    assert len(args) == 2
    assert [a["fetch_max_wait_ms"] for a in args] == [1234, 1234]
    assert all(a["fetch_min_bytes"] == 1 for a in args)  # a record still answers at once


def test_the_default_long_poll_bounds_a_quiet_hop_at_half_a_second() -> None:
    # ADR 0016: a longer default stalled the sagas' recovery in `make faults`.
    assert ServiceSettings(service_name="kit-test").kafka_fetch_max_wait_ms == 500
