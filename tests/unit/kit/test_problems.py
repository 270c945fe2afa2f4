"""Errors reach clients as RFC 9457 problem+json that names the offending field."""

from typing import Annotated

from fastapi import FastAPI, Header
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from libs.kit.app import RequestContextMiddleware
from libs.kit.problems import Problem, install_problem_handlers, invalid


class Line(BaseModel):
    sku: str = Field(max_length=10)
    quantity: int = Field(gt=0)


class Body(BaseModel):
    lines: list[Line]


def make_app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(RequestContextMiddleware)
    install_problem_handlers(app)

    @app.post("/things")
    async def things(
        body: Body, key: Annotated[str, Header(alias="Idempotency-Key")]
    ) -> dict[str, str]:
        if body.lines[0].sku == "taken":
            raise Problem(409, "sku taken")
        if body.lines[0].sku == "ghost":
            raise invalid("lines[0].sku", "unknown sku")
        return {"ok": key}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("bug")

    return app


client = TestClient(make_app(), raise_server_exceptions=False)


def test_validation_errors_name_each_field() -> None:
    response = client.post("/things", json={"lines": [{"sku": "a", "quantity": -1}]})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 422 and body["title"]
    fields = {e["field"] for e in body["errors"]}
    assert fields == {"lines[0].quantity", "Idempotency-Key"}


def test_business_errors_are_problems_too() -> None:
    headers = {"Idempotency-Key": "k"}
    conflict = client.post(
        "/things", json={"lines": [{"sku": "taken", "quantity": 1}]}, headers=headers
    )
    assert conflict.status_code == 409 and conflict.json()["detail"] == "sku taken"
    unknown = client.post(
        "/things", json={"lines": [{"sku": "ghost", "quantity": 1}]}, headers=headers
    )
    assert unknown.status_code == 422
    assert unknown.json()["errors"] == [{"field": "lines[0].sku", "message": "unknown sku"}]


def test_unexpected_errors_are_500_problems_with_request_id() -> None:
    response = client.get("/boom", headers={"X-Request-ID": "req-42"})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["x-request-id"] == "req-42"


def test_request_id_is_generated_when_missing() -> None:
    response = client.post("/things", json={"lines": []})
    assert len(response.headers["x-request-id"]) >= 16
