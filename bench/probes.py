"""What the bench measures besides the checkouts: CPU (whole machine and per process), PostgreSQL
commits and WAL syncs, Kafka offsets and consumer lag, pgbench TPS and a Kafka round trip."""

import asyncio
import os
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from libs.kit.kafka import KafkaConnection, new_producer

CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVICES = ("catalog", "inventory", "pricing", "orders", "payments", "notifications")


# --- CPU ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CpuSnapshot:
    at: float
    busy_s: float  # machine-wide: all CPU time that was not idle or iowait
    total_s: float
    procs: dict[int, tuple[str, float]]  # pid -> (group, user+system seconds of the process)


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, user+system CPU seconds) of a process. Reaped children's time (cutime) is left
    out: it arrives in one lump when they exit, CPU spent before a window included."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2 :].split()
    # after "state": ppid is index 1; utime and stime are indexes 11 and 12
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK


def _classify(pid: int) -> str:
    try:
        cmd = (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return "gone"
    if not cmd:
        return "kernel"
    if "kafka.Kafka" in cmd or ("java" in cmd and "kafka" in cmd):
        return "kafka"
    m = re.search(r"libs\.kit\.cli serve (\w+)", cmd)
    if m:
        return f"svc:{m.group(1)}"
    if cmd.startswith("postgres: "):
        # backends: "postgres: postgres orders 127.0.0.1(51234) idle"; else "postgres: walwriter"
        parts = cmd.split()
        if len(parts) >= 3 and parts[2] in SERVICES:
            return f"pg:{parts[2]}"
        if "(" in cmd:
            return "pg:other-db"
        return "pg:aux"
    if "bin/postgres" in cmd:
        return "pg:aux"
    if cmd.startswith("nginx"):
        return "nginx"
    if "smtp_sink.py" in cmd:
        return "smtp-sink"
    return "other"


def cpu_snapshot(stack_roots: set[int], bench_pids: set[int]) -> CpuSnapshot:
    """Machine-wide CPU, and every process's CPU, grouped: the bench itself, this stack's
    processes (descendants of `stack_roots`) by role, and everything else as `not-this-stack`."""
    with open("/proc/stat") as f:
        values = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is included in user)
    total = sum(values[:8])
    idle = values[3] + values[4]
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None:
                stats[int(entry.name)] = st

    def ours(pid: int) -> bool:
        for _ in range(64):
            if pid in stack_roots:
                return True
            parent = stats.get(pid)
            if parent is None or parent[0] <= 1:
                return False
            pid = parent[0]
        return False

    procs: dict[int, tuple[str, float]] = {}
    for pid, (_, cpu) in stats.items():
        if pid in bench_pids:
            group = "bench"
        elif ours(pid):
            group = _classify(pid)
        else:
            group = "not-this-stack"
        procs[pid] = (group, cpu)
    return CpuSnapshot(time.time(), (total - idle) / CLK_TCK, total / CLK_TCK, procs)


def cpu_delta(a: CpuSnapshot, b: CpuSnapshot) -> dict[str, Any]:
    """CPU seconds spent between two snapshots, machine-wide and per process group. A process
    that started inside the window counts from 0; one that ended inside it is lost to the groups
    (not to the machine-wide figure)."""
    groups: dict[str, float] = {}
    for pid, (group, cpu) in b.procs.items():
        before = a.procs.get(pid)
        spent = cpu - before[1] if before is not None and before[0] == group else cpu
        groups[group] = groups.get(group, 0.0) + max(spent, 0.0)
    return {
        "wall_s": b.at - a.at,
        "machine_busy_s": b.busy_s - a.busy_s,
        "machine_total_s": b.total_s - a.total_s,
        "groups_s": {k: round(v, 3) for k, v in sorted(groups.items(), key=lambda kv: -kv[1]) if v},
    }


# --- PostgreSQL -----------------------------------------------------------------------------


async def pg_stats(dsn: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT datname, xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted,"
            " blks_read, blks_hit, sessions"  # sessions: connections opened (a pool's churn)
            " FROM pg_stat_database WHERE datname = ANY($1::text[])",
            list(SERVICES),
        )
        wal = await conn.fetchrow(
            "SELECT wal_records, wal_fpi, wal_bytes::bigint AS wal_bytes, wal_write, wal_sync"
            " FROM pg_stat_wal"
        )
    finally:
        await conn.close()
    return {
        "databases": {
            r["datname"]: {k: int(v) for k, v in r.items() if k != "datname"} for r in rows
        },
        "wal": {k: int(v) for k, v in wal.items()} if wal else {},
    }


def pg_delta(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    dbs = {
        name: {k: b["databases"][name][k] - a["databases"][name].get(k, 0) for k in cols}
        for name, cols in b["databases"].items()
        if name in a["databases"]
    }
    return {
        "databases": dbs,
        "xact_commit": sum(d["xact_commit"] for d in dbs.values()),
        "xact_rollback": sum(d["xact_rollback"] for d in dbs.values()),
        "sessions": sum(d.get("sessions", 0) for d in dbs.values()),
        "wal": {k: b["wal"][k] - a["wal"].get(k, 0) for k in b["wal"]},
    }


async def pg_statements(dsn: str) -> dict[tuple[str, int], dict[str, Any]] | None:
    """Every statement's calls, rows and execution time per service database so far, from
    pg_stat_statements (preloaded when the cluster started with BACKROOM_PG_STATEMENTS=1);
    None when it is not loaded."""
    conn = await asyncpg.connect(dsn)
    try:
        preloaded = await conn.fetchval("SHOW shared_preload_libraries")
        if "pg_stat_statements" not in preloaded:
            return None
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        rows = await conn.fetch(
            "SELECT d.datname, s.queryid, s.query, s.calls, s.rows, s.total_exec_time"
            " FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid"
            " WHERE d.datname = ANY($1::text[]) AND s.toplevel",
            list(SERVICES),
        )
    finally:
        await conn.close()
    return {
        (r["datname"], int(r["queryid"])): {
            "query": " ".join(r["query"].split())[:240],
            "calls": int(r["calls"]),
            "rows": int(r["rows"]),
            "ms": float(r["total_exec_time"]),
        }
        for r in rows
    }


def statements_delta(
    a: dict[tuple[str, int], dict[str, Any]],
    b: dict[tuple[str, int], dict[str, Any]],
    per: int,
    top: int = 40,
) -> dict[str, list[dict[str, Any]]]:
    """Per database, the statements run between two snapshots, most called first, with calls,
    rows and execution ms divided by `per` (the checkouts confirmed in the window)."""
    out: dict[str, list[dict[str, Any]]] = {}
    n = per or 1
    for (db, qid), now in b.items():
        was = a.get((db, qid), {"calls": 0, "rows": 0, "ms": 0.0})
        calls = now["calls"] - was["calls"]
        if calls <= 0:
            continue
        out.setdefault(db, []).append(
            {
                "calls": round(calls / n, 3),
                "rows": round((now["rows"] - was["rows"]) / n, 3),
                "exec_ms": round((now["ms"] - was["ms"]) / n, 4),
                "query": now["query"],
            }
        )
    return {db: sorted(rows, key=lambda r: -r["calls"])[:top] for db, rows in sorted(out.items())}


async def pg_version(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


PGBENCH_SCRIPT = """\\set aid random(1, 100000 * :scale)
\\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
END;
"""


def cpu_speed(rounds: int = 5) -> dict[str, float]:
    """This machine's single-core speed, so that runs of different days compare: machines of the
    same kind differ by 2x or more from one day to the next (issue 10's notes), in plain Python
    and even more in system calls. Best of `rounds`, so a preempted round does not count."""

    def python_loop_ns() -> float:
        n, started = 200_000, time.perf_counter()
        total = 0
        for i in range(n):
            total += i
        return (time.perf_counter() - started) / n * 1e9

    def syscall_us() -> float:
        n, started = 20_000, time.perf_counter()
        for _ in range(n):
            os.getppid()
        return (time.perf_counter() - started) / n * 1e6

    def loopback_rtt_us() -> float:
        with socket.create_server(("127.0.0.1", 0)) as server:
            client = socket.create_connection(server.getsockname())
            peer, _ = server.accept()
            with client, peer:
                for s in (client, peer):
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                n, started = 2_000, time.perf_counter()
                for _ in range(n):
                    client.sendall(b"x")
                    peer.recv(1)
                    peer.sendall(b"y")
                    client.recv(1)
                return (time.perf_counter() - started) / n * 1e6

    return {
        "python_loop_ns": round(min(python_loop_ns() for _ in range(rounds)), 1),
        "syscall_us": round(min(syscall_us() for _ in range(rounds)), 3),
        "loopback_tcp_rtt_us": round(min(loopback_rtt_us() for _ in range(rounds)), 1),
    }


def run_pgbench(
    host: str, port: int, user: str, seconds: int = 10, clients: int = 4, threads: int = 2
) -> dict[str, Any]:
    """TPS of a two-statement write transaction (UPDATE + SELECT, one fsync'd commit each) on
    the services' own PostgreSQL, in a scratch database that is dropped afterwards."""
    pgbench = shutil.which("pgbench") or "/usr/lib/postgresql/15/bin/pgbench"
    env = dict(os.environ, PGHOST=host, PGPORT=str(port), PGUSER=user)
    db = "bench_pgbench"

    def psql(sql: str) -> None:
        subprocess.run(
            ["psql", "-X", "-q", "-d", "postgres", "-c", sql], env=env, check=True,
            capture_output=True,
        )  # fmt: skip

    psql(f"DROP DATABASE IF EXISTS {db}")
    psql(f"CREATE DATABASE {db}")
    try:
        subprocess.run(
            [pgbench, "-i", "-s", "1", "-q", db], env=env, check=True, capture_output=True
        )
        with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
            f.write(PGBENCH_SCRIPT)
            script = f.name
        try:
            out = subprocess.run(
                [pgbench, "-n", "-f", script, "-T", str(seconds), "-c", str(clients),
                 "-j", str(threads), "-r", db],
                env=env, check=True, capture_output=True, text=True,
            ).stdout  # fmt: skip
        finally:
            os.unlink(script)
    finally:
        psql(f"DROP DATABASE IF EXISTS {db}")
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
    lat = re.search(r"latency average = ([\d.]+) ms", out)
    return {
        "script": PGBENCH_SCRIPT,
        "seconds": seconds,
        "clients": clients,
        "threads": threads,
        "tps": float(tps.group(1)) if tps else None,
        "latency_avg_ms": float(lat.group(1)) if lat else None,
        "output": out,
    }


# --- Kafka ----------------------------------------------------------------------------------


async def kafka_rtt(bootstrap: str, count: int = 300) -> dict[str, Any]:
    """Produce (acks=all, idempotent, as the relays do) -> consume round trip of single messages,
    one at a time, on a scratch topic that is deleted afterwards."""
    topic = f"bench.rtt.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(**KafkaConnection.operator(bootstrap).client_options())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
        producer = new_producer(KafkaConnection.operator(bootstrap), "bench-rtt")
        consumer = AIOKafkaConsumer(
            **KafkaConnection.operator(bootstrap).client_options(), enable_auto_commit=False
        )
        await producer.start()
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            for _ in range(50):  # the new topic's metadata may take a moment
                if consumer.partitions_for_topic(topic) or await _has_topic(consumer, topic):
                    break
                await asyncio.sleep(0.1)
            consumer.assign([tp])
            await consumer.seek_to_end(tp)
            rtts: list[float] = []
            for i in range(count + 20):
                started = time.perf_counter()
                await producer.send_and_wait(topic, value=str(i).encode(), key=b"k")
                record = await asyncio.wait_for(consumer.getone(), timeout=10)
                assert record.value == str(i).encode()
                if i >= 20:  # the first few carry connection and metadata setup
                    rtts.append((time.perf_counter() - started) * 1000)
        finally:
            await consumer.stop()
            await producer.stop()
        await admin.delete_topics([topic])
    finally:
        await admin.close()
    rtts.sort()
    return {
        "messages": len(rtts),
        "p50_ms": percentile(rtts, 50),
        "p99_ms": percentile(rtts, 99),
        "max_ms": rtts[-1],
        "mean_ms": statistics.fmean(rtts),
    }


async def _has_topic(consumer: AIOKafkaConsumer, topic: str) -> bool:
    await consumer._client.force_metadata_update()
    return bool(consumer.partitions_for_topic(topic))


class KafkaWatch:
    """End offsets per topic and each service's consumer lag."""

    def __init__(self, bootstrap: str, subscriptions: dict[str, tuple[str, ...]]) -> None:
        self.bootstrap = bootstrap
        self.subscriptions = subscriptions
        self.topics = sorted({t for ts in subscriptions.values() for t in ts})
        self.consumer: AIOKafkaConsumer | None = None
        self.admin: AIOKafkaAdminClient | None = None
        self.partitions: list[TopicPartition] = []

    async def start(self, all_topics: list[str]) -> None:
        self.consumer = AIOKafkaConsumer(
            **KafkaConnection.operator(self.bootstrap).client_options(), enable_auto_commit=False
        )
        await self.consumer.start()
        self.admin = AIOKafkaAdminClient(
            **KafkaConnection.operator(self.bootstrap).client_options()
        )
        await self.admin.start()
        await self.consumer._client.force_metadata_update()
        self.partitions = [
            TopicPartition(t, p)
            for t in sorted(set(all_topics) | set(self.topics))
            for p in sorted(self.consumer.partitions_for_topic(t) or ())
        ]

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
        if self.admin is not None:
            await self.admin.close()

    async def end_offsets(self) -> dict[str, int]:
        assert self.consumer is not None
        ends = await self.consumer.end_offsets(self.partitions)
        per_topic: dict[str, int] = {}
        for tp, end in ends.items():
            per_topic[tp.topic] = per_topic.get(tp.topic, 0) + end
        return per_topic

    async def lag(self) -> dict[str, int]:
        """Records each service's group has not committed yet, over the topics it consumes."""
        assert self.consumer is not None and self.admin is not None
        ends = await self.consumer.end_offsets(self.partitions)
        lags: dict[str, int] = {}
        for group, topics in self.subscriptions.items():
            committed = await self.admin.list_consumer_group_offsets(group)
            lags[group] = sum(
                max(0, end - (committed[tp].offset if tp in committed else 0))
                for tp, end in ends.items()
                if tp.topic in topics
            )
        return lags


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return None
    rank = max(1, min(len(sorted_values), int(-(-p * len(sorted_values) // 100))))
    return sorted_values[rank - 1]
