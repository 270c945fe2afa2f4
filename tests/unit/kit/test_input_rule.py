"""The kit's one input rule: a control character in any string a client sends (body at any
depth, keys, query, path, Idempotency-Key) is a 422 naming the field; nothing a client sends is
a 500 (issue 9, item 6)."""

from typing import Annotated, Any

import pytest
from fastapi import Body, Depends, FastAPI, Header, Path
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from libs.kit.app import RequestContextMiddleware, refuse_unsafe_input
from libs.kit.problems import install_problem_handlers
from libs.kit.validation import MULTILINE

CALLS: list[str] = []


class Line(BaseModel):
    sku: str
    quantity: int
    note: Annotated[str | None, MULTILINE] = None


class Order(BaseModel):
    lines: list[Line]
    shipping_address: dict[str, str]
    description: Annotated[str | None, MULTILINE] = Field(default=None, max_length=500)


def make_app() -> FastAPI:
    app = FastAPI(dependencies=[Depends(refuse_unsafe_input)])
    app.add_middleware(RequestContextMiddleware)
    install_problem_handlers(app)

    @app.post("/orders")
    async def place(
        body: Order, key: Annotated[str | None, Header(alias="Idempotency-Key")] = None
    ) -> dict[str, str]:
        CALLS.append("place")
        return {"ok": "yes"}

    @app.post("/free")
    async def free(body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        CALLS.append("free")
        return body

    @app.get("/items/{sku}")
    async def item(sku: Annotated[str, Path()], q: str | None = None) -> dict[str, str]:
        CALLS.append("item")
        return {"sku": sku}

    return app


client = TestClient(make_app(), raise_server_exceptions=False)
GOOD: dict[str, Any] = {
    "lines": [{"sku": "MUG", "quantity": 1}],
    "shipping_address": {"city": "Paris"},
}


@pytest.fixture(autouse=True)
def _no_calls() -> None:
    CALLS.clear()


def refused(response: Any) -> list[str]:
    """The fields a 422 names; the route itself never ran."""
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert CALLS == []
    return [e["field"] for e in response.json()["errors"]]


def test_a_clean_request_passes() -> None:
    assert client.post("/orders", json=GOOD, headers={"Idempotency-Key": "k-1"}).status_code == 200
    assert client.get("/items/MUG?q=tea").status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (GOOD | {"shipping_address": {"city": "Pa\u0000ris"}}, "shipping_address.city"),
        (GOOD | {"lines": [{"sku": "M\u0000", "quantity": 1}]}, "lines[0].sku"),
        (GOOD | {"shipping_address": {"ci\u0000ty": "Paris"}}, "shipping_address"),
        (GOOD | {"shipping_address": {"city": "tab\there"}}, "shipping_address.city"),
        (GOOD | {"shipping_address": {"city": "line\nbreak"}}, "shipping_address.city"),
        (GOOD | {"shipping_address": {"city": "del\u007f"}}, "shipping_address.city"),
        (GOOD | {"shipping_address": {"city": "c1\u0085"}}, "shipping_address.city"),
        (GOOD | {"description": "bell\u0007"}, "description"),
    ],
)
def test_control_characters_in_the_body_are_named(body: dict[str, Any], field: str) -> None:
    assert refused(client.post("/orders", json=body)) == [field]


def test_the_message_names_the_character_not_the_value() -> None:
    body = GOOD | {"shipping_address": {"city": "secret\u0000value"}}
    response = client.post("/orders", json=body)
    [error] = response.json()["errors"]
    assert error["message"] == "must not contain control characters (U+0000 at position 6)"
    assert "secret" not in response.text


def test_every_bad_field_is_named_in_document_order() -> None:
    body = {
        "lines": [{"sku": "a\u0001", "quantity": 1}, {"sku": "b", "quantity": 1, "x": "\u0002"}],
        "shipping_address": {"city": "\u0003"},
    }
    assert refused(client.post("/orders", json=body)) == [
        "lines[0].sku",
        "lines[1].x",
        "shipping_address.city",
    ]


def test_multiline_fields_allow_tab_and_newlines_but_not_other_controls() -> None:
    text = "First line\r\n\tindented\nlast"
    ok = GOOD | {"description": text, "lines": [{"sku": "M", "quantity": 1, "note": text}]}
    assert client.post("/orders", json=ok).status_code == 200
    CALLS.clear()
    bad = GOOD | {"lines": [{"sku": "M", "quantity": 1, "note": "a\u0000b"}]}
    assert refused(client.post("/orders", json=bad)) == ["lines[0].note"]


def test_free_form_bodies_are_checked_at_any_depth_keys_included() -> None:
    body = {"a": {"b": [{"c": "ok"}, {"d": ["x", "y\u0000"]}]}, "k\u0001": 1}
    assert refused(client.post("/free", json=body)) == ["body", "a.b[1].d[1]"]


def test_raw_utf8_c1_controls_are_caught_too() -> None:
    raw = b'{"a": "x\xc2\x85y"}'  # U+0085 written as UTF-8, not as an escape
    response = client.post("/free", content=raw, headers={"Content-Type": "application/json"})
    assert refused(response) == ["a"]


def test_lone_surrogates_are_refused() -> None:
    raw = b'{"a": "\\ud800"}'
    response = client.post("/free", content=raw, headers={"Content-Type": "application/json"})
    assert refused(response) == ["a"]
    paired = b'{"a": "\\ud83d\\ude00"}'  # an escaped emoji is fine
    ok = client.post("/free", content=paired, headers={"Content-Type": "application/json"})
    assert ok.status_code == 200 and ok.json() == {"a": "\U0001f600"}


@pytest.mark.parametrize(
    "number", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"1" * 400 + b".5"]
)
def test_non_finite_numbers_are_refused(number: bytes) -> None:
    raw = b'{"a": {"b": ' + number + b"}}"
    response = client.post("/free", content=raw, headers={"Content-Type": "application/json"})
    assert refused(response) == ["a.b"]


def test_query_parameters_are_checked() -> None:
    assert refused(client.get("/items/MUG?q=a%00b")) == ["q"]
    assert refused(client.get("/items/MUG?q=a%C2%85b")) == ["q"]
    assert refused(client.get("/items/MUG?x%01=1")) == ["query"]


def test_path_parameters_are_checked() -> None:
    assert refused(client.get("/items/M%00UG")) == ["sku"]


def test_the_idempotency_key_header_is_checked() -> None:
    # The HTTP client refuses C0 in a header; a C1 control arrives as a latin-1 byte.
    response = client.post("/orders", json=GOOD, headers={b"Idempotency-Key": b"k\x85"})
    assert refused(response) == ["Idempotency-Key"]


# ---- nothing a client sends is a 500 ----


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b'{"lines": [', "application/json", 422),  # malformed JSON
        (b'{"lines": []}', "text/plain", 422),  # not declared as JSON
        (b"\xff\xfe garbage", "application/json", 422),  # not UTF-8
        (b'{"a": ' + b"9" * 5000 + b"}", "application/json", 400),  # past Python's int limit
        (b"[" * 5000 + b"]" * 5000, "application/json", 400),  # nesting past the stack
        (b'"just a string"', "application/json", 422),
        (b"", "application/json", 422),
    ],
    ids=["malformed", "text-plain", "not-utf8", "huge-int", "deep", "not-an-object", "empty"],
)
def test_malformed_bodies_are_client_errors(content: bytes, content_type: str, status: int) -> None:
    response = client.post("/orders", content=content, headers={"Content-Type": content_type})
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"


def test_malformed_json_names_the_body() -> None:
    response = client.post(
        "/orders", content=b'{"lines": [', headers={"Content-Type": "application/json"}
    )
    [error] = response.json()["errors"]
    assert error["field"] == "body" and error["message"].startswith("invalid JSON at position")


def test_a_request_id_with_control_characters_is_replaced() -> None:
    response = client.get("/items/MUG", headers={b"X-Request-ID": b"id\x85"})
    assert response.status_code == 200
    assert (
        response.headers["x-request-id"].isascii() and len(response.headers["x-request-id"]) == 32
    )
    kept = client.get("/items/MUG", headers={"X-Request-ID": "trace-1"})
    assert kept.headers["x-request-id"] == "trace-1"
