"""An isolated Backroom for fault tests: its own Kafka, PostgreSQL (durable), SMTP sink, six
services and nginx, on ports and in a run directory of its own (`.run/faults`), so it never
disturbs `make run`, `make test` or `make bench`.

Everything is driven through the deploy/local scripts (the same ones `make run` uses) with the
environment they read; only the extra service replicas are started here directly (with their own
pid files). Every process it starts is stopped by `down()`, which also runs on errors and Ctrl-C
when the stack is used as a context manager:

    async with Stack() as stack:          # fresh data, everything up
        await stack.kill("payments")       # SIGKILL through services.sh
        await stack.start("payments")
        stack.arm("orders", "relay.after_publish")   # one-shot crash point (libs/kit/faults.py)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from libs.kit.kafka import KafkaConnection

ROOT = Path(__file__).resolve().parents[1]
LOCAL = ROOT / "deploy" / "local"
SERVICES = ("catalog", "inventory", "pricing", "orders", "payments", "notifications")
# The local cluster's superuser (libs/kit/settings.py SUPERUSER), for the harness's own reads.
SUPERUSER = "postgres"


@dataclass
class StackConfig:
    """Ports and places; the defaults are the ones reserved for fault tests."""

    run_dir: Path = ROOT / ".run" / "faults"
    kafka_port: int = 28092
    kafka_controller_port: int = 28093
    cluster_base_port: int = 28192
    pg_port: int = 28432
    smtp_port: int = 3525
    port_base: int = 28100
    gateway_port: int = 28000
    replica_port_base: int = 28200
    # BACKROOM_* settings for every service process (on top of the inherited environment).
    settings: dict[str, str] = field(default_factory=dict)
    # Script output goes here instead of the console (shown when a step fails).
    log_name: str = "stack.log"

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    def service_port(self, service: str) -> int:
        return self.port_base + SERVICES.index(service) + 1

    def replica_port(self, service: str, index: int) -> int:
        return self.replica_port_base + 10 * index + SERVICES.index(service) + 1


class StackError(RuntimeError):
    """A deploy script failed; the message carries the tail of its output."""


@dataclass
class Replica:
    """An extra process of a service in the same consumer group (started here, not by services.sh)."""

    service: str
    index: int
    port: int
    pidfile: Path
    logfile: Path

    @property
    def name(self) -> str:
        return f"{self.service}-{self.index}"


class Stack:
    """The isolated system. All methods that run scripts are async so a load generator running in
    the same event loop keeps going while, say, Kafka restarts."""

    def __init__(self, config: StackConfig | None = None) -> None:
        self.config = config or StackConfig()
        self.run_dir = self.config.run_dir
        self.crash_dir = self.run_dir / "crash"
        self.services_dir = self.run_dir / "services"
        self.maildir = self.run_dir / "smtp" / "maildir"
        self.log_path = self.run_dir / self.config.log_name
        self.cluster = False  # services run against the 3-broker cluster
        self.replicas: dict[str, Replica] = {}
        self.paused: set[str] = set()
        self._up = False

    # --- environment -----------------------------------------------------------------------

    @property
    def single_bootstrap(self) -> str:
        return f"127.0.0.1:{self.config.kafka_port}"

    @property
    def cluster_bootstrap(self) -> str:
        base = self.config.cluster_base_port
        return ",".join(f"127.0.0.1:{base + 2 * i}" for i in range(3))

    @property
    def bootstrap(self) -> str:
        return self.cluster_bootstrap if self.cluster else self.single_bootstrap

    @property
    def gateway(self) -> str:
        return self.config.gateway

    def dsn(self, database: str) -> str:
        """Any database as the cluster's superuser: the harness is an operator's tool (its
        invariant checker reads every service's database, which no service role may), trusted
        on loopback by the local cluster (deploy/local/postgres.sh). The services it starts
        connect as their own roles."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.config.pg_port}/{database}"

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of every script and service process of this stack."""
        c = self.config
        env = {
            k: v
            for k, v in os.environ.items()
            # Never inherit: fast (non-durable) PostgreSQL, or a crash armed for `make run`.
            if k not in ("BACKROOM_PG_FAST", "BACKROOM_CRASH_AT", "BACKROOM_DATABASE_URL")
        }
        env.update(
            {
                "BACKROOM_RUN_DIR": str(self.run_dir),
                "KAFKA_PORT": str(c.kafka_port),
                "KAFKA_CONTROLLER_PORT": str(c.kafka_controller_port),
                "KAFKA_CLUSTER_BASE_PORT": str(c.cluster_base_port),
                "PGPORT": str(c.pg_port),
                "BACKROOM_PG_PORT": str(c.pg_port),
                "SMTP_PORT": str(c.smtp_port),
                "BACKROOM_SMTP_PORT": str(c.smtp_port),
                "BACKROOM_PORT_BASE": str(c.port_base),
                "GATEWAY_PORT": str(c.gateway_port),
                "BACKROOM_PRICING_URL": f"http://127.0.0.1:{c.service_port('pricing')}",
                "BACKROOM_KAFKA_BOOTSTRAP": self.bootstrap,
                "BACKROOM_TOPIC_REPLICATION": "3" if self.cluster else "1",
                "BACKROOM_CRASH_DIR": str(self.crash_dir),
                "BACKROOM_LOG_JSON": "true",
                # Development auth: the services accept the HS256 tokens the harness mints
                # with the checkout's generated secret (libs/kit/auth.py: mint_dev_token).
                "BACKROOM_ENV": "dev",
            }
        )
        # The gateway's rate limits (deploy/local/nginx.sh) are sized for real customers; the
        # fault harness drives every order, poll and admin call from one address with a few
        # credentials, so it raises them out of its way (its settings may still override).
        for scope in ("CHECKOUT_CLIENT", "CHECKOUT_ADDRESS", "CLIENT", "ADDRESS"):
            env[f"GATEWAY_{scope}_RATE"] = "100000"
            env[f"GATEWAY_{scope}_BURST"] = "200000"
        for svc in SERVICES:
            env[f"{svc.upper()}_PORT"] = str(c.service_port(svc))
        env.update(c.settings)
        if extra:
            env.update(extra)
        return env

    # --- running scripts ---------------------------------------------------------------------

    async def script(
        self,
        name: str,
        *args: str,
        check: bool = True,
        extra_env: Mapping[str, str] | None = None,
        timeout: float = 300,
    ) -> int:
        """Run deploy/local/<name>.sh with this stack's environment; output to the stack log."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            log.write(f"\n$ {name}.sh {' '.join(args)}\n".encode())
            log.flush()
            proc = await asyncio.create_subprocess_exec(
                "bash",
                str(LOCAL / f"{name}.sh"),
                *args,
                cwd=ROOT,
                env=self.env(extra_env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
            try:
                rc = await asyncio.wait_for(proc.wait(), timeout)
            except (TimeoutError, asyncio.CancelledError):
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
                raise
            log.write(f"# exit {rc} after {time.monotonic() - started:.1f}s\n".encode())
        if check and rc != 0:
            raise StackError(f"{name}.sh {' '.join(args)} failed (exit {rc}):\n{self.log_tail()}")
        return rc

    def script_sync(self, name: str, *args: str, timeout: float = 120) -> int:
        """The same, blocking (for teardown, when the event loop may be going away)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n$ {name}.sh {' '.join(args)}\n".encode())
            log.flush()
            try:
                return subprocess.run(
                    ["bash", str(LOCAL / f"{name}.sh"), *args],
                    cwd=ROOT,
                    env=self.env(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    timeout=timeout,
                    check=False,
                ).returncode
            except subprocess.TimeoutExpired:
                return -1

    async def cli(self, *args: str, timeout: float = 300) -> None:
        """`backroom <args>` against this stack (topics, migrate)."""
        with self.log_path.open("ab") as log:
            log.write(f"\n$ backroom {' '.join(args)}\n".encode())
            log.flush()
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "libs.kit.cli",
                *args,
                cwd=ROOT,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
            rc = await asyncio.wait_for(proc.wait(), timeout)
        if rc != 0:
            raise StackError(f"backroom {' '.join(args)} failed (exit {rc}):\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # --- the whole stack ---------------------------------------------------------------------

    async def up(self, fresh: bool = True) -> None:
        """Start everything (fresh data by default: an empty broker, databases and maildir)."""
        self._up = True
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.crash_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.crash_dir.iterdir():
            stale.unlink(missing_ok=True)
        if fresh:
            # Whatever an earlier, interrupted run left behind goes first.
            await asyncio.to_thread(self._stop_leftover_replicas)
            await self.script("nginx", "down", check=False)
            await self.script("services", "down", check=False, timeout=180)
            await asyncio.gather(
                self.script("kafka", "reset"),
                self.script("kafka-cluster", "reset"),
                self.script("postgres", "reset"),
            )
            self.cluster = False
        await asyncio.gather(
            self.script("kafka", "up"), self.script("postgres", "up"), self.script("smtp", "up")
        )
        if fresh:
            await self.script("smtp", "clear")
        await self.cli("topics")
        await self.cli("migrate")
        await self.script("services", "up")
        await self.script("nginx", "up")

    def down(self) -> None:
        """Stop everything this stack may have started (blocking; safe to call twice)."""
        for replica in list(self.replicas.values()):
            self._stop_replica_sync(replica)
        self.replicas.clear()
        self.script_sync("nginx", "down")
        # Resume paused services first: a stopped process cannot act on SIGTERM.
        if self.paused:
            self.script_sync("services", "resume", *sorted(self.paused))
            self.paused.clear()
        self.script_sync("services", "down", timeout=180)
        self.script_sync("smtp", "down")
        self.script_sync("kafka", "down")
        self.script_sync("kafka-cluster", "down")
        self.script_sync("postgres", "down")
        self._up = False

    async def __aenter__(self) -> Stack:
        try:
            await self.up()
        except BaseException:
            self.down()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()

    # --- services ----------------------------------------------------------------------------

    def pidfile(self, service: str) -> Path:
        return self.services_dir / f"{service}.pid"

    def pid(self, service: str) -> int | None:
        """The pid of a running service process (the primary, or a replica by name)."""
        replica = self.replicas.get(service)
        path = replica.pidfile if replica else self.pidfile(service)
        try:
            pid = int(path.read_text().strip())
        except (OSError, ValueError):
            return None
        # Guard against a recycled pid: it must be that service's `serve` process.
        want = f"serve {replica.service if replica else service}"
        return pid if _running(pid) and _cmdline_has(pid, want) else None

    def alive(self, service: str) -> bool:
        return self.pid(service) is not None

    def dump_tasks(self) -> list[str]:
        """SIGUSR1 to every running service process: each logs the stack of every asyncio task
        (libs/kit/runtime.py) into its log in `services_dir`. Returns the names signalled."""
        signalled = []
        for name in [*SERVICES, *self.replicas]:
            pid = self.pid(name)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGUSR1)
                    signalled.append(name)
        return signalled

    async def start(self, service: str, extra_env: Mapping[str, str] | None = None) -> None:
        """Start a service (services.sh up: waits until it is ready). Replicas by their name."""
        if service in self.replicas:
            await self._start_replica_process(self.replicas[service])
            return
        await self.script("services", "up", service, extra_env=extra_env)

    async def stop(self, service: str) -> None:
        await self.script("services", "down", service)

    async def kill(self, service: str) -> None:
        """SIGKILL (services.sh kill), and wait until the process is gone."""
        pid = self.pid(service)
        if pid is None:
            return
        if service in self.replicas:
            os.kill(pid, signal.SIGKILL)
        else:
            await self.script("services", "kill", service)
        self.paused.discard(service)
        await self.wait_dead(service, pid, timeout=10)

    async def pause(self, service: str) -> None:
        """SIGSTOP (services.sh pause): the process stops heartbeating but keeps its work."""
        if await self._signal(service, "pause", signal.SIGSTOP):
            self.paused.add(service)

    async def resume(self, service: str) -> None:
        if await self._signal(service, "resume", signal.SIGCONT):
            self.paused.discard(service)

    async def _signal(self, service: str, command: str, sig: signal.Signals) -> bool:
        # Only ever a process of ours: pid() checks the pid file's process is alive.
        pid = self.pid(service)
        if pid is None:
            return False
        if service in self.replicas:
            os.kill(pid, sig)
        else:
            await self.script("services", command, service)
        return True

    async def wait_dead(self, service: str, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while _running(pid):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def wait_ready(self, port: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"http://127.0.0.1:{port}/health/ready")).is_success:
                        return
                if time.monotonic() > deadline:
                    raise StackError(f"nothing ready on port {port} after {timeout}s")
                await asyncio.sleep(0.2)

    # --- one-shot crash points (libs/kit/faults.py) ------------------------------------------

    def arm(self, service: str, point: str) -> int:
        """Make the running process of `service` (or replica name) SIGKILL itself at the next
        `crash_point(point)`; returns its pid."""
        pid = self.pid(service)
        if pid is None:
            raise StackError(f"{service} is not running; cannot arm {point}")
        self.crash_dir.mkdir(parents=True, exist_ok=True)
        (self.crash_dir / f"{pid}.fired").unlink(missing_ok=True)
        tmp = self.crash_dir / f".{pid}.tmp"
        tmp.write_text(point + "\n")
        tmp.replace(self.crash_dir / str(pid))
        return pid

    def disarm(self, pid: int) -> None:
        (self.crash_dir / str(pid)).unlink(missing_ok=True)

    def fired(self, pid: int) -> bool:
        """The process died at its armed crash point (not of something else)."""
        return (self.crash_dir / f"{pid}.fired").exists()

    # --- replicas ----------------------------------------------------------------------------

    async def add_replica(self, service: str, index: int = 2) -> Replica:
        """Start another process of `service` in the same consumer group, on its own port."""
        port = self.config.replica_port(service, index)
        replica = Replica(
            service=service,
            index=index,
            port=port,
            pidfile=self.services_dir / f"{service}-{index}.pid",
            logfile=self.services_dir / f"{service}-{index}.log",
        )
        self.replicas[replica.name] = replica
        await self._start_replica_process(replica)
        return replica

    async def _start_replica_process(self, replica: Replica) -> None:
        if self.pid(replica.name):
            return
        self.services_dir.mkdir(parents=True, exist_ok=True)
        env = self.env({"BACKROOM_HTTP_PORT": str(replica.port)})
        with replica.logfile.open("ab") as log:
            # Popen only forks and execs; the replica outlives this call (we reap it later).
            proc = subprocess.Popen(  # noqa: ASYNC220
                [sys.executable, "-m", "libs.kit.cli", "serve", replica.service],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # like services.sh: out of our terminal's signals
            )
        replica.pidfile.write_text(f"{proc.pid}\n")
        await self.wait_ready(replica.port)

    async def remove_replica(self, name: str) -> None:
        replica = self.replicas.pop(name, None)
        if replica is not None:
            await asyncio.to_thread(self._stop_replica_sync, replica)

    def _stop_leftover_replicas(self) -> None:
        for service in SERVICES:
            for pidfile in self.services_dir.glob(f"{service}-*.pid"):
                index = pidfile.stem.rsplit("-", 1)[-1]
                if index.isdigit():
                    self._stop_replica_sync(
                        Replica(service, int(index), 0, pidfile, pidfile.with_suffix(".log"))
                    )

    def _stop_replica_sync(self, replica: Replica) -> None:
        try:
            pid = int(replica.pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        if _running(pid) and _cmdline_has(pid, f"serve {replica.service}"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 20
            while _running(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _running(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        replica.pidfile.unlink(missing_ok=True)

    # --- infrastructure faults ---------------------------------------------------------------

    async def kafka_kill(self) -> None:
        await self.script("kafka", "kill")

    async def kafka_start(self) -> None:
        await self.script("kafka", "up")

    async def postgres_kill(self) -> None:
        """Immediate shutdown (no checkpoint: crash recovery on the next start)."""
        await self.script("postgres", "kill")

    async def postgres_start(self) -> None:
        await self.script("postgres", "up")

    async def use_cluster(self) -> None:
        """Move the services to a 3-broker cluster (replication 3, min.insync.replicas 2); the
        single broker is stopped. Nothing may be in flight (drain first)."""
        if self.cluster:
            return
        replicas = list(self.replicas)
        for name in replicas:
            await self.remove_replica(name)
        await self.script("services", "down", timeout=180)
        await self.script("kafka", "down")
        await self.script("kafka-cluster", "up")
        self.cluster = True
        await self.cli("topics")
        await self.script("services", "up")

    async def topic_layout(self, topic: str) -> dict[str, Any]:
        """Replication factor, min.insync.replicas and the leader of partition 0 of `topic`."""
        from aiokafka.admin import AIOKafkaAdminClient
        from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

        admin = AIOKafkaAdminClient(
            **KafkaConnection.operator(self.bootstrap).client_options(), request_timeout_ms=10000
        )
        await admin.start()
        try:
            [described] = await admin.describe_topics([topic])
            partitions = sorted(described["partitions"], key=lambda p: p["partition"])
            configs = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic, {"min.insync.replicas": None})]
            )
            min_isr = None
            for response in configs:
                for resource in response.resources:
                    for entry in resource[4]:
                        if entry[0] == "min.insync.replicas":
                            min_isr = int(entry[1])
            return {
                "replication": len(partitions[0]["replicas"]),
                "min_insync_replicas": min_isr,
                "leader": partitions[0]["leader"],
            }
        finally:
            await admin.close()

    async def cluster_kill(self, node: int) -> None:
        await self.script("kafka-cluster", "kill", str(node))

    async def cluster_start(self, node: int) -> None:
        await self.script("kafka-cluster", "start", str(node))


def _running(pid: int) -> bool:
    """Alive and not a zombie (a replica we started stays our child until reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    if state in ("Z", "X"):
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return True


def _cmdline_has(pid: int, text: str) -> bool:
    try:
        return text in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False


def describe(stack: Stack) -> dict[str, Any]:
    """Where the stack lives, for reports."""
    c = stack.config
    return {
        "run_dir": str(stack.run_dir),
        "gateway": c.gateway,
        "kafka": stack.bootstrap,
        "postgres": f"127.0.0.1:{c.pg_port}",
        "smtp": f"127.0.0.1:{c.smtp_port}",
        "durable_postgres": True,
    }
