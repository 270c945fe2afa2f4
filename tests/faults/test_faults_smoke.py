"""`make faults` in small, for `make test`: one fault of each kind (a service dying at a crash
point, the broker SIGKILLed, PostgreSQL stopped -m immediate, a consumer SIGSTOPped past its
session timeout, two replicas in one group) under a low checkout load, on an isolated stack of
its own (bench/stack.py: `.run/faults-smoke`, its own ports, durable PostgreSQL), and not one
invariant broken (bench/invariants.py).

`python -m bench.faults` runs the whole catalogue; `python -m bench.faults --smoke` this set on
the `make faults` ports."""

import json

from bench.faults import SMOKE, SMOKE_CONFIG, run, select, table
from bench.stack import ROOT, StackConfig

# Apart from `make run` (8000, 81xx, 9092, 55432, 2525), the e2e tests (18xxx), `make faults`
# (28xxx, 3525) and `make bench` (30xxx), so a run elsewhere cannot collide; and
# below Linux's ephemeral range (32768-60999), where any outgoing connection may hold a port
# (a broker failed to bind 39092 that way while another stack was under load).
SMOKE_STACK = StackConfig(
    run_dir=ROOT / ".run" / "faults-smoke",
    kafka_port=27092,
    kafka_controller_port=27093,
    cluster_base_port=27192,
    pg_port=27432,
    smtp_port=27525,
    port_base=27500,
    gateway_port=27400,
    replica_port_base=27600,
)


async def test_one_fault_of_each_kind_breaks_no_invariant() -> None:
    summary = await run(select(list(SMOKE)), SMOKE_CONFIG, SMOKE_STACK)
    report = SMOKE_STACK.run_dir / "faults-smoke.json"
    report.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(table(summary))

    assert sorted(s["scenario"] for s in summary["scenarios"]) == sorted(SMOKE)
    problems = {
        s["scenario"]: {"errors": s["errors"], "violations": s["check"].get("violation_samples")}
        for s in summary["scenarios"]
        if s["violations"] or s["errors"]
    }
    assert not problems, f"{table(summary)}\n\n{json.dumps(problems, indent=2)}\n(see {report})"
    for s in summary["scenarios"]:
        assert s["orders"] > 0, f"{s['scenario']}: no order was accepted"
