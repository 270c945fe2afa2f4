"""What decides /health/live: a consumer broken for good is reported; services run on the
standard asyncio loop (uvloop breaks aiokafka's recovery from a broker restart)."""

import argparse
import asyncio
import contextlib
import gc
from types import SimpleNamespace
from typing import Any

import aiokafka
import pytest
from aiokafka.conn import AIOKafkaConnection
from aiokafka.errors import KafkaError

from libs.kit import cli
from libs.kit.runtime import Runtime
from libs.kit.settings import ServiceSettings


def runtime_with_coordination(task: "asyncio.Future[Any] | None") -> Runtime:
    runtime = Runtime(ServiceSettings(service_name="kit-test"))
    runtime.subscribed_topics = ["some.topic"]
    runtime._subscribe(runtime.subscribed_topics)
    [subscriber] = runtime.broker.subscribers
    subscriber.consumer = SimpleNamespace(  # type: ignore[attr-defined]
        _coordinator=SimpleNamespace(_coordination_task=task)
    )
    return runtime


async def test_a_dead_group_coordination_task_is_a_consumer_failure() -> None:
    async def coordination() -> None:
        raise KafkaError("Unexpected error during coordination RuntimeError('handler is closed')")

    task = asyncio.ensure_future(coordination())
    with contextlib.suppress(KafkaError):
        await task
    failure = runtime_with_coordination(task).consumer_failure()
    assert failure is not None and "Unexpected error during coordination" in failure


async def test_a_running_or_cleanly_stopped_coordination_is_fine() -> None:
    running: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    assert runtime_with_coordination(running).consumer_failure() is None
    stopped: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    stopped.set_result(None)
    assert runtime_with_coordination(stopped).consumer_failure() is None
    cancelled: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    cancelled.cancel()
    assert runtime_with_coordination(cancelled).consumer_failure() is None
    assert runtime_with_coordination(None).consumer_failure() is None  # not started yet


def test_services_are_served_on_uvloop_made_safe_for_aiokafka(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """uvloop only with the aiokafka#1038 fix applied (libs/kit/eventloop.py); asyncio's loop
    on an aiokafka the fix was not written for."""
    seen: dict[str, Any] = {}
    settings = ServiceSettings(service_name="catalog")
    app = SimpleNamespace(state=SimpleNamespace(runtime=SimpleNamespace(settings=settings)))
    monkeypatch.setattr("services.catalog.main.create_app", lambda: app)
    monkeypatch.setattr(gc, "freeze", lambda: None)  # not in the test process
    monkeypatch.setattr("uvicorn.run", lambda app, **kwargs: seen.update(kwargs))
    cli._cmd_serve(argparse.Namespace(service="catalog"))
    assert seen["loop"] == "uvloop"
    assert getattr(AIOKafkaConnection.send, "_backroom_closed_transport_fix", False)
    monkeypatch.setattr(aiokafka, "__version__", "0.99.0")
    cli._cmd_serve(argparse.Namespace(service="catalog"))
    assert seen["loop"] == "asyncio"
