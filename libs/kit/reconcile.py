"""Reconciliation (issue 14 part 6): each service's read-only consistency checks, run on a timer
off the hot path; the last run's findings are kept in memory, exposed as a gauge per kind, logged
one line per finding with its ids, and served by an admin route (`GET /<service>/reconciliation`,
`POST /<service>/reconciliation/runs`).

Why no table: the checks are read-only queries whose answer is re-derived by the next run, so a
restart loses nothing an operator needs (the next run, shortly after start, says it again), and
the findings' history lives where history belongs (the logs and Prometheus)."""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from libs.kit.findings import OUTBOX_STUCK, Finding, outbox_findings
from libs.kit.metrics import PROBE_FAILURES, RECONCILIATION_FINDINGS

__all__ = ["OUTBOX_STUCK", "Finding", "Reconciler", "Report", "outbox_findings", "report_json"]

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[list[Finding]]]


@dataclass(frozen=True)
class Report:
    """What the last run found: when it ran (None before the first), its findings, and the
    checks that failed (their previous findings are kept, so an alert does not resolve by a
    failing query)."""

    ran_at: datetime | None = None
    findings: tuple[Finding, ...] = ()
    failed_checks: tuple[str, ...] = ()


@dataclass
class _Registered:
    check: Check
    kinds: tuple[str, ...]
    last: list[Finding] = field(default_factory=list)


class Reconciler:
    """Runs its checks every `interval_s` (0: never on its own; a run can still be asked for),
    the first `first_run_s` after start; runs never overlap."""

    def __init__(
        self,
        service: str,
        interval_s: float = 300.0,
        first_run_s: float = 10.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.service = service
        self.interval_s = interval_s
        self.first_run_s = first_run_s
        self.clock = clock
        self.checks: dict[str, _Registered] = {}
        self.last = Report()
        self._lock = asyncio.Lock()

    def add(self, name: str, check: Check, kinds: Iterable[str]) -> None:
        """Register a check and the kinds it can report (each gets its gauge, 0 when clean)."""
        self.checks[name] = _Registered(check, tuple(kinds))

    @property
    def kinds(self) -> list[str]:
        return sorted({kind for registered in self.checks.values() for kind in registered.kinds})

    async def run_once(self) -> Report:
        async with self._lock:
            failed: list[str] = []
            for name, registered in self.checks.items():
                try:
                    registered.last = list(await registered.check())
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # one broken check never stops the others or the loop
                    failed.append(name)
                    PROBE_FAILURES.labels(f"reconcile_{name}").inc()
                    log.warning("reconciliation check %s failed: %r", name, exc)
            findings = [f for registered in self.checks.values() for f in registered.last]
            counts = dict.fromkeys(self.kinds, 0)
            for finding in findings:
                counts[finding.kind] = counts.get(finding.kind, 0) + 1
                log.warning(
                    "reconciliation finding %s %s: %s",
                    finding.kind,
                    " ".join(f"{k}={v}" for k, v in sorted(finding.ids.items())),
                    finding.detail,
                    extra={
                        "finding_kind": finding.kind,
                        **{f"finding_{k}": v for k, v in finding.ids.items()},
                        "finding_since": None
                        if finding.since is None
                        else finding.since.isoformat(),
                    },
                )
            for kind, count in counts.items():
                RECONCILIATION_FINDINGS.labels(kind).set(count)
            self.last = Report(self.clock(), tuple(findings), tuple(failed))
            return self.last

    async def run(self) -> None:
        """The timer (a runtime background task)."""
        await asyncio.sleep(self.first_run_s)
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # pragma: no cover - run_once catches each check's errors
                log.warning("reconciliation run failed: %r", exc)
            await asyncio.sleep(self.interval_s)


def report_json(report: Report) -> dict[str, Any]:
    return {
        "ran_at": None if report.ran_at is None else report.ran_at.isoformat(),
        "findings": [finding.as_json() for finding in report.findings],
        "failed_checks": list(report.failed_checks),
    }
