"""The pure parts of the dead-letter store, retention and `backroom dlq` (issue 14 part 7)."""

import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord
from fastapi import APIRouter

from libs.events import topics
from libs.kit.cli import build_parser, list_dead_letters
from libs.kit.deadletters import (
    UNSTORED_NOTE,
    DeadLetterDetail,
    as_record,
    dead_letter_params,
    include_dead_letter_routes,
)
from libs.kit.retention import KIT_PRUNE, Pruner, cutoff
from libs.kit.settings import ServiceSettings


def record(topic: str = "backroom.orders", value: bytes | None = None) -> ConsumerRecord[Any, Any]:
    event = {"id": "ev-1", "type": "OrderPlaced", "subject": "ord-1", "data": {"x": 1}}
    body = json.dumps(event).encode() if value is None else value
    return ConsumerRecord(
        topic=topic,
        partition=2,
        offset=41,
        timestamp=0,
        timestamp_type=0,
        key=b"ord-1",
        value=body,
        checksum=None,
        serialized_key_size=5,
        serialized_value_size=len(body),
        headers=(("ce_type", b"OrderPlaced"), ("x-dlq-error", b"old")),
    )


def test_a_dead_letter_row_keeps_the_record_and_the_failure() -> None:
    params = dead_letter_params("inventory", record(), ValueError("boom"), 5)
    assert params["group"] == "inventory"
    assert (params["topic"], params["partition"], params["offset"]) == ("backroom.orders", 2, 41)
    assert (params["event_id"], params["event_type"], params["subject"]) == (
        "ev-1",
        "OrderPlaced",
        "ord-1",
    )
    assert params["key"] == "ord-1"
    assert params["error"] == "ValueError('boom')"
    assert params["error_type"] == "ValueError"
    assert params["attempts"] == 5
    # A replayed record's earlier x-dlq-* headers are not carried along.
    assert json.loads(params["headers"]) == [["ce_type", "OrderPlaced"]]
    assert params["value"] == record().value


def test_an_unparseable_record_is_kept_without_event_fields() -> None:
    params = dead_letter_params("inventory", record(value=b"\xff not json"), ValueError(), 1)
    assert (params["event_id"], params["event_type"], params["subject"]) == (None, None, None)
    assert params["value"] == b"\xff not json"


def test_a_payment_instruction_value_never_reaches_the_database() -> None:
    params = dead_letter_params(
        "payments", record(topic=topics.PAYMENT_INSTRUCTIONS), RuntimeError(), 5
    )
    assert params["value"] == b""
    assert params["subject"] is None
    assert params["note"] == UNSTORED_NOTE
    assert params["event_id"] == "ev-1"  # still findable


def row_of(params: dict[str, Any]) -> SimpleNamespace:
    return SimpleNamespace(
        id=7,
        consumer_group=params["group"],
        source_topic=params["topic"],
        source_partition=params["partition"],
        source_offset=params["offset"],
        message_key=params["key"],
        event_id=params["event_id"],
        event_type=params["event_type"],
        subject=params["subject"],
        value=params["value"],
        headers=json.loads(params["headers"]),
        error=params["error"],
        error_type=params["error_type"],
        attempts=params["attempts"],
        failed_at=datetime.now(UTC),
        status="open",
        resolved_at=None,
        resolved_by=None,
        note=params["note"],
    )


def test_a_stored_dead_letter_is_replayed_as_the_record_it_was() -> None:
    original = record()
    again = as_record(row_of(dead_letter_params("inventory", original, ValueError(), 5)))
    assert (again.topic, again.partition, again.offset) == ("backroom.orders", 2, 41)
    assert (again.key, again.value) == (original.key, original.value)
    assert list(again.headers) == [("ce_type", b"OrderPlaced")]


def test_the_detail_shows_the_event_or_else_the_raw_value() -> None:
    parsed = DeadLetterDetail.of_row(row_of(dead_letter_params("g", record(), ValueError(), 1)), [])
    assert parsed.event is not None and parsed.event["id"] == "ev-1"
    assert parsed.value is None
    raw = DeadLetterDetail.of_row(
        row_of(dead_letter_params("g", record(value=b"oops"), ValueError(), 1)), []
    )
    assert (raw.event, raw.value) == (None, "oops")


def test_dead_letter_routes_come_before_the_services_own_path_parameters() -> None:
    router = APIRouter(prefix="/orders")

    @router.get("/{order_id}")
    async def get_order(order_id: str) -> None: ...

    include_dead_letter_routes(router)
    paths = [getattr(r, "path", "") for r in router.routes]
    assert paths.index("/orders/dead-letters") < paths.index("/orders/{order_id}")
    assert {
        "/orders/dead-letters",
        "/orders/dead-letters/{dead_letter_id}",
        "/orders/dead-letters/{dead_letter_id}/replay",
        "/orders/dead-letters/{dead_letter_id}/drop",
    } <= set(paths)


# --- retention ---


def test_the_cutoff_is_the_age_before_now() -> None:
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    assert cutoff(now, 86400) == now - timedelta(days=1)


def test_default_ages_keep_the_inbox_longer_than_the_brokers_retention() -> None:
    settings = ServiceSettings()
    seven_days = 7 * 86400
    assert settings.retention_inbox_s > seven_days
    assert settings.retention_idempotency_keys_s >= 86400
    assert {t.age_setting for t in KIT_PRUNE} <= set(ServiceSettings.model_fields)


class FakeResult:
    def __init__(self, rowcount: int) -> None:
        self.rowcount = rowcount


class FakeSession:
    def __init__(self, db: "FakeDb") -> None:
        self.db = db

    async def execute(self, statement: Any, params: dict[str, Any]) -> FakeResult:
        self.db.calls.append(params)
        taken = min(params["limit"], self.db.rows)
        self.db.rows -= taken
        return FakeResult(taken)


class FakeDb:
    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.calls: list[dict[str, Any]] = []

    def transaction(self) -> Any:
        db = self

        class Tx:
            async def __aenter__(self) -> FakeSession:
                return FakeSession(db)

            async def __aexit__(self, *exc: object) -> None:
                return None

        return Tx()


async def test_a_pass_deletes_in_bounded_batches_and_stops_at_its_cap() -> None:
    settings = ServiceSettings(retention_batch_size=10, retention_max_batches=3)
    db = FakeDb(rows=25)
    pruner = Pruner(db, settings)  # type: ignore[arg-type]
    assert await pruner.prune(KIT_PRUNE[0]) == 25  # 10 + 10 + 5: the short batch ends it
    assert len(db.calls) == 3
    db = FakeDb(rows=100)
    pruner = Pruner(db, settings)  # type: ignore[arg-type]
    assert await pruner.prune(KIT_PRUNE[0]) == 30  # the cap: the rest waits for the next pass
    assert {c["limit"] for c in db.calls} == {10}


# --- the CLI ---


class FakeResponse:
    def __init__(self, status_code: int, body: Any) -> None:
        self.status_code = status_code
        self.body = body
        self.text = json.dumps(body)

    def json(self) -> Any:
        return self.body


class FakeClient:
    """Pages of dead letters as the gateway answers them."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, dict[str, Any]]] = []

    def request(self, method: str, path: str, params: dict[str, Any]) -> FakeResponse:
        self.asked.append((path, dict(params)))
        if path == "/orders/dead-letters" and "cursor" not in params:
            return FakeResponse(200, {"items": [{"id": 3}, {"id": 2}], "next_cursor": "c1"})
        if path == "/orders/dead-letters":
            return FakeResponse(200, {"items": [{"id": 1}], "next_cursor": None})
        return FakeResponse(200, {"items": [], "next_cursor": None})


def test_dlq_list_follows_every_page_of_every_service() -> None:
    client = FakeClient()
    found = list_dead_letters(client, ["orders", "payments"], "open", None)
    assert [(e["service"], e["id"]) for e in found] == [("orders", 3), ("orders", 2), ("orders", 1)]
    assert client.asked[0] == ("/orders/dead-letters", {"limit": 200, "status": "open"})
    assert client.asked[1][1]["cursor"] == "c1"
    assert client.asked[2][0] == "/payments/dead-letters"


def test_dlq_commands_parse() -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["dlq", "--gateway", "http://gw", "drop", "orders", "12", "--reason", "x"]
    )
    assert (args.dlq_command, args.service, args.id, args.reason) == ("drop", "orders", 12, "x")
    args = parser.parse_args(["dlq", "list", "--service", "payments", "--status", "open", "--json"])
    assert (args.service, args.status, args.json) == ("payments", "open", True)
    with pytest.raises(SystemExit):
        parser.parse_args(["dlq", "replay", "nowhere", "1"])
