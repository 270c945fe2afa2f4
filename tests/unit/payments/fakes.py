"""In-memory payments repositories, the sandbox on a dict ledger, and a harness to drive them.

The order rows keep their owed provider calls and leases (on the test's clock); the harness
plays the events payments' handlers receive and runs its charger."""

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

from libs.events.common import Money
from libs.kit.retry import RetryPolicy
from libs.kit.uow import Tx
from services.payments import service
from services.payments.adapters import SandboxProvider
from services.payments.domain import (
    CaptureBalance,
    CapturePolicy,
    Intent,
    LedgerEntry,
    NewPayment,
    OrderPayment,
    Payment,
    ProviderCapture,
    ProviderEvent,
    ProviderResult,
    Refund,
    RefundedCapture,
    RefundIntent,
    Trace,
    intent_of,
    status_after_refunds,
)
from services.payments.service import Charger
from tests.support.fakes import FakeTx, MutableClock, RecordingEvents

WEBHOOK_SECRET = "whsec_fake_sandbox_0123456789"


class MemoryLedger:
    """The sandbox ledger in a dict (the real one is a table committed on its own connection)."""

    def __init__(self) -> None:
        self.entries: dict[str, LedgerEntry] = {}
        self._lock = asyncio.Lock()

    async def get(self, key: str) -> LedgerEntry | None:
        return self.entries.get(key)

    async def by_ref(self, ref: str) -> LedgerEntry | None:
        return next((e for e in self.entries.values() if e.ref == ref), None)

    async def acting_on(self, ref: str) -> list[LedgerEntry]:
        return [e for e in self.entries.values() if e.capture_ref == ref]

    async def apply(
        self, key: str, step: Callable[[LedgerEntry | None], LedgerEntry]
    ) -> LedgerEntry:
        async with self._lock:
            self.entries[key] = step(self.entries.get(key))
            return self.entries[key]


class SandboxDelegate:
    """The operations a test wrapper around the sandbox passes straight on (`self.sandbox`)."""

    name = "sandbox"
    sandbox: SandboxProvider

    async def authorize(
        self, idempotency_key: str, amount: int, currency: str, token: str
    ) -> ProviderResult:
        return await self.sandbox.authorize(idempotency_key, amount, currency, token)

    async def capture_authorized(
        self, idempotency_key: str, authorization_ref: str, amount: int
    ) -> ProviderResult:
        return await self.sandbox.capture_authorized(idempotency_key, authorization_ref, amount)

    async def void(self, idempotency_key: str, authorization_ref: str) -> ProviderResult:
        return await self.sandbox.void(idempotency_key, authorization_ref)

    def parse_webhook(self, payload: bytes, headers: Mapping[str, str]) -> ProviderEvent:
        return self.sandbox.parse_webhook(payload, headers)

    async def confirm_action(
        self, ref: str, *, succeeded: bool, order_id: str | None = None
    ) -> tuple[bytes, dict[str, str]] | None:
        return await self.sandbox.confirm_action(ref, succeeded=succeeded, order_id=order_id)


class SimulatedCrash(Exception):
    """The process 'died' between the provider's answer and our commit."""


class FakeProvider(SandboxDelegate):
    """The sandbox on a dict ledger, with what tests need around it: a crash right after the
    provider acted, a capture held until a test releases it, refunds declined, and call counts."""

    def __init__(self) -> None:
        self.ledger = MemoryLedger()
        self.sandbox = SandboxProvider(self.ledger, slow_s=0.0, webhook_secret=WEBHOOK_SECRET)
        self.crash_after: set[str] = set()  # keys whose next call "crashes" once it is done
        self.hold: dict[str, asyncio.Event] = {}  # keys whose capture waits for the event
        self.started: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.decline_refunds = False
        self.captures: list[str] = []
        self.lookups: list[str] = []
        self.refunds: list[str] = []

    async def capture(
        self, idempotency_key: str, amount: int, currency: str, token: str
    ) -> ProviderResult:
        self.captures.append(idempotency_key)
        self.started[idempotency_key].set()
        held = self.hold.get(idempotency_key)
        if held is not None:
            await held.wait()
        result = await self.sandbox.capture(idempotency_key, amount, currency, token)
        self._maybe_crash(idempotency_key)
        return result

    async def find_capture(self, idempotency_key: str) -> ProviderCapture | None:
        self.lookups.append(idempotency_key)
        return await self.sandbox.find_capture(idempotency_key)

    async def refund(self, idempotency_key: str, capture_ref: str, amount: int) -> ProviderResult:
        self.refunds.append(idempotency_key)
        if self.decline_refunds:
            return ProviderResult.declined("refund_refused")
        result = await self.sandbox.refund(idempotency_key, capture_ref, amount)
        self._maybe_crash(idempotency_key)
        return result

    def _maybe_crash(self, key: str) -> None:
        if key in self.crash_after:
            self.crash_after.discard(key)
            raise SimulatedCrash(key)


class FakeOrderPayments:
    """The payment_orders rows; leases run on the test's clock (the real ones on the database's)."""

    def __init__(self, clock: MutableClock) -> None:
        self.clock = clock
        self.rows: dict[str, OrderPayment] = {}
        self.leases: dict[str, datetime] = {}
        self.traces: dict[str, Trace] = {}
        self.authorized_at: dict[str, datetime] = {}

    async def lapse_holds(self, lifetime_s: float, limit: int) -> list[OrderPayment]:
        cutoff = self.clock() - timedelta(seconds=lifetime_s)
        lapsed: list[OrderPayment] = []
        for order_id, row in self.rows.items():
            at = self.authorized_at.get(order_id)
            if (
                len(lapsed) < limit
                and row.capture_status == "authorized"
                and row.refund_status is None
                and not row.closed
                and not row.hold_lapsed
                and at is not None
                and at <= cutoff
            ):
                lapsed.append(replace(row, hold_lapsed=True))
        for row in lapsed:
            self.rows[row.order_id] = row
        return lapsed

    async def lock(
        self, order_id: str, customer_id: str | None = None, *, stock_reserved: bool = False
    ) -> OrderPayment:
        row = self.rows.get(order_id) or OrderPayment(order_id=order_id)
        row = replace(
            row,
            customer_id=row.customer_id or customer_id,
            stock_reserved=row.stock_reserved or stock_reserved,
        )
        self.rows[order_id] = row
        return row

    async def save(
        self, order: OrderPayment, *, intent: Trace | None = None, lease_s: float | None = None
    ) -> None:
        self.rows[order.order_id] = order
        if intent is not None:
            self.leases.pop(order.order_id, None)
            if lease_s is not None:  # claimed by the saving transaction
                self.leases[order.order_id] = self.clock() + timedelta(seconds=lease_s)
            self.traces[order.order_id] = intent

    async def claim_due(self, limit: int, lease_s: float) -> list[Intent]:
        now = self.clock()
        claimed: list[Intent] = []
        for order_id, row in self.rows.items():
            if len(claimed) >= limit:
                break
            owed = row.capture_status == "pending" or row.refund_status == "pending"
            lease = self.leases.get(order_id)
            if not owed or (lease is not None and lease > now):
                continue
            row = replace(row, attempts=row.attempts + 1)
            self.rows[order_id] = row
            self.leases[order_id] = now + timedelta(seconds=lease_s)
            claimed.append(intent_of(row, self.traces.get(order_id, Trace())))
        return claimed

    async def settle_capture(
        self,
        order_id: str,
        status: Literal["requires_action", "authorized", "captured", "failed"],
        ref: str | None,
        *,
        awaiting: bool = False,
    ) -> OrderPayment | None:
        row = self.rows.get(order_id)
        if row is None or row.capture_status != ("requires_action" if awaiting else "pending"):
            return None
        settled = replace(row, capture_status=status, capture_ref=ref, token=None)
        if status == "authorized":
            settled = replace(settled, hold_ref=ref)
            self.authorized_at[order_id] = self.clock()
        return self._settled(settled)

    async def settle_release(self, order_id: str, *, released: bool) -> OrderPayment | None:
        row = self.rows.get(order_id)
        if row is None or row.refund_status != "pending" or row.capture_status != "authorized":
            return None
        if released:
            return self._settled(replace(row, refund_status="refunded", capture_status="voided"))
        return self._settled(replace(row, refund_status="failed"))

    async def lock_existing(self, order_id: str) -> OrderPayment | None:
        return self.rows.get(order_id)

    async def drop_capture(self, order_id: str) -> OrderPayment | None:
        row = self.rows.get(order_id)
        if row is None or row.capture_status != "pending":
            return None
        return self._settled(replace(row, capture_status=None, token=None))

    async def settle_refund(
        self, order_id: str, status: Literal["refunded", "failed"]
    ) -> OrderPayment | None:
        row = self.rows.get(order_id)
        if row is None or row.refund_status != "pending":
            return None
        return self._settled(replace(row, refund_status=status))

    def _settled(self, row: OrderPayment) -> OrderPayment:
        self.rows[row.order_id] = row
        self.leases.pop(row.order_id, None)
        return row

    async def customer_of(self, order_id: str) -> str | None:
        row = self.rows.get(order_id)
        return None if row is None else row.customer_id

    def owed(self, order_id: str) -> bool:
        row = self.rows[order_id]
        return row.capture_status == "pending" or row.refund_status == "pending"


class FakePayments:
    """The payments rows, with the unique (order_id, kind) of the real table."""

    def __init__(self, clock: MutableClock) -> None:
        self.clock = clock
        self.rows: list[Payment] = []
        self.kinds: dict[str, str] = {}  # payment id -> kind
        self.reserved: dict[str, int] = {}  # capture id -> refunds made or under way

    async def add(self, payment: NewPayment) -> str:
        for i, p in enumerate(self.rows):
            if p.order_id == payment.order_id and self.kinds[p.id] == payment.kind:
                if p.status not in ("requires_action", "authorized"):
                    raise AssertionError(f"unique (order_id, kind) violated: {payment}")
                self.rows[i] = replace(
                    p,
                    status=payment.status,
                    provider_ref=payment.provider_ref,
                    failure_reason=payment.failure_reason,
                    next_action=payment.next_action,
                )
                return p.id
        self.clock.advance(0.001)  # distinct created_at, as rows written apart have
        self.kinds[payment.id] = payment.kind
        self.rows.append(
            Payment(
                id=payment.id,
                order_id=payment.order_id,
                customer_id=payment.customer_id,
                amount=payment.amount,
                currency=payment.currency,
                status=payment.status,
                provider_ref=payment.provider_ref,
                failure_reason=payment.failure_reason,
                created_at=self.clock(),
                refunded_at=None,
                next_action=payment.next_action,
            )
        )
        return payment.id

    async def mark_refunded(self, order_id: str) -> RefundedCapture | None:
        for i, p in enumerate(self.rows):
            if (
                p.order_id == order_id
                and self.kinds[p.id] == "capture"
                and p.status in ("captured", "partially_refunded")
            ):
                self.rows[i] = replace(
                    p, status="refunded", refunded=p.amount, refunded_at=self.clock()
                )
                self.reserved[p.id] = p.amount
                return RefundedCapture(p.id, p.customer_id, p.amount, p.currency)
        return None

    def _capture(self, payment_id: str) -> tuple[int, Payment] | None:
        for i, p in enumerate(self.rows):
            if p.id == payment_id and self.kinds[p.id] == "capture":
                return i, p
        return None

    async def lock_capture(self, payment_id: str) -> CaptureBalance | None:
        found = self._capture(payment_id)
        return None if found is None else self._balance(found[1])

    def _balance(self, p: Payment) -> CaptureBalance:
        return CaptureBalance(
            payment_id=p.id,
            order_id=p.order_id,
            customer_id=p.customer_id,
            amount=p.amount,
            currency=p.currency,
            status=p.status,
            provider_ref=p.provider_ref,
            refunded=p.refunded,
            reserved=self.reserved.get(p.id, 0),
        )

    async def reserve_refund(self, payment_id: str, amount: int) -> None:
        found = self._capture(payment_id)
        assert found is not None
        held = self.reserved.get(payment_id, 0) + amount
        assert held <= found[1].amount, "the database's check would refuse this"
        self.reserved[payment_id] = held

    async def reserve_rest(self, order_id: str) -> int:
        for p in self.rows:
            if (
                p.order_id == order_id
                and self.kinds[p.id] == "capture"
                and p.status in ("captured", "partially_refunded")
            ):
                rest = p.amount - self.reserved.get(p.id, 0)
                self.reserved[p.id] = p.amount
                return rest
        return 0

    async def settle_refund(self, payment_id: str, amount: int, *, moved: bool) -> CaptureBalance:
        found = self._capture(payment_id)
        assert found is not None
        i, p = found
        if moved:
            refunded = p.refunded + amount
            status = status_after_refunds(p.amount, refunded)
            p = replace(p, refunded=refunded, status=status, refunded_at=self.clock())
            self.rows[i] = p
        else:
            self.reserved[payment_id] = self.reserved.get(payment_id, 0) - amount
        return self._balance(p)

    async def get(self, payment_id: str) -> Payment | None:
        found = self._capture(payment_id)
        return None if found is None else found[1]

    async def conclude_hold(self, order_id: str) -> str | None:
        for i, p in enumerate(self.rows):
            if (
                p.order_id == order_id
                and self.kinds[p.id] == "capture"
                and p.status == "authorized"
            ):
                self.rows[i] = replace(p, status="voided")
                return p.id
        return None

    async def by_provider_ref(self, ref: str) -> Payment | None:
        return next(
            (p for p in self.rows if p.provider_ref == ref and self.kinds[p.id] == "capture"), None
        )

    async def page(
        self,
        *,
        customer_id: str | None,
        order_id: str | None,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[Payment]:
        rows = [
            p
            for p in self.rows
            if self.kinds[p.id] == "capture"
            and (customer_id is None or p.customer_id == customer_id)
            and (order_id is None or p.order_id == order_id)
            and (after is None or (p.created_at, p.id) < after)
        ]
        rows.sort(key=lambda p: (p.created_at, p.id), reverse=True)
        return rows[: limit + 1]

    def of(self, order_id: str, kind: str = "capture") -> list[Payment]:
        return [p for p in self.rows if p.order_id == order_id and self.kinds[p.id] == kind]


class FakeRefunds:
    """The refunds table; pending ones are claimed with leases on the test's clock."""

    def __init__(self, clock: MutableClock) -> None:
        self.clock = clock
        self.rows: dict[str, Refund] = {}
        self.keys: dict[tuple[str, str], tuple[str, str]] = {}  # -> (refund id, request hash)
        self.capture_refs: dict[str, str] = {}
        self.traces: dict[str, Trace] = {}
        self.leases: dict[str, datetime] = {}
        self.attempts: dict[str, int] = defaultdict(int)
        self.return_ids: dict[str, str] = {}  # refund id -> the return it refunds (issue 12)

    async def add(
        self,
        refund: Refund,
        *,
        capture_ref: str,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
        trace: Trace = Trace(),
    ) -> bool:
        if idempotency_key is not None:
            if (refund.payment_id, idempotency_key) in self.keys:
                return False
            self.keys[(refund.payment_id, idempotency_key)] = (refund.id, request_hash or "")
        self.rows[refund.id] = replace(refund, created_at=self.clock())
        self.capture_refs[refund.id] = capture_ref
        self.traces[refund.id] = trace
        return True

    async def by_key(self, payment_id: str, idempotency_key: str) -> tuple[Refund, str] | None:
        known = self.keys.get((payment_id, idempotency_key))
        return None if known is None else (self.rows[known[0]], known[1])

    async def get(self, refund_id: str) -> Refund | None:
        return self.rows.get(refund_id)

    async def of_payment(
        self, payment_id: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[Refund]:
        rows = sorted(
            (
                r
                for r in self.rows.values()
                if r.payment_id == payment_id and (after is None or (r.created_at, r.id) > after)
            ),
            key=lambda r: r.created_at,  # stable: ties in the order they were added
        )
        return rows[: limit + 1]

    async def claim_due(self, limit: int, lease_s: float) -> list[RefundIntent]:
        now = self.clock()
        claimed: list[RefundIntent] = []
        for refund in self.rows.values():
            lease = self.leases.get(refund.id)
            if len(claimed) >= limit or refund.status != "pending" or (lease and lease > now):
                continue
            self.attempts[refund.id] += 1
            self.leases[refund.id] = now + timedelta(seconds=lease_s)
            claimed.append(
                RefundIntent(
                    refund_id=refund.id,
                    payment_id=refund.payment_id,
                    order_id=refund.order_id,
                    amount=refund.amount,
                    currency=refund.currency,
                    capture_ref=self.capture_refs[refund.id],
                    reason=refund.reason,
                    attempts=self.attempts[refund.id],
                    trace=self.traces[refund.id],
                    return_id=self.return_ids.get(refund.id),
                )
            )
        return claimed

    async def settle(
        self,
        refund_id: str,
        status: Literal["succeeded", "failed"],
        provider_ref: str | None,
        failure_reason: str | None,
    ) -> Refund | None:
        refund = self.rows.get(refund_id)
        if refund is None or refund.status != "pending":
            return None
        refund = replace(
            refund, status=status, provider_ref=provider_ref, failure_reason=failure_reason
        )
        self.rows[refund_id] = refund
        self.leases.pop(refund_id, None)
        return refund


class FakeReturnRefunds:
    """Refunds of returns over the payments and refunds fakes, the return id unique (issue 12)."""

    def __init__(self, payments: FakePayments, refunds: FakeRefunds) -> None:
        self.payments = payments
        self.refunds = refunds

    async def lock_capture_of(self, order_id: str) -> CaptureBalance | None:
        captures = self.payments.of(order_id)
        return None if not captures else self.payments._balance(captures[0])

    async def add(self, refund: Refund, *, capture_ref: str, return_id: str, trace: Trace) -> bool:
        if return_id in self.refunds.return_ids.values():
            return False
        await self.refunds.add(refund, capture_ref=capture_ref, trace=trace)
        self.refunds.return_ids[refund.id] = return_id
        return True


class FakeDeliveries:
    """The provider webhooks handled (the inbox's ids)."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    async def claim(self, provider: str, event_id: str, event_type: str) -> bool:
        key = f"{provider}:{event_id}"
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


@dataclass
class FakeStore:
    clock: MutableClock
    orders: FakeOrderPayments = field(init=False)
    payments: FakePayments = field(init=False)
    refunds: FakeRefunds = field(init=False)
    deliveries: FakeDeliveries = field(init=False)
    return_refunds: "FakeReturnRefunds" = field(init=False)

    def __post_init__(self) -> None:
        self.orders = FakeOrderPayments(self.clock)
        self.payments = FakePayments(self.clock)
        self.refunds = FakeRefunds(self.clock)
        self.deliveries = FakeDeliveries()
        self.return_refunds = FakeReturnRefunds(self.payments, self.refunds)


@dataclass
class TracingUnitOfWork:
    """A UnitOfWork over the shared store that remembers which story each transaction joined."""

    store: FakeStore
    events: RecordingEvents
    traces: list[Trace] = field(default_factory=list)

    def __call__(
        self, correlation_id: str | None = None, causation_id: str | None = None
    ) -> AbstractAsyncContextManager[Tx[FakeStore]]:
        return self._begin(Trace(correlation_id, causation_id))

    @asynccontextmanager
    async def _begin(self, trace: Trace) -> AsyncIterator[Tx[FakeStore]]:
        self.traces.append(trace)
        tx = FakeTx(self.store, self.events)
        yield tx
        tx.commit()


class Harness:
    """Payments on fakes: play the events its handlers receive, and run its charger."""

    LEASE_S = 30.0

    def __init__(
        self,
        retry: RetryPolicy | None = None,
        concurrency: int = 16,
        policy: CapturePolicy = "immediate",
        *,
        handed: bool = False,
    ) -> None:
        """`handed`: the events hand their captures to the charger claimed (as main wires)."""
        self.clock = MutableClock()
        self.store = FakeStore(self.clock)
        self.events = RecordingEvents()
        self.uow = TracingUnitOfWork(self.store, self.events)
        self.provider = FakeProvider()
        self.wakes = 0
        self.charger = Charger(
            self.uow,
            self.provider,
            retry or RetryPolicy(attempts=4, initial_s=0.0, max_s=0.0),
            lease_s=self.LEASE_S,
            concurrency=concurrency,
            policy=policy,
        )
        self.charger.wake = self.wake
        self.handed = self.charger if handed else None

    def wake(self) -> None:
        self.wakes += 1

    def trace(self, event_id: str) -> Trace:
        return Trace(correlation_id="req-1", causation_id=event_id)

    async def instruct(
        self, order_id: str, customer: str = "c-1", amount: int = 1000, token: str = "tok_visa"
    ) -> None:
        tx = FakeTx(self.store, self.events)
        await service.record_instruction(
            tx,
            order_id=order_id,
            customer_id=customer,
            amount=Money(amount=amount, currency="EUR"),
            token=token,
            trace=self.trace(f"instr-{order_id}"),
            wake=self.wake,
            charger=self.handed,
        )
        tx.commit()

    async def reserve(self, order_id: str) -> None:
        tx = FakeTx(self.store, self.events)
        await service.record_stock_reserved(
            tx, order_id, trace=self.trace(f"res-{order_id}"), wake=self.wake, charger=self.handed
        )
        tx.commit()

    async def ship(self, order_id: str) -> None:
        tx = FakeTx(self.store, self.events)
        await service.record_shipped(
            tx, order_id, trace=self.trace(f"ship-{order_id}"), wake=self.wake
        )
        tx.commit()

    async def reject(self, order_id: str, reason: str, customer: str = "c-1") -> None:
        await self._close(order_id, customer, reason, cancellation=False)

    async def cancel(self, order_id: str, customer: str = "c-1") -> None:
        await self._close(order_id, customer, "customer_request", cancellation=True)

    async def _close(self, order_id: str, customer: str, reason: str, cancellation: bool) -> None:
        tx = FakeTx(self.store, self.events)
        await service.close_order(
            tx,
            order_id=order_id,
            customer_id=customer,
            reason=reason,
            cancellation=cancellation,
            trace=self.trace(f"close-{order_id}"),
            wake=self.wake,
        )
        tx.commit()

    async def run_charger(self) -> None:
        """What the worker does until nothing is due: claim, call, record."""
        while True:
            await self.charger.step()
            if not self.charger.busy:
                return
            await self.charger.idle()

    async def checkout(
        self, order_id: str, customer: str = "c-1", amount: int = 1000, token: str = "tok_visa"
    ) -> None:
        await self.instruct(order_id, customer, amount, token)
        await self.reserve(order_id)
        await self.run_charger()

    def emitted(self, order_id: str) -> list[str]:
        """The types of the events published about the order, in order."""
        return [
            type(e).__name__ for e in self.events.emitted if getattr(e, "order_id", "") == order_id
        ]
