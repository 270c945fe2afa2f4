"""The real transactions behind `libs/kit/uow.py`'s protocols: a use case's `Tx` on a SQLAlchemy
session, and a `UnitOfWork` that opens new ones on a service's database."""

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

from libs.kit.db import Database, DbSession, after_commit
from libs.kit.outbox import Emitter, OutboxBuffer
from libs.kit.uow import EventSink, Tx

S = TypeVar("S")


@dataclass
class SessionTx(Generic[S]):
    """A `Tx` on a real SQLAlchemy session (an HTTP request's, an event batch's, or our own)."""

    session: DbSession
    store: S
    events: EventSink

    def on_commit(self, callback: Callable[[], None]) -> None:
        after_commit(self.session, callback)


class DatabaseUnitOfWork(Generic[S]):
    """`UnitOfWork` over a service's database: each call is a new transaction whose events go to
    the outbox (one insert when the block ends), committed when the block ends normally."""

    def __init__(self, db: Database, service: str, make_store: Callable[[DbSession], S]) -> None:
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
