"""Async SQLAlchemy engine, the per-request/per-message transaction, and the kit's own tables."""

import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar, overload

from prometheus_client import Counter
from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    event,
    func,
    text,
)
from sqlalchemy.engine import CursorResult, Dialect, IteratorResult, ScalarResult
from sqlalchemy.engine import default as engine_default
from sqlalchemy.engine.result import SimpleResultMetaData
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql import Executable
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.sql.selectable import TypedReturnsRows

from libs.kit.settings import ServiceSettings

log = logging.getLogger(__name__)
_T = TypeVar("_T")
_TP = TypeVar("_TP", bound=tuple[Any, ...])
_AFTER_COMMIT = "backroom_after_commit"
OUTBOX_COMMITTED = "backroom_outbox_committed"  # session.info: the hook that wakes the relay

UNCACHEABLE_STATEMENTS = Counter(
    "backroom_db_uncacheable_statements_total",
    "Statements SQLAlchemy had to compile from scratch because they have no cache key "
    "(e.g. any sqlalchemy.dialects.postgresql.insert, multi-row .values([...])): a hot path "
    "among them costs a full SQL compile per call",
)
_UNCACHEABLE_SEEN: set[str] = set()

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


# The kit's own hot statements, as text: fixed-shape and compiled once whatever the row count
# (ADR 0009). SQLAlchemy never caches `postgresql.insert` (its class sets inherit_cache=False) nor
# a multi-row `.values([...])`, and recompiling them costs more CPU than running them.

# The inbox: claim a batch's event ids; the ones returned are new (a duplicate returns nothing).
INBOX_CLAIM = text(
    "INSERT INTO processed_events (event_id, event_type, topic)"
    " SELECT * FROM unnest(CAST(:event_ids AS text[]), CAST(:event_types AS text[]),"
    " CAST(:topics AS text[]))"
    " ON CONFLICT DO NOTHING RETURNING event_id"
)

# The outbox: a transaction's events in one statement, in the arrays' order (the identity is
# assigned in the ORDER BY's order, and the relay publishes by id), plus the NOTIFY that wakes
# other replicas' relays once the transaction commits. Its payload is the writing process's
# origin, so that process's own relay (woken in-process after the commit) skips it.
OUTBOX_APPEND = text(
    "WITH appended AS ("
    " INSERT INTO outbox (event_id, event_type, topic, message_key, payload)"
    " SELECT e, t, tp, k, p FROM unnest(CAST(:event_ids AS text[]), CAST(:event_types AS text[]),"
    " CAST(:topics AS text[]), CAST(:keys AS text[]), CAST(:payloads AS text[]))"
    " WITH ORDINALITY AS r(e, t, tp, k, p, n) ORDER BY n)"
    " SELECT pg_notify(:channel, :origin)"
)

# The relay: take (delete) the oldest batch, if this relay holds the publishing lock. The lock is
# an InitPlan, taken once before the scan; no row comes back when another relay holds it. The
# delete is undone if publishing fails or the process dies before the commit. Run by the relay
# on its own asyncpg connection ($1 the lock id, $2 the batch size).
OUTBOX_TAKE_SQL = (
    "DELETE FROM outbox WHERE id IN ("
    " SELECT id FROM outbox WHERE (SELECT pg_try_advisory_xact_lock($1))"
    " ORDER BY id LIMIT $2)"
    " RETURNING id, event_id, event_type, topic, message_key, payload, created_at"
)


def _discard_closed(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """Pool checkout hook: a connection whose socket the server closed is replaced (the pool
    retries the checkout with a new one)."""
    if dbapi_connection.driver_connection.is_closed():
        raise DisconnectionError("connection closed by the server")


def _count_uncacheable(
    conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
) -> None:
    """before_cursor_execute hook: count (and name once, in the log) statements compiled without
    a cache key; /metrics shows the count, and the e2e suite asserts a checkout adds none."""
    if (
        getattr(context, "cache_hit", None) is engine_default.NO_CACHE_KEY
        and getattr(context, "compiled", None) is not None  # raw driver SQL has no key to miss
        and not getattr(context, "isddl", False)
    ):
        UNCACHEABLE_STATEMENTS.inc()
        head = " ".join(statement.split())[:120]
        if head not in _UNCACHEABLE_SEEN and len(_UNCACHEABLE_SEEN) < 100:
            _UNCACHEABLE_SEEN.add(head)
            log.warning("statement compiled on every call (no cache key): %s", head)


class DbSession:
    """One transaction on a service's database, as repositories see it: `execute`, `scalar` and
    `scalars` of SQLAlchemy Core statements on the transaction's connection, and `info`, what
    this transaction carries beside (after-commit hooks). A Core connection rather than an ORM
    session: we map no objects, and the ORM's session costs about 0.2 CPU-ms more per
    transaction and 0.06 per statement (ADR 0009). The connection is taken from the pool at the
    first statement: a request refused before it touches the database takes none."""

    __slots__ = ("_connection", "_engine", "info")

    def __init__(
        self,
        engine: AsyncEngine | None = None,
        info: dict[str, Any] | None = None,
        *,
        connection: AsyncConnection | None = None,
    ) -> None:
        self._engine = engine
        self._connection = connection  # given: the caller began it and ends it
        self.info: dict[str, Any] = info if info is not None else {}

    async def _begun(self) -> AsyncConnection:
        if self._connection is None:
            assert self._engine is not None
            connection = await self._engine.connect()
            try:
                await connection.begin()
            except BaseException:
                await connection.close()
                raise
            self._connection = connection
        return self._connection

    async def _end(self, commit: bool) -> None:
        """Commit (or roll back) and give the connection back, if a statement took one."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            if commit:
                await connection.commit()
            else:
                await connection.rollback()
        finally:
            await connection.close()

    # Typed as AsyncConnection's own methods: a typed select gives typed rows and scalars.
    @overload
    async def execute(
        self, statement: TypedReturnsRows[_TP], parameters: Any = None
    ) -> CursorResult[_TP]: ...
    @overload
    async def execute(self, statement: Executable, parameters: Any = None) -> CursorResult[Any]: ...
    async def execute(self, statement: Executable, parameters: Any = None) -> CursorResult[Any]:
        connection = await self._begun()
        result = await _run_text(connection, statement, parameters)
        if result is not None:
            return result  # type: ignore[return-value]  # the same Result API, on raw rows
        return await connection.execute(statement, parameters)

    @overload
    async def scalar(
        self, statement: TypedReturnsRows[tuple[_T]], parameters: Any = None
    ) -> _T | None: ...
    @overload
    async def scalar(self, statement: Executable, parameters: Any = None) -> Any: ...
    async def scalar(self, statement: Executable, parameters: Any = None) -> Any:
        connection = await self._begun()
        result = await _run_text(connection, statement, parameters)
        if result is not None:
            return result.scalar()
        return await connection.scalar(statement, parameters)

    @overload
    async def scalars(
        self, statement: TypedReturnsRows[tuple[_T]], parameters: Any = None
    ) -> ScalarResult[_T]: ...
    @overload
    async def scalars(self, statement: Executable, parameters: Any = None) -> ScalarResult[Any]: ...
    async def scalars(self, statement: Executable, parameters: Any = None) -> ScalarResult[Any]:
        connection = await self._begun()
        result = await _run_text(connection, statement, parameters)
        if result is not None:
            return result.scalars()
        return await connection.scalars(statement, parameters)


# --- the hot statements, on asyncpg (issue 10) ---
#
# A module-level `text()` statement (ADR 0009: the hot paths are fixed-shape text) runs on the
# transaction's asyncpg connection directly: compiled once by SQLAlchemy's own asyncpg dialect
# (the same SQL, `$n` placeholders, bind casts and bind processors it would send), prepared through
# the dialect's statement cache, its rows handed back as a SQLAlchemy Result. What it skips is
# SQLAlchemy's per-statement execution (the greenlet hop, the execution context, the cursor
# adapter), 8-13 % of a service's CPU in the profile. Anything else (a select() or update()
# construct, `text().columns()`, expanding or missing binds, executemany) takes SQLAlchemy's path.


@dataclass(frozen=True, slots=True)
class _TextPlan:
    sql: str
    names: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]


class TextResult(IteratorResult[Any]):
    """A fast-path statement's rows, with the command's row count as CursorResult has it."""

    rowcount: int


# id(statement) -> (statement, its plan or None when it must take SQLAlchemy's path). The
# statement is held so that its id is never reused; a process has a few hundred of them.
_TEXT_PLANS: dict[int, tuple[TextClause, _TextPlan | None]] = {}
_TEXT_PLANS_MAX = 4096
_ROWCOUNT = re.compile(r"(?:SELECT|UPDATE|DELETE|INSERT \d+|MERGE) (\d+)")


def _text_plan(statement: TextClause, dialect: Dialect) -> _TextPlan | None:
    found = _TEXT_PLANS.get(id(statement))
    if found is not None and found[0] is statement:
        return found[1]
    compiled = statement.compile(dialect=dialect)
    plan: _TextPlan | None = None
    names = compiled.positiontup
    if (
        dialect.paramstyle == "numeric_dollar"
        and names is not None
        and not compiled.literal_execute_params
        and not compiled.post_compile_params
        and not any(bind.expanding for bind in compiled.binds.values())
    ):
        processors = compiled._bind_processors
        found_processors = [processors.get(n) for n in names]
        # A tuple type's binds have a sequence of processors: SQLAlchemy's path only.
        if all(p is None or callable(p) for p in found_processors):
            plan = _TextPlan(
                compiled.string,
                tuple(names),
                tuple(p if callable(p) else None for p in found_processors),
            )
    if len(_TEXT_PLANS) < _TEXT_PLANS_MAX:
        _TEXT_PLANS[id(statement)] = (statement, plan)
    return plan


async def _run_text(
    connection: AsyncConnection, statement: Any, parameters: Any
) -> TextResult | None:
    """Run `statement` on asyncpg if it can take the fast path; None if it cannot."""
    if type(statement) is not TextClause or not (
        parameters is None or isinstance(parameters, dict)
    ):
        return None
    dialect = connection.dialect
    plan = _text_plan(statement, dialect)
    if plan is None:
        return None
    params = parameters or {}
    try:
        args = [
            params[name] if process is None else process(params[name])
            for name, process in zip(plan.names, plan.processors, strict=True)
        ]
    except KeyError:
        return None  # a bind without a value: SQLAlchemy's path says which
    # The begun connection's DBAPI adapter, without get_raw_connection()'s greenlet hop (it is
    # checked out already: reading it does no I/O).
    sync = connection.sync_connection
    adapted = sync.connection.dbapi_connection if sync is not None else None
    if adapted is None:
        return None
    async with adapted._execute_mutex:
        if not adapted._started:
            await adapted._start_transaction()
        try:
            prepared, attributes = await adapted._prepare(
                plan.sql,
                dialect._invalidate_schema_cache_asof,  # type: ignore[attr-defined]
            )
            rows = await prepared.fetch(*args)
        except Exception as error:
            await _raise_translated(connection, adapted, plan.sql, args, error)
            raise  # not reached: _raise_translated always raises
    status = prepared.get_statusmsg()
    matched = _ROWCOUNT.match(status or "")
    keys = [attribute.name for attribute in attributes or ()]
    result = TextResult(SimpleResultMetaData(keys), (tuple(row) for row in rows))
    result.rowcount = int(matched.group(1)) if matched else -1
    return result


async def _raise_translated(
    connection: AsyncConnection, adapted: Any, sql: str, args: list[Any], error: Exception
) -> None:
    """The error SQLAlchemy's path raises for it: the dialect's DBAPI translation wrapped in
    sqlalchemy.exc (IntegrityError, OperationalError...), and the connection invalidated when the
    dialect calls it a disconnect, so the pool never hands it out again."""
    dbapi = connection.dialect.loaded_dbapi
    try:
        adapted._handle_exception(error)
    except dbapi.Error as translated:
        disconnected = connection.dialect.is_disconnect(translated, adapted, None)
        if disconnected:
            await connection.invalidate(translated)
        raise DBAPIError.instance(
            sql,
            args,
            translated,
            dbapi.Error,
            connection_invalidated=disconnected,
            dialect=connection.dialect,
        ) from error


def after_commit(session: DbSession, callback: Callable[[], None]) -> None:
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
        # max_overflow=0: `pool_size` is the ceiling and every connection opened stays pooled.
        # An overflow connection is closed when given back, so a burst above the pool opened
        # and closed connections over and over, each paying a SCRAM exchange (4096 PBKDF2
        # rounds, in Python) and asyncpg's set-up: about 1 CPU-ms per checkout under overload
        # (issue 10). A burst now waits its turn for a pooled connection.
        self.engine: AsyncEngine = create_async_engine(
            url, pool_size=pool_size, max_overflow=0, hide_parameters=True
        )
        event.listen(self.engine.sync_engine, "checkout", _discard_closed)
        event.listen(self.engine.sync_engine, "before_cursor_execute", _count_uncacheable)
        # Who to tell once a transaction that wrote outbox rows has committed (the relay sets
        # it); every transaction of this database carries the hook in its `info`.
        self.outbox_listeners: list[Callable[[], None]] = []

    def _outbox_committed(self) -> None:
        for listener in self.outbox_listeners:
            listener()

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> "Database":
        return cls(settings.sqlalchemy_url(), settings.db_pool_size)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[DbSession]:
        """A unit of work: commits when the block ends normally, rolls back on any error; then
        runs what `after_commit` registered (only if it committed)."""
        session = DbSession(self.engine, {OUTBOX_COMMITTED: self._outbox_committed})
        try:
            yield session
        except BaseException:
            try:
                await session._end(commit=False)
            except Exception as exc:  # the error that ended the block is the one to raise
                log.warning("rollback failed: %r", exc)
            raise
        await session._end(commit=True)
        callbacks: list[Callable[[], None]] = session.info.pop(_AFTER_COMMIT, [])
        for callback in callbacks:
            try:
                callback()
            except Exception as exc:  # the data is committed: a hook's failure must not undo that
                log.warning("after-commit hook failed: %r", exc)

    async def dispose(self) -> None:
        await self.engine.dispose()


# --- metrics (issue 14) ---

# Outbox depth and the age of its oldest row, for the metrics poller (libs/kit/metrics.py): read
# on a timer, never per event. The relay deletes published rows, so what is here is unpublished.
OUTBOX_STATS = text(
    "SELECT count(*) AS depth,"
    " coalesce(extract(epoch FROM now() - min(created_at)), 0) AS oldest_s FROM outbox"
)


async def outbox_stats(db: Database) -> tuple[int, float]:
    """(unpublished outbox rows, seconds since the oldest of them was written; 0 if none)."""
    async with db.engine.connect() as conn:
        row = (await conn.execute(OUTBOX_STATS)).one()
    return int(row.depth), max(0.0, float(row.oldest_s))


# --- reconciliation (issue 14) ---

# Unpublished outbox rows older than :age_s, oldest first (the relay reads by id, so they are the
# lowest ids; the table holds only what is not yet published), at most :limit; with the database's
# clock, which wrote created_at.
STUCK_OUTBOX_ROWS = text(
    "SELECT id, event_id, event_type, message_key, created_at, now() AS now FROM outbox"
    " WHERE created_at < now() - make_interval(secs => CAST(:age_s AS double precision))"
    " ORDER BY id LIMIT :limit"
)


async def stuck_outbox_rows(
    db: Database, age_s: float, limit: int
) -> tuple[list[tuple[int, str, str, str, datetime]], datetime]:
    """(the stuck rows as (id, event_id, event_type, message_key, created_at), the database's
    now)."""
    async with db.engine.connect() as conn:
        rows = (await conn.execute(STUCK_OUTBOX_ROWS, {"age_s": age_s, "limit": limit})).all()
        now = rows[0].now if rows else (await conn.execute(text("SELECT now()"))).scalar_one()
    found = [(r.id, r.event_id, r.event_type, r.message_key, r.created_at) for r in rows]
    return found, now


# --- dead letters (issue 14) ---

# Each service's own record of what its consumers gave up on (libs/kit/deadletters.py): written
# beside the `<topic>.dlq` record, outside the failed handler's rolled-back transaction, once per
# source record (the unique key), and resolved by an admin (replayed to this group only, or
# dropped). Every service's `00NN_dead_letters` migration creates these tables.
dead_letters = Table(
    "dead_letters",
    kit_metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("consumer_group", String(200), nullable=False),
    Column("source_topic", String(249), nullable=False),
    Column("source_partition", Integer, nullable=False),
    Column("source_offset", BigInteger, nullable=False),
    Column("message_key", Text),
    # From the CloudEvent when the value parses as one (an unparseable record has none).
    Column("event_id", String(64)),
    Column("event_type", String(100)),
    Column("subject", Text),
    Column("value", LargeBinary, nullable=False),  # the record's value byte for byte
    Column("headers", JSON, nullable=False),  # [[name, value], ...] as received
    Column("error", Text, nullable=False),
    Column("error_type", String(200), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("failed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("status", String(10), nullable=False, server_default="open"),
    Column("resolved_at", DateTime(timezone=True)),
    Column("resolved_by", String(200)),
    Column("note", Text),
    UniqueConstraint(
        "consumer_group",
        "source_topic",
        "source_partition",
        "source_offset",
        name="uq_dead_letters_source",
    ),
    CheckConstraint("status IN ('open', 'replayed', 'dropped')", name="ck_dead_letters_status"),
    # The depth gauge and the admin's list of open ones.
    Index("ix_dead_letters_open", "consumer_group", "id", postgresql_where=text("status = 'open'")),
    # Retention: resolved rows, oldest first.
    Index("ix_dead_letters_resolved", "resolved_at", postgresql_where=text("status <> 'open'")),
)

# The audit trail: who listed, replayed or dropped dead letters, when, and how it went.
dead_letter_actions = Table(
    "dead_letter_actions",
    kit_metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    # NULL for a list (it names no one dead letter; its filter is the note).
    Column("dead_letter_id", BigInteger, ForeignKey("dead_letters.id", ondelete="CASCADE")),
    Column("action", String(10), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("outcome", String(20), nullable=False),
    Column("note", Text),
    CheckConstraint("action IN ('list', 'replay', 'drop')", name="ck_dead_letter_actions_action"),
    Index("ix_dead_letter_actions_dead_letter", "dead_letter_id", "id"),
    Index("ix_dead_letter_actions_at", "at"),
)

# --- retention (issue 14) ---

# The pruning job's range scan over old inbox rows (libs/kit/retention.py).
Index("ix_processed_events_processed_at", processed_events.c.processed_at)
