"""The hot text() statements on asyncpg directly (libs/kit/db.py, issue 10): in the same transaction
as SQLAlchemy's statements, with SQLAlchemy's results, bind processing and errors."""

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import bindparam, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError, ProgrammingError

from libs.kit.db import Database, TextResult, processed_events
from tests.integration.kit.harness import settings_for

CLAIM = text(
    "INSERT INTO processed_events (event_id, event_type, topic) VALUES (:id, :type, :topic)"
    " ON CONFLICT DO NOTHING RETURNING event_id, topic"
)
COUNT = text("SELECT count(*) FROM processed_events WHERE event_id = ANY(:ids)")
TYPED = text(
    "SELECT CAST(:doc AS jsonb) ->> 'who' AS who, CAST(:n AS integer) + CAST(:n AS integer) AS twice"
).bindparams(bindparam("doc", type_=JSONB))
FORGET = text("DELETE FROM processed_events WHERE event_id = ANY(:ids)")


@pytest.fixture
async def db(kit_databases: None) -> AsyncIterator[Database]:
    database = Database.from_settings(settings_for("kit_a", "kit-fast-path"))
    yield database
    await database.dispose()


def new_ids(n: int) -> list[str]:
    return [f"fast-{uuid.uuid4().hex}" for _ in range(n)]


async def test_a_rollback_undoes_text_and_construct_statements_alike(db: Database) -> None:
    first, second = new_ids(2)

    class Undo(Exception):
        pass

    with pytest.raises(Undo):
        async with db.transaction() as session:
            # The fast path first: it must begin the transaction SQLAlchemy then continues.
            await session.execute(CLAIM, {"id": first, "type": "T", "topic": "t"})
            await session.execute(
                processed_events.insert().values(event_id=second, event_type="T", topic="t")
            )
            seen = await session.scalar(COUNT, {"ids": [first, second]})
            assert seen == 2
            raise Undo
    async with db.transaction() as session:
        assert await session.scalar(COUNT, {"ids": [first, second]}) == 0


async def test_results_are_sqlalchemys(db: Database) -> None:
    ids = new_ids(3)
    async with db.transaction() as session:
        rows = [
            (await session.execute(CLAIM, {"id": i, "type": "T", "topic": f"t-{n}"})).one()
            for n, i in enumerate(ids)
        ]
        assert [(r.event_id, r.topic) for r in rows] == [(i, f"t-{n}") for n, i in enumerate(ids)]
        again = await session.execute(CLAIM, {"id": ids[0], "type": "T", "topic": "t"})
        assert isinstance(again, TextResult)  # it took the fast path
        assert again.first() is None  # a duplicate claims nothing
        assert list(await session.scalars(CLAIM, {"id": ids[0], "type": "T", "topic": "t"})) == []
        typed = (await session.execute(TYPED, {"doc": {"who": "ada"}, "n": 21})).one()
        assert (typed.who, typed.twice, typed._mapping["who"]) == ("ada", 42, "ada")
        deleted = await session.execute(FORGET, {"ids": ids})
        assert deleted.rowcount == 3
        # A construct reads what the fast path wrote, in the same transaction, and back.
        left = await session.scalars(
            select(processed_events.c.event_id).where(processed_events.c.event_id.in_(ids))
        )
        assert list(left) == []


async def test_errors_are_sqlalchemys_and_the_transaction_stays_usable_after_rollback(
    db: Database,
) -> None:
    [taken] = new_ids(1)
    duplicate = text(
        "INSERT INTO processed_events (event_id, event_type, topic) VALUES (:id, 'T', 't')"
    )
    async with db.transaction() as session:
        await session.execute(duplicate, {"id": taken})
    with pytest.raises(IntegrityError) as raised:
        async with db.transaction() as session:
            await session.execute(duplicate, {"id": taken})
    assert "processed_events_pkey" in str(raised.value)
    with pytest.raises(ProgrammingError):
        async with db.transaction() as session:
            await session.execute(text("SELECT no_such_column FROM processed_events"))
    async with db.transaction() as session:  # the pool's connections are fine afterwards
        assert await session.scalar(COUNT, {"ids": [taken]}) == 1
        await session.execute(FORGET, {"ids": [taken]})
