"""What a use case sees of a database transaction: the service's repositories (`store`), the
outbox emitter (`events`) and an after-commit hook, with no SQLAlchemy in sight. `UnitOfWork`
opens such transactions on the real database; tests pass in-memory fakes of the same shape."""

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, Protocol, TypeVar

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from libs.events.envelope import CloudEvent
from libs.kit.db import Database, after_commit
from libs.kit.outbox import Emitter, OutboxBuffer

S = TypeVar("S")
S_co = TypeVar("S_co", covariant=True)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The real clock (UTC); use cases take a `Clock` so tests can move time instead of sleeping."""
    return datetime.now(UTC)


class EventSink(Protocol):
    """Where a use case's outgoing events go (the transactional outbox, or a test's list)."""

    async def emit(self, data: BaseModel, *, subject: str, topic: str | None = None) -> CloudEvent:
        """Record one event; `subject` is the aggregate id and the Kafka message key."""
        ...


class Tx(Protocol[S_co]):
    """One open transaction as a use case sees it."""

    @property
    def store(self) -> S_co: ...

    @property
    def events(self) -> EventSink: ...

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` after this transaction commits (never after a rollback)."""
        ...


class UnitOfWork(Protocol[S_co]):
    """Opens a new transaction each call: use cases that call the outside world between two
    transactions (intent, call, outcome) take one of these instead of a `Tx`. The ids are those
    the transaction's events carry (the intent's, so an outcome stays in its order's story)."""

    def __call__(
        self, correlation_id: str | None = None, causation_id: str | None = None
    ) -> AbstractAsyncContextManager[Tx[S_co]]: ...


@dataclass
class SessionTx(Generic[S]):
    """A `Tx` on a real SQLAlchemy session (an HTTP request's, an event batch's, or our own)."""

    session: AsyncSession
    store: S
    events: EventSink

    def on_commit(self, callback: Callable[[], None]) -> None:
        after_commit(self.session, callback)


class DatabaseUnitOfWork(Generic[S]):
    """`UnitOfWork` over a service's database: each call is a new transaction whose events go to
    the outbox (one insert when the block ends), committed when the block ends normally."""

    def __init__(self, db: Database, service: str, make_store: Callable[[AsyncSession], S]) -> None:
        self.db = db
        self.service = service
        self.make_store = make_store

    def __call__(
        self, correlation_id: str | None = None, causation_id: str | None = None
    ) -> AbstractAsyncContextManager[Tx[S]]:
        return self._begin(correlation_id, causation_id)

    @asynccontextmanager
    async def _begin(
        self, correlation_id: str | None, causation_id: str | None
    ) -> AsyncIterator[Tx[S]]:
        async with self.db.transaction() as session:
            buffer = OutboxBuffer()
            emitter = Emitter(session, self.service, correlation_id, causation_id, buffer=buffer)
            yield SessionTx(session, self.make_store(session), emitter)
            await buffer.flush(session)
