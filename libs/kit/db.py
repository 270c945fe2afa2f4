"""Async SQLAlchemy engine, the per-request/per-message transaction, and the kit's own tables."""

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    MetaData,
    String,
    Table,
    Text,
    event,
    func,
)
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from libs.kit.settings import ServiceSettings

log = logging.getLogger(__name__)
_AFTER_COMMIT = "backroom_after_commit"

# Tables every service database has; each service's first migration creates them.
kit_metadata = MetaData()

outbox = Table(
    "outbox",
    kit_metadata,
    # Insertion order is publish order: the relay reads by id, so per-key order holds.
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("event_id", String(64), nullable=False, unique=True),
    Column("event_type", String(100), nullable=False),
    Column("topic", String(200), nullable=False),
    Column("message_key", String(200), nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

processed_events = Table(
    "processed_events",
    kit_metadata,
    Column("event_id", String(64), primary_key=True),
    Column("event_type", String(100), nullable=False),
    Column("topic", String(200), nullable=False),
    Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


def _discard_closed(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """Pool checkout hook: a connection whose socket the server closed is replaced (the pool
    retries the checkout with a new one)."""
    if dbapi_connection.driver_connection.is_closed():
        raise DisconnectionError("connection closed by the server")


def after_commit(session: AsyncSession, callback: Callable[[], None]) -> None:
    """Run `callback` once the session's transaction has committed (never after a rollback):
    e.g. wake the in-process worker that makes the external call an intent row asks for."""
    callbacks: list[Callable[[], None]] = session.info.setdefault(_AFTER_COMMIT, [])
    if callback not in callbacks:
        callbacks.append(callback)


class Database:
    """One service's database: an engine and short transactions on it."""

    def __init__(self, url: str, pool_size: int = 10) -> None:
        # No pool_pre_ping: with asyncpg it costs three round trips (BEGIN, ping, ROLLBACK) per
        # transaction. A connection the server closed (restart, crash) is noticed by asyncpg
        # itself and discarded on checkout below at no cost; anything subtler fails its first
        # statement, and SQLAlchemy then discards the whole pool (the inbox retries such errors).
        # hide_parameters: a statement's error must never print its values (a payment token is
        # a parameter of payments' instruction update, and the kit logs handler errors).
        self.engine: AsyncEngine = create_async_engine(
            url, pool_size=pool_size, max_overflow=pool_size, hide_parameters=True
        )
        event.listen(self.engine.sync_engine, "checkout", _discard_closed)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> "Database":
        return cls(settings.sqlalchemy_url(), settings.db_pool_size)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A unit of work: commits when the block ends normally, rolls back on any error; then
        runs what `after_commit` registered (only if it committed)."""
        async with self._sessions() as session:
            async with session.begin():
                yield session
            callbacks: list[Callable[[], None]] = session.info.pop(_AFTER_COMMIT, [])
        for callback in callbacks:
            try:
                callback()
            except Exception as exc:  # the data is committed: a hook's failure must not undo that
                log.warning("after-commit hook failed: %r", exc)

    async def dispose(self) -> None:
        await self.engine.dispose()
