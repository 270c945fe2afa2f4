"""The one retry policy for outside calls, and the background worker that drains recorded work."""

import asyncio

import pytest

from libs.kit.retry import RetryPolicy
from libs.kit.worker import Worker, full_batches


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


async def test_full_batches_runs_again_only_after_a_full_batch() -> None:
    """A claim that came back short took everything due: no trailing claim that finds nothing;
    a full one may have left more, and is followed at once."""
    pending = [2, 2, 1]  # items due at each claim: a full batch of 2, another, then a short one
    claims: list[int] = []
    idle = asyncio.Event()

    async def claim() -> int:
        taken = pending.pop(0) if pending else 0
        claims.append(taken)
        if taken < 2:
            idle.set()
        return taken

    task = asyncio.create_task(Worker("test", full_batches(claim, 2), poll_interval_s=3600).run())
    try:
        await asyncio.wait_for(idle.wait(), 5)
        for _ in range(5):  # turns of the loop for a trailing claim, if the worker made one
            await asyncio.sleep(0)
        assert claims == [2, 2, 1]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
