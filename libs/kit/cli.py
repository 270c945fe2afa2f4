"""`backroom`: the operator's command (tokens, migrations, topics and ACLs, dead-letter queues,
Kafka client settings for downstream subscribers)."""

import argparse
import asyncio
import gc
import json
import os
import sys
from typing import Any

from aiokafka import AIOKafkaConsumer

from libs.events import topics
from libs.kit.auth import ROLES, AuthConfigError, mint_dev_token
from libs.kit.kafka import (
    KafkaConnection,
    all_topic_names,
    ensure_topics,
    new_producer,
    topic_partitions,
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


async def read_dlq(kafka: KafkaConnection, dlq_topics: list[str]) -> list[dict[str, Any]]:
    """Every record currently on the given dead-letter topics, oldest first per partition."""
    consumer = AIOKafkaConsumer(**kafka.client_options(), enable_auto_commit=False)
    await consumer.start()
    entries: list[dict[str, Any]] = []
    try:
        partitions = await topic_partitions(consumer, dlq_topics)
        if not partitions:
            return entries
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        remaining = {tp for tp in partitions if end[tp] > 0}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=2000)
            if not batch:
                break
            for tp, records in batch.items():
                for rec in records:
                    headers = {k: v.decode(errors="replace") for k, v in (rec.headers or ())}
                    try:
                        event = json.loads(rec.value)
                    except ValueError:
                        event = {}
                    entries.append(
                        {
                            "dlq_topic": rec.topic,
                            "partition": rec.partition,
                            "offset": rec.offset,
                            "key": rec.key.decode() if rec.key else None,
                            "event_id": event.get("id") if isinstance(event, dict) else None,
                            "type": event.get("type") if isinstance(event, dict) else None,
                            "original_topic": headers.get("x-dlq-original-topic"),
                            "consumer_group": headers.get("x-dlq-consumer-group"),
                            "attempts": headers.get("x-dlq-attempts"),
                            "error": headers.get("x-dlq-error"),
                            "failed_at": headers.get("x-dlq-failed-at"),
                            "_record": rec,
                        }
                    )
                    if rec.offset + 1 >= end[tp]:
                        remaining.discard(tp)
    finally:
        await consumer.stop()
    return entries


async def replay_dlq(kafka: KafkaConnection, dlq_topics: list[str], event_id: str | None) -> int:
    """Re-publish dead-lettered records to their original topic (same key and value)."""
    entries = [e for e in await read_dlq(kafka, dlq_topics) if event_id in (None, e["event_id"])]
    producer = new_producer(kafka, "backroom-dlq-replay")
    await producer.start()
    try:
        for entry in entries:
            rec = entry["_record"]
            headers = [(k, v) for k, v in (rec.headers or ()) if not k.startswith("x-dlq-")]
            headers.append(
                ("x-dlq-replayed-from", f"{rec.topic}/{rec.partition}/{rec.offset}".encode())
            )
            original = entry["original_topic"] or rec.topic.removesuffix(topics.DLQ_SUFFIX)
            await producer.send_and_wait(original, value=rec.value, key=rec.key, headers=headers)
    finally:
        await producer.stop()
    return len(entries)


def _dlq_topics(args: argparse.Namespace) -> list[str]:
    if args.topic:
        return [args.topic if args.topic.endswith(topics.DLQ_SUFFIX) else topics.dlq(args.topic)]
    return [topics.dlq(t) for t in topics.ALL_TOPICS]


def _cmd_dlq(args: argparse.Namespace) -> int:
    kafka = KafkaConnection.from_settings(ServiceSettings())
    if args.dlq_command == "list":
        entries = asyncio.run(read_dlq(kafka, _dlq_topics(args)))
        if args.json:
            print(json.dumps([{k: v for k, v in e.items() if k != "_record"} for e in entries]))
        else:
            print(f"{len(entries)} dead-lettered message(s)")
            for e in entries:
                print(
                    f"{e['dlq_topic']}[{e['partition']}]@{e['offset']} {e['type']} id={e['event_id']}"
                    f" key={e['key']} group={e['consumer_group']} attempts={e['attempts']}"
                    f" at={e['failed_at']}\n    error: {e['error']}"
                )
        return 0
    count = asyncio.run(replay_dlq(kafka, _dlq_topics(args), args.event_id))
    print(f"replayed {count} message(s)")
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

    dlq = sub.add_parser("dlq", help="inspect and replay dead-lettered events")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    dlq_list = dlq_sub.add_parser("list")
    dlq_list.add_argument("--topic", help="source topic or its .dlq (default: all)")
    dlq_list.add_argument("--json", action="store_true")
    dlq_replay = dlq_sub.add_parser("replay")
    dlq_replay.add_argument("--topic", help="source topic or its .dlq (default: all)")
    dlq_replay.add_argument("--event-id", help="replay only this CloudEvent id")
    dlq.set_defaults(func=_cmd_dlq)
    _add_apidocs(sub)
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


# --- trace (issue 14) ---

DEFAULT_GATEWAY = "http://127.0.0.1:8000"  # `make run`'s gateway (deploy/local/run.sh)


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

    gateway = (args.gateway or os.environ.get("BACKROOM_GATEWAY_URL") or DEFAULT_GATEWAY).rstrip(
        "/"
    )
    try:
        token = mint_dev_token(ServiceSettings(), "backroom-trace", ["admin"], ttl_s=300)
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
    trace.add_argument(
        "--gateway",
        help=f"gateway URL (default: $BACKROOM_GATEWAY_URL or {DEFAULT_GATEWAY})",
    )
    trace.add_argument("--json", action="store_true", help="the timeline document as JSON")
    trace.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    trace.set_defaults(func=_cmd_trace)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
