"""What a reconciliation check reports (issue 14 part 6): pure data and rules, stdlib only, so a
service's domain.py can decide findings (libs/kit/reconcile.py runs the checks)."""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

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
