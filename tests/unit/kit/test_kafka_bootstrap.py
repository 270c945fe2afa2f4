"""A cluster's bootstrap list reaches every Kafka client of a service as several servers."""

from libs.kit.kafka import bootstrap_servers
from libs.kit.runtime import Runtime
from libs.kit.settings import ServiceSettings

CLUSTER = "127.0.0.1:39192,127.0.0.1:39194, 127.0.0.1:39196"


def test_a_bootstrap_list_is_split_into_servers() -> None:
    assert bootstrap_servers(CLUSTER) == ["127.0.0.1:39192", "127.0.0.1:39194", "127.0.0.1:39196"]
    assert bootstrap_servers("127.0.0.1:9092") == ["127.0.0.1:9092"]


def test_the_service_broker_gets_every_server_of_a_cluster() -> None:
    """Found by `make faults` (kafka-cluster-broker-lost): FastStream took the whole list as one
    host name, so no service could start against the 3-broker cluster."""
    runtime = Runtime(ServiceSettings(service_name="kit-test", kafka_bootstrap=CLUSTER))
    assert runtime.broker._connection_kwargs["bootstrap_servers"] == bootstrap_servers(CLUSTER)
