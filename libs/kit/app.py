"""The FastAPI app factory every service uses: request ids, problem+json, health, metrics, lifespan."""

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, TypeVar

import structlog
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from libs.kit import tracing
from libs.kit.auth import TokenVerifier
from libs.kit.db import DbSession
from libs.kit.logging import configure_logging
from libs.kit.outbox import Emitter, OutboxBuffer
from libs.kit.problems import Problem, field_name, install_problem_handlers, problem_response
from libs.kit.reconcile import Report
from libs.kit.runtime import Runtime
from libs.kit.transactions import SessionTx
from libs.kit.validation import (
    CLEAN_TEXT_PATTERN,
    body_models,
    multiline_fields,
    suspect_json,
    suspect_query,
    unsafe_character,
    unsafe_fields,
)

S = TypeVar("S")

HTTP_REQUESTS = Counter(
    "backroom_http_requests_total", "HTTP requests", ["method", "route", "status"]
)
HTTP_SECONDS = Histogram(
    "backroom_http_request_seconds", "HTTP request latency", ["method", "route"]
)
log = logging.getLogger(__name__)


class RequestContextMiddleware:
    """Takes or makes the X-Request-ID, binds it to every log line, echoes it, and times the request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value.decode("latin-1")[:200]
                break
        # An id that is not printable ASCII would carry control characters into every log line
        # and event of the request: such an id is replaced, like a missing one.
        if not (request_id.isascii() and request_id.isprintable()):
            request_id = ""
        request_id = request_id or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        started_response = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                started_response = True
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message["headers"] = headers
            await send(message)

        with structlog.contextvars.bound_contextvars(
            request_id=request_id, correlation_id=request_id
        ):
            try:
                await self.app(scope, receive, send_with_id)
            except Exception as exc:
                # Rendered here rather than by Starlette's outermost error middleware, so the
                # 500 still carries the request id.
                log.exception("unhandled error: %r", exc)
                if started_response:
                    raise
                response = problem_response(500, "unexpected error; it has been logged")
                await response(scope, receive, send_with_id)
            finally:
                route = scope.get("route")
                path = getattr(route, "path", "unmatched")
                HTTP_REQUESTS.labels(scope["method"], path, str(status)).inc()
                HTTP_SECONDS.labels(scope["method"], path).observe(time.perf_counter() - started)


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def request_id(request: Request) -> str:
    return str(request.state.request_id)


async def transaction(request: Request) -> AsyncIterator[DbSession]:
    """The request's unit of work: commits after the route returns, rolls back if it raises."""
    async with get_runtime(request).db.transaction() as session:
        yield session


# scope="function": commit when the route returns, before the response is sent (FastAPI's default
# request scope would run the commit after the client already has its 2xx).
Session = Annotated[DbSession, Depends(transaction, scope="function")]


# Dependencies are `async def` even when they never await: FastAPI runs a plain `def` dependency
# in a worker thread, a thread hop per dependency per request.
async def emitter(request: Request, session: Session) -> AsyncIterator[Emitter]:
    """Events caused by this request, written to the outbox in the request's transaction: held
    back and inserted with one statement when the route returns (this dependency closes before
    the session it depends on commits; if the route raises, nothing is written)."""
    buffer = OutboxBuffer()
    yield Emitter(session, get_runtime(request).service, request_id(request), buffer=buffer)
    await buffer.flush(session)


async def runtime_dependency(request: Request) -> Runtime:
    return get_runtime(request)


Events = Annotated[Emitter, Depends(emitter, scope="function")]
RuntimeDep = Annotated[Runtime, Depends(runtime_dependency)]


def transaction_of(
    make_store: Callable[[DbSession], S],
) -> Callable[[DbSession, Emitter], Awaitable[SessionTx[S]]]:
    """A dependency giving the request's transaction as a use case sees it: the service's
    repositories on the request's session, and its outbox emitter. Use it as
    `Annotated[SessionTx[Store], Depends(transaction_of(Store), scope="function")]`."""

    async def dependency(session: Session, events: Events) -> SessionTx[S]:
        return SessionTx(session, make_store(session), events)

    return dependency


# The request headers the services read as data (the others are the server's or auth's business).
CHECKED_HEADERS = ("Idempotency-Key",)


async def refuse_unsafe_input(request: Request) -> None:
    """THE rule for what clients send, run before every route of every service (an app-wide
    dependency, so path parameters are known): no string in the JSON body (at any depth, keys
    included), the query, the path parameters or a checked header may hold a control character
    (U+0000-U+001F, U+007F-U+009F; TAB, LF, CR are allowed in fields marked MULTILINE) or a lone
    surrogate, and no number may be NaN or infinite. Refused with 422 naming each field. A clean
    request pays for two regular-expression scans of raw bytes and a look at its headers."""
    errors: list[dict[str, str]] = []
    query = request.scope.get("query_string", b"")
    if query and suspect_query(query):
        for key, value in request.query_params.multi_items():
            problem = unsafe_character(key)
            if problem is not None:
                errors.append({"field": "query", "message": f"a parameter name {problem}"})
            elif (problem := unsafe_character(value)) is not None:
                errors.append({"field": field_name(("query", key)), "message": problem})
    for name, param in request.path_params.items():
        if isinstance(param, str) and (problem := unsafe_character(param)) is not None:
            errors.append({"field": field_name(("path", name)), "message": problem})
    for header in CHECKED_HEADERS:
        header_value = request.headers.get(header)
        if header_value is not None and (problem := unsafe_character(header_value)) is not None:
            errors.append({"field": header, "message": problem})
    route = request.scope.get("route")
    body_field = getattr(route, "body_field", None)
    if body_field is not None:
        body = await request.body()  # already read (and parsed) by FastAPI: both are cached
        if body and suspect_json(body):
            try:
                document = await request.json()
            except Exception:  # not JSON: FastAPI's own validation answers for it
                document = None
            multiline: frozenset[tuple[str, ...]] = frozenset()
            for model in body_models(body_field.field_info.annotation):
                multiline |= multiline_fields(model)
            errors += [
                {"field": e.field, "message": e.message} for e in unsafe_fields(document, multiline)
            ]
    if errors:
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        raise Problem(422, detail, errors=errors)


def create_service_app(
    runtime: Runtime,
    *,
    routers: list[APIRouter],
    title: str,
    on_startup: Callable[[Runtime], Awaitable[None]] | None = None,
    on_shutdown: Callable[[Runtime], Awaitable[None]] | None = None,
) -> FastAPI:
    """Build a service's ASGI app around its runtime; nothing connects, and nothing global (the
    process's logging) changes, until the lifespan starts: building an app to read what it
    subscribes to (bench/invariants.py) leaves the caller's process as it was. Raises
    AuthConfigError when the settings give no safe way to verify tokens."""
    settings = runtime.settings
    verifier = TokenVerifier.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.service_name, settings.log_level, settings.log_json)
        tracing.start(settings)  # issue 14: nothing when off
        await runtime.start()
        if on_startup is not None:
            await on_startup(runtime)
        try:
            yield
        finally:
            if on_shutdown is not None:
                await on_shutdown(runtime)
            await runtime.stop()
            tracing.stop()

    app = FastAPI(
        title=title,
        version="1",
        lifespan=lifespan,
        dependencies=[Depends(refuse_unsafe_input)],
    )
    app.state.runtime = runtime
    app.state.token_verifier = verifier
    app.add_middleware(RequestContextMiddleware)
    install_problem_handlers(app)

    @app.get("/health/live", tags=["ops"], response_model=None)
    async def live() -> Any:
        # Failing liveness asks the orchestrator for a restart: only for a consumer that is
        # stuck or broken for good, never for a dependency that is merely down (that is /ready).
        stuck = runtime.consumer_stuck_s()
        if stuck is not None:
            return JSONResponse(
                {"status": "stuck", "detail": f"consumer in one batch for {stuck:.0f}s"},
                status_code=503,
            )
        failure = runtime.consumer_failure()
        if failure is not None:
            return JSONResponse({"status": "broken", "detail": failure}, status_code=503)
        return {"status": "ok"}

    @app.get("/health/ready", tags=["ops"], response_model=None)
    async def ready() -> Any:
        checks = await runtime.readiness()
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ok" if ok else "unavailable", "checks": checks},
            status_code=200 if ok else 503,
        )

    @app.get("/metrics", tags=["ops"])
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    for router in routers:
        app.include_router(router)
    install_openapi(app)
    tracing.instrument_app(app, settings)  # issue 14: nothing when off
    return app


# --- API documentation (issue 14) ---

BEARER_SCHEME = "bearer"
PROBLEM_SCHEMA = "Problem"
# What the gateway itself may answer on every proxied route (deploy/local/nginx: rate limits and
# an upstream that is down, slow or restarting), and on a route with a body (its size limit).
GATEWAY_STATUSES = (429, 502, 503, 504)
BODY_STATUSES = (413,)
_STATUS_TEXT = {
    400: "Malformed request: a body that does not parse, a cursor that does not decode (problem+json)",
    401: "Missing, malformed or invalid bearer token (problem+json)",
    403: "The token's principal may not do this (problem+json)",
    404: "Not found (problem+json)",
    409: "Conflicts with the current state (problem+json)",
    413: "Request body too large (problem+json, from the gateway)",
    422: "Invalid input: `errors` names each field (problem+json)",
    429: "Rate limit exceeded; see Retry-After (problem+json, from the gateway)",
    502: "Upstream service unavailable (problem+json, from the gateway)",
    503: "A dependency is unavailable; try again, see Retry-After (problem+json)",
    504: "Upstream service timed out (problem+json, from the gateway)",
}
_UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def problem_component() -> dict[str, Any]:
    """The JSON Schema of every problem+json body (libs/kit/problems.py: problem_response)."""
    return {
        "title": PROBLEM_SCHEMA,
        "description": "RFC 9457 problem details",
        "type": "object",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["field", "message"],
                    "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                },
            },
        },
    }


def _dependency_calls(dependant: Any) -> set[Any]:
    calls: set[Any] = set()
    for dep in dependant.dependencies:
        if dep.call is not None:
            calls.add(dep.call)
        calls |= _dependency_calls(dep)
    return calls


def route_statuses(route: Any) -> tuple[list[int], str | None]:
    """The problem statuses a route can answer, from what the kit and its dependencies can raise,
    and how it authenticates: "required", "optional" or None."""
    from libs.kit.auth import (
        optional_principal,
        require_admin,
        require_customer,
        require_customer_or_channel,
    )

    calls = _dependency_calls(route.dependant)
    methods = set(route.methods or ())
    statuses = {422, *GATEWAY_STATUSES}  # refuse_unsafe_input and validation: every route
    auth: str | None = None
    if calls & {require_customer, require_admin, require_customer_or_channel}:
        auth = "required"
        statuses |= {401, 403}  # 403: a channel token on a customer route, a non-admin
    elif optional_principal in calls:
        auth = "optional"
        statuses |= {401, 403}
    if route.param_convertors:
        statuses.add(404)
    if methods & _UNSAFE_METHODS:
        statuses.add(409)
    if route.body_field is not None:
        statuses |= {400, *BODY_STATUSES}  # 400: FastAPI's answer to a body it cannot parse
    if any(param.alias == "cursor" for param in route.dependant.query_params):
        statuses.add(400)  # libs/kit/pagination.py: a cursor that does not decode
    return sorted(statuses), auth


# refuse_unsafe_input's rule as a JSON Schema pattern (ECMA-262): no C0/C1 control character.
CLEAN_TEXT = CLEAN_TEXT_PATTERN
CLEAN_JSON_SCHEMA = "CleanJson"


def clean_json_component() -> dict[str, Any]:
    """Any JSON value whose strings (keys included) keep refuse_unsafe_input's rule: the schema
    of a free-form field (`dict[str, Any]`, such as a product's attributes)."""
    ref = {"$ref": f"#/components/schemas/{CLEAN_JSON_SCHEMA}"}
    return {
        "title": CLEAN_JSON_SCHEMA,
        "description": "any JSON value; no string (key or value) holds a control character",
        "anyOf": [
            {"type": ["null", "boolean", "number"]},
            {"type": "string", "pattern": CLEAN_TEXT},
            {"type": "array", "items": ref},
            {
                "type": "object",
                "propertyNames": {"pattern": CLEAN_TEXT},
                "additionalProperties": ref,
            },
        ],
    }


def _clean_strings(schema: Any) -> None:
    """Give every plain string of a schema (no format, pattern or enum of its own) the rule the
    kit applies to every string a client sends."""
    if isinstance(schema, list):
        for item in schema:
            _clean_strings(item)
        return
    if not isinstance(schema, dict):
        return
    if schema.get("type") == "string" and not {"format", "pattern", "enum", "const"} & set(schema):
        schema["pattern"] = CLEAN_TEXT
    if schema.get("type") == "object" and schema.get("additionalProperties") is not False:
        # Keys are strings a client sends too; free-form values (`dict[str, Any]`) are clean JSON.
        names = schema.setdefault("propertyNames", {})
        if isinstance(names, dict) and not {"pattern", "enum", "const"} & set(names):
            names["pattern"] = CLEAN_TEXT
        if schema.get("additionalProperties") is True:
            schema["additionalProperties"] = {"$ref": f"#/components/schemas/{CLEAN_JSON_SCHEMA}"}
    for value in schema.values():
        if isinstance(value, dict | list):
            _clean_strings(value)


def documented_openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, completed: the bearer scheme on every route that reads a token, the
    problem+json answers each route can give (replacing FastAPI's application/json 422)."""
    from fastapi.openapi.utils import get_openapi
    from fastapi.routing import APIRoute

    doc = get_openapi(
        title=app.title, version=app.version, openapi_version=app.openapi_version, routes=app.routes
    )
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    _clean_strings(schemas)
    schemas[PROBLEM_SCHEMA] = problem_component()
    schemas[CLEAN_JSON_SCHEMA] = clean_json_component()
    components["securitySchemes"] = {
        BEARER_SCHEME: {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    }
    problem_ref = {"$ref": f"#/components/schemas/{PROBLEM_SCHEMA}"}
    routes = [r for r in app.routes if isinstance(r, APIRoute) and r.include_in_schema]
    names = [r.name for r in routes for _ in r.methods]
    for route in routes:
        statuses, auth = route_statuses(route)
        for method in route.methods:
            operation = doc["paths"].get(route.path_format, {}).get(method.lower())
            if operation is None:
                continue
            if names.count(route.name) == 1:
                operation["operationId"] = route.name  # FastAPI's default spells the path too
            responses = operation.setdefault("responses", {})
            for status in statuses:
                entry = responses.setdefault(str(status), {})
                entry.setdefault("description", _STATUS_TEXT.get(status, "problem+json"))
            for code, entry in responses.items():
                if code.isdigit() and int(code) >= 400:
                    entry["content"] = {PROBLEM_JSON_TYPE: {"schema": problem_ref}}
            for parameter in operation.get("parameters", []):
                _clean_strings(parameter.get("schema"))
            _clean_strings(operation.get("requestBody"))  # a route's own inline body schema
            if auth == "required":
                operation["security"] = [{BEARER_SCHEME: []}]
            elif auth == "optional":
                operation["security"] = [{}, {BEARER_SCHEME: []}]
    return doc


PROBLEM_JSON_TYPE = "application/problem+json"


def install_openapi(app: FastAPI) -> None:
    """Serve the completed document at the service's own /openapi.json (the gateway merges the six:
    libs/kit/apidocs.py)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = documented_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    install_allow_header(app)


def install_allow_header(app: FastAPI) -> None:
    """A 405 names every method the path has (RFC 9110 Allow): Starlette names only those of the
    first route whose path matched, and one path is often several routes (GET and PUT)."""
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.routing import Match

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            methods: set[str] = set()
            for route in app.router.routes:
                match, _ = route.matches({**request.scope, "method": "GET"})
                route_methods = getattr(route, "methods", None)
                if match is not Match.NONE and route_methods:
                    methods |= set(route_methods)
            if methods:
                headers["Allow"] = ", ".join(sorted(methods))
        return problem_response(exc.status_code, str(exc.detail), headers=headers or None)

    app.add_exception_handler(StarletteHTTPException, method_not_allowed)


# --- reconciliation (issue 14) ---


class FindingOut(BaseModel):
    kind: str = Field(description="stable snake_case kind (see the service README)")
    ids: dict[str, str] = Field(description="ids of what it is about: sku, order_id, ...")
    detail: str
    since: datetime | None = Field(description="when the subject last changed or became due")


class ReconciliationOut(BaseModel):
    ran_at: datetime | None = Field(description="when the last run ended; null before the first")
    findings: list[FindingOut]
    failed_checks: list[str] = Field(
        description="checks whose query failed in that run (their previous findings are kept)"
    )


def _reconciliation_out(report: Report) -> ReconciliationOut:
    return ReconciliationOut(
        ran_at=report.ran_at,
        findings=[
            FindingOut(kind=f.kind, ids=dict(f.ids), detail=f.detail, since=f.since)
            for f in report.findings
        ],
        failed_checks=list(report.failed_checks),
    )


def add_reconciliation_routes(router: APIRouter) -> None:
    """`GET <prefix>/reconciliation` (the last run's findings) and `POST
    <prefix>/reconciliation/runs` (run now, answer the same), admin only, on a service's router;
    put first, so a `<prefix>/{id}` route declared before never takes them."""
    from libs.kit.auth import Admin

    sub = APIRouter()

    @sub.get(
        "/reconciliation",
        summary="The last reconciliation run's findings (admin)",
        response_model=ReconciliationOut,
    )
    async def last_reconciliation(_: Admin, runtime: RuntimeDep) -> ReconciliationOut:
        return _reconciliation_out(runtime.reconciler.last)

    @sub.post(
        "/reconciliation/runs",
        summary="Run the reconciliation checks now and answer their findings (admin)",
        response_model=ReconciliationOut,
    )
    async def run_reconciliation(_: Admin, runtime: RuntimeDep) -> ReconciliationOut:
        return _reconciliation_out(await runtime.reconciler.run_once())

    before = len(router.routes)
    router.include_router(sub)
    added = router.routes[before:]
    del router.routes[before:]
    router.routes[0:0] = added
