"""The reconciliation every service runs, on the real database: an outbox row left unpublished
past the threshold is a finding with its ids, logged and counted in the gauge, which goes back
to 0 once the row is gone."""

import uuid

from prometheus_client import REGISTRY
from sqlalchemy import text

from libs.kit.outbox import Emitter
from libs.kit.reconcile import OUTBOX_STUCK
from libs.kit.runtime import Runtime
from tests.integration.kit.harness import Ping, create_database, settings_for


def gauge(kind: str) -> float | None:
    return REGISTRY.get_sample_value("backroom_reconciliation_findings", {"kind": kind})


async def test_an_outbox_row_unpublished_too_long_is_found_until_it_goes() -> None:
    await create_database("kit_reconcile")
    runtime = Runtime(settings_for("kit_reconcile", "kit-reconcile"))  # not started: no relay
    db = runtime.db
    try:
        async with db.transaction() as session:
            await session.execute(text("DELETE FROM outbox"))
            emitter = Emitter(session, "kit-reconcile", correlation_id=str(uuid.uuid4()))
            for position in range(2):
                await emitter.emit(Ping(key="k", position=position), subject="k", topic="t.x")
        async with db.transaction() as session:  # the first written an hour ago
            old = (
                await session.execute(
                    text(
                        "UPDATE outbox SET created_at = now() - interval '1 hour'"
                        " WHERE id = (SELECT min(id) FROM outbox) RETURNING id, event_id"
                    )
                )
            ).one()

        report = await runtime.reconciler.run_once()

        assert [(f.kind, f.ids["outbox_id"], f.ids["event_id"]) for f in report.findings] == [
            (OUTBOX_STUCK, str(old.id), old.event_id)
        ]
        assert report.failed_checks == ()
        assert gauge(OUTBOX_STUCK) == 1

        async with db.transaction() as session:
            await session.execute(text("DELETE FROM outbox"))
        assert (await runtime.reconciler.run_once()).findings == ()
        assert gauge(OUTBOX_STUCK) == 0
    finally:
        await db.dispose()
