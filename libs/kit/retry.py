"""The one retry policy for calls to the outside world (a PSP, SMTP, a webhook receiver, another
service): bounded attempts with capped exponential backoff, the same idempotency key each time."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` calls at most; between them `initial_s`, doubling, capped at `max_s`."""

    attempts: int = 4
    initial_s: float = 0.2
    max_s: float = 2.0

    def delay(self, attempt: int) -> float:
        """The pause after failed attempt number `attempt` (1-based)."""
        return float(min(self.initial_s * 2 ** max(attempt - 1, 0), self.max_s))

    async def run(
        self,
        what: str,
        call: Callable[[], Awaitable[T]],
        *,
        retry_on: tuple[type[BaseException], ...],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> T:
        """Call until it returns or raises something not in `retry_on`; the last attempt's
        error is re-raised, so the caller decides what a give-up means (a later sweep, a DLQ)."""
        if self.attempts < 1:
            raise ValueError("a retry policy needs at least one attempt")
        for attempt in range(1, self.attempts + 1):
            try:
                return await call()
            except retry_on as exc:
                if attempt >= self.attempts:
                    raise
                pause = self.delay(attempt)
                log.warning("%s: attempt %d failed (%r), again in %.2fs", what, attempt, exc, pause)
                await sleep(pause)
        raise AssertionError("unreachable")
