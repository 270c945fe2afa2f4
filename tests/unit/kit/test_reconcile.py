"""The reconciler: every known kind has its gauge (0 when clean, so alerts resolve), each finding
is logged with its ids, and a failing check is counted without stopping the others or dropping
what it found before."""

import logging
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY

from libs.kit.reconcile import OUTBOX_STUCK, Finding, Reconciler, outbox_findings, report_json

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def gauge(kind: str) -> float | None:
    return REGISTRY.get_sample_value("backroom_reconciliation_findings", {"kind": kind})


def failures(probe: str) -> float:
    value = REGISTRY.get_sample_value("backroom_metrics_probe_failures_total", {"probe": probe})
    return value or 0.0


async def test_findings_set_their_kinds_gauges_and_clean_kinds_read_zero(
    caplog: pytest.LogCaptureFixture,
) -> None:
    found = [Finding("unit_a", {"sku": "s-1"}, "off by one", NOW)]
    reconciler = Reconciler("unit", clock=lambda: NOW)

    async def check() -> list[Finding]:
        return list(found)

    reconciler.add("a", check, ["unit_a", "unit_b"])
    with caplog.at_level(logging.WARNING, logger="libs.kit.reconcile"):
        report = await reconciler.run_once()

    assert report.ran_at == NOW and report.findings == tuple(found)
    assert (gauge("unit_a"), gauge("unit_b")) == (1, 0)
    [line] = [r for r in caplog.records if "finding" in r.getMessage()]
    assert "unit_a" in line.getMessage() and "sku=s-1" in line.getMessage()
    assert line.__dict__["finding_sku"] == "s-1"

    found.clear()
    assert (await reconciler.run_once()).findings == ()
    assert gauge("unit_a") == 0


async def test_a_failing_check_is_counted_and_keeps_its_last_findings() -> None:
    calls = {"n": 0}

    async def flaky() -> list[Finding]:
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("database went away")
        return [Finding("unit_flaky", {"order_id": "o-1"}, "stuck")]

    async def fine() -> list[Finding]:
        return [Finding("unit_fine", {"order_id": "o-2"}, "late")]

    reconciler = Reconciler("unit")
    reconciler.add("flaky", flaky, ["unit_flaky"])
    reconciler.add("fine", fine, ["unit_fine"])
    await reconciler.run_once()
    before = failures("reconcile_flaky")

    report = await reconciler.run_once()

    assert report.failed_checks == ("flaky",)
    assert [f.kind for f in report.findings] == ["unit_flaky", "unit_fine"]
    assert failures("reconcile_flaky") == before + 1
    assert report_json(report)["failed_checks"] == ["flaky"]


def test_only_outbox_rows_older_than_the_threshold_are_stuck() -> None:
    rows = [
        (7, "e-7", "OrderPlaced", "o-7", NOW - timedelta(seconds=301)),
        (8, "e-8", "OrderPlaced", "o-8", NOW - timedelta(seconds=299)),
    ]
    [finding] = outbox_findings(rows, NOW, 300)
    assert finding.kind == OUTBOX_STUCK
    assert finding.ids == {"outbox_id": "7", "event_id": "e-7", "key": "o-7"}
    assert finding.since == rows[0][4]
