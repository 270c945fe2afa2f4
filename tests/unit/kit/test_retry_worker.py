"""The one retry policy for outside calls, and the background worker that drains recorded work."""

import asyncio

import pytest

from libs.kit.retry import RetryPolicy
from libs.kit.worker import Worker


class Flaky(Exception):
    pass


async def test_retries_the_listed_errors_then_returns() -> None:
    calls, pauses = [], []

    async def call() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise Flaky
        return "ok"

    async def sleep(s: float) -> None:
        pauses.append(s)

    policy = RetryPolicy(attempts=4, initial_s=0.1, max_s=0.15)
    assert await policy.run("x", call, retry_on=(Flaky,), sleep=sleep) == "ok"
    assert len(calls) == 3 and pauses == [0.1, 0.15]


async def test_gives_up_after_the_last_attempt_with_its_error() -> None:
    calls = []

    async def call() -> None:
        calls.append(1)
        raise Flaky

    async def sleep(_: float) -> None:
        return None

    with pytest.raises(Flaky):
        await RetryPolicy(attempts=3).run("x", call, retry_on=(Flaky,), sleep=sleep)
    assert len(calls) == 3


async def test_other_errors_are_not_retried() -> None:
    calls = []

    async def call() -> None:
        calls.append(1)
        raise ValueError

    with pytest.raises(ValueError):
        await RetryPolicy(attempts=5).run("x", call, retry_on=(Flaky,))
    assert len(calls) == 1


async def test_a_woken_worker_drains_at_once_without_waiting_for_its_poll() -> None:
    queue = [1, 2, 3]
    drained = asyncio.Event()

    async def step() -> int:
        if not queue:
            drained.set()
            return 0
        queue.pop()
        return 1

    worker = Worker("test", step, poll_interval_s=3600)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(drained.wait(), 5)
        drained.clear()
        queue.extend([4, 5])
        worker.wake()
        await asyncio.wait_for(drained.wait(), 5)
        assert queue == []
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_failing_step_is_retried() -> None:
    attempts = []
    done = asyncio.Event()

    async def step() -> int:
        attempts.append(1)
        if len(attempts) < 3:
            raise RuntimeError("database away")
        done.set()
        return 0

    task = asyncio.create_task(Worker("test", step, poll_interval_s=3600).run())
    try:
        await asyncio.wait_for(done.wait(), 5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
