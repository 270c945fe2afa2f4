"""The email queue's SQL on the real PostgreSQL: claims skip rows another claim holds, and an
outcome recorded on a claim that was taken over changes nothing."""

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from services.notifications.db import Store
from services.notifications.domain import Announcement, QueuedEmail
from tests.integration.notifications.conftest import Notifications


def queued(now: datetime) -> QueuedEmail:
    key = f"test-{uuid.uuid4().hex}:order_confirmed"
    return QueuedEmail(
        id=str(uuid.uuid4()),
        dedupe_key=key,
        template="order_confirmed",
        to="queue@example.com",
        message_id=f"<{key.replace(':', '/')}@backroom>",
        mail_subject="s",
        text="t\n",
        subject="ord-x",
        order_id=None,
        sku=None,
        correlation_id="c",
        causation_id="e",
        queued_at=now,
    )


async def test_claims_skip_held_rows_and_a_lost_claim_records_nothing(
    notifications: Notifications,
) -> None:
    db = notifications.app.state.runtime.db
    now = datetime.now(UTC)
    tomorrow = now + timedelta(days=1)
    emails = [queued(now) for _ in range(3)]
    ids = [e.id for e in emails]
    async with db.transaction() as session:
        store = Store.of(session)
        for email in emails:
            assert await store.notifications.queue_email(email)
        assert not await store.notifications.queue_email(emails[0]), "one per dedupe key"
        # Out of the running service's way: held by "someone else" until tomorrow.
        await session.execute(
            text("UPDATE notifications SET lease_until = :t WHERE id = ANY(:ids)"),
            {"t": tomorrow, "ids": ids},
        )
    try:
        later = tomorrow + timedelta(seconds=1)
        lease = later + timedelta(seconds=60)
        async with db.transaction() as first:
            held = await Store.of(first).notifications.claim_emails(later, lease, 10_000)
            assert sorted(e.id for e in held if e.id in ids) == sorted(ids)
            async with db.transaction() as second:
                others = await Store.of(second).notifications.claim_emails(later, lease, 10_000)
            assert [e.id for e in others if e.id in ids] == [], "SKIP LOCKED"
        stale = next(e for e in held if e.id == ids[0])
        assert stale.lease_until == lease

        # Its lease ran out; another worker claims it again.
        after = lease + timedelta(seconds=1)
        async with db.transaction() as session:
            again = await Store.of(session).notifications.claim_emails(
                after, after + timedelta(seconds=60), 10_000
            )
        taken = next(e for e in again if e.id == stale.id)
        announcement = Announcement("NotificationSent", str(uuid.uuid4()), "{}")
        async with db.transaction() as session:
            log = Store.of(session).notifications
            assert not await log.conclude_email(stale, "sent", None, after, announcement)
            assert await log.conclude_email(taken, "sent", None, after, announcement)
            assert not await log.conclude_email(taken, "sent", None, after, announcement)
        async with db.transaction() as session:
            status = await session.scalar(
                text("SELECT status || '/' || attempts FROM notifications WHERE id = :id"),
                {"id": stale.id},
            )
        assert status == "sent/2"
    finally:
        async with db.transaction() as session:
            await session.execute(
                text("DELETE FROM notifications WHERE id = ANY(:ids)"), {"ids": ids}
            )
