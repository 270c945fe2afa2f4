"""aio-libs/aiokafka#1038 under uvloop: a write to a connection the broker closed must be the
broken-connection error aiokafka handles (it reconnects), not a RuntimeError that kills its
group coordination task. Reproduced on a real loopback socket under a real uvloop loop."""

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import aiokafka
import pytest
import uvloop
from aiokafka.conn import AIOKafkaConnection
from aiokafka.errors import KafkaConnectionError
from aiokafka.protocol.metadata import MetadataRequest

from libs.kit import eventloop


def on_uvloop(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(test())


async def connection_the_peer_closed() -> AIOKafkaConnection:
    """An AIOKafkaConnection whose socket the other end has closed and whose transport is
    closing, as after a broker restart (connect() itself needs a broker; its streams do not)."""
    accepted: asyncio.Queue[asyncio.StreamWriter] = asyncio.Queue()

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    peer = await accepted.get()
    peer.close()
    server.close()
    writer.transport.abort()  # what the loop does once it sees the reset
    await asyncio.sleep(0)
    conn = AIOKafkaConnection("127.0.0.1", port)
    conn._reader, conn._writer = reader, writer
    conn._read_task = asyncio.create_task(asyncio.sleep(3600))  # connect() starts a reader
    conn._versions = {MetadataRequest.API_KEY: (0, 8)}
    return conn


def send_metadata(conn: AIOKafkaConnection) -> Any:
    return conn.send(MetadataRequest([]), expect_response=False)


def test_unpatched_aiokafka_gets_a_runtime_error_under_uvloop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bug itself (if uvloop or aiokafka ever stop behaving so, the fix can go)."""
    original = getattr(AIOKafkaConnection.send, "__wrapped__", AIOKafkaConnection.send)
    monkeypatch.setattr(AIOKafkaConnection, "send", original)

    async def scenario() -> None:
        conn = await connection_the_peer_closed()
        with pytest.raises(RuntimeError):
            send_metadata(conn)

    on_uvloop(scenario)


def test_patched_a_closed_transport_is_a_broken_connection() -> None:
    assert eventloop.patch_aiokafka_for_uvloop()
    assert eventloop.patch_aiokafka_for_uvloop()  # idempotent: wrapped once

    async def scenario() -> None:
        conn = await connection_the_peer_closed()
        with pytest.raises(KafkaConnectionError, match="broken"):
            send_metadata(conn)
        assert conn._writer is None  # closed, so the client reconnects

    on_uvloop(scenario)
    assert not hasattr(AIOKafkaConnection.send.__wrapped__, "__wrapped__")


def test_other_runtime_errors_pass_through(monkeypatch: pytest.MonkeyPatch) -> None:
    eventloop.patch_aiokafka_for_uvloop()

    class Healthy:
        class transport:
            @staticmethod
            def is_closing() -> bool:
                return False

        def write(self, data: bytes) -> None:
            raise RuntimeError("a bug of ours, not a closed connection")

    async def scenario() -> None:
        conn = AIOKafkaConnection("127.0.0.1", 9)
        conn._writer = Healthy()
        conn._versions = {MetadataRequest.API_KEY: (0, 8)}
        with pytest.raises(RuntimeError, match="a bug of ours"):
            send_metadata(conn)

    on_uvloop(scenario)


def test_only_the_aiokafka_it_was_written_for_is_patched(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aiokafka, "__version__", "0.15.0")
    assert not eventloop.patch_aiokafka_for_uvloop()
    assert eventloop.service_loop() == "asyncio"
    monkeypatch.setattr(aiokafka, "__version__", eventloop.PATCHED_AIOKAFKA)
    assert eventloop.service_loop() == "uvloop"
