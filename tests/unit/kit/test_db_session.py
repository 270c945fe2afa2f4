"""A transaction takes a connection at its first statement, not before (no database here)."""

import pytest
from sqlalchemy import text

from libs.kit.db import Database, after_commit

UNREACHABLE = "postgresql+asyncpg://nobody:x@127.0.0.1:9/none"  # port 9: nothing listens


async def test_a_transaction_without_statements_takes_no_connection_and_commits() -> None:
    db = Database(UNREACHABLE)
    committed: list[str] = []
    async with db.transaction() as session:
        after_commit(session, lambda: committed.append("hook"))
    assert committed == ["hook"], "nothing to commit is a commit: the hook runs"
    await db.dispose()


async def test_the_first_statement_connects_and_a_failure_runs_no_hook() -> None:
    db = Database(UNREACHABLE)
    committed: list[str] = []
    with pytest.raises(OSError):
        async with db.transaction() as session:
            after_commit(session, lambda: committed.append("hook"))
            await session.execute(text("SELECT 1"))
    assert committed == []
    await db.dispose()
