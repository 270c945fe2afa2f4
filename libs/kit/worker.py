"""A background loop that drains work a service recorded for itself (intents to call a PSP, mail
to send, webhooks due, deadlines passed): woken in-process right after the commit that made the
work, with a slow poll as the safety net for other replicas and crash recovery."""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


def full_batches(
    step: Callable[[], Awaitable[int]], batch_size: int
) -> Callable[[], Awaitable[int]]:
    """`step` (which returns how many items it took) as a Worker step that asks to run again at
    once only after a full batch: a short batch took everything due, so the trailing claim that
    would find nothing (a transaction each time) is skipped. Work recorded meanwhile wakes the
    worker anyway."""

    async def stepped() -> int:
        done = await step()
        return done if done >= batch_size else 0

    return stepped


class Worker:
    """Runs `step` until it reports no work (0), then sleeps until `wake()` or `poll_interval_s`.
    A failing step is logged and retried with capped backoff: the work stays recorded."""

    def __init__(
        self, name: str, step: Callable[[], Awaitable[int]], poll_interval_s: float = 1.0
    ) -> None:
        self.name = name
        self.step = step
        self.poll_interval_s = poll_interval_s
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Safe to call from any code on the loop's thread (an after-commit hook, a handler)."""
        self._wake.set()

    async def run(self) -> None:
        backoff = 0.1
        while True:
            self._wake.clear()
            try:
                while await self.step() > 0:
                    pass
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s failed, again in %.1fs: %r", self.name, backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_interval_s)
