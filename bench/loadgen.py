"""Open-loop checkout load: request i leaves at its intended time t0 + i/rate whatever the system
answers, so a slow system shows up as latency, never as a lower send rate (no coordinated
omission). Runs in worker processes (one by default) so the harness never delays a send."""

import asyncio
import json
import random
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Final

import httpx

# One sample = one POST /orders, as a plain tuple (cheap to pickle between processes):
# (seq, intended, sent, done, status, order_id, error); wall-clock epoch seconds; status 0 when
# the request failed without an HTTP answer.
Sample = tuple[int, float, float, float, int, str | None, str | None]
# Field positions, as Final literals so the type checker knows each field's type.
SEQ: Final = 0
INTENDED: Final = 1
SENT: Final = 2
DONE: Final = 3
STATUS: Final = 4
ORDER_ID: Final = 5
ERROR: Final = 6


@dataclass(frozen=True)
class Checkout:
    """What every request of a run looks like."""

    gateway: str
    skus: list[str]
    region: str
    tokens: list[str]  # bearer tokens of the customer pool, one picked per request
    max_lines: int = 3
    max_quantity: int = 3
    payment_token: str = "tok_visa"
    timeout_s: float = 60.0


@dataclass(frozen=True)
class WorkerJob:
    checkout: Checkout
    rate: float  # the whole phase's rate; this worker sends every `workers`-th request
    duration_s: float
    wall0: float  # intended time of request 0 (epoch seconds), shared by all workers
    worker: int
    workers: int
    seed: int


@dataclass
class WorkerResult:
    samples: list[Sample]
    cpu_s: float  # this worker process's CPU (user + system) during the phase
    max_in_flight: int


@dataclass
class PhaseLoad:
    """Everything the generator knows about one phase."""

    rate: float
    duration_s: float
    wall0: float
    samples: list[Sample] = field(default_factory=list)
    gen_cpu_s: float = 0.0
    max_in_flight: int = 0


def _body(rng: random.Random, co: Checkout) -> bytes:
    count = rng.randint(1, min(co.max_lines, len(co.skus)))
    lines = [
        {"sku": sku, "quantity": rng.randint(1, co.max_quantity)}
        for sku in rng.sample(co.skus, count)
    ]
    return json.dumps(
        {
            "lines": lines,
            "region": co.region,
            "shipping_address": {"name": "Bench Shopper", "city": "Loadville"},
            "payment": {"token": co.payment_token},
        },
        separators=(",", ":"),
    ).encode()


async def _drive(job: WorkerJob) -> WorkerResult:
    co = job.checkout
    rng = random.Random(job.seed)
    total = int(job.rate * job.duration_s)
    mine = range(job.worker, total, job.workers)
    limits = httpx.Limits(max_connections=4000, max_keepalive_connections=4000)
    samples: list[Sample] = []
    in_flight = 0
    max_in_flight = 0

    async with httpx.AsyncClient(
        base_url=co.gateway, limits=limits, timeout=co.timeout_s
    ) as client:

        async def fire(seq: int, intended: float, body: bytes, token: str) -> None:
            nonlocal in_flight, max_in_flight
            in_flight += 1
            max_in_flight = max(max_in_flight, in_flight)
            headers = {
                "Authorization": token,
                "Idempotency-Key": uuid.uuid4().hex,
                "Content-Type": "application/json",
            }
            sent = time.time()
            status, order_id, error = 0, None, None
            try:
                response = await client.post("/orders", content=body, headers=headers)
                status = response.status_code
                if status in (200, 202):
                    order_id = json.loads(response.content)["id"]
                else:
                    error = response.text[:200]
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"[:200]
            finally:
                in_flight -= 1
            samples.append((seq, intended, sent, time.time(), status, order_id, error))

        loop = asyncio.get_running_loop()
        # Map the shared wall-clock schedule onto this process's monotonic clock once.
        mono0 = loop.time() + (job.wall0 - time.time())
        tasks: set[asyncio.Task[None]] = set()
        cpu0 = time.process_time()
        for seq in mine:
            offset = seq / job.rate
            body = _body(rng, co)
            token = "Bearer " + rng.choice(co.tokens)
            delay = mono0 + offset - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(fire(seq, job.wall0 + offset, body, token))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        while tasks:
            await asyncio.gather(*list(tasks))
        cpu_s = time.process_time() - cpu0
    return WorkerResult(samples, cpu_s, max_in_flight)


def run_worker(job: WorkerJob) -> WorkerResult:
    """Entry point of a worker process for one phase."""
    try:
        import uvloop

        return uvloop.run(_drive(job))
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        return asyncio.run(_drive(job))


class LoadGenerator:
    """A pool of worker processes that drives one phase at a time."""

    def __init__(self, checkout: Checkout, workers: int = 1, seed: int = 1) -> None:
        self.checkout = checkout
        self.workers = workers
        self.seed = seed
        self.phases = 0
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))

    def pids(self) -> list[int]:
        return [p.pid for p in self.pool._processes.values() if p.pid is not None]

    def warm(self) -> None:
        """Start the worker processes (spawn + imports) before any phase is timed."""
        list(self.pool.map(_noop, range(self.workers)))

    async def run(self, rate: float, duration_s: float, lead_s: float = 0.5) -> PhaseLoad:
        """Send at `rate` per second for `duration_s`; returns when every answer is in."""
        self.phases += 1
        wall0 = time.time() + lead_s
        jobs = [
            WorkerJob(
                self.checkout,
                rate,
                duration_s,
                wall0,
                w,
                self.workers,
                self.seed * 1_000_003 + self.phases * 101 + w,
            )
            for w in range(self.workers)
        ]
        loop = asyncio.get_running_loop()
        results = await asyncio.gather(
            *(loop.run_in_executor(self.pool, run_worker, job) for job in jobs)
        )
        load = PhaseLoad(rate, duration_s, wall0)
        for result in results:
            load.samples.extend(result.samples)
            load.gen_cpu_s += result.cpu_s
            load.max_in_flight += result.max_in_flight
        load.samples.sort()
        return load

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _noop(_: int) -> int:
    return 0
