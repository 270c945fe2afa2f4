"""A background loop that drains work a service recorded for itself (intents to call a PSP, mail
to send, webhooks due, deadlines passed): woken in-process right after the commit that made the
work, with a slow poll as the safety net for other replicas and crash recovery."""

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class _CommitHook(Protocol):
    def on_commit(self, callback: Callable[[], None]) -> None: ...


class Handoff(Generic[T]):
    """Work a transaction claimed for this process as it recorded it (the row written already
    leased to us), passed to the worker in memory once that transaction commits: the worker's
    own claim transaction is saved (issue 10). Crash safety is the lease's, as after any claim:
    if this process dies before the work is done, the lease runs out and any replica's poll
    claims the row again.

    At most about `capacity` items wait (a transaction asks `has_room` before it leases, so a
    busy worker gets no more; a few concurrent transactions may pass the bound together); work
    recorded without room is written unclaimed and claimed from the database as before."""

    def __init__(self, capacity: int, wake: Callable[[], None] = lambda: None) -> None:
        self.capacity = capacity
        self.wake = wake
        self._items: deque[T] = deque()

    def has_room(self) -> bool:
        return len(self._items) < self.capacity

    def give(self, tx: _CommitHook, item: T) -> None:
        """Hand `item` (leased by `tx`) to the worker once `tx` commits; never after a rollback."""

        def handed() -> None:
            self._items.append(item)
            self.wake()

        tx.on_commit(handed)

    def take(self, limit: int) -> list[T]:
        """Up to `limit` handed items, oldest first."""
        taken: list[T] = []
        while self._items and len(taken) < limit:
            taken.append(self._items.popleft())
        return taken

    def __len__(self) -> int:
        return len(self._items)


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
