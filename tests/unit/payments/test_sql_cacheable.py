"""The statements payments' repositories rewrote for SQLAlchemy's statement cache are cacheable
and given exactly their parameters (no database: a recording session)."""

from typing import cast

import pytest
from sqlalchemy.exc import NoResultFound

from libs.kit.db import Database, DbSession
from services.payments.db import PaymentOrders, PgSandboxLedger
from services.payments.domain import LedgerEntry
from tests.support.statements import RecordingDatabase, RecordingSession, assert_cacheable


@pytest.mark.parametrize("stock_reserved", [False, True])
async def test_locking_an_order_is_one_cacheable_statement(stock_reserved: bool) -> None:
    session = RecordingSession()

    with pytest.raises(NoResultFound):  # the recording session returns no row
        await PaymentOrders(cast(DbSession, session)).lock(
            "o-1", "c-1", stock_reserved=stock_reserved
        )

    [sent] = session.sent
    assert_cacheable(sent)


async def test_every_statement_of_a_ledger_step_is_cacheable() -> None:
    db = RecordingDatabase()
    entry = LedgerEntry(key="capture:o-1", operation="capture", amount=100, currency="EUR")

    await PgSandboxLedger(cast(Database, db)).apply(entry.key, lambda before: entry)

    lock, read, write = db.session.sent
    for sent in (lock, read, write):
        assert_cacheable(sent)
