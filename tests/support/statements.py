"""A session that records the statements repositories send, without a database, and the check
that each one is cacheable by SQLAlchemy (compiled once, not on every execution) and is given
exactly the parameters its SQL names."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.exc import NoResultFound
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler


@dataclass(frozen=True)
class Sent:
    statement: ClauseElement
    params: dict[str, Any]


class NoRows:
    """The result of a statement that matched nothing (as an ON CONFLICT DO NOTHING that did)."""

    def first(self) -> None:
        return None

    def one_or_none(self) -> None:
        return None

    def one(self) -> Any:
        raise NoResultFound("the recording session returns no rows")

    def all(self) -> list[Any]:
        return []

    def __iter__(self) -> Any:
        return iter(())


@dataclass
class RecordingSession:
    """Stands in for an DbSession: keeps every statement sent, answers that nothing matched."""

    sent: list[Sent] = field(default_factory=list)

    async def execute(
        self, statement: ClauseElement, params: dict[str, Any] | None = None
    ) -> NoRows:
        self.sent.append(Sent(statement, dict(params or {})))
        return NoRows()

    async def scalar(self, statement: ClauseElement, params: dict[str, Any] | None = None) -> None:
        self.sent.append(Sent(statement, dict(params or {})))


@dataclass
class RecordingDatabase:
    """Stands in for the kit's Database: every transaction is the same recording session."""

    session: RecordingSession = field(default_factory=RecordingSession)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[RecordingSession]:
        yield self.session


def assert_cacheable(sent: Sent) -> None:
    """`sent` has a cache key (SQLAlchemy compiles it once) and names exactly the parameters it
    was given: none missing (construct_params raises), none that its SQL ignores."""
    statement = sent.statement
    assert statement._generate_cache_key() is not None, f"never cached by SQLAlchemy: {statement}"
    compiled = statement.compile(dialect=asyncpg_dialect())  # type: ignore[no-untyped-call]
    assert isinstance(compiled, SQLCompiler)
    compiled.construct_params(sent.params)
    assert set(sent.params) <= set(compiled.binds), f"parameters its SQL ignores: {statement}"
