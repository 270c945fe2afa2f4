"""The event loop a service runs on: uvloop, with a narrow fix that makes aiokafka safe on it.

uvloop spends about a quarter less CPU than asyncio's own loop on our workload (issue 10). But
under uvloop, writing to a connection the broker has already closed raises RuntimeError ("the
handler is closed") where asyncio raises an OSError; aiokafka's `AIOKafkaConnection.send` catches
only OSError (aio-libs/aiokafka#1038), the error escapes into its group coordination task, that
task dies, and the consumer never fetches again (seen after a broker restart in make faults'
kafka-kill).

The fix wraps the two methods that write (`send`, `_send_sasl_token`): a RuntimeError raised while
the connection's transport is closing becomes the KafkaConnectionError aiokafka raises for a
broken connection (after closing it as aiokafka does), which every caller already handles by
reconnecting. Any other RuntimeError passes through unchanged. It is applied only to the aiokafka
version it was written against; on any other, services run on asyncio's loop.
"""

import functools
import logging
from collections.abc import Callable
from typing import Any

import aiokafka
from aiokafka import errors as kafka_errors
from aiokafka.conn import AIOKafkaConnection, CloseReason

log = logging.getLogger(__name__)

PATCHED_AIOKAFKA = "0.14.0"
_MARK = "_backroom_closed_transport_fix"


def _closed_transport_is_a_broken_connection(
    method: Callable[..., Any],
) -> Callable[..., Any]:
    @functools.wraps(method)
    def write(self: AIOKafkaConnection, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except RuntimeError as err:
            writer = self._writer
            if writer is None or not writer.transport.is_closing():
                raise
            self.close(reason=CloseReason.CONNECTION_BROKEN)
            raise kafka_errors.KafkaConnectionError(
                f"Connection at {self._host}:{self._port} broken: {err}"
            ) from err

    setattr(write, _MARK, True)
    return write


def patch_aiokafka_for_uvloop() -> bool:
    """Apply the fix (idempotent); False, and nothing changed, on an aiokafka it was not
    written for."""
    if aiokafka.__version__ != PATCHED_AIOKAFKA:
        log.warning(
            "aiokafka %s is not %s: not patching aio-libs/aiokafka#1038, using asyncio's loop",
            aiokafka.__version__,
            PATCHED_AIOKAFKA,
        )
        return False
    for name in ("send", "_send_sasl_token"):
        method = getattr(AIOKafkaConnection, name)
        if not getattr(method, _MARK, False):
            setattr(AIOKafkaConnection, name, _closed_transport_is_a_broken_connection(method))
    return True


def service_loop() -> str:
    """uvicorn's `loop` setting for a service process: "uvloop" once aiokafka is safe on it."""
    try:
        import uvloop  # noqa: F401
    except ImportError:  # pragma: no cover - uvicorn[standard] installs it
        return "asyncio"
    return "uvloop" if patch_aiokafka_for_uvloop() else "asyncio"
