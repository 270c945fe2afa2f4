"""What must hold once the system has drained, read straight from the six databases (asyncpg),
the SMTP sink's maildir and the dead-letter topics; nothing is asked of the services' APIs.

`check(...)` looks at one scope (the orders of some customers, the skus they bought) and returns
the violations it found; `drained(...)` is the condition a fault run waits for before checking.

Invariants (violation kind in brackets):

- every accepted order exists [lost_order] and reached a terminal status (confirmed, shipped,
  delivered, rejected, cancelled) [stuck_order]; no cancellation is left half-done
  [stuck_cancellation];
- at most one capture per order in `payments` [double_capture]; every capture the sandbox PSP's
  ledger made is recorded in `payments` with the same reference [unrecorded_capture]; a
  confirmed order holds a capture that was not refunded [confirmed_without_capture,
  confirmed_but_refunded]; a rejected or cancelled order with a capture (in `payments` or in the
  ledger) has its refund in both [capture_not_refunded]; the token is erased once the charge is
  decided or the order closed [token_at_rest];
- inventory: a confirmed order's reservation is committed [confirmed_without_stock], a rejected or
  cancelled order's is not holding or taking stock [stock_not_returned]; per sku, `reserved` ==
  the lines of reservations in status `reserved` [reserved_mismatch]; `on_hand` == initial +
  adjustments - lines of committed reservations (a restocked cancellation is `released` again)
  [on_hand_mismatch]; the stock_movements audit adds up to the row [audit_mismatch] and moves an
  order's line at most once per kind [duplicate_stock_move]; the committed units equal the
  units of the confirmed orders [stock_vs_orders];
- one email per (order, template) for every status the order went through, none for statuses it
  did not [missing_email, unexpected_email]; the same Message-ID delivered again after a crash
  during the SMTP send is counted as `resent`, not a violation;
- outboxes empty [outbox_not_empty]; no intent left pending (an email not sent, a capture or refund whose
  outcome is not recorded, a shipping label not bought) [pending_work]; no email recorded as failed [email_failed];
  dead-letter topics empty [dlq]; consumer groups caught up [consumer_lag].
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from libs.events import topics
from libs.kit.kafka import KafkaConnection, read_dlq, topic_partitions

DATABASES = ("catalog", "inventory", "pricing", "orders", "payments", "notifications")
TERMINAL = frozenset({"confirmed", "shipped", "delivered", "rejected", "cancelled"})
KEPT = frozenset({"confirmed", "shipped", "delivered"})  # the customer keeps the goods
CLOSED = frozenset({"rejected", "cancelled"})
# Order status -> the email it calls for (notifications/domain.py EMAIL_EVENTS).
STATUS_EMAIL = {
    "confirmed": "order_confirmed",
    "rejected": "order_rejected",
    "cancelled": "order_cancelled",
    "shipped": "order_shipped",
}
SAGA_STOCK_REASONS = frozenset({"reserved", "committed", "released", "restocked"})
_MESSAGE_ID = re.compile(r"<([^/<>]+)/([a-z_]+)@backroom>")


@dataclass(frozen=True)
class Violation:
    kind: str
    subject: str  # order id, sku, database, topic...
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "subject": self.subject, "detail": self.detail}


@dataclass
class Scope:
    """What one fault scenario touched: its customers' orders and its skus."""

    customer_prefix: str
    initial_stock: dict[str, int]  # sku -> on_hand the bench set when it created the item
    accepted: set[str] = field(default_factory=set)  # order ids the client saw accepted


@dataclass
class Report:
    violations: list[Violation] = field(default_factory=list)
    orders: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    emails: int = 0
    resent: int = 0  # deliveries of an already delivered Message-ID
    captures: int = 0
    refunds: int = 0
    dlq: int = 0

    def add(self, kind: str, subject: str, detail: str) -> None:
        self.violations.append(Violation(kind, subject, detail))

    def summary(self) -> dict[str, int]:
        return dict(Counter(v.kind for v in self.violations))

    def as_dict(self, limit: int = 50) -> dict[str, Any]:
        return {
            "orders": self.orders,
            "statuses": self.statuses,
            "emails": self.emails,
            "resent": self.resent,
            "captures": self.captures,
            "refunds": self.refunds,
            "violations": len(self.violations),
            "violation_kinds": self.summary(),
            "violation_samples": [v.as_dict() for v in self.violations[:limit]],
        }


class Databases:
    """One asyncpg connection per service database, opened on demand. `dsn_of` gives the
    operator's superuser (bench/stack.py Stack.dsn): checking invariants across services reads
    every database, which no service's own role can connect to."""

    def __init__(self, dsn_of: Any) -> None:
        self.dsn_of = dsn_of
        self._conns: dict[str, asyncpg.Connection] = {}

    async def conn(self, db: str) -> asyncpg.Connection:
        conn = self._conns.get(db)
        if conn is None or conn.is_closed():
            conn = await asyncpg.connect(self.dsn_of(db), timeout=5)
            self._conns[db] = conn
        return conn

    async def fetch(self, db: str, query: str, *args: Any) -> list[asyncpg.Record]:
        try:
            return list(await (await self.conn(db)).fetch(query, *args, timeout=30))
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError):
            self._conns.pop(db, None)  # reconnect next time (PostgreSQL may have restarted)
            raise

    async def close(self) -> None:
        for conn in self._conns.values():
            with contextlib.suppress(Exception):
                await conn.close()
        self._conns.clear()

    async def __aenter__(self) -> Databases:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# --- draining -----------------------------------------------------------------------------------


def subscriptions() -> dict[str, tuple[str, ...]]:
    """Consumer group (= service) -> the topics it reads: derived, as the service derives them at
    start, from the event types its handlers registered (building an app connects nothing)."""
    found: dict[str, tuple[str, ...]] = {}
    for svc in DATABASES:
        app = importlib.import_module(f"services.{svc}.main").create_app()
        topics_read = tuple(app.state.runtime.processor.topics)
        if topics_read:
            found[svc] = topics_read
    return found


async def consumer_lag(bootstrap: str) -> dict[str, int]:
    """Per consumer group, how many records it has not committed yet (all its partitions)."""
    admin = AIOKafkaAdminClient(
        **KafkaConnection.operator(bootstrap).client_options(), request_timeout_ms=10000
    )
    probe = AIOKafkaConsumer(
        **KafkaConnection.operator(bootstrap).client_options(), enable_auto_commit=False
    )
    await admin.start()
    try:
        await probe.start()
        try:
            lag: dict[str, int] = {}
            for group, group_topics in subscriptions().items():
                partitions = await topic_partitions(probe, group_topics)
                if not partitions:
                    continue
                ends = await probe.end_offsets(partitions)
                committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
                lag[group] = sum(
                    max(ends[tp] - max(committed[tp].offset if tp in committed else 0, 0), 0)
                    for tp in partitions
                )
            return lag
        finally:
            await probe.stop()
    finally:
        await admin.close()


async def outbox_sizes(dbs: Databases) -> dict[str, int]:
    sizes = {}
    for db in DATABASES:
        rows = await dbs.fetch(db, "SELECT count(*) AS n FROM outbox")
        sizes[db] = int(rows[0]["n"])
    return sizes


# Work a service recorded for itself and has not finished (ADR 0005: an intent waiting for its
# external call, or a claimed one whose outcome is not recorded yet): the system has not drained
# while any is left, e.g. during the lease after a crash between the call and its outcome.
PENDING_WORK = {
    # Listing updates marked but not yet published (issue 13: the sync worker coalesces them for
    # `listing_sync_delay_s`, then adds a ListingChanged to catalog's outbox).
    "catalog": "SELECT count(*) AS n FROM listing_sync WHERE dirty_since IS NOT NULL",
    "notifications": "SELECT count(*) AS n FROM notifications WHERE status = 'pending'",
    # Labels still to be bought: buying one emits orders' shipment events, which every consumer
    # of the orders topic then reads (a run drained without them saw lag appear after the drain).
    "orders": "SELECT count(*) AS n FROM shipments WHERE status = 'pending'",
    "payments": "SELECT count(*) AS n FROM payment_orders"
    " WHERE capture_status = 'pending' OR refund_status = 'pending'",
}


async def pending_work(dbs: Databases) -> dict[str, int]:
    pending = {}
    for db, query in PENDING_WORK.items():
        rows = await dbs.fetch(db, query)
        pending[db] = int(rows[0]["n"])
    return pending


async def open_orders(dbs: Databases, scope: Scope) -> int:
    """Orders of the scope not settled yet (not terminal, or a cancellation still under way)."""
    rows = await dbs.fetch(
        "orders",
        """SELECT count(*) AS n FROM orders WHERE customer_id LIKE $1
           AND (status NOT IN ('confirmed', 'shipped', 'delivered', 'rejected', 'cancelled')
                OR (cancellation_requested AND status IN ('confirmed', 'shipped')))""",
        scope.customer_prefix + "%",
    )
    return int(rows[0]["n"])


@dataclass
class DrainState:
    open_orders: int = -1
    outbox: dict[str, int] = field(default_factory=dict)
    pending: dict[str, int] = field(default_factory=dict)
    lag: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    @property
    def done(self) -> bool:
        return (
            self.error is None
            and self.open_orders == 0
            and not any(self.outbox.values())
            and not any(self.pending.values())
            and not any(self.lag.values())
        )

    def describe(self) -> str:
        if self.error:
            return f"error: {self.error}"
        outbox = {k: v for k, v in self.outbox.items() if v}
        pending = {k: v for k, v in self.pending.items() if v}
        lag = {k: v for k, v in self.lag.items() if v}
        return (
            f"open orders {self.open_orders}, outbox {outbox or 0}, "
            f"pending work {pending or 0}, lag {lag or 0}"
        )


async def drain_state(dbs: Databases, scope: Scope, bootstrap: str) -> DrainState:
    state = DrainState()
    try:
        state.open_orders = await open_orders(dbs, scope)
        state.outbox = await outbox_sizes(dbs)
        state.pending = await pending_work(dbs)
        state.lag = await asyncio.wait_for(consumer_lag(bootstrap), 30)
    except Exception as exc:
        state.error = repr(exc)[:300]
    return state


async def wait_drained(
    dbs: Databases, scope: Scope, bootstrap: str, timeout: float, interval: float = 0.5
) -> tuple[bool, DrainState]:
    """Poll until everything is settled twice in a row (or the timeout); returns (done, last)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    in_a_row = 0
    while True:
        state = await drain_state(dbs, scope, bootstrap)
        in_a_row = in_a_row + 1 if state.done else 0
        if in_a_row >= 2:
            return True, state
        if loop.time() > deadline:
            return False, state
        await asyncio.sleep(interval)


# --- the check --------------------------------------------------------------------------------


def sink_message_ids(maildir: Path) -> Counter[str]:
    """Message-ID -> how many times the sink received it (headers only; bodies are not read)."""
    counts: Counter[str] = Counter()
    directory = Path(maildir)
    if not directory.is_dir():
        return counts
    for path in directory.iterdir():
        if path.suffix != ".eml" or path.name.startswith("."):
            continue
        with path.open("rb") as f:
            for raw in f:
                line = raw.decode("utf-8", "replace").strip()
                if not line:
                    break  # end of the headers
                if line.lower().startswith("message-id:"):
                    counts[line.split(":", 1)[1].strip()] += 1
                    break
    return counts


async def check(
    dbs: Databases,
    scope: Scope,
    maildir: Path,
    bootstrap: str | None,
    dlq_seen: set[tuple[str, int, int]] | None = None,
) -> Report:
    """Every invariant for `scope`, plus the global ones (outboxes; DLQs and consumer lag unless
    `bootstrap` is None). `dlq_seen`: dead-lettered records already reported (by an earlier
    scope), not reported again; updated in place."""
    report = Report()
    orders = await dbs.fetch(
        "orders",
        "SELECT id, status, reason, cancellation_requested, lines FROM orders"
        " WHERE customer_id LIKE $1",
        scope.customer_prefix + "%",
    )
    by_id = {r["id"]: r for r in orders}
    ids = list(by_id)
    report.orders = len(ids)
    report.statuses = dict(Counter(r["status"] for r in orders))

    for order_id in sorted(scope.accepted - set(by_id)):
        report.add("lost_order", order_id, "the client got 202 but orders has no such order")
    for r in orders:
        if r["status"] not in TERMINAL:
            report.add("stuck_order", r["id"], f"status {r['status']}")
        elif r["cancellation_requested"] and r["status"] in ("confirmed", "shipped"):
            report.add(
                "stuck_cancellation", r["id"], f"cancellation requested, still {r['status']}"
            )

    history: dict[str, set[str]] = defaultdict(set)
    for h in await dbs.fetch(
        "orders", "SELECT order_id, status FROM order_history WHERE order_id = ANY($1)", ids
    ):
        history[h["order_id"]].add(h["status"])

    await _check_payments(dbs, report, by_id)
    await _check_inventory(dbs, report, scope, by_id)
    _check_emails(report, by_id, history, sink_message_ids(maildir))
    failed = await dbs.fetch(
        "notifications",
        "SELECT order_id, template, error FROM notifications"
        " WHERE channel = 'email' AND status = 'failed' AND order_id = ANY($1::text[])",
        list(by_id),
    )
    for row in failed:
        # A refused email is recorded as failed (no longer dead-lettered): the sink accepts all.
        report.add("email_failed", row["order_id"], f"{row['template']}: {row['error']}")
    await _check_global(dbs, report, bootstrap, dlq_seen)
    return report


async def _check_payments(dbs: Databases, report: Report, by_id: dict[str, asyncpg.Record]) -> None:
    ids = list(by_id)
    moves: dict[str, list[asyncpg.Record]] = defaultdict(list)
    for p in await dbs.fetch(
        "payments",
        "SELECT order_id, kind, status, provider_ref FROM payments WHERE order_id = ANY($1)",
        ids,
    ):
        moves[p["order_id"]].append(p)
    ledger = {
        row["idempotency_key"]: row
        for row in await dbs.fetch(
            "payments",
            "SELECT idempotency_key, operation, ref, capture_ref, awaiting_action"
            " FROM sandbox_ledger WHERE idempotency_key = ANY($1)",
            ids + [f"refund:{i}" for i in ids],
        )
    }
    tokens = await dbs.fetch(
        "payments",
        "SELECT order_id FROM payment_orders WHERE order_id = ANY($1) AND token IS NOT NULL",
        ids,
    )
    for t in tokens:
        status = by_id[t["order_id"]]["status"]
        if status in TERMINAL:
            report.add("token_at_rest", t["order_id"], f"order is {status}, token still stored")

    for order_id, order in by_id.items():
        status = order["status"]
        captures = [m for m in moves[order_id] if m["kind"] == "capture"]
        refunds = [m for m in moves[order_id] if m["kind"] == "refund"]
        # A payment awaiting the shopper (3-D Secure) has the provider's reference, no money.
        moved = [
            c
            for c in captures
            if c["provider_ref"] is not None and c["status"] != "requires_action"
        ]
        report.captures += len(moved)
        report.refunds += len(refunds)
        psp_capture = ledger.get(order_id)
        psp_refund = ledger.get(f"refund:{order_id}")
        psp_capture_ref = (
            psp_capture["ref"]
            if psp_capture is not None and not psp_capture["awaiting_action"]
            else None
        )
        psp_captured = psp_capture_ref is not None
        psp_refunded = psp_refund is not None and psp_refund["ref"] is not None
        if len(captures) > 1 or len(refunds) > 1:
            report.add(
                "double_capture",
                order_id,
                f"{len(captures)} capture row(s), {len(refunds)} refund row(s)",
            )
        if psp_captured and (not moved or moved[0]["provider_ref"] != psp_capture_ref):
            report.add(
                "unrecorded_capture",
                order_id,
                f"the PSP captured {psp_capture_ref}, payments recorded "
                f"{[c['provider_ref'] for c in captures]} (order {status})",
            )
        if status in KEPT:
            if not moved:
                report.add("confirmed_without_capture", order_id, f"order {status}, no capture")
            elif moved[0]["status"] != "captured" or refunds or psp_refunded:
                report.add("confirmed_but_refunded", order_id, f"order {status} was refunded")
        elif status in CLOSED and (moved or psp_captured):
            refunded_here = bool(refunds) and all(c["status"] == "refunded" for c in moved)
            if not (refunded_here and psp_refunded):
                report.add(
                    "capture_not_refunded",
                    order_id,
                    f"order {status} ({order['reason']}): capture {'recorded' if moved else 'at PSP only'},"
                    f" refund row {bool(refunds)}, PSP refund {psp_refunded}",
                )


async def _check_inventory(
    dbs: Databases, report: Report, scope: Scope, by_id: dict[str, asyncpg.Record]
) -> None:
    ids = list(by_id)
    skus = list(scope.initial_stock)
    reservations = {
        r["order_id"]: r
        for r in await dbs.fetch(
            "inventory",
            "SELECT order_id, status, reason, lines FROM reservations WHERE order_id = ANY($1)",
            ids,
        )
    }
    items = {
        r["sku"]: r
        for r in await dbs.fetch(
            "inventory", "SELECT sku, on_hand, reserved FROM stock_items WHERE sku = ANY($1)", skus
        )
    }
    movements = await dbs.fetch(
        "inventory",
        "SELECT sku, delta_on_hand, delta_reserved, reason, order_id FROM stock_movements"
        " WHERE sku = ANY($1) ORDER BY id",
        skus,
    )

    reserved_lines: Counter[str] = Counter()
    committed_lines: Counter[str] = Counter()
    kept_units: Counter[str] = Counter()
    for order_id, order in by_id.items():
        status = order["status"]
        res = reservations.get(order_id)
        if status in KEPT:
            for line in _lines(order["lines"]):
                kept_units[line[0]] += line[1]
            if res is None or res["status"] != "committed":
                report.add(
                    "confirmed_without_stock",
                    order_id,
                    f"order {status}, reservation {res['status'] if res else 'missing'}"
                    f" ({res['reason'] if res else ''}): oversold",
                )
        elif status in CLOSED and res is not None and res["status"] in ("reserved", "committed"):
            report.add(
                "stock_not_returned", order_id, f"order {status}, reservation {res['status']}"
            )
    for res in reservations.values():
        for sku, quantity in _lines(res["lines"]):
            if res["status"] == "reserved":
                reserved_lines[sku] += quantity
            elif res["status"] == "committed":
                committed_lines[sku] += quantity

    sum_on_hand: Counter[str] = Counter()
    sum_reserved: Counter[str] = Counter()
    base: Counter[str] = Counter()  # initial set + operator adjustments
    per_order_move: Counter[tuple[str, str, str]] = Counter()
    for m in movements:
        sum_on_hand[m["sku"]] += m["delta_on_hand"]
        sum_reserved[m["sku"]] += m["delta_reserved"]
        if m["reason"] in SAGA_STOCK_REASONS:
            if m["order_id"]:
                per_order_move[(m["order_id"], m["sku"], m["reason"])] += 1
        else:
            base[m["sku"]] += m["delta_on_hand"]
    for (order_id, sku, reason), n in per_order_move.items():
        if n > 1:
            report.add("duplicate_stock_move", order_id, f"{sku} {reason} {n} times")

    for sku, initial in scope.initial_stock.items():
        item = items.get(sku)
        if item is None:
            report.add("on_hand_mismatch", sku, "no stock item")
            continue
        on_hand, reserved = int(item["on_hand"]), int(item["reserved"])
        if reserved != reserved_lines[sku]:
            report.add(
                "reserved_mismatch",
                sku,
                f"reserved {reserved}, live reservations hold {reserved_lines[sku]}",
            )
        expected = base[sku] - committed_lines[sku]
        if on_hand != expected:
            report.add(
                "on_hand_mismatch",
                sku,
                f"on_hand {on_hand}, expected {expected} (initial {initial}, adjustments "
                f"{base[sku] - initial}, committed {committed_lines[sku]})",
            )
        if (sum_on_hand[sku], sum_reserved[sku]) != (on_hand, reserved):
            report.add(
                "audit_mismatch",
                sku,
                f"row {on_hand}/{reserved}, movements add up to "
                f"{sum_on_hand[sku]}/{sum_reserved[sku]}",
            )
        if kept_units[sku] != committed_lines[sku]:
            report.add(
                "stock_vs_orders",
                sku,
                f"confirmed orders hold {kept_units[sku]} units, committed reservations "
                f"{committed_lines[sku]}",
            )


def _check_emails(
    report: Report,
    by_id: dict[str, asyncpg.Record],
    history: dict[str, set[str]],
    sink: Counter[str],
) -> None:
    received: dict[str, Counter[str]] = defaultdict(Counter)
    for message_id, n in sink.items():
        match = _MESSAGE_ID.fullmatch(message_id)
        if match and match.group(1) in by_id:
            received[match.group(1)][match.group(2)] += n
    for order_id in by_id:
        expected = {STATUS_EMAIL[s] for s in history[order_id] if s in STATUS_EMAIL}
        got = received[order_id]
        report.emails += len(got)
        report.resent += sum(n - 1 for n in got.values())
        for template in sorted(expected - set(got)):
            report.add("missing_email", order_id, template)
        for template in sorted(set(got) - expected):
            report.add(
                "unexpected_email",
                order_id,
                f"{template} (order went through {sorted(history[order_id])})",
            )


async def _check_global(
    dbs: Databases,
    report: Report,
    bootstrap: str | None,
    dlq_seen: set[tuple[str, int, int]] | None,
) -> None:
    for db, n in (await outbox_sizes(dbs)).items():
        if n:
            report.add("outbox_not_empty", db, f"{n} row(s) never published")
    for db, n in (await pending_work(dbs)).items():
        if n:
            report.add("pending_work", db, f"{n} intent(s) never carried out")
    if bootstrap is None:
        return
    dlq_topics = [topics.dlq(t) for t in topics.ALL_TOPICS]
    entries = await asyncio.wait_for(read_dlq(KafkaConnection.operator(bootstrap), dlq_topics), 60)
    seen = dlq_seen if dlq_seen is not None else set()
    for e in entries:
        where = (e["dlq_topic"], e["partition"], e["offset"])
        if where in seen:
            continue
        seen.add(where)
        report.dlq += 1
        report.add(
            "dlq",
            e["dlq_topic"],
            f"{e['type']} {e['event_id']} key={e['key']} group={e['consumer_group']}: "
            f"{(e['error'] or '')[:300]}",
        )
    for group, lag in (await asyncio.wait_for(consumer_lag(bootstrap), 30)).items():
        if lag:
            report.add("consumer_lag", group, f"{lag} record(s) not consumed")


def _lines(raw: Any) -> Iterable[tuple[str, int]]:
    lines = json.loads(raw) if isinstance(raw, str) else raw
    for line in lines or []:
        yield str(line["sku"]), int(line["quantity"])
