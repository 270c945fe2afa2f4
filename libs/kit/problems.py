"""RFC 9457 problem details: one exception type for expected failures and the handlers that render them."""

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from libs.kit.errors import Conflict, DomainError, Forbidden, Invalid, NotFound, Unavailable

PROBLEM_JSON = "application/problem+json"
_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class Problem(Exception):
    """An expected failure with a status, rendered as problem+json."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        type_: str = "about:blank",
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title or _TITLES.get(status, "Error")
        self.type = type_
        self.errors = errors
        self.headers = headers


def not_found(what: str) -> Problem:
    return Problem(404, f"{what} not found")


def conflict(detail: str) -> Problem:
    return Problem(409, detail)


def invalid(field: str, message: str, status: int = 422) -> Problem:
    """Bad input in one named field."""
    return Problem(
        status,
        f"{field}: {message}",
        errors=[{"field": field, "message": message}],
    )


def problem_response(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    type_: str = "about:blank",
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": type_,
        "title": title or _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def field_name(loc: tuple[Any, ...]) -> str:
    """`("body", "lines", 0, "sku")` -> `lines[0].sku`: the path as a client would write it."""
    parts = list(loc)
    if parts and parts[0] in {"body", "query", "path", "header"}:
        parts = parts[1:] or parts
    name = ""
    for part in parts:
        if isinstance(part, int):
            name += f"[{part}]"
        else:
            name += ("." if name else "") + str(part)
    return name


def domain_problem(exc: DomainError) -> Problem:
    """The one mapping from a use case's domain error to its HTTP answer."""
    match exc:
        case NotFound():
            return Problem(404, exc.detail)
        case Conflict():
            return Problem(409, exc.detail)
        case Forbidden():
            return Problem(403, exc.detail)
        case Invalid():
            errors = [{"field": e.field, "message": e.message} for e in exc.errors] or None
            return Problem(400 if exc.malformed else 422, exc.detail, errors=errors)
        case Unavailable():
            headers = None
            if exc.retry_after_s is not None:
                headers = {"Retry-After": str(exc.retry_after_s)}
            return Problem(503, exc.detail, headers=headers)
    return Problem(500, "unexpected error; it has been logged")


def _field_error(error: dict[str, Any]) -> dict[str, str]:
    """One pydantic error as the client sees it: the field and the message, never the input
    (which may be a card number or a secret)."""
    if error.get("type") == "json_invalid":
        # FastAPI's loc is ("body", <offset>): the body as a whole is what is malformed.
        reason = error.get("ctx", {}).get("error", "")
        position = error.get("loc", ("body", "?"))[-1]
        return {"field": "body", "message": f"invalid JSON at position {position}: {reason}"}
    loc = tuple(error.get("loc", ()))
    if error.get("type") == "missing" and loc[:1] == ("header",):
        # A required header (Idempotency-Key): 422 naming it, as the routes answered when they
        # checked it themselves.
        # Not "... is required": tools that learn from 422 answers read that as a body field.
        return {"field": field_name(loc), "message": "missing: send this header"}
    return {"field": field_name(loc), "message": error.get("msg", "invalid")}


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError) -> JSONResponse:
        problem = domain_problem(exc)
        return problem_response(
            problem.status, problem.detail, errors=problem.errors, headers=problem.headers
        )

    @app.exception_handler(Problem)
    async def _problem(_: Request, exc: Problem) -> JSONResponse:
        return problem_response(
            exc.status,
            exc.detail,
            title=exc.title,
            type_=exc.type,
            errors=exc.errors,
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [_field_error(e) for e in exc.errors()]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "invalid request"
        return problem_response(422, detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem_response(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))
