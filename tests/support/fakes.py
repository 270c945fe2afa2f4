"""Fakes of the kit's seams for unit tests of use cases: an event sink that records, a
transaction whose after-commit hooks run on `commit()`, a unit of work that hands those out, and
a clock that moves only when told. Services' own fakes (repositories, adapters) live beside their
unit tests and build on these."""

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

from pydantic import BaseModel

from libs.events.envelope import CloudEvent, new_event
from libs.kit.uow import Tx

S = TypeVar("S")


@dataclass
class RecordingEvents:
    """An EventSink that keeps what was emitted, in order (as the outbox would publish it)."""

    service: str = "test"
    emitted: list[BaseModel] = field(default_factory=list)
    envelopes: list[CloudEvent] = field(default_factory=list)
    # The topic override of each emit (None: the event type's own topic).
    topics: list[str | None] = field(default_factory=list)

    async def emit(self, data: BaseModel, *, subject: str, topic: str | None = None) -> CloudEvent:
        event = new_event(service=self.service, data=data, subject=subject)
        self.emitted.append(data)
        self.envelopes.append(event)
        self.topics.append(topic)
        return event

    def of_type(self, model: type[BaseModel]) -> list[BaseModel]:
        return [e for e in self.emitted if isinstance(e, model)]


@dataclass
class FakeTx(Generic[S]):
    """A Tx over in-memory repositories. Nothing rolls back: use-case tests check what a use
    case does when it succeeds, and that it raises (before writing) when it refuses."""

    store: S
    events: RecordingEvents = field(default_factory=RecordingEvents)
    hooks: list[Callable[[], None]] = field(default_factory=list)

    def on_commit(self, callback: Callable[[], None]) -> None:
        if callback not in self.hooks:
            self.hooks.append(callback)

    def commit(self) -> None:
        hooks, self.hooks = self.hooks, []
        for hook in hooks:
            hook()


@dataclass
class FakeUnitOfWork(Generic[S]):
    """A UnitOfWork over one shared in-memory store: each call is a FakeTx that "commits"
    (runs its hooks) when the block ends without an error. All transactions' events land in
    `events`; `opened` counts the transactions a use case used."""

    store: S
    events: RecordingEvents = field(default_factory=RecordingEvents)
    opened: int = 0

    def __call__(
        self, correlation_id: str | None = None, causation_id: str | None = None
    ) -> AbstractAsyncContextManager[Tx[S]]:
        return self._begin()

    @asynccontextmanager
    async def _begin(self) -> AsyncIterator[Tx[S]]:
        self.opened += 1
        tx = FakeTx(self.store, self.events)
        yield tx
        tx.commit()


class MutableClock:
    """A Clock that stands still until a test moves it."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now
