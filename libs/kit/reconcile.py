"""Reconciliation (issue 14 part 6): each service's read-only consistency checks, run on a timer
off the hot path; the last run's findings are kept in memory, exposed as a gauge per kind, logged
one line per finding with its ids, and served by an admin route (`GET /<service>/reconciliation`,
`POST /<service>/reconciliation/runs`).

Why no table: the checks are read-only queries whose answer is re-derived by the next run, so a
restart loses nothing an operator needs (the next run, shortly after start, says it again), and
the findings' history lives where history belongs (the logs and Prometheus)."""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from libs.kit.metrics import PROBE_FAILURES, RECONCILIATION_FINDINGS

log = logging.getLogger(__name__)

# The kind every service's outbox check reports (the others are listed by each service's domain).
OUTBOX_STUCK = "outbox_stuck"


@dataclass(frozen=True)
class Finding:
    """One inconsistency: a stable snake_case `kind`, the ids of what it is about (`sku`,
    `order_id`, `payment_id`, `outbox_id`, ...), what is wrong in words, and since when (the time
    the subject last changed or became due; None when unknown)."""

    kind: str
    ids: Mapping[str, str]
    detail: str
    since: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "ids": dict(self.ids),
            "detail": self.detail,
            "since": None if self.since is None else self.since.isoformat(),
        }


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


def outbox_findings(
    rows: Iterable[tuple[int, str, str, str, datetime]], now: datetime, max_age_s: float
) -> list[Finding]:
    """Outbox rows (id, event_id, event_type, message_key, created_at) written more than
    `max_age_s` ago and still unpublished: the relay is not getting them out."""
    findings: list[Finding] = []
    for outbox_id, event_id, event_type, key, created_at in rows:
        age = (now - created_at).total_seconds()
        if age > max_age_s:
            findings.append(
                Finding(
                    OUTBOX_STUCK,
                    {"outbox_id": str(outbox_id), "event_id": event_id, "key": key},
                    f"{event_type} unpublished for {age:.0f}s (threshold {max_age_s:.0f}s)",
                    created_at,
                )
            )
    return findings
