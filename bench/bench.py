"""`make bench`: checkout throughput and latency against offered rate, on this machine.

Brings the system up as `make run` does (and later stops only what it started), prepares a
catalog, measures the machine's own limits (pgbench, Kafka round trip), then drives checkouts
through the gateway with an open-loop generator: a warm-up, a step series of rates until the
system saturates, a steady phase at the best sustainable rate, and a phase at half that rate.
Latency of a checkout = the order's `confirmed` history time minus the request's intended send
time. Writes bench/results/<UTC time>.json and .png and prints a table."""

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench import probes, report
from bench.invariants import subscriptions
from bench.loadgen import (
    DONE,
    INTENDED,
    ORDER_ID,
    SENT,
    STATUS,
    Checkout,
    LoadGenerator,
    PhaseLoad,
)
from libs.events import topics
from libs.kit.auth import dev_signing_secret, mint_token
from libs.kit.settings import ServiceSettings

REPO = Path(__file__).resolve().parents[1]
LOCAL = REPO / "deploy" / "local"
RESULTS = REPO / "bench" / "results"
SERVICES = probes.SERVICES
DEFAULT_RATES = "10,20,30,40,50,60,80,100,130,160,200,250,300"


def log(msg: str) -> None:
    print(f"bench: {msg}", flush=True)


# --- the system under test ------------------------------------------------------------------


@dataclass(frozen=True)
class Ports:
    """The bench's own stack: clear of `make run` (8000, 81xx, 9092, 55432, 2525), the e2e
    tests (18000, 181xx), `make faults` (28xxx, 3525) and the fault smoke test (27xxx); below
    the kernel's ephemeral range (32768+), where an outgoing connection may hold a port."""

    gateway: int = 30000
    service_base: int = 30100  # catalog +1 ... notifications +6
    kafka: int = 30092
    kafka_controller: int = 30093
    postgres: int = 30432
    smtp: int = 30525


class System:
    """A stack of its own (run dir `.run/bench`, own ports, fresh data unless --keep-data),
    brought up with the deploy/local scripts in `make run`'s order; `down()` stops exactly what
    `up()` started."""

    def __init__(self, ports: Ports, settings: dict[str, str]) -> None:
        self.ports = ports
        self.run_dir = REPO / ".run" / "bench"
        self.env = {
            k: v
            for k, v in os.environ.items()
            # Never inherit: non-durable PostgreSQL, an armed crash, another database.
            if k not in ("BACKROOM_PG_FAST", "BACKROOM_CRASH_AT", "BACKROOM_DATABASE_URL")
        }
        self.env.update(
            {
                "BACKROOM_RUN_DIR": str(self.run_dir),
                "KAFKA_PORT": str(ports.kafka),
                "KAFKA_CONTROLLER_PORT": str(ports.kafka_controller),
                "PGPORT": str(ports.postgres),
                "BACKROOM_PG_PORT": str(ports.postgres),
                "SMTP_PORT": str(ports.smtp),
                "BACKROOM_SMTP_PORT": str(ports.smtp),
                "BACKROOM_PORT_BASE": str(ports.service_base),
                "GATEWAY_PORT": str(ports.gateway),
                "BACKROOM_KAFKA_BOOTSTRAP": f"127.0.0.1:{ports.kafka}",
                "BACKROOM_PRICING_URL": f"http://127.0.0.1:{ports.service_base + 3}",
            }
        )
        for i, svc in enumerate(SERVICES, start=1):
            self.env[f"{svc.upper()}_PORT"] = str(ports.service_base + i)
        self.env.update(settings)
        self.infra_started = self.run_dir / "bench-infra.started"
        self.started_services: list[str] = []
        self.reused: list[str] = []
        self.started_nginx = False
        self.gateway = f"http://127.0.0.1:{ports.gateway}"

    def settings(self, **overrides: str) -> ServiceSettings:
        """Service settings as the bench stack's processes see them."""
        env = {
            k[len("BACKROOM_") :].lower(): v
            for k, v in self.env.items()
            if k.startswith("BACKROOM_")
        }
        known = ServiceSettings.model_fields
        # Any: the values are strings that pydantic parses into each field's type.
        fields: dict[str, Any] = {k: v for k, v in {**env, **overrides}.items() if k in known}
        return ServiceSettings(**fields)

    def _sh(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["bash", *args], cwd=REPO, env=self.env, text=True, capture_output=True
        )
        if check and proc.returncode != 0:
            sys.stderr.write(proc.stdout + proc.stderr)
            raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode})")
        return proc

    def _script(
        self, name: str, *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self._sh(str(LOCAL / f"{name}.sh"), *args, check=check)

    def _py(self, *args: str) -> None:
        proc = subprocess.run(
            [sys.executable, "-m", "libs.kit.cli", *args],
            cwd=REPO,
            env=self.env,
            text=True,
            capture_output=True,
        )
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout + proc.stderr)
            raise RuntimeError(f"backroom {' '.join(args)} failed ({proc.returncode})")

    def running_services(self) -> set[str]:
        out = self._script("services", "status", check=False).stdout
        return {svc for svc in SERVICES if f"services: {svc} running" in out}

    def anything_running(self) -> list[str]:
        names = [
            c
            for c in ("kafka", "postgres", "smtp", "nginx")
            if self._script(c, "status", check=False).returncode == 0
        ]
        return names + sorted(self.running_services())

    def up(self, fresh: bool) -> None:
        t0 = time.monotonic()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.reused = self.anything_running()
        if self.reused:
            log(
                f"WARNING: reusing what already runs in {self.run_dir}: {self.reused} (kept afterwards)"
            )
        elif fresh:
            # Nothing of ours runs: start from empty topics and databases, so runs compare.
            self._script("kafka", "reset")
            self._script("postgres", "reset")
            self._script("smtp", "clear", check=False)
        self._script("infra", "up", str(self.infra_started))
        self._py("topics")
        self._py("migrate")
        before = self.running_services()
        self.started_services = [s for s in SERVICES if s not in before]
        if self.started_services:
            self._script("services", "up", *self.started_services)
        if self._script("nginx", "status", check=False).returncode != 0:
            self._script("nginx", "up")
            self.started_nginx = True
        log(
            f"bench stack up in {time.monotonic() - t0:.1f}s ({self.run_dir.relative_to(REPO)}, gateway {self.gateway})"
        )

    def down(self) -> None:
        if self.started_nginx:
            self._script("nginx", "down", check=False)
        if self.started_services:
            self._script("services", "down", *self.started_services, check=False)
        self._script("infra", "stop-started", str(self.infra_started), check=False)
        log("stopped what the bench started")

    def roots(self) -> set[int]:
        """Pids whose process trees make up this stack (for per-process CPU)."""
        files = [self.run_dir / "services" / f"{s}.pid" for s in SERVICES]
        files += [
            self.run_dir / "kafka" / "broker.pid",
            self.run_dir / "nginx" / "nginx.pid",
            self.run_dir / "smtp" / "smtp.pid",
            self.run_dir / "postgres" / "data" / "postmaster.pid",
        ]
        pids: set[int] = set()
        for f in files:
            with contextlib.suppress(OSError, ValueError, IndexError):
                pids.add(int(f.read_text().split()[0]))
        return pids


# --- preparing the shop ---------------------------------------------------------------------


async def prepare_catalog(
    gateway: str, admin: str, count: int, stock: int, region: str, prefix: str
) -> list[str]:
    """`count` products, priced, stocked and quotable in `region`."""
    skus = [f"{prefix}-{i:04d}" for i in range(count)]
    headers = {"Authorization": f"Bearer {admin}"}
    async with httpx.AsyncClient(base_url=gateway, headers=headers, timeout=30) as http:
        r = await http.put(f"/pricing/tax-rates/{region}", json={"rate_bps": 1900})
        r.raise_for_status()
        sem = asyncio.Semaphore(8)

        async def one(i: int, sku: str) -> None:
            async with sem:
                created = await http.post(
                    "/catalog/products",
                    json={"sku": sku, "name": f"Bench product {i}", "category": "bench"},
                )
                if created.status_code not in (201, 409):
                    created.raise_for_status()
                r = await http.put(
                    f"/pricing/prices/{sku}", json={"amount": 500 + 10 * i, "currency": "EUR"}
                )
                r.raise_for_status()
                r = await http.put(
                    f"/inventory/items/{sku}", json={"on_hand": stock, "reorder_point": 0}
                )
                r.raise_for_status()

        await asyncio.gather(*(one(i, sku) for i, sku in enumerate(skus)))
        # Pricing learns products from catalog events: wait until every sku can be quoted.
        deadline = time.monotonic() + 120
        for start in range(0, len(skus), 100):
            chunk = skus[start : start + 100]
            body = {"lines": [{"sku": s, "quantity": 1} for s in chunk], "region": region}
            while True:
                quote = await http.post("/pricing/quotes", json=body)
                if quote.status_code == 201:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"pricing cannot quote the bench skus: {quote.text}")
                await asyncio.sleep(0.3)
    return skus


# --- outcomes -------------------------------------------------------------------------------


async def terminal_times(dsn: str, order_ids: list[str]) -> dict[str, tuple[str, float]]:
    """order id -> (confirmed|rejected, epoch time of that history row) for settled orders."""
    if not order_ids:
        return {}
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT order_id, status, min(at) AS at FROM order_history"
            " WHERE order_id = ANY($1::text[]) AND status IN ('confirmed', 'rejected')"
            " GROUP BY order_id, status",
            order_ids,
        )
    finally:
        await conn.close()
    return {r["order_id"]: (r["status"], r["at"].timestamp()) for r in rows}


def accepted_ids(load: PhaseLoad) -> list[str]:
    return [s[ORDER_ID] for s in load.samples if s[ORDER_ID] is not None]


async def wait_settled(dsn: str, load: PhaseLoad, grace_s: float) -> dict[str, tuple[str, float]]:
    """Wait (up to `grace_s` after the phase's last intended send) until every accepted order is
    confirmed or rejected; returns what settled."""
    ids = accepted_ids(load)
    deadline = load.wall0 + load.duration_s + grace_s
    while True:
        settled = await terminal_times(dsn, ids)
        if len(settled) >= len(ids) or time.time() > deadline:
            return settled
        await asyncio.sleep(0.5)


async def wait_idle(watch: probes.KafkaWatch, timeout_s: float) -> tuple[float, dict[str, int]]:
    """Wait until no service has consumer lag (twice in a row); returns (seconds, last lag)."""
    t0 = time.monotonic()
    quiet = 0
    lag: dict[str, int] = {}
    while time.monotonic() - t0 < timeout_s:
        lag = await watch.lag()
        quiet = quiet + 1 if not any(lag.values()) else 0
        if quiet >= 2:
            break
        await asyncio.sleep(0.5)
    return time.monotonic() - t0, lag


def _pcts(values: list[float]) -> dict[str, float | None]:
    values.sort()
    return {
        "p50": probes.percentile(values, 50),
        "p90": probes.percentile(values, 90),
        "p99": probes.percentile(values, 99),
        "max": values[-1] if values else None,
    }


def analyze(
    load: PhaseLoad, settled: dict[str, tuple[str, float]], grace_s: float
) -> dict[str, Any]:
    """Latency, throughput, errors and generator health of one phase."""
    end = load.wall0 + load.duration_s
    samples = load.samples
    accepted = [s for s in samples if s[ORDER_ID] is not None]
    errors = Counter(
        str(s[STATUS]) if s[STATUS] else (s[6] or "error").split(":")[0]
        for s in samples
        if s[ORDER_ID] is None
    )
    statuses = Counter(s[STATUS] for s in samples)
    confirmed_ms: list[float] = []
    in_window = 0
    late_or_missing = 0
    rejected = 0
    for s in accepted:
        order_id = s[ORDER_ID]
        assert order_id is not None  # `accepted` holds only samples with an order id
        outcome = settled.get(order_id)
        if outcome is None:
            late_or_missing += 1
            continue
        status, at = outcome
        if status != "confirmed":
            rejected += 1
            continue
        confirmed_ms.append((at - s[INTENDED]) * 1000)
        if at > end + grace_s:
            late_or_missing += 1
        if load.wall0 <= at <= end:
            in_window += 1
    http_ms = [(s[DONE] - s[INTENDED]) * 1000 for s in accepted]
    lateness_ms = [(s[SENT] - s[INTENDED]) * 1000 for s in samples]
    sent_span = (max(s[SENT] for s in samples) - min(s[SENT] for s in samples)) if samples else 0
    return {
        "offered_rate": load.rate,
        "duration_s": load.duration_s,
        "started_at": datetime.fromtimestamp(load.wall0, UTC).isoformat(),
        "requests": len(samples),
        "achieved_send_rate": (len(samples) - 1) / sent_span if sent_span > 0 else None,
        "http_statuses": {str(k): v for k, v in sorted(statuses.items())},
        "accepted": len(accepted),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        "confirmed": len(confirmed_ms),
        "rejected": rejected,
        "not_confirmed_within_grace": late_or_missing,
        "grace_s": grace_s,
        "confirmed_in_window": in_window,
        "confirmed_throughput": in_window / load.duration_s,
        "latency_confirmed_ms": _pcts(confirmed_ms),
        "latency_http_ms": _pcts(http_ms),
        "generator": {
            "workers_cpu_s": round(load.gen_cpu_s, 3),
            "cpu_share_of_one_core": round(load.gen_cpu_s / load.duration_s, 3),
            "send_lateness_ms": _pcts(lateness_ms),
            "max_in_flight": load.max_in_flight,
        },
    }


def verdict(result: dict[str, Any], args: argparse.Namespace) -> tuple[bool, list[str]]:
    """Did the system keep up at this rate? Reasons when not."""
    why = []
    rate = result["offered_rate"]
    if result["confirmed_throughput"] < args.track_ratio * rate:
        why.append(
            f"confirmed {result['confirmed_throughput']:.1f}/s < {args.track_ratio:.0%} of {rate:g}/s"
        )
    p99 = result["latency_confirmed_ms"]["p99"]
    if p99 is None or p99 > args.max_p99_ms:
        why.append(f"p99 {p99 and round(p99)} ms > {args.max_p99_ms:g} ms")
    n = max(result["requests"], 1)
    if result["errors"] / n > args.max_error_ratio:
        why.append(f"{result['errors']} errors")
    if result["not_confirmed_within_grace"] / n > args.max_error_ratio:
        why.append(f"{result['not_confirmed_within_grace']} not confirmed within grace")
    if result["rejected"] / n > args.max_error_ratio:
        why.append(f"{result['rejected']} rejected")
    return not why, why


# --- one phase, measured --------------------------------------------------------------------


@dataclass
class Bench:
    args: argparse.Namespace
    system: System
    gen: LoadGenerator
    watch: probes.KafkaWatch
    orders_dsn: str
    stats_dsn: str
    bench_pids: set[int] = field(default_factory=set)
    phases: list[dict[str, Any]] = field(default_factory=list)

    async def phase(self, name: str, rate: float, duration_s: float) -> dict[str, Any]:
        log(f"phase {name}: {rate:g}/s for {duration_s:g}s")
        roots = self.system.roots()
        cpu0 = probes.cpu_snapshot(roots, self.bench_pids)
        pg0 = await probes.pg_stats(self.stats_dsn)
        st0 = await probes.pg_statements(self.stats_dsn) if self.args.statements else None
        off0 = await self.watch.end_offsets()
        load = await self.gen.run(rate, duration_s)
        # The window ends when the last request was due, so the counters cover the phase only.
        cpu1 = probes.cpu_snapshot(roots, self.bench_pids)
        pg1 = await probes.pg_stats(self.stats_dsn)
        st1 = await probes.pg_statements(self.stats_dsn) if st0 is not None else None
        off1 = await self.watch.end_offsets()
        max_lag = await self.watch.lag()
        settled = await wait_settled(self.orders_dsn, load, self.args.grace_s)
        drain_s, lag = await wait_idle(self.watch, self.args.drain_timeout_s)
        result = analyze(load, settled, self.args.grace_s)
        result["name"] = name
        result["lag_at_end"] = max_lag
        result["drain_s"] = round(drain_s, 1)
        result["lag_after_drain"] = lag
        # CPU, commits and records are divided by the checkouts confirmed in the same window.
        confirmed = sum(
            1
            for status, at in settled.values()
            if status == "confirmed" and cpu0.at <= at <= cpu1.at
        )
        result["cost"] = cost(
            confirmed,
            probes.cpu_delta(cpu0, cpu1),
            probes.pg_delta(pg0, pg1),
            {t: off1.get(t, 0) - off0.get(t, 0) for t in off1},
        )
        if st0 is not None and st1 is not None:
            # Which statements (and so which transactions) a checkout costs, per database.
            result["cost"]["statements_per_checkout"] = probes.statements_delta(st0, st1, confirmed)
        ok, why = verdict(result, self.args)
        result["sustained"] = ok
        result["why_not"] = why
        self.phases.append(result)
        lat = result["latency_confirmed_ms"]
        log(
            f"  {name}: confirmed {result['confirmed_throughput']:.1f}/s, p50 {_ms(lat['p50'])}"
            f" p99 {_ms(lat['p99'])} max {_ms(lat['max'])}, errors {result['errors']},"
            f" CPU {_f(result['cost']['cpu_ms_per_checkout'])} ms/checkout"
            + ("" if ok else f"  -> NOT sustained: {'; '.join(why)}")
        )
        return result


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}ms"


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def cost(
    checkouts: int, cpu: dict[str, Any], pg: dict[str, Any], events: dict[str, int]
) -> dict[str, Any]:
    """Resources per confirmed checkout over a window."""
    n = checkouts or None
    groups = cpu["groups_s"]
    bench_s = groups.get("bench", 0.0)
    system_s = cpu["machine_busy_s"] - bench_s
    stack_s = sum(v for k, v in groups.items() if k not in ("bench", "not-this-stack"))

    def per(v: float) -> float | None:
        return round(v / n, 3) if n else None

    return {
        "confirmed_checkouts": checkouts,
        "cpu": cpu,
        "cpu_ms_per_checkout": per(system_s * 1000),
        "cpu_ms_per_checkout_this_stack": per(stack_s * 1000),
        "cpu_ms_per_checkout_by_group": {k: per(v * 1000) for k, v in groups.items()},
        "machine_utilisation": round(cpu["machine_busy_s"] / cpu["machine_total_s"], 3)
        if cpu["machine_total_s"]
        else None,
        "pg": pg,
        "db_commits_per_checkout": per(pg["xact_commit"]),
        "db_commits_per_checkout_by_db": {
            db: per(d["xact_commit"]) for db, d in pg["databases"].items()
        },
        "wal_syncs_per_checkout": per(pg["wal"].get("wal_sync", 0)),
        # Connections the services opened in the phase: each costs a SCRAM exchange (4096
        # PBKDF2 rounds) and asyncpg's set-up; a steady pool opens none.
        "db_sessions_by_db": {db: d.get("sessions", 0) for db, d in pg["databases"].items()},
        "kafka_records": events,
        "kafka_records_per_checkout": per(sum(events.values())),
    }


async def idle_cost(system: System, bench_pids: set[int], seconds: float) -> dict[str, Any]:
    """What the stack burns with no load (relay polls, sweeps, heartbeats), per second."""
    roots = system.roots()
    a = probes.cpu_snapshot(roots, bench_pids)
    await asyncio.sleep(seconds)
    cpu = probes.cpu_delta(a, probes.cpu_snapshot(roots, bench_pids))
    wall = cpu["wall_s"]
    return {
        "seconds": round(wall, 2),
        "machine_cpu_ms_per_s": round(cpu["machine_busy_s"] * 1000 / wall, 1),
        "by_group_ms_per_s": {k: round(v * 1000 / wall, 1) for k, v in cpu["groups_s"].items()},
    }


# --- the run --------------------------------------------------------------------------------


def machine_info(system: System, settings: ServiceSettings, pg_version: str) -> dict[str, Any]:
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    dirty = bool(
        subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    kafka_version = next(
        (p.name.split("-")[-1] for p in (Path.home() / ".cache" / "backroom").glob("kafka-*")),
        "unknown",
    )
    versions = {}
    for mod in ("aiokafka", "faststream", "fastapi", "uvicorn", "sqlalchemy", "asyncpg", "httpx"):
        with contextlib.suppress(Exception):
            versions[mod] = importlib.import_module(mod).__version__
    return {
        "nproc": os.cpu_count(),
        "mem_total_gb": round(mem_kb / 1024 / 1024, 1),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "kafka": kafka_version,
        "postgres": pg_version,
        "git_commit": commit,
        "git_dirty": dirty,
        "libraries": versions,
        "load_average_at_start": os.getloadavg(),
        "settings": {
            k: v for k, v in system.env.items() if k.startswith(("BACKROOM_", "GATEWAY_"))
        },
        "kafka_bootstrap": settings.kafka_bootstrap,
    }


async def run(args: argparse.Namespace) -> int:
    extra = {
        "BACKROOM_LOG_LEVEL": os.environ.get("BACKROOM_LOG_LEVEL", "WARNING"),
        # The bench measures the system, not the gateway's limits: it raises every rate limit
        # of deploy/local/nginx.sh (whose defaults are sized for real customers, per credential
        # and per address) well above what one load generator on one address sends.
        **{
            f"GATEWAY_{scope}_RATE": str(args.gateway_rate)
            for scope in ("CHECKOUT_CLIENT", "CHECKOUT_ADDRESS", "CLIENT", "ADDRESS")
        },
        **{
            f"GATEWAY_{scope}_BURST": str(args.gateway_rate * 2)
            for scope in ("CHECKOUT_CLIENT", "CHECKOUT_ADDRESS", "CLIENT", "ADDRESS")
        },
    }
    if args.statements:
        extra["BACKROOM_PG_STATEMENTS"] = "1"
    system = System(Ports(), extra)
    settings = system.settings()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out: dict[str, Any] = {"started_at": datetime.now(UTC).isoformat(), "args": vars(args)}
    gen: LoadGenerator | None = None
    watch: probes.KafkaWatch | None = None
    if not args.no_up:
        system.up(fresh=not args.keep_data)
    try:
        stats_dsn = system.settings(database_name="postgres").asyncpg_dsn()
        orders_dsn = system.settings(service_name="orders").asyncpg_dsn()
        out["machine"] = machine_info(system, settings, await probes.pg_version(stats_dsn))
        out["system"] = {
            "gateway": system.gateway,
            "run_dir": str(system.run_dir),
            "ports": vars(system.ports),
            "reused": system.reused,
            "started_services": system.started_services,
            "started_gateway": system.started_nginx,
        }
        run_id = uuid.uuid4().hex[:6].upper()
        # The services run with BACKROOM_ENV=dev (bench/stack.py): tokens signed with the
        # checkout's development secret.
        secret = dev_signing_secret(settings)
        admin = mint_token(secret, "bench-admin", ["admin"], ttl_s=86400)
        log(f"preparing {args.skus} skus (stock {args.stock} each), region {args.region}")
        skus = await prepare_catalog(
            system.gateway, admin, args.skus, args.stock, args.region, f"BENCH-{run_id}"
        )
        tokens = [
            mint_token(
                secret,
                f"bench-{run_id}-{i}",
                ["customer"],
                ttl_s=86400,
                email=f"bench-{run_id}-{i}@shoppers.bench",
            )
            for i in range(args.customers)
        ]
        if not args.skip_limits:
            out["cpu_speed"] = speed = probes.cpu_speed()
            log(
                f"machine speed: Python loop {speed['python_loop_ns']} ns/iteration, system call"
                f" {speed['syscall_us']} us, loopback TCP round trip {speed['loopback_tcp_rtt_us']} us"
            )
            log(f"pgbench: two-statement transaction, {args.pgbench_s}s, -c 4 -j 2")
            out["pgbench"] = await asyncio.to_thread(
                probes.run_pgbench,
                settings.pg_host,
                settings.pg_port,
                settings.pg_user,
                args.pgbench_s,
            )
            log(f"  pgbench {out['pgbench']['tps']:.0f} tps")
            out["kafka_rtt"] = await probes.kafka_rtt(settings.kafka_bootstrap, args.rtt_messages)
            log(
                f"  kafka produce->consume p50 {out['kafka_rtt']['p50_ms']:.2f} ms,"
                f" p99 {out['kafka_rtt']['p99_ms']:.2f} ms"
            )
        watch = probes.KafkaWatch(settings.kafka_bootstrap, subscriptions())
        await watch.start(list(topics.ALL_TOPICS))
        gen = LoadGenerator(
            Checkout(system.gateway, skus, args.region, tokens), args.workers, seed=args.seed
        )
        gen.warm()
        bench = Bench(args, system, gen, watch, orders_dsn, stats_dsn, {os.getpid(), *gen.pids()})
        out["phases"] = bench.phases
        out["idle"] = await idle_cost(system, bench.bench_pids, args.idle_s)
        if args.warmup_s > 0:
            await bench.phase("warmup", args.warmup_rate, args.warmup_s)
        best: float | None = None
        failures = 0
        for rate in (float(r) for r in args.rates.split(",")) if not args.steady_rate else ():
            result = await bench.phase(f"step-{rate:g}", rate, args.step_s)
            if result["sustained"]:
                best = rate if best is None else max(best, rate)
                failures = 0
            else:
                failures += 1
                if failures >= args.patience:
                    break
        steady_rate = args.steady_rate or best
        out["best_sustainable_rate"] = best
        if steady_rate and args.steady_s > 0:
            # The step that failed may have left a backlog: the steady phase starts from idle.
            drain_s, lag = await wait_idle(watch, args.drain_timeout_s * 3)
            out["pre_steady_drain"] = {"seconds": round(drain_s, 1), "lag": lag}
            steady = await bench.phase("steady", steady_rate, args.steady_s)
            for retry in range(args.steady_retries):
                if steady["sustained"]:
                    break
                steady_rate = round(steady_rate * 0.85, 1)
                log(f"steady phase not sustained; again at {steady_rate:g}/s")
                steady = await bench.phase(f"steady-retry{retry + 1}", steady_rate, args.steady_s)
            out["steady"] = steady
            if args.half_s > 0:
                out["half"] = await bench.phase("half", steady_rate / 2, args.half_s)
        else:
            log("no rate was sustained: no steady phase")
        out["finished_at"] = datetime.now(UTC).isoformat()
        out["summary"] = report.summary(out)
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{stamp}.json"
        path.write_text(json.dumps(out, indent=2, default=str) + "\n")
        png = report.plot(out, RESULTS / f"{stamp}.png")
        print(report.table(out))
        log(f"results: {path.relative_to(REPO)}" + (f", {png.relative_to(REPO)}" if png else ""))
        return 0
    finally:
        if gen is not None:
            gen.close()
        if watch is not None:
            await watch.stop()
        if not args.no_up and not args.keep_up:
            system.down()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="make bench", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--rates", default=DEFAULT_RATES, help=f"step rates per second ({DEFAULT_RATES})"
    )
    p.add_argument("--step-s", type=float, default=30, help="seconds per step (30)")
    p.add_argument("--warmup-s", type=float, default=10, help="warm-up seconds (10; 0 skips)")
    p.add_argument("--warmup-rate", type=float, default=20, help="warm-up rate (20/s)")
    p.add_argument("--steady-s", type=float, default=60, help="steady phase seconds (60)")
    p.add_argument("--steady-rate", type=float, help="skip the steps; steady phase at this rate")
    p.add_argument(
        "--steady-retries", type=int, default=1, help="if not sustained, again at 85%% (1)"
    )
    p.add_argument("--idle-s", type=float, default=5, help="idle CPU measurement seconds (5)")
    p.add_argument("--half-s", type=float, default=30, help="phase at half the steady rate (30)")
    p.add_argument("--grace-s", type=float, default=10, help="confirmation grace after a phase")
    p.add_argument("--drain-timeout-s", type=float, default=180, help="max wait for zero lag")
    p.add_argument("--track-ratio", type=float, default=0.95, help="confirmed/offered to pass")
    p.add_argument("--max-p99-ms", type=float, default=2000, help="p99 above this = saturated")
    p.add_argument("--max-error-ratio", type=float, default=0.005)
    p.add_argument("--patience", type=int, default=1, help="failed steps before stopping (1)")
    p.add_argument("--skus", type=int, default=50)
    p.add_argument("--stock", type=int, default=1_000_000)
    p.add_argument("--customers", type=int, default=500)
    p.add_argument("--region", default="BENCH-LAND")
    p.add_argument("--workers", type=int, default=1, help="load generator processes (1)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--gateway-rate", type=int, default=100_000, help="nginx rate limits if we start it"
    )
    p.add_argument("--pgbench-s", type=int, default=10)
    p.add_argument("--rtt-messages", type=int, default=300)
    p.add_argument("--skip-limits", action="store_true", help="no pgbench / Kafka round trip")
    p.add_argument("--no-up", action="store_true", help="use the running bench stack as it is")
    p.add_argument(
        "--statements",
        action="store_true",
        help="count every SQL statement per checkout (pg_stat_statements; a fresh stack)",
    )
    p.add_argument("--keep-up", action="store_true", help="leave the bench stack running")
    p.add_argument("--keep-data", action="store_true", help="do not start from empty data")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import uvloop

        return uvloop.run(run(args))
    except ImportError:  # pragma: no cover
        return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
