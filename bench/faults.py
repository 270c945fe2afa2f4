"""`make faults`: crash scenarios under a steady checkout load, invariants checked after each.

On an isolated stack (bench/stack.py: `.run/faults`, its own ports, durable PostgreSQL) a load
generator places orders through the gateway (tok_visa / tok_chargeDeclined / tok_processingError;
some orders cancelled once confirmed, a few at once; a client retries with the same
Idempotency-Key while the system is down), and, one scenario at a time, a fault is injected:

- `kill-<svc>`: SIGKILL of the service mid-load, restarted after a few seconds;
- `crash-<svc>-<point>`: the service's process dies at a named crash point (libs/kit/faults.py),
  armed one-shot in the running process: after the DB commit before the offset commit, after
  the Kafka send before the outbox rows are deleted, after the PSP's capture or refund, after the
  SMTP send; restarted after a few seconds;
- `kafka-kill`: SIGKILL of the broker, restarted; `kafka-cluster-broker-lost`: the services on a
  3-broker cluster (replication 3, min.insync.replicas 2, acks=all) lose one broker for good;
- `postgres-kill`: PostgreSQL stopped with `-m immediate`, restarted (crash recovery);
- `pause-<svc>`: SIGSTOP for longer than the consumer session timeout, then SIGCONT;
- `replicas`: two processes each of inventory and payments in the same consumer groups, one of
  each dying at a crash point while holding work;
- `payments-provider-answers-lost`: the PSP takes the money, then times out on every retry of
  the first claim for half the captures (the next claim must find the capture, not charge);
- `payments-3ds-webhooks`: a third of the orders need 3-D Secure; the harness plays the PSP
  (bench/psp.py): each verdict is recorded in the sandbox's ledger and delivered to the public
  webhook route at once, again, then a stale failure out of order; a quarter never confirm.

After each scenario the load stops, the system drains (every order terminal, outboxes empty,
consumer groups caught up), and bench/invariants.py checks the databases, the SMTP sink and the
DLQs. A table scenario -> orders, violations, drain time is printed and written with the details
to bench/results/faults-<UTC date-time>.json; the exit code is 1 on any violation or error.

    python -m bench.faults                      # everything (~15-20 min)
    python -m bench.faults --smoke              # the short set tests/faults runs
    python -m bench.faults --only 'crash-payments-*' --only kafka-kill
    python -m bench.faults --list
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fnmatch
import json
import logging
import random
import signal
import subprocess
import sys
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.invariants import Databases, Report, Scope, check, wait_drained
from bench.psp import SandboxPsp
from bench.stack import ROOT, SERVICES, Stack, StackConfig, StackError, describe
from libs.kit.auth import mint_dev_token
from libs.kit.settings import ServiceSettings

RESULTS = ROOT / "bench" / "results"
REGION = "FAULTS-LAND"
VISA, DECLINED, PROCESSING_ERROR = "tok_visa", "tok_chargeDeclined", "tok_processingError"
THREE_DS = "tok_threeDSecureRequired"
# What the stack's sandbox signs webhooks with: the harness delivers the PSP's webhooks too.
SANDBOX_WEBHOOK_SECRET = "whsec_faults_sandbox_" + "0" * 24


def log(message: str) -> None:
    print(f"[{datetime.now(UTC).strftime('%H:%M:%S')}] {message}", flush=True)


# --- configuration --------------------------------------------------------------------------


@dataclass
class RunConfig:
    rate: float = 5.0  # orders per second offered
    warmup_s: float = 3.0  # load before the fault
    tail_s: float = 3.0  # load after the recovery
    down_s: float = 3.0  # a killed process stays dead this long
    pause_s: float = 14.0  # SIGSTOP longer than the 10 s consumer session timeout
    crash_wait_s: float = 30.0  # an armed crash point must be reached within this
    drain_timeout_s: float = 180.0
    client_patience_s: float = 60.0  # a client retries an order (same key) this long
    token_weights: tuple[float, float, float] = (0.7, 0.15, 0.15)  # visa, declined, proc. error
    cancel_after_confirm: float = 0.2  # share of tok_visa orders cancelled once confirmed
    cancel_at_once: float = 0.05  # share of orders cancelled right after they were accepted
    three_ds: float = 0.0  # share of orders paid with a card that needs 3-D Secure
    three_ds_abandoned: float = 0.25  # of those, shoppers who never confirm (the order expires)
    customers: int = 20
    plentiful_stock: int = 5000
    scarce_stock: int = 15
    scarce_share: float = 0.25  # orders that also buy the scarce sku
    restock_every_s: float = 2.0  # operator adjustments (+3) of the scarce sku
    seed: int | None = None


# --- the shoppers -----------------------------------------------------------------------------


@dataclass
class Products:
    plentiful: list[str]
    scarce: str
    poke: str  # a sku whose price the harness changes to make catalog and pricing work

    @property
    def all(self) -> list[str]:
        return [*self.plentiful, self.scarce]


class Gateway:
    """The system's HTTP front door, as clients and operators use it."""

    def __init__(self, url: str) -> None:
        self.client = httpx.AsyncClient(
            base_url=url,
            timeout=httpx.Timeout(20.0, connect=5.0),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        )
        # The stack's services run with BACKROOM_ENV=dev (bench/stack.py): the checkout's
        # development secret signs what they accept.
        self._settings = ServiceSettings()
        self._tokens: dict[str, dict[str, str]] = {}

    def auth(self, sub: str, role: str = "customer") -> dict[str, str]:
        key = f"{role}:{sub}"
        if key not in self._tokens:
            token = mint_dev_token(
                self._settings,
                sub,
                [role],
                ttl_s=6 * 3600,
                email=f"{sub}@faults.test" if role == "customer" else None,
            )
            self._tokens[key] = {"Authorization": f"Bearer {token}"}
        return self._tokens[key]

    def admin(self) -> dict[str, str]:
        return self.auth("faults-admin", "admin")

    async def close(self) -> None:
        await self.client.aclose()

    async def admin_call(self, method: str, path: str, body: Any, ok: tuple[int, ...]) -> None:
        """An operator's setup call, retried a little (the system may still be settling)."""
        last = ""
        for attempt in range(20):
            try:
                r = await self.client.request(method, path, json=body, headers=self.admin())
                if r.status_code in ok:
                    return
                last = f"{r.status_code} {r.text[:200]}"
                if r.status_code < 500 and r.status_code != 409:
                    break
            except httpx.HTTPError as exc:
                last = repr(exc)
            await asyncio.sleep(min(0.2 * 2**attempt, 2.0))
        raise RuntimeError(f"{method} {path} failed: {last}")

    async def create_products(self, prefix: str, cfg: RunConfig) -> Products:
        products = Products(
            plentiful=[f"{prefix}-A", f"{prefix}-B"], scarce=f"{prefix}-S", poke=f"{prefix}-P"
        )
        await self.admin_call("PUT", f"/pricing/tax-rates/{REGION}", {"rate_bps": 2000}, (200, 201))
        for sku in [*products.all, products.poke]:
            await self.admin_call(
                "POST",
                "/catalog/products",
                {"sku": sku, "name": f"Fault test {sku}", "category": "faults"},
                (201, 409),
            )
            await self.admin_call(
                "PUT", f"/pricing/prices/{sku}", {"amount": 1250, "currency": "EUR"}, (200,)
            )
        for sku in products.plentiful:
            await self.admin_call(
                "PUT", f"/inventory/items/{sku}", {"on_hand": cfg.plentiful_stock}, (200, 201)
            )
        await self.admin_call(
            "PUT",
            f"/inventory/items/{products.scarce}",
            {"on_hand": cfg.scarce_stock, "reorder_point": 5},
            (200, 201),
        )
        # Pricing quotes a sku once it has seen the catalog's ProductCreated.
        deadline = time.monotonic() + 60
        body = {"lines": [{"sku": s, "quantity": 1} for s in products.all], "region": REGION}
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await self.client.post("/pricing/quotes", json=body)).status_code == 201:
                    return products
            if time.monotonic() > deadline:
                raise RuntimeError(f"pricing never learned the skus {products.all}")
            await asyncio.sleep(0.2)

    async def poke(self, products: Products, n: int) -> None:
        """Make catalog and pricing produce and consume events (their crash points need work):
        a price change (pricing publishes, catalog consumes) and a new product (catalog
        publishes, pricing consumes). Failures are fine: the service may be down."""
        with contextlib.suppress(httpx.HTTPError):
            await self.client.put(
                f"/pricing/prices/{products.poke}",
                json={"amount": 1000 + n % 500, "currency": "EUR"},
                headers=self.admin(),
            )
            await self.client.post(
                "/catalog/products",
                json={"sku": f"{products.poke}-{n}", "name": "Poke", "category": "faults"},
                headers=self.admin(),
            )


class Load:
    """A steady stream of checkouts, each followed by the client until the order is accepted (and,
    for some, cancelled). The ids of accepted orders go into the scope."""

    def __init__(
        self,
        gw: Gateway,
        scope: Scope,
        products: Products,
        cfg: RunConfig,
        rng: random.Random,
        psp: SandboxPsp | None = None,
    ) -> None:
        self.gw, self.scope, self.products, self.cfg, self.rng = gw, scope, products, cfg, rng
        self.psp = psp
        self.stats: Counter[str] = Counter()
        self.tasks: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self.stopped_at: float | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = 1.0 / self.cfg.rate
        next_at = loop.time()
        last_restock = loop.time()
        n = 0
        while not self._stop.is_set():
            n += 1
            self._spawn(self._order(n, *self._plan()))
            now = loop.time()
            if now - last_restock >= self.cfg.restock_every_s:
                last_restock = now
                self._spawn(self._restock())
            next_at += interval
            delay = next_at - loop.time()
            if delay <= 0:
                next_at = loop.time()  # behind schedule: do not burst to catch up
                delay = 0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)

    def stop(self) -> None:
        self._stop.set()
        self.stopped_at = time.monotonic()

    async def finish(self, timeout: float) -> None:
        """Let every client finish (accepted or given up, cancellation sent)."""
        if self.tasks:
            _, pending = await asyncio.wait(set(self.tasks), timeout=timeout)
            for task in pending:
                task.cancel()
                self.stats["client_abandoned"] += 1
            await asyncio.gather(*pending, return_exceptions=True)

    async def abort(self, run_task: asyncio.Task[None]) -> None:
        tasks = [run_task, *self.tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _plan(self) -> tuple[str, list[tuple[str, int]], str]:
        cfg, rng = self.cfg, self.rng
        token = rng.choices([VISA, DECLINED, PROCESSING_ERROR], weights=cfg.token_weights)[0]
        three_ds = self.psp is not None and rng.random() < cfg.three_ds
        if three_ds:
            token = THREE_DS
        skus = rng.sample(self.products.plentiful, rng.randint(1, len(self.products.plentiful)))
        lines = [(sku, rng.randint(1, 3)) for sku in skus]
        if rng.random() < cfg.scarce_share:
            lines.append((self.products.scarce, rng.randint(1, 2)))
        roll = rng.random()
        follow = "none"
        if roll < cfg.cancel_at_once:
            follow = "cancel_at_once"
        elif token == VISA and roll < cfg.cancel_at_once + cfg.cancel_after_confirm:
            follow = "cancel_after_confirm"
        elif three_ds:
            follow = "abandon_3ds" if rng.random() < cfg.three_ds_abandoned else "confirm_3ds"
        return token, lines, follow

    async def _order(self, n: int, token: str, lines: list[tuple[str, int]], follow: str) -> None:
        customer = f"{self.scope.customer_prefix}c{n % self.cfg.customers:02d}"
        body = {
            "lines": [{"sku": sku, "quantity": q} for sku, q in lines],
            "region": REGION,
            "shipping_address": {"name": "Fault Tester", "city": "Crashville"},
            "payment": {"token": token},
        }
        headers = self.gw.auth(customer) | {"Idempotency-Key": uuid.uuid4().hex}
        self.stats["attempted"] += 1
        self.stats[f"token:{token}"] += 1
        answer = await self._until_answered("POST", "/orders", body, headers, (200, 202))
        if answer is None or answer.status_code not in (200, 202):
            self.stats["not_accepted" if answer is None else f"refused_{answer.status_code}"] += 1
            return
        order_id = answer.json()["id"]
        self.scope.accepted.add(order_id)
        self.stats["accepted"] += 1
        if follow == "cancel_at_once":
            await self._cancel(order_id, customer)
        elif follow == "cancel_after_confirm":
            await self._cancel_once_confirmed(order_id, customer)
        elif follow == "confirm_3ds" and self.psp is not None:
            await self.psp.confirm(order_id, self.cfg.client_patience_s)

    async def _until_answered(
        self,
        method: str,
        path: str,
        body: Any,
        headers: dict[str, str],
        ok: tuple[int, ...],
    ) -> httpx.Response | None:
        """Send until the system answers for real: 5xx, 429, a 409 "in flight" and transport
        errors are retried with the same request (so the same Idempotency-Key). None: gave up."""
        deadline = time.monotonic() + self.cfg.client_patience_s
        delay = 0.25
        while True:
            try:
                response = await self.gw.client.request(method, path, json=body, headers=headers)
                retry = response.status_code >= 500 or response.status_code == 429
                retry |= response.status_code == 409 and "in flight" in response.text
                if response.status_code in ok or not retry:
                    return response
                self.stats[f"http_{response.status_code}"] += 1
            except httpx.HTTPError as exc:
                self.stats[f"http_{type(exc).__name__}"] += 1
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _cancel(self, order_id: str, customer: str) -> None:
        self.stats["cancel_sent"] += 1
        answer = await self._until_answered(
            "POST", f"/orders/{order_id}/cancel", None, self.gw.auth(customer), (202,)
        )
        if answer is not None and answer.status_code == 202:
            self.stats["cancel_accepted"] += 1
        else:
            self.stats["cancel_refused"] += 1

    async def _cancel_once_confirmed(self, order_id: str, customer: str) -> None:
        deadline = time.monotonic() + self.cfg.client_patience_s
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                r = await self.gw.client.get(f"/orders/{order_id}", headers=self.gw.auth(customer))
                status = r.json()["status"] if r.status_code == 200 else "pending"
                if status == "confirmed":
                    await self._cancel(order_id, customer)
                    return
                if status != "pending":
                    return
            await asyncio.sleep(0.5)
        self.stats["cancel_never_confirmed"] += 1

    async def _restock(self) -> None:
        with contextlib.suppress(httpx.HTTPError):
            r = await self.gw.client.post(
                f"/inventory/items/{self.products.scarce}/adjustments",
                json={"delta": 3, "reason": "restock"},
                headers=self.gw.admin(),
            )
            self.stats["restock_ok" if r.status_code == 200 else "restock_failed"] += 1


# --- scenarios --------------------------------------------------------------------------------


@dataclass
class Ctx:
    """What a scenario's fault injection works with."""

    stack: Stack
    gw: Gateway
    products: Products
    cfg: RunConfig
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def note(self, message: str) -> None:
        log(f"  {message}")
        self.notes.append(message)


Inject = Callable[[Ctx], Awaitable[None]]


@dataclass
class Scenario:
    name: str
    kind: str
    description: str
    inject: Inject
    setup: Callable[[Stack], Awaitable[None]] | None = None
    teardown: Callable[[Stack], Awaitable[None]] | None = None
    load: dict[str, Any] = field(default_factory=dict)  # RunConfig overrides


async def _restart(ctx: Ctx, service: str) -> None:
    started = time.monotonic()
    await ctx.stack.start(service)
    ctx.note(f"{service} restarted, ready in {time.monotonic() - started:.1f}s")


def kill_restart(service: str) -> Inject:
    async def inject(ctx: Ctx) -> None:
        await ctx.stack.kill(service)
        ctx.note(f"{service} SIGKILLed; down {ctx.cfg.down_s:.0f}s")
        await asyncio.sleep(ctx.cfg.down_s)
        await _restart(ctx, service)

    return inject


async def _crash(ctx: Ctx, process: str, point: str) -> bool:
    """Arm `point` in the running `process` (service or replica name), wait for it to die there."""
    stack = ctx.stack
    pid = stack.arm(process, point)
    started = time.monotonic()
    n = 0
    while stack.pid(process) == pid:
        if time.monotonic() - started > ctx.cfg.crash_wait_s:
            stack.disarm(pid)
            ctx.errors.append(f"{process} never reached {point} in {ctx.cfg.crash_wait_s:.0f}s")
            ctx.note(f"{process}: {point} NOT reached; disarmed")
            return False
        n += 1
        if n % 10 == 0:
            await ctx.gw.poke(ctx.products, n)
        await asyncio.sleep(0.1)
    await stack.wait_dead(process, pid, timeout=10)
    if not stack.fired(pid):
        ctx.errors.append(f"{process} (pid {pid}) died, but not at {point}")
        ctx.note(f"{process} died, but not at {point}")
        return False
    ctx.note(f"{process} (pid {pid}) died at {point} after {time.monotonic() - started:.1f}s")
    return True


def crash_restart(service: str, point: str) -> Inject:
    async def inject(ctx: Ctx) -> None:
        if await _crash(ctx, service, point):
            await asyncio.sleep(ctx.cfg.down_s)
        if not ctx.stack.alive(service):
            await _restart(ctx, service)

    return inject


def pause_resume(service: str) -> Inject:
    async def inject(ctx: Ctx) -> None:
        await ctx.stack.pause(service)
        ctx.note(f"{service} SIGSTOPped for {ctx.cfg.pause_s:.0f}s")
        try:
            await asyncio.sleep(ctx.cfg.pause_s)
        finally:
            await ctx.stack.resume(service)
        ctx.note(f"{service} SIGCONTed")

    return inject


async def kafka_kill_restart(ctx: Ctx) -> None:
    await ctx.stack.kafka_kill()
    ctx.note(f"broker SIGKILLed; down {ctx.cfg.down_s:.0f}s")
    await asyncio.sleep(ctx.cfg.down_s)
    started = time.monotonic()
    await ctx.stack.kafka_start()
    ctx.note(f"broker back in {time.monotonic() - started:.1f}s")


async def postgres_kill_restart(ctx: Ctx) -> None:
    await ctx.stack.postgres_kill()
    ctx.note(f"PostgreSQL stopped -m immediate; down {ctx.cfg.down_s:.0f}s")
    await asyncio.sleep(ctx.cfg.down_s)
    started = time.monotonic()
    await ctx.stack.postgres_start()
    ctx.note(f"PostgreSQL back (crash recovery) in {time.monotonic() - started:.1f}s")


async def cluster_lose_broker(ctx: Ctx) -> None:
    orders = await ctx.stack.topic_layout("backroom.orders")
    if (orders["replication"], orders["min_insync_replicas"]) != (3, 2):
        ctx.errors.append(f"backroom.orders is not RF 3 / min ISR 2: {orders}")
    # The broker leading __consumer_offsets is every group's coordinator: the hardest one to lose.
    node = (await ctx.stack.topic_layout("__consumer_offsets"))["leader"]
    await ctx.stack.cluster_kill(node)
    ctx.note(
        f"topics RF {orders['replication']}, min.insync.replicas {orders['min_insync_replicas']};"
        f" node {node} (group coordinator) SIGKILLed, stays down"
    )
    await asyncio.sleep(ctx.cfg.pause_s)


async def replicas_crash(ctx: Ctx) -> None:
    async def one(process: str, point: str) -> None:
        if await _crash(ctx, process, point):
            await asyncio.sleep(ctx.cfg.down_s)
        await _restart(ctx, process)

    await asyncio.gather(
        one("inventory-2", "inventory.after_db_commit"),
        one("payments-2", "payments.after_provider_capture"),
    )


async def _add_replicas(stack: Stack) -> None:
    await asyncio.gather(stack.add_replica("inventory"), stack.add_replica("payments"))


async def _remove_replicas(stack: Stack) -> None:
    await stack.remove_replica("inventory-2")
    await stack.remove_replica("payments-2")


async def _to_cluster(stack: Stack) -> None:
    await stack.use_cluster()


FAULT_SETTINGS = {
    "BACKROOM_INTENT_LEASE_S": "15",
    "BACKROOM_EMAIL_LEASE_S": "10",
    # A label claimed by a killed orders replica is bought again after this lease; the drain
    # waits for it (PENDING_WORK), so the default 60 s would stretch every kill-orders drain.
    "BACKROOM_LABEL_LEASE_S": "15",
    "BACKROOM_SANDBOX_WEBHOOK_SECRET": SANDBOX_WEBHOOK_SECRET,
}


def restarted_with(service: str, settings: dict[str, str]) -> Callable[[Stack], Awaitable[None]]:
    """Setup: `service` restarted with these settings for the scenario."""

    async def setup(stack: Stack) -> None:
        await stack.kill(service)
        await stack.start(service, extra_env=settings)

    return setup


def restarted_as_configured(service: str) -> Callable[[Stack], Awaitable[None]]:
    """Teardown: `service` back on the stack's own settings."""

    async def teardown(stack: Stack) -> None:
        await stack.kill(service)
        await stack.start(service)

    return teardown


async def idle(ctx: Ctx) -> None:
    """No fault of the harness's: the scenario's is in its settings or its load."""
    await asyncio.sleep(ctx.cfg.pause_s)


CRASH_POINTS = {
    "after-db-commit": "{svc}.after_db_commit",
    "relay-after-publish": "relay.after_publish",
}
EXTRA_CRASH_POINTS = (
    ("payments", "after-intent-commit", "payments.after_intent_commit"),
    ("payments", "after-provider-capture", "payments.after_provider_capture"),
    ("payments", "after-provider-refund", "payments.after_provider_refund"),
    ("notifications", "after-intent-commit", "notifications.after_intent_commit"),
    ("notifications", "after-smtp-send", "notifications.after_smtp_send"),
)


def catalogue() -> list[Scenario]:
    """Every scenario, in the order `make faults` runs them (the cluster comes last: the services
    stay on it)."""
    scenarios: list[Scenario] = []
    for svc in SERVICES:
        scenarios.append(
            Scenario(
                f"kill-{svc}",
                "SIGKILL",
                f"SIGKILL {svc} mid-load, restart after a few seconds",
                kill_restart(svc),
            )
        )
    for label, template in CRASH_POINTS.items():
        for svc in SERVICES:
            point = template.format(svc=svc)
            scenarios.append(
                Scenario(
                    f"crash-{svc}-{label}",
                    "crash point",
                    f"{svc} dies at {point}, restarted",
                    crash_restart(svc, point),
                )
            )
    for svc, label, point in EXTRA_CRASH_POINTS:
        scenarios.append(
            Scenario(
                f"crash-{svc}-{label}",
                "crash point",
                f"{svc} dies at {point}, restarted",
                crash_restart(svc, point),
            )
        )
    scenarios.append(
        Scenario(
            "crash-payments-capture-vs-cancel",
            "crash point",
            "payments dies at payments.after_provider_capture while most orders are cancelled"
            " at once (the cancellation may be read before the capture is redelivered)",
            crash_restart("payments", "payments.after_provider_capture"),
            load={"cancel_at_once": 0.8},
        )
    )
    scenarios += [
        Scenario(
            "payments-provider-answers-lost",
            "provider",
            "the PSP takes the money and times out on half the captures (every retry of the"
            " first claim): the next claim must find the capture, never charge again",
            idle,
            setup=restarted_with("payments", {"BACKROOM_SANDBOX_LOST_ANSWER_SHARE": "0.5"}),
            teardown=restarted_as_configured("payments"),
        ),
        Scenario(
            "payments-3ds-webhooks",
            "provider",
            "a third of the orders need 3-D Secure; the PSP delivers each verdict at once (it may"
            " overtake payments' own answer), twice, then a stale failure out of order; a quarter"
            " of the shoppers never confirm (their orders expire: a 20 s reservation here)",
            idle,
            setup=restarted_with("orders", {"BACKROOM_RESERVATION_TTL_S": "20"}),
            teardown=restarted_as_configured("orders"),
            load={"three_ds": 0.33},
        ),
        Scenario(
            "kafka-kill",
            "broker",
            "SIGKILL the Kafka broker, restart it",
            kafka_kill_restart,
        ),
        Scenario(
            "postgres-kill",
            "database",
            "PostgreSQL stopped with -m immediate, restarted",
            postgres_kill_restart,
        ),
    ]
    for svc in ("inventory", "payments", "orders"):
        scenarios.append(
            Scenario(
                f"pause-{svc}",
                "SIGSTOP",
                f"SIGSTOP {svc} past the session timeout (rebalance while it holds work), SIGCONT",
                pause_resume(svc),
            )
        )
    scenarios += [
        Scenario(
            "replicas",
            "replicas",
            "2x inventory + 2x payments in the same groups; one of each dies holding work",
            replicas_crash,
            setup=_add_replicas,
            teardown=_remove_replicas,
        ),
        Scenario(
            "kafka-cluster-broker-lost",
            "broker",
            "3-broker cluster (RF 3, min ISR 2, acks=all); one broker SIGKILLed for good",
            cluster_lose_broker,
            setup=_to_cluster,
        ),
    ]
    return scenarios


# The short set for `make test` (tests/faults): one fault of each kind.
SMOKE = (
    "crash-payments-after-provider-capture",
    "crash-orders-relay-after-publish",
    "kafka-kill",
    "postgres-kill",
    "pause-inventory",
    "replicas",
    "payments-provider-answers-lost",
    "payments-3ds-webhooks",
)
SMOKE_CONFIG = RunConfig(
    rate=3.0, warmup_s=2.0, tail_s=2.0, down_s=2.0, pause_s=12.0, drain_timeout_s=120.0
)


def select(patterns: list[str] | None) -> list[Scenario]:
    scenarios = catalogue()
    if not patterns:
        return scenarios
    chosen = [s for s in scenarios if any(fnmatch.fnmatch(s.name, p) for p in patterns)]
    unknown = [p for p in patterns if not any(fnmatch.fnmatch(s.name, p) for s in scenarios)]
    if unknown:
        raise SystemExit(f"no scenario matches {unknown}; see --list")
    return chosen


# --- running ---------------------------------------------------------------------------------


@dataclass
class Result:
    scenario: str
    kind: str
    description: str
    orders: int = 0  # accepted by the system (the client got 202/200)
    in_db: int = 0  # orders of the scenario in the orders database
    violations: int = 0
    drain_s: float | None = None  # from the end of the load until everything settled
    clients_s: float | None = None  # of which: until every client had its answer
    drained: bool = False
    duration_s: float = 0.0
    load: dict[str, int] = field(default_factory=dict)
    check: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.violations or self.errors)


async def run_scenario(
    stack: Stack,
    gw: Gateway,
    dbs: Databases,
    scenario: Scenario,
    cfg: RunConfig,
    run_id: str,
    dlq_seen: set[tuple[str, int, int]],
) -> Result:
    result = Result(scenario.name, scenario.kind, scenario.description)
    cfg = RunConfig(**{**asdict(cfg), **scenario.load})
    rng = random.Random(f"{cfg.seed}-{scenario.name}" if cfg.seed is not None else None)
    started = time.monotonic()
    log(f"{scenario.name}: {scenario.description}")
    if scenario.setup:
        await scenario.setup(stack)
    prefix = f"flt-{run_id}-{scenario.name}"
    products = await gw.create_products(f"FLT-{run_id}-{uuid.uuid4().hex[:6]}".upper(), cfg)
    scope = Scope(
        customer_prefix=f"{prefix}-",
        initial_stock={
            **dict.fromkeys(products.plentiful, cfg.plentiful_stock),
            products.scarce: cfg.scarce_stock,
        },
    )
    try:
        return await _run_loaded(
            stack, gw, dbs, scenario, cfg, rng, result, scope, products, dlq_seen, started
        )
    finally:
        if scenario.teardown:
            await scenario.teardown(stack)


async def _run_loaded(
    stack: Stack,
    gw: Gateway,
    dbs: Databases,
    scenario: Scenario,
    cfg: RunConfig,
    rng: random.Random,
    result: Result,
    scope: Scope,
    products: Products,
    dlq_seen: set[tuple[str, int, int]],
    started: float,
) -> Result:
    psp = (
        SandboxPsp(stack.dsn("payments"), gw.client, SANDBOX_WEBHOOK_SECRET)
        if cfg.three_ds > 0
        else None
    )
    load = Load(gw, scope, products, cfg, rng, psp)
    ctx = Ctx(stack, gw, products, cfg)
    load_task = asyncio.create_task(load.run())
    try:
        await asyncio.sleep(cfg.warmup_s)
        try:
            await scenario.inject(ctx)
        except StackError as exc:
            ctx.errors.append(f"fault injection failed: {exc}")
            log(f"  ERROR {exc}")
        await asyncio.sleep(cfg.tail_s)
        load.stop()
        await load_task
        stopped = time.monotonic()
        log(f"  load stopped: {load.stats['attempted']} orders offered; waiting for drain")
        await load.finish(timeout=cfg.client_patience_s + 30)
    except BaseException:
        # Interrupted or failed: no client may outlive the scenario (the HTTP client closes next).
        load.stop()
        await load.abort(load_task)
        raise
    result.clients_s = round(time.monotonic() - stopped, 1)
    drained, state = await wait_drained(dbs, scope, stack.bootstrap, cfg.drain_timeout_s)
    result.drain_s = round(time.monotonic() - stopped, 1)
    result.drained = drained
    report: Report = await check(dbs, scope, stack.maildir, stack.bootstrap, dlq_seen)
    if not drained:
        report.add("not_drained", scenario.name, state.describe())
        # Where is it stuck? Every service logs its tasks' stacks (kept in the run directory).
        dumped = stack.dump_tasks()
        ctx.notes.append(f"not drained: task stacks of {dumped} logged in {stack.services_dir}")
    result.orders = len(scope.accepted)
    result.in_db = report.orders
    result.violations = len(report.violations)
    result.load = dict(load.stats) | (dict(psp.stats) if psp is not None else {})
    result.check = report.as_dict()
    result.notes, result.errors = ctx.notes, ctx.errors
    result.duration_s = round(time.monotonic() - started, 1)
    verdict = "OK" if not result.failed else f"FAILED {report.summary()} {ctx.errors}"
    log(
        f"  {result.orders} orders {report.statuses}, drained in {result.drain_s}s,"
        f" resent {report.resent}: {verdict}"
    )
    for v in report.violations[:10]:
        log(f"    {v.kind} {v.subject}: {v.detail}")
    return result


async def recover(stack: Stack) -> None:
    """After a scenario went wrong: bring back whatever is down, so the next one can run."""
    for service in list(stack.paused):
        with contextlib.suppress(Exception):
            await stack.resume(service)
    if not stack.cluster:
        await stack.script("kafka", "up", check=False)
    await stack.script("postgres", "up", check=False)
    await stack.script("services", "up", check=False)


@dataclass
class Progress:
    """What a run has done so far (kept by the caller, so an interrupted run can still report)."""

    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    t0: float = field(default_factory=time.monotonic)
    results: list[Result] = field(default_factory=list)
    stack: dict[str, Any] = field(default_factory=dict)

    def summary(self, cfg: RunConfig, interrupted: bool = False) -> dict[str, Any]:
        results = self.results
        return {
            "code": code_state(),
            "started_at": self.started_at.isoformat(),
            "finished_at": datetime.now(UTC).isoformat(),
            "wall_s": round(time.monotonic() - self.t0, 1),
            "interrupted": interrupted,
            "stack": self.stack,
            "config": asdict(cfg),
            "scenarios": [asdict(r) for r in results],
            "violations": sum(r.violations for r in results),
            "errors": sum(len(r.errors) for r in results),
        }


async def run(
    scenarios: list[Scenario],
    cfg: RunConfig,
    stack_config: StackConfig | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Start the isolated stack, run the scenarios one after the other, stop the stack."""
    run_id = uuid.uuid4().hex[:6]
    progress = progress or Progress()
    results = progress.results
    stack_config = stack_config or StackConfig()
    # Intents whose process died are claimed again after their lease: shorter leases than the
    # defaults (30 s, 60 s) so a crash costs a scenario seconds, not a minute of draining. Both
    # stay above the longest call (the 10 s slow-authorization token; a local SMTP send).
    stack_config.settings = {**FAULT_SETTINGS, **stack_config.settings}
    stack = Stack(stack_config)
    progress.stack = describe(stack)
    log(f"starting the isolated stack in {stack.run_dir} (log: {stack.log_path})")
    async with stack:
        log(f"stack up in {time.monotonic() - progress.t0:.1f}s")
        progress.stack = describe(stack)
        gw = Gateway(stack.gateway)
        dlq_seen: set[tuple[str, int, int]] = set()
        try:
            async with Databases(stack.dsn) as dbs:
                for scenario in scenarios:
                    try:
                        results.append(
                            await run_scenario(stack, gw, dbs, scenario, cfg, run_id, dlq_seen)
                        )
                    except Exception as exc:
                        log(f"  ERROR in {scenario.name}: {exc!r}")
                        traceback.print_exc()
                        results.append(
                            Result(
                                scenario.name,
                                scenario.kind,
                                scenario.description,
                                errors=[f"{type(exc).__name__}: {exc}"[:2000]],
                            )
                        )
                        await recover(stack)
        finally:
            await gw.close()
    return progress.summary(cfg)


def code_state() -> dict[str, Any]:
    """Which code the run exercised: the commit and the files changed since (services started
    during the run load whatever is on disk at that moment)."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "commit": git("rev-parse", "HEAD"),
        "changed": git("status", "--porcelain", "--untracked-files=no").splitlines(),
    }


def table(summary: dict[str, Any]) -> str:
    rows = [
        ("scenario", "orders", "confirmed/rejected/cancelled", "violations", "resent", "drain s")
    ]
    for r in summary["scenarios"]:
        st = r["check"].get("statuses", {})
        kept = sum(st.get(s, 0) for s in ("confirmed", "shipped", "delivered"))
        verdict = str(r["violations"])
        if r["violations"]:
            verdict += " " + ",".join(f"{k}:{n}" for k, n in r["check"]["violation_kinds"].items())
        if r["errors"]:
            verdict += f" (+{len(r['errors'])} error)"
        rows.append(
            (
                r["scenario"],
                str(r["orders"]),
                f"{kept}/{st.get('rejected', 0)}/{st.get('cancelled', 0)}",
                verdict,
                str(r["check"].get("resent", 0)),
                "-" if r["drain_s"] is None else f"{r['drain_s']:.1f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_results(summary: dict[str, Any], directory: Path = RESULTS) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromisoformat(summary["started_at"]).strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"faults-{stamp}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    tmp.replace(path)
    return path


async def _main_task(work: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """SIGTERM like Ctrl-C: the task is cancelled and unwinds, so the stack is stopped."""
    task = asyncio.ensure_future(work)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await task


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.faults", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--only", action="append", help="scenario name or glob (repeatable)")
    parser.add_argument("--smoke", action="store_true", help="the short set tests/faults runs")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--rate", type=float, help="orders per second offered")
    parser.add_argument("--seed", type=int, help="seed of the load's random choices")
    args = parser.parse_args(argv)
    if args.list:
        for s in catalogue():
            print(
                f"{s.name:42} {s.kind:12} {s.description}{'  [smoke]' if s.name in SMOKE else ''}"
            )
        return 0
    cfg = SMOKE_CONFIG if args.smoke else RunConfig()
    if args.rate:
        cfg.rate = args.rate
    cfg.seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    scenarios = select(list(SMOKE) if args.smoke and not args.only else args.only)

    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    # Our own Kafka clients complain about a broker the scenario killed on purpose.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    progress = Progress()
    try:
        summary = asyncio.run(_main_task(run(scenarios, cfg, progress=progress)))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\ninterrupted; the stack was stopped", file=sys.stderr)
        summary = progress.summary(cfg, interrupted=True)
        if summary["scenarios"]:
            print(table(summary))
            print(f"(partial) -> {write_results(summary).relative_to(ROOT)}")
        return 130
    path = write_results(summary)
    print()
    print(table(summary))
    print()
    print(
        f"{len(summary['scenarios'])} scenario(s) in {summary['wall_s']:.0f}s: "
        f"{summary['violations']} violation(s), {summary['errors']} error(s) -> {path.relative_to(ROOT)}"
    )
    return 1 if summary["violations"] or summary["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
