"""The statements orders' repositories rewrote for SQLAlchemy's statement cache are cacheable and
given exactly their parameters (no database: a recording session)."""

from typing import cast

from libs.kit.db import DbSession
from services.orders.db import IdempotencyKeys
from tests.support.statements import RecordingSession, assert_cacheable


async def test_the_idempotency_key_claim_is_cacheable() -> None:
    session = RecordingSession()

    claimed = await IdempotencyKeys(cast(DbSession, session)).claim("c-1", "k-1", "h", "o-1")

    assert claimed is False  # the recording session returns no row: the key was taken
    [sent] = session.sent
    assert_cacheable(sent)
