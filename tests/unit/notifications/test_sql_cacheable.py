"""The statements notifications' repositories rewrote for SQLAlchemy's statement cache are
cacheable and given exactly their parameters (no database: a recording session)."""

from datetime import UTC, datetime
from typing import cast

import pytest
from sqlalchemy.exc import NoResultFound

from libs.kit.db import DbSession
from services.notifications.db import Deliveries, NotificationLog, Subscriptions
from services.notifications.domain import Announcement, QueuedEmail
from tests.support.statements import RecordingSession, assert_cacheable

NOW = datetime(2025, 1, 1, tzinfo=UTC)
ANNOUNCEMENT = Announcement("NotificationSent", "e-1", "{}")


def _email(lease_until: datetime | None) -> QueuedEmail:
    return QueuedEmail(
        id="n-1",
        dedupe_key="o-1:order_confirmed",
        template="order_confirmed",
        to="a@example.com",
        message_id="<m-1@example.com>",
        mail_subject="Confirmed",
        text="Thanks",
        subject="o-1",
        order_id="o-1",
        sku=None,
        correlation_id=None,
        causation_id=None,
        queued_at=NOW,
        lease_until=lease_until,
    )


@pytest.fixture
def session() -> RecordingSession:
    return RecordingSession()


async def test_queueing_an_email_is_cacheable(session: RecordingSession) -> None:
    log = NotificationLog(cast(DbSession, session))

    assert await log.queue_email(_email(None)) is False  # no row back: its dedupe key was taken

    [sent] = session.sent
    assert_cacheable(sent)


@pytest.mark.parametrize("lease_until", [NOW, None])
async def test_concluding_an_email_is_cacheable(
    session: RecordingSession, lease_until: datetime | None
) -> None:
    log = NotificationLog(cast(DbSession, session))

    assert await log.conclude_email(_email(lease_until), "sent", None, NOW, ANNOUNCEMENT) is False

    [sent] = session.sent
    assert_cacheable(sent)


async def test_logging_a_webhook_is_cacheable(session: RecordingSession) -> None:
    log = NotificationLog(cast(DbSession, session))

    await log.log_webhook("n-2", "e-1:s-1", "OrderConfirmed", "https://h", None, "sent", None, NOW)

    [sent] = session.sent
    assert_cacheable(sent)


async def test_adding_a_subscription_is_cacheable(session: RecordingSession) -> None:
    with pytest.raises(NoResultFound):  # the recording session returns no row
        await Subscriptions(cast(DbSession, session)).add(
            "s-1", "https://h", ["OrderConfirmed"], "secret"
        )

    [sent] = session.sent
    assert_cacheable(sent)


async def test_enqueueing_deliveries_is_cacheable(session: RecordingSession) -> None:
    await Deliveries(cast(DbSession, session)).enqueue(ANNOUNCEMENT)

    [sent] = session.sent
    assert_cacheable(sent)
