"""`backroom`: the operator's command (tokens, migrations, topics and ACLs, dead-letter queues,
Kafka client settings for downstream subscribers)."""

import argparse
import asyncio
import gc
import json
import os
import sys
from typing import Any

from libs.kit.auth import ROLES, AuthConfigError, mint_dev_token
from libs.kit.kafka import (
    KafkaConnection,
    all_topic_names,
    ensure_topics,
)
from libs.kit.kafka_acl import PRINCIPALS, apply_acls
from libs.kit.settings import DatabaseConfigError, KafkaConfigError, ServiceSettings

SERVICES = ("catalog", "inventory", "pricing", "orders", "payments", "notifications")


def _cmd_token(args: argparse.Namespace) -> int:
    """A development token, signed with BACKROOM_JWT_SECRET or this checkout's dev secret (the
    one `make run` services verify with); production tokens come from the identity provider."""
    settings = ServiceSettings()
    roles = args.role or ["customer"]
    if ("channel" in roles) != (args.channel is not None):
        print("backroom token: --role channel and --channel C go together", file=sys.stderr)
        return 2
    try:
        token = mint_dev_token(
            settings,
            args.sub,
            roles,
            groups=args.group,
            ttl_s=args.ttl,
            email=args.email,
            channel=args.channel,
        )
    except AuthConfigError as exc:
        print(f"backroom token: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    """Run one service's HTTP API, consumers and relay in this process."""
    import importlib

    import uvicorn
    from pydantic import ValidationError

    from libs.kit.eventloop import service_loop

    module = importlib.import_module(f"services.{args.service}.main")
    try:
        app = module.create_app()
    except (AuthConfigError, KafkaConfigError, DatabaseConfigError, ValidationError) as exc:
        print(f"backroom serve {args.service}: refusing to start: {exc}", file=sys.stderr)
        return 2
    settings = app.state.runtime.settings
    # Everything built so far (modules, models, routes) lives as long as the process: keep it
    # out of the cyclic garbage collector's full passes, which otherwise walk all of it again
    # and again under load.
    gc.collect()
    gc.freeze()
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        # uvloop, made safe for aiokafka (libs/kit/eventloop.py: aio-libs/aiokafka#1038).
        loop=service_loop(),
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=15,
    )
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    """Each service's migrations, applied as its own role (the owner of its database, never the
    superuser). A job migrating several services gives each role's password as
    BACKROOM_PG_PASSWORD_<SERVICE> (compose's and k8s' migrate jobs); otherwise the service's
    settings resolve it (BACKROOM_PG_PASSWORD, or the development password of the checkout)."""
    from libs.kit.migrations import upgrade

    for service in args.services or SERVICES:
        password = os.environ.get(f"BACKROOM_PG_PASSWORD_{service.upper()}")
        settings = (
            ServiceSettings(service_name=service, pg_password=password)
            if password
            else ServiceSettings(service_name=service)
        )
        upgrade(service, settings.sqlalchemy_url())
        print(f"migrated {service}")
    return 0


def _cmd_topics(args: argparse.Namespace) -> int:
    """Create every topic and, on brokers that authenticate clients, every ACL of the access
    model (libs/kit/kafka_acl.py), as the admin principal. Idempotent."""
    settings = ServiceSettings()
    kafka = KafkaConnection.from_settings(settings)
    asyncio.run(
        ensure_topics(
            kafka,
            partitions=args.partitions or settings.topic_partitions,
            replication=args.replication or settings.topic_replication,
        )
    )
    print("topics ready:", ", ".join(all_topic_names()))
    if kafka.uses_sasl and not args.no_acls:
        count = asyncio.run(apply_acls(kafka))
        print(f"ACLs ready: {count} for {', '.join(p for p in PRINCIPALS if p != 'admin')}")
    return 0


def _cmd_kafka_config(args: argparse.Namespace) -> int:
    """aiokafka client keyword arguments for one principal, as JSON: in a checkout where
    `make run` is up, a downstream subscriber passes them straight to AIOKafkaConsumer."""
    settings = ServiceSettings(kafka_username=args.principal)
    try:
        options = KafkaConnection.from_settings(settings).client_options()
    except KafkaConfigError as exc:
        print(f"backroom kafka-config: {exc}", file=sys.stderr)
        return 2
    if "ssl_context" in options:  # not JSON: say where the CA is instead
        del options["ssl_context"]
        options["ssl_cafile"] = str(settings.kafka_ssl_cafile or "")
    print(json.dumps(options))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="backroom", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    token = sub.add_parser(
        "token", help="mint a development JWT (accepted by services with BACKROOM_ENV=dev)"
    )
    token.add_argument("--sub", required=True)
    token.add_argument("--role", action="append", choices=ROLES)
    token.add_argument("--group", action="append")
    token.add_argument("--email")
    token.add_argument(
        "--channel", help="the sales channel code a --role channel token is bound to (issue 13)"
    )
    token.add_argument("--ttl", type=int, default=3600, help="seconds (default 3600)")
    token.set_defaults(func=_cmd_token)

    serve = sub.add_parser("serve", help="run one service (HTTP, consumers, outbox relay)")
    serve.add_argument("service", choices=SERVICES)
    serve.set_defaults(func=_cmd_serve)

    migrate = sub.add_parser("migrate", help="apply alembic migrations")
    migrate.add_argument("services", nargs="*", help="default: all six")
    migrate.set_defaults(func=_cmd_migrate)

    tps = sub.add_parser(
        "topics", help="create every Backroom topic and its DLQ, and the principals' ACLs"
    )
    tps.add_argument("--partitions", type=int)
    tps.add_argument("--replication", type=int)
    tps.add_argument("--no-acls", action="store_true", help="topics only")
    tps.set_defaults(func=_cmd_topics)

    kcfg = sub.add_parser(
        "kafka-config",
        help="print one principal's aiokafka client keyword arguments as JSON",
    )
    kcfg.add_argument("--principal", required=True, choices=PRINCIPALS)
    kcfg.set_defaults(func=_cmd_kafka_config)

    _add_dlq(sub)
    _add_apidocs(sub)
    _add_reconcile(sub)

    _add_trace(sub)
    return parser


# --- apidocs (issue 14) ---


def service_openapi_documents() -> dict[str, dict[str, Any]]:
    """Each service's own OpenAPI document, from its app as `serve` builds it (nothing connects).
    Only the document is wanted: the apps are built with a throwaway development key, so this
    works wherever the code is (an image build, an init container) whatever the environment."""
    import importlib
    import secrets

    overrides = {"BACKROOM_ENV": "dev", "BACKROOM_JWT_SECRET": secrets.token_hex(32)}
    saved = {name: os.environ.get(name) for name in (*overrides, "BACKROOM_JWKS_URL")}
    os.environ.update(overrides)
    os.environ.pop("BACKROOM_JWKS_URL", None)
    try:
        return {
            service: importlib.import_module(f"services.{service}.main").create_app().openapi()
            for service in SERVICES
        }
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _cmd_apidocs(args: argparse.Namespace) -> int:
    from pathlib import Path

    from libs.kit.apidocs import write_site

    written = write_site(Path(args.out), service_openapi_documents())
    print(f"wrote {len(written)} files under {args.out}")
    return 0


def _add_apidocs(sub: Any) -> None:
    docs = sub.add_parser(
        "apidocs",
        help="write the gateway's documentation: /openapi.json, /docs, /asyncapi.json, event schemas",
    )
    docs.add_argument("--out", required=True, help="the directory nginx serves them from")
    docs.set_defaults(func=_cmd_apidocs)


# --- the gateway's admin API, for reconcile, trace and dlq (issue 14) ---

DEFAULT_GATEWAY = "http://127.0.0.1:8000"  # `make run`'s gateway (deploy/local/run.sh)


def _gateway(args: argparse.Namespace) -> str:
    url: str = args.gateway or os.environ.get("BACKROOM_GATEWAY_URL") or DEFAULT_GATEWAY
    return url.rstrip("/")


def _add_gateway_argument(parser: Any) -> None:
    parser.add_argument(
        "--gateway",
        help=f"the gateway's URL (default: $BACKROOM_GATEWAY_URL, else {DEFAULT_GATEWAY})",
    )


def _admin_token() -> str:
    """BACKROOM_TOKEN when set (an identity provider's admin token), else a development one
    minted as `backroom token --sub backroom-cli --role admin` would."""
    given = os.environ.get("BACKROOM_TOKEN")
    if given:
        return given
    return mint_dev_token(ServiceSettings(), "backroom-cli", ["admin"], ttl_s=300)


# --- reconcile (issue 14) ---


def reconcile_rows(answers: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per finding of every service's answer (GET /<service>/reconciliation)."""
    return [
        {"service": service, **finding}
        for service, answer in answers.items()
        for finding in answer.get("findings", [])
    ]


def _cmd_reconcile(args: argparse.Namespace) -> int:
    """Every service's last reconciliation run (or a run now, with --run) through the gateway.
    Exit status: 0 clean, 1 any finding, 2 an error (a service that did not answer 200, a check
    that failed, no token)."""
    import httpx

    try:
        token = _admin_token()
    except AuthConfigError as exc:
        print(f"backroom reconcile: {exc}", file=sys.stderr)
        return 2
    headers = {"Authorization": f"Bearer {token}"}
    answers: dict[str, dict[str, Any]] = {}
    errors: list[str] = []
    with httpx.Client(base_url=_gateway(args), timeout=args.timeout) as http:
        for service in args.service or SERVICES:
            try:
                if args.run:
                    response = http.post(f"/{service}/reconciliation/runs", headers=headers)
                else:
                    response = http.get(f"/{service}/reconciliation", headers=headers)
            except httpx.HTTPError as exc:
                errors.append(f"{service}: {exc!r}")
                continue
            if response.status_code != 200:
                errors.append(f"{service}: HTTP {response.status_code} {response.text[:200]}")
                continue
            answers[service] = response.json()
            for check in answers[service].get("failed_checks", []):
                errors.append(f"{service}: check {check} failed (see the service log)")
    rows = reconcile_rows(answers)
    if args.json:
        print(json.dumps({"services": answers, "findings": rows, "errors": errors}, indent=2))
    else:
        for row in rows:
            ids = " ".join(f"{k}={v}" for k, v in sorted(row["ids"].items()))
            print(f"{row['service']}\t{row['kind']}\t{ids}\t{row['detail']}\t{row['since'] or '-'}")
        for service, answer in answers.items():
            if answer.get("ran_at") is None:
                print(f"{service}: not run yet (use --run)", file=sys.stderr)
        if not rows and not errors:
            print("no findings", file=sys.stderr)
    for error in errors:
        print(f"backroom reconcile: {error}", file=sys.stderr)
    if errors:
        return 2
    return 1 if rows else 0


def _add_reconcile(sub: Any) -> None:
    rec = sub.add_parser(
        "reconcile",
        help="every service's reconciliation findings through the gateway"
        " (exit 0 clean, 1 findings, 2 error)",
    )
    _add_gateway_argument(rec)
    rec.add_argument(
        "--run", action="store_true", help="run the checks now instead of the last run"
    )
    rec.add_argument("--json", action="store_true", help="one JSON document instead of rows")
    rec.add_argument("--service", action="append", choices=SERVICES, help="default: all six")
    rec.add_argument("--timeout", type=float, default=30.0, help="seconds per service")
    rec.set_defaults(func=_cmd_reconcile)


# --- trace (issue 14) ---


def _trace_line(event: dict[str, Any]) -> str:
    arrow = "->" if event.get("direction") == "emitted" else "<-"
    return (
        f"{event.get('time')}  {arrow} {event.get('type')}  [{event.get('topic')}"
        f" from {event.get('source')}]  {event.get('summary')}"
    )


def _record_lines(name: str, records: Any) -> list[str]:
    if isinstance(records, dict) and "error" in records:
        return [f"  {name}: ERROR {records['error']}"]
    lines = [f"  {name}:"]
    for key, value in (records or {}).items() if isinstance(records, dict) else ():
        items = value if isinstance(value, list) else [value]
        if value is None or items == []:
            lines.append(f"    {key}: none")
            continue
        for item in items:
            if isinstance(item, dict):
                shown = {
                    k: item[k]
                    for k in ("id", "status", "amount", "kind", "template", "to", "lines", "reason")
                    if k in item and item[k] is not None
                }
                lines.append(f"    {key}: {json.dumps(shown, default=str)}")
            else:
                lines.append(f"    {key}: {item}")
    return lines


def render_timeline(timeline: dict[str, Any]) -> str:
    """A timeline document as readable lines: the order, one line per event, each service's
    records, the dead letters and what the order waits for."""
    order = timeline["order"]
    out = [
        f"order {order['id']}  status={order['status']}"
        + (f" ({order['reason']})" if order.get("reason") else "")
        + f"  channel={order.get('channel')}  placed {order.get('placed_at')}"
        f"  updated {order.get('updated_at')}",
        "",
        f"events ({len(timeline['events'])}):",
    ]
    out += ["  " + _trace_line(e) for e in timeline["events"]]
    out += ["", "services:"]
    for name, records in sorted(timeline.get("services", {}).items()):
        out += _record_lines(name, records)
    letters = timeline.get("dead_letters")
    out.append("")
    if isinstance(letters, dict):
        out.append(f"dead letters: ERROR {letters.get('error')}")
    else:
        out.append(f"dead letters ({len(letters or [])}):")
        for e in letters or []:
            out.append(
                f"  {e.get('dlq_topic')} {e.get('type')} id={e.get('event_id')}"
                f" group={e.get('consumer_group')} error={e.get('error')}"
            )
    waiting = timeline.get("waiting")
    if waiting is None:
        out.append("waiting: nothing (terminal)")
    else:
        out.append(
            f"waiting: for {waiting['for']} from {waiting['from']} since {waiting['since']}"
            + (f", deadline {waiting['deadline']}" if waiting.get("deadline") else "")
            + (" OVERDUE" if waiting.get("overdue") else "")
        )
    return "\n".join(out)


def _cmd_trace(args: argparse.Namespace) -> int:
    """GET /orders/{id}/timeline through the gateway with a dev admin token; print it."""
    from urllib.parse import quote

    import httpx

    gateway = _gateway(args)
    try:
        token = _admin_token()
    except AuthConfigError as exc:
        print(f"backroom trace: {exc}", file=sys.stderr)
        return 2
    url = f"{gateway}/orders/{quote(args.order_id, safe='')}/timeline"
    try:
        response = httpx.get(
            url, headers={"Authorization": f"Bearer {token}"}, timeout=args.timeout
        )
    except httpx.HTTPError as exc:
        print(f"backroom trace: gateway {gateway} unreachable: {exc!r}", file=sys.stderr)
        return 1
    if response.status_code == 404:
        print(f"backroom trace: no order {args.order_id}", file=sys.stderr)
        return 1
    if not response.is_success:
        print(
            f"backroom trace: {url} answered {response.status_code}: {response.text[:500]}",
            file=sys.stderr,
        )
        return 1
    timeline = response.json()
    print(json.dumps(timeline, indent=2) if args.json else render_timeline(timeline))
    return 0


def _add_trace(sub: Any) -> None:
    trace = sub.add_parser(
        "trace", help="print an order's timeline (events, services' records, dead letters)"
    )
    trace.add_argument("order_id")
    _add_gateway_argument(trace)
    trace.add_argument("--json", action="store_true", help="the timeline document as JSON")
    trace.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    trace.set_defaults(func=_cmd_trace)


# --- dead letters (issue 14) ---


class _ApiError(Exception):
    pass


def _call(client: Any, method: str, path: str, **kwargs: Any) -> Any:
    response = client.request(method, path, **kwargs)
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail") or response.text
        except ValueError:
            detail = response.text
        raise _ApiError(f"{method} {path}: {response.status_code} {detail}")
    return response.json()


def list_dead_letters(
    client: Any, services: list[str], status: str | None, event_type: str | None
) -> list[dict[str, Any]]:
    """Every dead letter of the services (all pages), each with its `service`."""
    found: list[dict[str, Any]] = []
    for service in services:
        params: dict[str, Any] = {"limit": 200}
        if status:
            params["status"] = status
        if event_type:
            params["type"] = event_type
        while True:
            page = _call(client, "GET", f"/{service}/dead-letters", params=params)
            found += [{"service": service, **item} for item in page["items"]]
            if not page.get("next_cursor"):
                break
            params["cursor"] = page["next_cursor"]
    return found


def _cmd_dead_letters(args: argparse.Namespace) -> int:
    import httpx

    try:
        token = _admin_token()
    except AuthConfigError as exc:
        print(f"backroom dlq: {exc}", file=sys.stderr)
        return 2
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=_gateway(args), headers=headers, timeout=60.0) as client:
        try:
            if args.dlq_command == "list":
                services = [args.service] if args.service else list(SERVICES)
                entries = list_dead_letters(client, services, args.status, args.type)
                if args.json:
                    print(json.dumps(entries))
                    return 0
                print(f"{len(entries)} dead letter(s)")
                for e in entries:
                    print(
                        f"{e['service']} #{e['id']} [{e['status']}] {e['type']} id={e['event_id']}"
                        f" {e['topic']}[{e['partition']}]@{e['offset']} group={e['consumer_group']}"
                        f" attempts={e['attempts']} at={e['failed_at']}\n    error: {e['error']}"
                    )
                return 0
            path = f"/{args.service}/dead-letters/{args.id}"
            if args.dlq_command == "show":
                print(json.dumps(_call(client, "GET", path), indent=2))
                return 0
            if args.dlq_command == "replay":
                done = _call(client, "POST", f"{path}/replay")
                letter = done["dead_letter"]
                print(f"{args.service} #{args.id}: {done['outcome']} (now {letter['status']})")
                if done["outcome"] == "failed":
                    print(f"    error: {letter['error']}")
                    return 1
                return 0
            letter = _call(client, "POST", f"{path}/drop", json={"reason": args.reason})
            print(f"{args.service} #{args.id}: {letter['status']} ({letter['note']})")
            return 0
        except (_ApiError, httpx.HTTPError) as exc:
            print(f"backroom dlq: {exc}", file=sys.stderr)
            return 1


def _add_dlq(sub: Any) -> None:
    dlq = sub.add_parser(
        "dlq",
        help="list, show, replay (to the consumer group that failed only) and drop dead letters,"
        " through the gateway's admin API",
    )
    _add_gateway_argument(dlq)
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    dlq_list = dlq_sub.add_parser("list", help="dead letters of one service or all, newest first")
    dlq_list.add_argument("--service", choices=SERVICES, help="default: all six")
    dlq_list.add_argument("--status", choices=("open", "replayed", "dropped"))
    dlq_list.add_argument("--type", help="CloudEvent type")
    dlq_list.add_argument("--json", action="store_true")
    for name, what in (
        ("show", "one dead letter with its event, headers and audit trail"),
        ("replay", "run it again through the owning service's consumer (its group only)"),
        ("drop", "mark it dropped, with a reason (audited)"),
    ):
        command = dlq_sub.add_parser(name, help=what)
        command.add_argument("service", choices=SERVICES)
        command.add_argument("id", type=int)
        if name == "drop":
            command.add_argument("--reason", required=True)
    dlq.set_defaults(func=_cmd_dead_letters)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
