"""The bench's outputs: the headline summary, the printed table and the PNG plot."""

from pathlib import Path
from typing import Any

# Issue 10's target, on the 2-core box with everything on it.
TARGET_RATE = 100.0  # confirmed checkouts per second, sustained
TARGET_P99_MS = 250.0  # at half that rate
TARGET_CPU_MS = 15.0  # CPU per checkout at the steady rate, all processes


def summary(out: dict[str, Any]) -> dict[str, Any]:
    steady = out.get("steady")
    half = out.get("half")
    pgbench = (out.get("pgbench") or {}).get("tps")
    s: dict[str, Any] = {
        "best_sustainable_step_rate": out.get("best_sustainable_rate"),
        "pgbench_tps": pgbench,
        "kafka_rtt_p50_ms": (out.get("kafka_rtt") or {}).get("p50_ms"),
        "kafka_rtt_p99_ms": (out.get("kafka_rtt") or {}).get("p99_ms"),
        "cpu_speed": out.get("cpu_speed"),
    }
    if steady:
        cost = steady["cost"]
        lat = steady["latency_confirmed_ms"]
        s.update(
            {
                "steady_offered_rate": steady["offered_rate"],
                "steady_confirmed_per_s": round(steady["confirmed_throughput"], 1),
                "steady_sustained": steady["sustained"],
                "steady_latency_ms": lat,
                "steady_http_202_ms": steady["latency_http_ms"],
                "steady_errors": steady["errors"],
                "steady_not_confirmed": steady["not_confirmed_within_grace"],
                "cpu_ms_per_checkout": cost["cpu_ms_per_checkout"],
                "cpu_ms_per_checkout_this_stack": cost["cpu_ms_per_checkout_this_stack"],
                "cpu_ms_per_checkout_by_group": cost["cpu_ms_per_checkout_by_group"],
                "machine_utilisation": cost["machine_utilisation"],
                "db_commits_per_checkout": cost["db_commits_per_checkout"],
                "db_commits_per_checkout_by_db": cost["db_commits_per_checkout_by_db"],
                "wal_syncs_per_checkout": cost["wal_syncs_per_checkout"],
                "kafka_records_per_checkout": cost["kafka_records_per_checkout"],
                "generator_cpu_share_of_one_core": steady["generator"]["cpu_share_of_one_core"],
                "generator_send_lateness_p99_ms": steady["generator"]["send_lateness_ms"]["p99"],
            }
        )
        if pgbench and cost["db_commits_per_checkout"]:
            s["commit_load_vs_pgbench"] = round(
                steady["confirmed_throughput"] * cost["db_commits_per_checkout"] / pgbench, 3
            )
    if half:
        s["half_rate"] = half["offered_rate"]
        s["half_latency_ms"] = half["latency_confirmed_ms"]
        s["half_sustained"] = half["sustained"]
    if steady and half:
        p99 = half["latency_confirmed_ms"]["p99"]
        s["target_met"] = bool(
            steady["sustained"]
            and steady["confirmed_throughput"] >= TARGET_RATE * 0.99
            and p99 is not None
            and p99 <= TARGET_P99_MS
            and (s.get("cpu_ms_per_checkout") or float("inf")) <= TARGET_CPU_MS
        )
    return s


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def _n(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def table(out: dict[str, Any]) -> str:
    head = (
        f"{'phase':<10} {'offered':>7} {'conf/s':>7} {'p50':>6} {'p90':>6} {'p99':>6} {'max':>6}"
        f" {'202p50':>6} {'202p99':>6} {'err':>4} {'unconf':>6} {'cpu-ms':>6} {'commits':>7}"
        f" {'gen%':>5} {'late99':>6}  ok"
    )
    lines = [
        "",
        "latencies in ms from the intended send time; cpu-ms and commits per checkout",
        head,
    ]
    for ph in out.get("phases", []):
        lat = ph["latency_confirmed_ms"]
        http = ph["latency_http_ms"]
        gen = ph["generator"]
        cost = ph["cost"]
        lines.append(
            f"{ph['name']:<10} {ph['offered_rate']:>7g} {ph['confirmed_throughput']:>7.1f}"
            f" {_ms(lat['p50']):>6} {_ms(lat['p90']):>6} {_ms(lat['p99']):>6} {_ms(lat['max']):>6}"
            f" {_ms(http['p50']):>6} {_ms(http['p99']):>6} {ph['errors']:>4}"
            f" {ph['not_confirmed_within_grace']:>6} {_n(cost['cpu_ms_per_checkout']):>6}"
            f" {_n(cost['db_commits_per_checkout']):>7} {gen['cpu_share_of_one_core'] * 100:>5.1f}"
            f" {_n(gen['send_lateness_ms']['p99']):>6}  {'yes' if ph['sustained'] else 'NO'}"
        )
    s = out.get("summary", {})
    lines.append("")
    if s.get("pgbench_tps"):
        lines.append(
            f"machine: pgbench {s['pgbench_tps']:.0f} tps (2-statement write tx, -c 4 -j 2);"
            f" Kafka produce->consume p50 {_n(s['kafka_rtt_p50_ms'], 2)} ms,"
            f" p99 {_n(s['kafka_rtt_p99_ms'], 2)} ms"
        )
    if s.get("cpu_speed"):
        speed = s["cpu_speed"]
        lines.append(
            f"machine speed: Python loop {speed['python_loop_ns']} ns/iteration, system call"
            f" {speed['syscall_us']} us, loopback TCP round trip {speed['loopback_tcp_rtt_us']} us"
        )
    if "steady_confirmed_per_s" in s:
        lat = s["steady_latency_ms"]
        lines.append(
            f"steady at {s['steady_offered_rate']:g}/s: {s['steady_confirmed_per_s']} confirmed/s,"
            f" p50 {_ms(lat['p50'])} p99 {_ms(lat['p99'])} max {_ms(lat['max'])} ms;"
            f" {_n(s['cpu_ms_per_checkout'])} CPU-ms/checkout"
            f" ({_n(s['cpu_ms_per_checkout_this_stack'])} in this stack's processes);"
            f" {_n(s['db_commits_per_checkout'])} commits,"
            f" {_n(s['wal_syncs_per_checkout'])} WAL syncs,"
            f" {_n(s['kafka_records_per_checkout'])} Kafka records per checkout"
        )
        top = sorted(
            ((k, v) for k, v in s["cpu_ms_per_checkout_by_group"].items() if v),
            key=lambda kv: -kv[1],
        )[:8]
        lines.append("  CPU-ms/checkout by process: " + ", ".join(f"{k} {v:.1f}" for k, v in top))
        if "commit_load_vs_pgbench" in s:
            lines.append(
                f"  checkouts/s x commits/checkout / pgbench TPS = {s['commit_load_vs_pgbench']}"
            )
    if "half_latency_ms" in s:
        lat = s["half_latency_ms"]
        lines.append(
            f"half rate {s['half_rate']:g}/s: p50 {_ms(lat['p50'])} p99 {_ms(lat['p99'])}"
            f" max {_ms(lat['max'])} ms"
        )
    if "target_met" in s:
        lines.append(
            f"target (>= {TARGET_RATE:g}/s sustained, p99 <= {TARGET_P99_MS:g} ms at half,"
            f" <= {TARGET_CPU_MS:g} CPU-ms/checkout):"
            f" {'met' if s['target_met'] else 'NOT met'}"
        )
    return "\n".join(lines)


def plot(out: dict[str, Any], path: Path) -> Path | None:
    """Latency percentiles and confirmed throughput against offered rate (steps, steady, half)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return None
    steps = [p for p in out.get("phases", []) if p["name"].startswith("step-")]
    extra = [p for p in out.get("phases", []) if p["name"].startswith(("steady", "half"))]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    rates = [p["offered_rate"] for p in steps]
    for key, style in (("p50", "o-"), ("p90", "s-"), ("p99", "^-"), ("max", "x--")):
        ys = [p["latency_confirmed_ms"][key] for p in steps]
        ax1.plot(rates, ys, style, label=f"confirmed {key}")
    ax1.plot(
        rates,
        [p["latency_http_ms"]["p99"] for p in steps],
        "v:",
        color="grey",
        label="HTTP 202 p99",
    )
    for p in extra:
        ax1.plot(
            [p["offered_rate"]] * 2,
            [p["latency_confirmed_ms"]["p50"], p["latency_confirmed_ms"]["p99"]],
            "D",
            color="black",
            markersize=5,
        )
        ax1.annotate(p["name"], (p["offered_rate"], p["latency_confirmed_ms"]["p99"] or 1))
    ax1.axhline(TARGET_P99_MS, color="red", linewidth=0.8, linestyle=":")
    ax1.set_yscale("log")
    ax1.set_xlabel("offered rate (checkouts/s)")
    ax1.set_ylabel("latency from intended send (ms)")
    ax1.set_title("checkout latency (order confirmed)")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=8)

    ax2.plot(rates, [p["confirmed_throughput"] for p in steps], "o-", label="confirmed/s")
    top = max([*rates, *(p["offered_rate"] for p in extra), 1])
    ax2.plot([0, top], [0, top], "--", color="grey", label="offered")
    for p in extra:
        ax2.plot(p["offered_rate"], p["confirmed_throughput"], "D", color="black")
        ax2.annotate(p["name"], (p["offered_rate"], p["confirmed_throughput"]))
    ax2.set_xlabel("offered rate (checkouts/s)")
    ax2.set_ylabel("confirmed checkouts/s")
    ax2.set_title("throughput")
    ax2.grid(True, alpha=0.3)
    ax2.legend(fontsize=8)
    m = out.get("machine", {})
    fig.suptitle(
        f"Backroom checkout bench {out.get('started_at', '')[:19]}  "
        f"({m.get('nproc')} CPU {m.get('cpu_model', '')}, commit {str(m.get('git_commit', ''))[:8]})",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
