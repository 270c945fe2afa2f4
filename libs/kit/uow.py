"""What a use case sees of a database transaction: the service's repositories (`store`), the
outbox emitter (`events`) and an after-commit hook, with no SQLAlchemy in sight (the real ones
are in `libs/kit/transactions.py`; tests pass in-memory fakes of the same shape)."""

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from pydantic import BaseModel

from libs.events.envelope import CloudEvent

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
