"""Retention (issue 14 part 7): a job on a timer (`retention_interval_s`) deleting rows a service
no longer needs, oldest first, in bounded batches (each its own short transaction, an index
range scan with a LIMIT), off every hot path. Counted in `backroom_pruned_rows_total{table}`.

The kit prunes what every service has (the inbox's processed events, resolved dead letters and
the audit of lists); each service registers its own tables (`PRUNE` in its db.py: idempotency
keys, quotes, webhook deliveries). A task is a DELETE taking `:cutoff` (rows older than it go)
and `:limit` (at most that many per statement); the age comes from a setting named by the task.

Why the defaults (libs/kit/settings.py) are what they are:
- inbox 14 days: a processed-events row must outlive every possible redelivery of its record.
  Records stay on a topic for the broker's retention (7 days by default) and a group whose
  committed offsets expired re-reads from the earliest: twice that keeps every record still on a
  topic in the inbox. Stripe retries a webhook for 3 days.
- idempotency keys 7 days: a key must outlive the client's retry window (Stripe keeps its own
  for 24 h); a week is a wide margin for a row of a few dozen bytes.
- quotes 1 day after they expire: an expired quote is refused anyway; a day keeps it readable
  while an order placed just before its expiry is looked at.
- webhook deliveries 30 days after they finished (delivered or failed for good): the admin's
  delivery log; pending ones are never pruned.
- dead letters 30 days after they were replayed or dropped (open ones never), their audit trail
  with them; list audits after the same age."""

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import Counter
from sqlalchemy import TextClause, text

from libs.kit.db import Database
from libs.kit.settings import ServiceSettings

log = logging.getLogger(__name__)

PRUNED_ROWS = Counter(
    "backroom_pruned_rows_total", "Rows the retention job deleted, by table", ["table"]
)


@dataclass(frozen=True)
class PruneTask:
    """One kind of row to prune: a DELETE with `:cutoff` and `:limit` returning the deleted rows'
    count in its rowcount, and the ServiceSettings field holding the age (seconds)."""

    table: str
    statement: TextClause
    age_setting: str


# The kit's own tables, in every service database (index on each time column: libs/kit/db.py).
KIT_PRUNE = (
    PruneTask(
        "processed_events",
        text(
            "DELETE FROM processed_events WHERE event_id IN (SELECT event_id FROM processed_events"
            " WHERE processed_at < :cutoff ORDER BY processed_at LIMIT :limit)"
        ),
        "retention_inbox_s",
    ),
    PruneTask(
        "dead_letters",
        text(
            "DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters"
            " WHERE status <> 'open' AND resolved_at < :cutoff ORDER BY resolved_at LIMIT :limit)"
        ),
        "retention_dead_letters_s",
    ),
    PruneTask(
        "dead_letter_actions",
        text(
            "DELETE FROM dead_letter_actions WHERE id IN (SELECT id FROM dead_letter_actions"
            " WHERE dead_letter_id IS NULL AND at < :cutoff ORDER BY at LIMIT :limit)"
        ),
        "retention_dead_letters_s",
    ),
)


def cutoff(now: datetime, age_s: float) -> datetime:
    """Rows older than this go (pure)."""
    return now - timedelta(seconds=age_s)


class Pruner:
    """Runs every registered task each `interval_s`: batches of `batch_size` until a batch comes
    back short or `max_batches` ran (the rest waits for the next pass, so one pass never holds
    the database for long)."""

    def __init__(
        self,
        db: Database,
        settings: ServiceSettings,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.tasks: list[PruneTask] = list(KIT_PRUNE)

    def add(self, *tasks: PruneTask) -> None:
        for task in tasks:
            if not isinstance(getattr(self.settings, task.age_setting, None), int | float):
                raise ValueError(f"{task.table}: no setting {task.age_setting}")
            self.tasks.append(task)

    async def prune(self, task: PruneTask) -> int:
        """Prune one task's rows as far as this pass goes; the rows deleted."""
        age_s: float = getattr(self.settings, task.age_setting)
        params: dict[str, Any] = {
            "cutoff": cutoff(self.clock(), age_s),
            "limit": self.settings.retention_batch_size,
        }
        total = 0
        for _ in range(max(1, self.settings.retention_max_batches)):
            async with self.db.transaction() as session:
                deleted = (await session.execute(task.statement, params)).rowcount or 0
            if deleted:
                PRUNED_ROWS.labels(task.table).inc(deleted)
            total += deleted
            if deleted < self.settings.retention_batch_size:
                break
        return total

    async def run_once(self) -> dict[str, int]:
        """One pass over every task; a failing task is logged and the others still run."""
        done: dict[str, int] = {}
        for task in self.tasks:
            try:
                done[task.table] = done.get(task.table, 0) + await self.prune(task)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("pruning %s failed (next pass retries): %r", task.table, exc)
        if any(done.values()):
            log.info("retention pruned %s", done)
        return done

    async def run(self) -> None:
        """Background task: a pass, then `retention_interval_s` of sleep, forever."""
        while True:
            await self.run_once()
            await asyncio.sleep(self.settings.retention_interval_s)
