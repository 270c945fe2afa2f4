"""Issue 14: a request is accepted exactly when it matches the documented schema. Bodies take no
lax coercion (`false` or "1" as an integer, 0 as a boolean or a date-time), the rules the kit
checks are in the schema (ISO 4217 currencies, clean text in free-form JSON), and a required
header is documented required and refused as before (422 naming it)."""

from typing import Annotated, Any

import pytest
from fastapi import FastAPI, Header
from fastapi.testclient import TestClient
from pydantic import Field, ValidationError

from libs.kit.app import CLEAN_JSON_SCHEMA, documented_openapi
from libs.kit.problems import install_problem_handlers
from libs.kit.validation import CurrencyCode, RequestBody, Timestamp


class Line(RequestBody):
    sku: str
    quantity: int = Field(ge=1)
    limit: int | None = None


class Body(RequestBody):
    lines: list[Line]
    active: bool = True
    expected_at: Timestamp | None = None
    currency: CurrencyCode = "EUR"
    attributes: dict[str, Any] = Field(default_factory=dict)


def errors(body: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as refused:
        Body.model_validate(body)
    return [".".join(map(str, e["loc"])) for e in refused.value.errors()]


def test_an_integer_may_be_written_with_a_zero_fraction_as_json_schema_allows() -> None:
    body = Body.model_validate({"lines": [{"sku": "A", "quantity": 2.0, "limit": 5.0}]})
    assert body.lines[0].quantity == 2 and isinstance(body.lines[0].quantity, int)
    assert body.lines[0].limit == 5


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"lines": [{"sku": "A", "quantity": False}]}, "lines.0.quantity"),
        ({"lines": [{"sku": "A", "quantity": "2"}]}, "lines.0.quantity"),
        ({"lines": [{"sku": "A", "quantity": 2.5}]}, "lines.0.quantity"),
        ({"lines": [{"sku": 1, "quantity": 1}]}, "lines.0.sku"),
        ({"lines": [], "active": 0}, "active"),
        ({"lines": [], "active": "true"}, "active"),
        ({"lines": [], "expected_at": 0}, "expected_at"),
        ({"lines": [], "expected_at": "0"}, "expected_at"),
        ({"lines": [], "currency": "XYZ"}, "currency"),
    ],
)
def test_lax_coercions_are_refused(body: dict[str, Any], field: str) -> None:
    assert errors(body) == [field]


def test_a_timestamp_is_an_rfc3339_string() -> None:
    body = Body.model_validate({"lines": [], "expected_at": "2026-12-01T10:00:00+01:00"})
    assert body.expected_at is not None and body.expected_at.utcoffset() is not None


def make_app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.post("/things")
    async def post(
        body: Body, key: Annotated[str, Header(alias="Idempotency-Key", min_length=1)]
    ) -> dict[str, str]:
        return {"key": key}

    return app


def test_the_document_carries_the_rules_and_the_required_header() -> None:
    doc = documented_openapi(make_app())
    schemas = doc["components"]["schemas"]
    currency = schemas["Body"]["properties"]["currency"]
    assert "EUR" in currency["enum"] and "XYZ" not in currency["enum"]
    attributes = schemas["Body"]["properties"]["attributes"]
    assert attributes["additionalProperties"] == {
        "$ref": f"#/components/schemas/{CLEAN_JSON_SCHEMA}"
    }
    assert "pattern" in attributes["propertyNames"]
    assert CLEAN_JSON_SCHEMA in schemas
    [header] = doc["paths"]["/things"]["post"]["parameters"]
    assert header["name"] == "Idempotency-Key" and header["required"] is True


def test_a_missing_required_header_is_a_422_naming_it() -> None:
    client = TestClient(make_app())
    missing = client.post("/things", json={"lines": []})
    assert missing.status_code == 422
    assert [e["field"] for e in missing.json()["errors"]] == ["Idempotency-Key"]
    sent = client.post("/things", json={"lines": []}, headers={"Idempotency-Key": "k1"})
    assert sent.status_code == 200 and sent.json() == {"key": "k1"}
