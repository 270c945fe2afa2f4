"""The fault runs' invariant checker is not vacuous: a consistent world passes, and each way of
breaking it is reported as its own kind of violation. Pure: the databases are a fake holding
rows as bench/invariants.py reads them, the maildir is a temporary directory."""

import copy
import re
from pathlib import Path
from typing import Any

import pytest

from bench.invariants import Report, Scope, check

SKU = "FLT-X"
ORDERS = {"kept": "o-kept", "declined": "o-declined", "cancelled": "o-cancelled"}


def _line(quantity: int) -> list[dict[str, Any]]:
    return [{"sku": SKU, "quantity": quantity}]


def consistent_world() -> dict[str, list[dict[str, Any]]]:
    """Three settled orders of one sku (initial stock 10): one confirmed (2 units), one declined
    (1 unit released), one confirmed then cancelled (1 unit committed, then restocked)."""
    kept, declined, cancelled = ORDERS["kept"], ORDERS["declined"], ORDERS["cancelled"]

    def moves(order: str, *steps: tuple[str, int, int]) -> list[dict[str, Any]]:
        return [
            {"sku": SKU, "delta_on_hand": d_on_hand, "delta_reserved": d_res, "reason": reason}
            | {"order_id": order}
            for reason, d_on_hand, d_res in steps
        ]

    return {
        "orders": [
            {"id": kept, "status": "confirmed", "reason": None, "lines": _line(2)}
            | {"cancellation_requested": False},
            {"id": declined, "status": "rejected", "reason": "payment_declined", "lines": _line(1)}
            | {"cancellation_requested": False},
            {
                "id": cancelled,
                "status": "cancelled",
                "reason": "customer_request",
                "lines": _line(1),
                "cancellation_requested": True,
            },
        ],
        "order_history": [
            {"order_id": o, "status": s}
            for o, statuses in (
                (kept, ("pending", "confirmed")),
                (declined, ("pending", "rejected")),
                (cancelled, ("pending", "confirmed", "cancelled")),
            )
            for s in statuses
        ],
        "payments": [
            {"order_id": kept, "kind": "capture", "status": "captured", "provider_ref": "ch_1"},
            {"order_id": declined, "kind": "capture", "status": "failed", "provider_ref": None},
            {
                "order_id": cancelled,
                "kind": "capture",
                "status": "refunded",
                "provider_ref": "ch_3",
            },
            {"order_id": cancelled, "kind": "refund", "status": "refunded", "provider_ref": "re_3"},
        ],
        "sandbox_ledger": [
            {
                "idempotency_key": kept,
                "operation": "capture",
                "ref": "ch_1",
                "capture_ref": None,
                "awaiting_action": False,
            },
            {
                "idempotency_key": declined,
                "operation": "capture",
                "ref": None,
                "capture_ref": None,
                "awaiting_action": False,
            },
            {
                "idempotency_key": cancelled,
                "operation": "capture",
                "ref": "ch_3",
                "capture_ref": None,
                "awaiting_action": False,
            },
            {
                "idempotency_key": f"refund:{cancelled}",
                "operation": "refund",
                "ref": "re_3",
                "capture_ref": "ch_3",
                "awaiting_action": False,
            },
        ],
        "payment_orders": [],  # the tokens still stored (none)
        "reservations": [
            {"order_id": kept, "status": "committed", "reason": None, "lines": _line(2)},
            {"order_id": declined, "status": "released", "reason": "payment_declined"}
            | {"lines": _line(1)},
            {"order_id": cancelled, "status": "released", "reason": "cancelled", "lines": _line(1)},
        ],
        "stock_items": [{"sku": SKU, "on_hand": 8, "reserved": 0}],
        "stock_movements": [
            {
                "sku": SKU,
                "delta_on_hand": 10,
                "delta_reserved": 0,
                "reason": "set",
                "order_id": None,
            },
            *moves(kept, ("reserved", 0, 2), ("committed", -2, -2)),
            *moves(declined, ("reserved", 0, 1), ("released", 0, -1)),
            *moves(cancelled, ("reserved", 0, 1), ("committed", -1, -1), ("restocked", 1, 0)),
        ],
        "outbox": [],
    }


EMAILS = [
    (ORDERS["kept"], "order_confirmed"),
    (ORDERS["declined"], "order_rejected"),
    (ORDERS["cancelled"], "order_confirmed"),
    (ORDERS["cancelled"], "order_cancelled"),
]


class FakeDatabases:
    """Answers bench/invariants.py's queries from in-memory tables (one world for all six
    databases: the table names do not overlap)."""

    def __init__(self, tables: dict[str, list[dict[str, Any]]]) -> None:
        self.tables = tables

    async def fetch(self, db: str, query: str, *args: Any) -> list[dict[str, Any]]:
        match = re.search(r"FROM (\w+)", query)
        assert match, query
        rows = self.tables.get(match.group(1), [])
        if "token IS NOT NULL" in query:
            rows = [r for r in rows if r.get("token")]
        if "capture_status = 'pending'" in query:
            rows = [
                r for r in rows if "pending" in (r.get("capture_status"), r.get("refund_status"))
            ]
        if "status = 'pending'" in query and match.group(1) in ("notifications", "shipments"):
            rows = [r for r in rows if r.get("status") == "pending"]
        if "status = 'failed'" in query:
            rows = [r for r in rows if r.get("status") == "failed" and r["order_id"] in args[0]]
        if "count(*)" in query:
            if match.group(1) == "orders":  # open_orders
                rows = [r for r in rows if r["status"] == "pending"]
            return [{"n": len(rows)}]
        return rows


def write_mail(maildir: Path, emails: list[tuple[str, str]]) -> None:
    maildir.mkdir(parents=True, exist_ok=True)
    for n, (order_id, template) in enumerate(emails):
        (maildir / f"{n:04d}.eml").write_text(
            f"From: shop@backroom.local\nMessage-ID: <{order_id}/{template}@backroom>\n\nbody\n"
        )


async def run_check(
    tables: dict[str, list[dict[str, Any]]],
    maildir: Path,
    emails: list[tuple[str, str]] = EMAILS,
    accepted: set[str] | None = None,
) -> Report:
    write_mail(maildir, emails)
    scope = Scope(
        customer_prefix="flt-",
        initial_stock={SKU: 10},
        accepted=set(ORDERS.values()) if accepted is None else accepted,
    )
    return await check(FakeDatabases(tables), scope, maildir, bootstrap=None)  # type: ignore[arg-type]


def row(tables: dict[str, list[dict[str, Any]]], table: str, **match: Any) -> dict[str, Any]:
    [found] = [r for r in tables[table] if all(r.get(k) == v for k, v in match.items())]
    return found


async def test_a_consistent_world_has_no_violation(tmp_path: Path) -> None:
    report = await run_check(consistent_world(), tmp_path)
    assert report.violations == []
    assert report.orders == 3
    assert (report.captures, report.refunds, report.emails, report.resent) == (2, 1, 4, 0)


async def test_a_payment_still_awaiting_the_shopper_moved_no_money(tmp_path: Path) -> None:
    """3-D Secure abandoned: the PSP holds a reference that awaits the shopper, payments shows
    the payment requires_action, and the order was rejected by its deadline. No money moved."""
    world = consistent_world()
    entry = row(world, "sandbox_ledger", idempotency_key=ORDERS["declined"])
    entry["ref"], entry["awaiting_action"] = "ch_2", True
    payment = row(world, "payments", order_id=ORDERS["declined"])
    payment["status"], payment["provider_ref"] = "requires_action", "ch_2"
    report = await run_check(world, tmp_path)
    assert report.violations == []
    assert report.captures == 2


async def test_a_resent_email_is_counted_not_a_violation(tmp_path: Path) -> None:
    report = await run_check(consistent_world(), tmp_path, [*EMAILS, EMAILS[0]])
    assert report.violations == []
    assert report.resent == 1


def _lost(t: dict[str, Any]) -> None:
    t["orders"] = [o for o in t["orders"] if o["id"] != ORDERS["declined"]]
    t["order_history"] = [h for h in t["order_history"] if h["order_id"] != ORDERS["declined"]]


def _stuck(t: dict[str, Any]) -> None:
    row(t, "orders", id=ORDERS["kept"])["status"] = "pending"


def _cancellation_stuck(t: dict[str, Any]) -> None:
    row(t, "orders", id=ORDERS["cancelled"])["status"] = "confirmed"


def _refund_missing(t: dict[str, Any]) -> None:
    t["payments"] = [p for p in t["payments"] if p["kind"] != "refund"]
    row(t, "payments", order_id=ORDERS["cancelled"])["status"] = "captured"


def _psp_capture_unrecorded(t: dict[str, Any]) -> None:
    row(t, "sandbox_ledger", idempotency_key=ORDERS["declined"])["ref"] = "ch_2"


def _psp_capture_recorded_as_awaiting(t: dict[str, Any]) -> None:
    """The PSP took the money (the shopper confirmed) but payments still shows the payment
    awaiting the shopper: a capture payments never recorded."""
    row(t, "sandbox_ledger", idempotency_key=ORDERS["declined"])["ref"] = "ch_2"
    payment = row(t, "payments", order_id=ORDERS["declined"])
    payment["status"], payment["provider_ref"] = "requires_action", "ch_2"


def _double_capture(t: dict[str, Any]) -> None:
    t["payments"].append(
        {"order_id": ORDERS["kept"], "kind": "capture", "status": "captured", "provider_ref": "x"}
    )


def _token_kept(t: dict[str, Any]) -> None:
    t["payment_orders"].append({"order_id": ORDERS["kept"], "token": "tok_visa"})


def _reserved_leak(t: dict[str, Any]) -> None:
    row(t, "stock_items", sku=SKU)["reserved"] = 1


def _oversold(t: dict[str, Any]) -> None:
    row(t, "reservations", order_id=ORDERS["kept"])["status"] = "released"


def _double_commit(t: dict[str, Any]) -> None:
    t["stock_movements"].append(
        {"sku": SKU, "delta_on_hand": 0, "delta_reserved": 0, "reason": "committed"}
        | {"order_id": ORDERS["kept"]}
    )


def _outbox_left(t: dict[str, Any]) -> None:
    t["outbox"].append({"id": 1})


def _capture_owed(t: dict[str, Any]) -> None:
    t["payment_orders"].append({"order_id": ORDERS["kept"], "capture_status": "pending"})


def _email_queued(t: dict[str, Any]) -> None:
    t.setdefault("notifications", []).append({"order_id": ORDERS["kept"], "status": "pending"})


def _label_not_bought(t: dict[str, Any]) -> None:
    t.setdefault("shipments", []).append({"order_id": ORDERS["kept"], "status": "pending"})


def _email_failed(t: dict[str, Any]) -> None:
    t.setdefault("notifications", []).append(
        {"order_id": ORDERS["kept"], "status": "failed", "template": "order_confirmed"}
        | {"error": "550 mailbox unavailable"}
    )


@pytest.mark.parametrize(
    ("corrupt", "expected"),
    [
        (_capture_owed, {"pending_work"}),
        (_email_queued, {"pending_work"}),
        (_label_not_bought, {"pending_work"}),
        (_email_failed, {"email_failed"}),
        (_lost, {"lost_order"}),
        (_stuck, {"stuck_order"}),
        (_cancellation_stuck, {"stuck_cancellation"}),
        (_refund_missing, {"capture_not_refunded"}),
        (_psp_capture_unrecorded, {"unrecorded_capture", "capture_not_refunded"}),
        (_psp_capture_recorded_as_awaiting, {"unrecorded_capture", "capture_not_refunded"}),
        (_double_capture, {"double_capture"}),
        (_token_kept, {"token_at_rest"}),
        (_reserved_leak, {"reserved_mismatch", "audit_mismatch"}),
        (_oversold, {"confirmed_without_stock", "on_hand_mismatch", "stock_vs_orders"}),
        (_double_commit, {"duplicate_stock_move"}),
        (_outbox_left, {"outbox_not_empty"}),
    ],
    ids=lambda v: getattr(v, "__name__", "").strip("_") or None,
)
async def test_each_breakage_is_reported(tmp_path: Path, corrupt: Any, expected: set[str]) -> None:
    tables = copy.deepcopy(consistent_world())
    corrupt(tables)
    report = await run_check(tables, tmp_path)
    kinds = {v.kind for v in report.violations}
    if corrupt in (_stuck, _cancellation_stuck):
        # An unsettled order is also out of step with stock and payments: the main kind suffices.
        assert expected <= kinds, report.violations
    else:
        assert kinds == expected, report.violations


async def test_missing_and_unexpected_emails_are_reported(tmp_path: Path) -> None:
    emails = [e for e in EMAILS if e != (ORDERS["cancelled"], "order_cancelled")]
    emails.append((ORDERS["kept"], "order_rejected"))
    report = await run_check(consistent_world(), tmp_path, emails)
    assert sorted((v.kind, v.subject) for v in report.violations) == [
        ("missing_email", ORDERS["cancelled"]),
        ("unexpected_email", ORDERS["kept"]),
    ]
