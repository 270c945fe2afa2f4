"""Each service's dead-letter store (issue 14 part 7): what its consumers gave up on, kept in its
own database beside the `<topic>.dlq` record, and the admin's way out of it.

- `record_dead_letter` is the inbox's hook (EventProcessor.on_dead_letter): one idempotent insert
  (unique on group + topic + partition + offset) in a transaction of its own, outside the failed
  handler's rolled-back one.
- `replay` runs the record again through this service's own consumer path, in process (inbox
  dedupe, retries, the same handler): only the group that failed sees it again, never the other
  groups of the source topic (re-publishing to the source topic would feed them all). Success
  marks the row `replayed`; a new failure keeps it `open` with the new error and attempts.
- `drop` marks it `dropped` with the admin's reason. Lists, replays and drops are audited in
  `dead_letter_actions` with the actor (the token's `sub`).
- `include_dead_letter_routes(router)` gives a service's router the admin routes
  (`/<service>/dead-letters...`), `dlq_depth_probe` the `backroom_dlq_depth{group}` gauge.

Records of the payment-instructions topic carry a card token, which no database of ours ever
holds: their row keeps everything but the value, and cannot be replayed from here (the token
lives on the broker for one hour only; the order is retried by checking out again)."""

import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from aiokafka.structs import ConsumerRecord
from fastapi import APIRouter, Path, Query, Request
from prometheus_client import Gauge
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import bindparam, text

from libs.events import topics
from libs.kit.auth import Admin
from libs.kit.db import Database, dead_letters
from libs.kit.errors import Conflict, NotFound
from libs.kit.pagination import DEFAULT_LIMIT, Cursor, Limit, decode_cursor, encode_cursor
from libs.kit.problems import invalid

if TYPE_CHECKING:
    from libs.kit.inbox import EventProcessor
    from libs.kit.runtime import Runtime

DLQ_DEPTH = Gauge(
    "backroom_dlq_depth",
    "Open dead letters (not yet replayed or dropped) in the service's store, by consumer group",
    ["group"],
)

Status = Literal["open", "replayed", "dropped"]
STATUSES: tuple[Status, ...] = ("open", "replayed", "dropped")
# Topics whose values never go into a database (a card token): see the module's docstring.
UNSTORED_VALUE_TOPICS = frozenset({topics.PAYMENT_INSTRUCTIONS})
UNSTORED_NOTE = "value not kept: it carries a payment token (on the broker for 1 h only)"
MAX_ERROR = 2000
MAX_ID = 2**63 - 1

# --- SQL (text constants: compiled once) -----------------------------------------------------

RECORD = text(
    "INSERT INTO dead_letters (consumer_group, source_topic, source_partition, source_offset,"
    " message_key, event_id, event_type, subject, value, headers, error, error_type, attempts,"
    " note)"
    " VALUES (:group, :topic, :partition, :offset, :key, :event_id, :event_type, :subject,"
    " :value, CAST(:headers AS json), :error, :error_type, :attempts, :note)"
    " ON CONFLICT ON CONSTRAINT uq_dead_letters_source DO NOTHING RETURNING id"
).bindparams(bindparam("value", type_=dead_letters.c.value.type))

_COLUMNS = (
    "id, consumer_group, source_topic, source_partition, source_offset, message_key, event_id,"
    " event_type, subject, error, error_type, attempts, failed_at, status, resolved_at,"
    " resolved_by, note"
)

LIST = text(
    f"SELECT {_COLUMNS} FROM dead_letters"
    " WHERE (CAST(:status AS text) IS NULL OR status = :status)"
    " AND (CAST(:type AS text) IS NULL OR event_type = :type)"
    " AND (CAST(:before AS bigint) IS NULL OR id < :before)"
    " ORDER BY id DESC LIMIT :limit"
)

ONE = text(f"SELECT {_COLUMNS}, value, headers FROM dead_letters WHERE id = :id")
ONE_FOR_UPDATE = text(
    f"SELECT {_COLUMNS}, value, headers FROM dead_letters WHERE id = :id FOR UPDATE"
)

ACTIONS = text(
    "SELECT action, actor, at, outcome, note FROM dead_letter_actions"
    " WHERE dead_letter_id = :id ORDER BY id"
)

AUDIT = text(
    "INSERT INTO dead_letter_actions (dead_letter_id, action, actor, outcome, note)"
    " VALUES (:id, :action, :actor, :outcome, :note)"
)

RESOLVE = text(
    "UPDATE dead_letters SET status = :status, resolved_at = now(), resolved_by = :actor,"
    " note = :note WHERE id = :id AND status = 'open'"
)

FAILED_AGAIN = text(
    "UPDATE dead_letters SET attempts = attempts + :attempts, error = :error,"
    " error_type = :error_type, failed_at = now() WHERE id = :id"
)

DEPTH = text(
    "SELECT consumer_group, count(*) AS depth FROM dead_letters WHERE status = 'open'"
    " GROUP BY consumer_group"
)


# --- the inbox's hook ------------------------------------------------------------------------


def _event_fields(value: bytes | None) -> tuple[str | None, str | None, str | None]:
    """(id, type, subject) of the CloudEvent in `value`, as far as it parses."""
    try:
        event = json.loads(value or b"")
    except (ValueError, UnicodeDecodeError):
        return None, None, None
    if not isinstance(event, dict):
        return None, None, None

    def field(name: str, limit: int) -> str | None:
        found = event.get(name)
        return found[:limit] if isinstance(found, str) else None

    return field("id", 64), field("type", 100), field("subject", 2000)


def dead_letter_params(
    group: str, record: ConsumerRecord[Any, Any], exc: BaseException, attempts: int
) -> dict[str, Any]:
    """RECORD's parameters for one record a consumer gave up on (pure)."""
    value: bytes = record.value or b""
    unstored = record.topic in UNSTORED_VALUE_TOPICS
    event_id, event_type, subject = _event_fields(value)
    headers = [
        [k, bytes(v).decode(errors="replace")]
        for k, v in (record.headers or ())
        if not k.startswith("x-dlq-")
    ]
    key = record.key
    return {
        "group": group,
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "key": bytes(key).decode(errors="replace") if key is not None else None,
        "event_id": event_id,
        "event_type": event_type,
        "subject": None if unstored else subject,
        "value": b"" if unstored else value,
        "headers": json.dumps(headers),
        "error": repr(exc)[:MAX_ERROR],
        "error_type": type(exc).__name__[:200],
        "attempts": attempts,
        "note": UNSTORED_NOTE if unstored else None,
    }


def dead_letter_hook(
    db: Database, group: str
) -> Callable[[ConsumerRecord[Any, Any], BaseException, int], Awaitable[None]]:
    """EventProcessor.on_dead_letter for a service: the row, in its own transaction."""

    async def record_dead_letter(
        record: ConsumerRecord[Any, Any], exc: BaseException, attempts: int
    ) -> None:
        async with db.transaction() as session:
            await session.execute(RECORD, dead_letter_params(group, record, exc, attempts))

    return record_dead_letter


# --- reads -----------------------------------------------------------------------------------


class DeadLetterOut(BaseModel):
    """One dead letter as the admin list shows it."""

    model_config = ConfigDict(extra="forbid")

    id: int
    consumer_group: str
    topic: str
    partition: int
    offset: int
    key: str | None
    event_id: str | None
    type: str | None
    subject: str | None
    error: str
    error_type: str
    attempts: int
    failed_at: datetime
    status: Status
    resolved_at: datetime | None
    resolved_by: str | None
    note: str | None

    @classmethod
    def of(cls, row: Any) -> "DeadLetterOut":
        return cls(
            id=row.id,
            consumer_group=row.consumer_group,
            topic=row.source_topic,
            partition=row.source_partition,
            offset=row.source_offset,
            key=row.message_key,
            event_id=row.event_id,
            type=row.event_type,
            subject=row.subject,
            error=row.error,
            error_type=row.error_type,
            attempts=row.attempts,
            failed_at=row.failed_at,
            status=row.status,
            resolved_at=row.resolved_at,
            resolved_by=row.resolved_by,
            note=row.note,
        )


class HeaderOut(BaseModel):
    name: str
    value: str


class ActionOut(BaseModel):
    action: Literal["list", "replay", "drop"]
    actor: str
    at: datetime
    outcome: str
    note: str | None


class DeadLetterDetail(DeadLetterOut):
    """One dead letter with its record (the CloudEvent, or the raw value when it is none), its
    headers and its audit trail."""

    event: dict[str, Any] | None = Field(description="the CloudEvent, when the value is one")
    value: str | None = Field(description="the value as text, when it is not a CloudEvent")
    headers: list[HeaderOut]
    actions: list[ActionOut]

    @classmethod
    def of_row(cls, row: Any, actions: Sequence[Any]) -> "DeadLetterDetail":
        raw: bytes = bytes(row.value or b"")
        event: dict[str, Any] | None = None
        try:
            parsed = json.loads(raw)
            event = parsed if isinstance(parsed, dict) else None
        except (ValueError, UnicodeDecodeError):
            pass
        return cls(
            **DeadLetterOut.of(row).model_dump(),
            event=event,
            value=None if event is not None else raw.decode(errors="replace"),
            headers=[HeaderOut(name=str(k), value=str(v)) for k, v in (row.headers or [])],
            actions=[ActionOut.model_validate(a._asdict()) for a in actions],
        )


class DeadLetterPage(BaseModel):
    items: list[DeadLetterOut]
    next_cursor: str | None


async def list_dead_letters(
    db: Database,
    actor: str,
    *,
    status: Status | None,
    event_type: str | None,
    limit: int,
    before: int | None,
) -> tuple[list[DeadLetterOut], bool]:
    """A page of dead letters, newest first; whether more follow. The list is audited."""
    async with db.transaction() as session:
        rows = list(
            await session.execute(
                LIST,
                {"status": status, "type": event_type, "before": before, "limit": limit + 1},
            )
        )
        note = json.dumps({"status": status, "type": event_type}, separators=(",", ":"))
        await session.execute(
            AUDIT, {"id": None, "action": "list", "actor": actor, "outcome": "ok", "note": note}
        )
    return [DeadLetterOut.of(r) for r in rows[:limit]], len(rows) > limit


async def get_dead_letter(db: Database, dead_letter_id: int) -> DeadLetterDetail:
    async with db.transaction() as session:
        row = (await session.execute(ONE, {"id": dead_letter_id})).first()
        if row is None:
            raise NotFound("dead letter")
        actions = list(await session.execute(ACTIONS, {"id": dead_letter_id}))
    return DeadLetterDetail.of_row(row, actions)


# --- replay and drop -------------------------------------------------------------------------


def as_record(row: Any) -> ConsumerRecord[bytes, bytes]:
    """The dead letter as the consumer first read it (what the inbox's process_record takes)."""
    value = bytes(row.value or b"")
    key = row.message_key.encode() if row.message_key is not None else None
    return ConsumerRecord(
        topic=row.source_topic,
        partition=row.source_partition,
        offset=row.source_offset,
        timestamp=0,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key) if key is not None else -1,
        serialized_value_size=len(value),
        headers=tuple((str(k), str(v).encode()) for k, v in (row.headers or [])),
    )


ReplayOutcome = Literal["applied", "duplicate", "ignored", "failed"]


class ReplayOut(BaseModel):
    """What a replay did: `applied` (the handler ran and committed), `duplicate` (the inbox had
    it already), `ignored` (this service no longer handles the type) — the dead letter is then
    `replayed` — or `failed` (it failed again: still `open`, with the new error)."""

    outcome: ReplayOutcome
    dead_letter: DeadLetterDetail


async def replay(
    db: Database, processor: "EventProcessor", dead_letter_id: int, actor: str
) -> ReplayOut:
    """Run the dead letter again through this service's consumer path (its group only). The row
    is locked meanwhile, so a concurrent replay or drop waits and then finds it resolved."""
    async with db.transaction() as session:
        row = (await session.execute(ONE_FOR_UPDATE, {"id": dead_letter_id})).first()
        if row is None:
            raise NotFound("dead letter")
        if row.status != "open":
            raise Conflict(f"dead letter {dead_letter_id} is {row.status}, not open")
        if row.source_topic in UNSTORED_VALUE_TOPICS:
            raise Conflict(f"dead letter {dead_letter_id} cannot be replayed: {UNSTORED_NOTE}")
        failures: list[tuple[BaseException, int]] = []

        async def give_up(_: ConsumerRecord[Any, Any], exc: BaseException, attempts: int) -> None:
            failures.append((exc, attempts))

        outcome = await processor.process_record(as_record(row), give_up=give_up)
        if failures:
            exc, attempts = failures[-1]
            error = repr(exc)[:MAX_ERROR]
            await session.execute(
                FAILED_AGAIN,
                {
                    "id": dead_letter_id,
                    "attempts": attempts,
                    "error": error,
                    "error_type": type(exc).__name__[:200],
                },
            )
            audit: dict[str, str | None] = {"outcome": "failed", "note": error}
            result: ReplayOutcome = "failed"
        else:
            result = (
                "applied"
                if outcome == "applied"
                else "duplicate"
                if outcome == "duplicate"
                else "ignored"
            )
            await session.execute(
                RESOLVE,
                {"id": dead_letter_id, "status": "replayed", "actor": actor, "note": result},
            )
            audit = {"outcome": result, "note": None}
        await session.execute(
            AUDIT, {"id": dead_letter_id, "action": "replay", "actor": actor, **audit}
        )
    return ReplayOut(outcome=result, dead_letter=await get_dead_letter(db, dead_letter_id))


async def drop(db: Database, dead_letter_id: int, actor: str, reason: str) -> DeadLetterDetail:
    """Mark an open dead letter dropped, with the admin's reason."""
    async with db.transaction() as session:
        row = (await session.execute(ONE_FOR_UPDATE, {"id": dead_letter_id})).first()
        if row is None:
            raise NotFound("dead letter")
        if row.status != "open":
            raise Conflict(f"dead letter {dead_letter_id} is {row.status}, not open")
        await session.execute(
            RESOLVE, {"id": dead_letter_id, "status": "dropped", "actor": actor, "note": reason}
        )
        await session.execute(
            AUDIT,
            {
                "id": dead_letter_id,
                "action": "drop",
                "actor": actor,
                "outcome": "dropped",
                "note": reason,
            },
        )
    return await get_dead_letter(db, dead_letter_id)


# --- the depth gauge -------------------------------------------------------------------------


def dlq_depth_probe(db: Database, own_group: str) -> Callable[[], Awaitable[None]]:
    """A MetricsPoller probe: backroom_dlq_depth{group} = open dead letters of each group of this
    service (0 for a group with none, so the alert resolves once the last one is handled)."""
    seen: set[str] = {own_group}

    async def probe() -> None:
        async with db.engine.connect() as conn:
            depths = {row.consumer_group: int(row.depth) for row in await conn.execute(DEPTH)}
        seen.update(depths)
        for group in seen:
            DLQ_DEPTH.labels(group).set(depths.get(group, 0))

    return probe


# --- the admin routes ------------------------------------------------------------------------

DeadLetterId = Annotated[int, Path(ge=1, le=MAX_ID, description="the dead letter's id")]


class DropIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    reason: str = Field(min_length=1, max_length=2000, description="why it is dropped (audited)")


def include_dead_letter_routes(router: APIRouter) -> None:
    """Add the dead-letter admin routes to a service's router (prefix `/<service>`), ahead of
    its own routes, so `/<service>/{id}`-style routes never shadow `/<service>/dead-letters`."""
    service = router.prefix.strip("/")
    before = len(router.routes)
    routes = APIRouter(prefix="/dead-letters", tags=[f"{service} dead letters"])

    @routes.get("", response_model=DeadLetterPage, name=f"{service}_list_dead_letters")
    async def list_route(
        principal: Admin,
        request: Request,
        status: Status | None = None,
        type: Annotated[str | None, Query(max_length=100, description="CloudEvent type")] = None,
        limit: Limit = DEFAULT_LIMIT,
        cursor: Cursor = None,
    ) -> DeadLetterPage:
        position = decode_cursor(cursor)
        before = None
        if position is not None:
            before = position.get("before")
            if not isinstance(before, int) or isinstance(before, bool) or before < 1:
                raise invalid("cursor", "malformed cursor", status=400)
        items, more = await list_dead_letters(
            _runtime(request).db,
            principal.sub,
            status=status,
            event_type=type,
            limit=limit,
            before=before,
        )
        next_cursor = encode_cursor({"before": items[-1].id}) if more and items else None
        return DeadLetterPage(items=items, next_cursor=next_cursor)

    @routes.get(
        "/{dead_letter_id}", response_model=DeadLetterDetail, name=f"{service}_get_dead_letter"
    )
    async def get_route(
        dead_letter_id: DeadLetterId, _: Admin, request: Request
    ) -> DeadLetterDetail:
        return await get_dead_letter(_runtime(request).db, dead_letter_id)

    @routes.post(
        "/{dead_letter_id}/replay", response_model=ReplayOut, name=f"{service}_replay_dead_letter"
    )
    async def replay_route(
        dead_letter_id: DeadLetterId, principal: Admin, request: Request
    ) -> ReplayOut:
        return await replay(
            _runtime(request).db, _runtime(request).processor, dead_letter_id, principal.sub
        )

    @routes.post(
        "/{dead_letter_id}/drop",
        response_model=DeadLetterDetail,
        name=f"{service}_drop_dead_letter",
    )
    async def drop_route(
        dead_letter_id: DeadLetterId, body: DropIn, principal: Admin, request: Request
    ) -> DeadLetterDetail:
        return await drop(_runtime(request).db, dead_letter_id, principal.sub, body.reason)

    router.include_router(routes)
    added = router.routes[before:]
    del router.routes[before:]
    router.routes[:0] = added


def _runtime(request: Request) -> "Runtime":
    runtime: Runtime = request.app.state.runtime
    return runtime
