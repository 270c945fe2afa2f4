"""Payments use cases: an order's facts, the provider calls they make it owe, and the reads.

Facts are recorded in the event's transaction with the call they make owed (an intent); the
charger carries owed calls out outside any transaction and records each outcome in a new one."""

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Literal, Protocol

from libs.events.common import Money
from libs.events.payments import (
    PaymentAuthorized,
    PaymentCaptured,
    PaymentDisputed,
    PaymentFailed,
    PaymentRefunded,
    PaymentVoided,
)
from libs.kit.errors import Conflict, Invalid, NotFound, Unavailable
from libs.kit.faults import crash_point
from libs.kit.findings import Finding
from libs.kit.retry import RetryPolicy
from libs.kit.uow import Tx, UnitOfWork
from libs.kit.worker import Handoff
from services.payments.adapters import PaymentProvider
from services.payments.domain import (
    CaptureBalance,
    CaptureDecision,
    CapturePolicy,
    CaptureTally,
    CloseDecision,
    Intent,
    NewPayment,
    OrderPayment,
    Payment,
    ProviderEvent,
    ProviderResult,
    Refund,
    RefundedCapture,
    RefundIntent,
    Trace,
    TransientProviderError,
    accepts_instruction,
    admin_refund_key,
    after_capture,
    after_verdict,
    capture_findings,
    claim_in_place,
    close,
    decide_capture,
    decided,
    hold_capture_key,
    instruct,
    must_look_up_first,
    owe_capture,
    owe_refund,
    refund_key,
    refund_problem,
    ship,
    storable_token,
    void_key,
)

log = logging.getLogger(__name__)

# What orders reads in PaymentFailed.reason (it becomes the order's rejection reason); the
# provider's own code travels in `decline_code`.
PAYMENT_DECLINED = "payment_declined"
# The decline code of a hold that lapsed (declined at its capture, or past its lifetime).
AUTHORIZATION_EXPIRED = "authorization_expired"

Wake = Callable[[], None]


class HandOver(Protocol):
    """A charger in this process that takes owed calls claimed by the transaction that makes
    them owed (issue 10: no claim transaction of its own), while it has room."""

    lease_s: float

    def has_room(self) -> bool: ...

    def give(self, tx: Tx["Store"], intent: Intent) -> None:
        """Carry out `intent` once `tx` commits (nothing if it rolls back)."""
        ...


# --- the repositories use cases need (db.py has the real ones, tests in-memory fakes) ---------


class OrderPaymentsRepo(Protocol):
    async def lock(
        self, order_id: str, customer_id: str | None = None, *, stock_reserved: bool = False
    ) -> OrderPayment: ...

    async def save(
        self, order: OrderPayment, *, intent: Trace | None = None, lease_s: float | None = None
    ) -> None: ...

    async def claim_due(self, limit: int, lease_s: float) -> list[Intent]: ...

    async def settle_release(self, order_id: str, *, released: bool) -> OrderPayment | None: ...

    async def settle_capture(
        self,
        order_id: str,
        status: Literal["requires_action", "authorized", "captured", "failed"],
        ref: str | None,
        *,
        awaiting: bool = False,
    ) -> OrderPayment | None: ...

    async def drop_capture(self, order_id: str) -> OrderPayment | None: ...

    async def settle_refund(
        self, order_id: str, status: Literal["refunded", "failed"]
    ) -> OrderPayment | None: ...

    async def customer_of(self, order_id: str) -> str | None: ...

    async def lock_existing(self, order_id: str) -> OrderPayment | None: ...

    async def lapse_holds(self, lifetime_s: float, limit: int) -> list[OrderPayment]: ...


class PaymentsRepo(Protocol):
    async def add(self, payment: NewPayment) -> str: ...

    async def mark_refunded(self, order_id: str) -> RefundedCapture | None: ...

    async def lock_capture(self, payment_id: str) -> CaptureBalance | None: ...

    async def reserve_refund(self, payment_id: str, amount: int) -> None: ...

    async def reserve_rest(self, order_id: str) -> int: ...

    async def settle_refund(
        self, payment_id: str, amount: int, *, moved: bool
    ) -> CaptureBalance: ...

    async def get(self, payment_id: str) -> Payment | None: ...

    async def by_provider_ref(self, ref: str) -> Payment | None: ...

    async def conclude_hold(self, order_id: str) -> str | None: ...

    async def page(
        self,
        *,
        customer_id: str | None,
        order_id: str | None,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[Payment]: ...


class RefundsRepo(Protocol):
    async def add(
        self,
        refund: Refund,
        *,
        capture_ref: str,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
        trace: Trace = Trace(),
    ) -> bool: ...

    async def by_key(self, payment_id: str, idempotency_key: str) -> tuple[Refund, str] | None: ...

    async def of_payment(
        self, payment_id: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[Refund]: ...

    async def claim_due(self, limit: int, lease_s: float) -> list[RefundIntent]: ...

    async def settle(
        self,
        refund_id: str,
        status: Literal["succeeded", "failed"],
        provider_ref: str | None,
        failure_reason: str | None,
    ) -> Refund | None: ...


class DeliveriesRepo(Protocol):
    async def claim(self, provider: str, event_id: str, event_type: str) -> bool: ...


class Store(Protocol):
    @property
    def orders(self) -> OrderPaymentsRepo: ...

    @property
    def payments(self) -> PaymentsRepo: ...

    @property
    def refunds(self) -> RefundsRepo: ...

    @property
    def deliveries(self) -> DeliveriesRepo: ...

    @property
    def return_refunds(self) -> "ReturnRefundsRepo": ...


def new_id() -> str:
    return str(uuid.uuid4())


# --- facts about an order (each in its event's transaction; no provider call) -----------------


async def record_instruction(
    tx: Tx[Store],
    *,
    order_id: str,
    customer_id: str,
    amount: Money,
    token: str,
    trace: Trace,
    wake: Wake,
    charger: HandOver | None = None,
) -> None:
    """Orders told us how to charge the order (the token arrives only here)."""
    order = await tx.store.orders.lock(order_id, customer_id)
    changed = accepts_instruction(order)
    if changed:
        order = instruct(order, amount.amount, amount.currency, storable_token(token))
    await _charge_if_due(tx, order, trace, wake, changed=changed, charger=charger)


async def record_stock_reserved(
    tx: Tx[Store], order_id: str, *, trace: Trace, wake: Wake, charger: HandOver | None = None
) -> None:
    """Inventory holds the order's stock: the other half of what a charge waits for."""
    order = await tx.store.orders.lock(order_id, stock_reserved=True)
    await _charge_if_due(tx, order, trace, wake, changed=False, charger=charger)


async def close_order(
    tx: Tx[Store],
    *,
    order_id: str,
    customer_id: str,
    reason: str,
    cancellation: bool,
    trace: Trace,
    wake: Wake,
) -> None:
    """The order was rejected or is being cancelled: never charge it from now on, give back a
    capture, and answer a cancellation with PaymentRefunded or PaymentVoided (now, or when the
    outcome of a capture the provider may be making right now is known)."""
    order = await tx.store.orders.lock(order_id, customer_id)
    order, decision = close(order, cancellation=cancellation, reason=reason)
    if decision is CloseDecision.REFUND:
        await _owe_the_rest(tx, order, trace, wake)
        return
    if decision is CloseDecision.RELEASE:
        await tx.store.orders.save(order, intent=trace)
        tx.on_commit(wake)
        return
    await tx.store.orders.save(order)
    if decision is CloseDecision.VOID:
        await tx.events.emit(PaymentVoided(order_id=order_id, reason="cancelled"), subject=order_id)
        log.info("order %s cancelled before any capture: voided", order_id)
    elif decision is CloseDecision.AWAIT_CAPTURE:
        log.info(
            "order %s closed while its capture may be under way: its outcome answers", order_id
        )


async def _owe_the_rest(tx: Tx[Store], order: OrderPayment, trace: Trace, wake: Wake) -> None:
    """A closed order's capture is given back: what refunds an operator made have not (held on
    the capture row, so no refund asked for later can take it too). If they gave it all back,
    nothing more is owed and the close is answered at once."""
    rest = await tx.store.payments.reserve_rest(order.order_id)
    order = owe_refund(order, rest)
    if order.refund_status == "pending":
        await tx.store.orders.save(order, intent=trace)
        tx.on_commit(wake)
        return
    await tx.store.orders.save(order)
    assert order.currency is not None
    log.info(
        "order %s closed after refunds gave its capture back: nothing more owed", order.order_id
    )
    await tx.events.emit(
        PaymentRefunded(
            order_id=order.order_id,
            payment_id="",
            amount=Money(amount=0, currency=order.currency),
            provider_ref="",
            reason=order.refund_reason or "cancelled",
        ),
        subject=order.order_id,
    )


async def _charge_if_due(
    tx: Tx[Store],
    order: OrderPayment,
    trace: Trace,
    wake: Wake,
    *,
    changed: bool,
    charger: HandOver | None = None,
) -> None:
    """`order`: as this transaction holds it locked; written if `changed` or decided now. The
    capture is claimed here for this process's `charger` while it has room, else left for a
    claim."""
    decision = decide_capture(order)
    if decision is CaptureDecision.CAPTURE:
        if charger is not None and charger.has_room():
            owed, intent = claim_in_place(owe_capture(order), trace)
            await tx.store.orders.save(owed, intent=trace, lease_s=charger.lease_s)
            charger.give(tx, intent)
            return
        await tx.store.orders.save(owe_capture(order), intent=trace)
        tx.on_commit(wake)
        return
    if decision in (CaptureDecision.DECLINE_INVALID_TOKEN, CaptureDecision.DECLINE_INVALID_AMOUNT):
        # Declined without asking the provider: there is nothing it could accept.
        order = decided(order, "failed")
        await tx.store.orders.save(order)
        await _record_failure(tx, order, decision.value)
        return
    if changed:
        await tx.store.orders.save(order)


async def _record_failure(tx: Tx[Store], order: OrderPayment, decline_code: str | None) -> None:
    assert order.amount is not None and order.currency is not None and order.customer_id
    payment_id = await tx.store.payments.add(
        NewPayment(
            id=new_id(),
            order_id=order.order_id,
            customer_id=order.customer_id,
            kind="capture",
            amount=order.amount,
            currency=order.currency,
            status="failed",
            failure_reason=decline_code,
        )
    )
    await tx.events.emit(
        PaymentFailed(
            order_id=order.order_id,
            payment_id=payment_id,
            reason=PAYMENT_DECLINED,
            decline_code=decline_code,
            amount=Money(amount=order.amount, currency=order.currency),
        ),
        subject=order.order_id,
    )
    log.info("order %s declined: %s", order.order_id, decline_code)


# --- owed provider calls: claim, call outside any transaction, record the outcome --------------


async def claim_intents(uow: UnitOfWork[Store], limit: int, lease_s: float) -> list[Intent]:
    """Take due provider calls for `lease_s` in a short transaction of their own."""
    async with uow() as tx:
        return await tx.store.orders.claim_due(limit, lease_s)


async def charge(
    uow: UnitOfWork[Store],
    provider: PaymentProvider,
    retry: RetryPolicy,
    intent: Intent,
    wake: Wake,
    policy: CapturePolicy = "immediate",
) -> None:
    """Carry out a capture intent and record its outcome: the capture of a hold (the order
    shipped), an authorization (policy on_shipment), or a capture at once. A re-claim (the
    claim before may have reached the provider) or a closed order asks the provider first what
    it did under the key; a closed order is never charged now. Transient errors past `retry`
    raise: the intent stays owed and is claimed again when the lease ends."""
    order_id = intent.order_id
    if intent.hold_ref is not None:
        hold = intent.hold_ref
        result: ProviderResult | None = await retry.run(
            f"capture of the hold of order {order_id}",
            lambda: provider.capture_authorized(hold_capture_key(order_id), hold, intent.amount),
            retry_on=(TransientProviderError,),
        )
        crash_point("payments.after_provider_capture")
    else:
        result = await _pay(provider, retry, intent, policy)
    async with uow(intent.trace.correlation_id, intent.trace.causation_id) as tx:
        if result is None:
            await _drop_capture(tx, intent)
        elif result.awaits_action:
            await _record_awaiting_action(tx, intent, result)
        elif policy == "on_shipment" and intent.hold_ref is None:
            await _record_authorization_outcome(tx, intent, result, wake)
        else:
            await _record_capture_outcome(tx, intent, result, wake)


async def _pay(
    provider: PaymentProvider, retry: RetryPolicy, intent: Intent, policy: CapturePolicy
) -> ProviderResult | None:
    """The first call of an order's payment (None: a closed order the provider took nothing
    for, which is never charged now)."""
    order_id = intent.order_id
    if must_look_up_first(intent):
        found = await retry.run(
            f"capture lookup of order {order_id}",
            lambda: provider.find_capture(order_id),
            retry_on=(TransientProviderError,),
        )
        if found is not None:
            return ProviderResult.succeeded(found.ref)
    if intent.closed:
        return None
    token = intent.token
    if token is None:  # cannot happen: the token goes only with the decision or the close
        return ProviderResult.declined("invalid_token")
    call = provider.authorize if policy == "on_shipment" else provider.capture
    result = await retry.run(
        f"{'authorization' if policy == 'on_shipment' else 'capture'} of order {order_id}",
        lambda: call(order_id, intent.amount, intent.currency, token),
        retry_on=(TransientProviderError,),
    )
    crash_point("payments.after_provider_capture")
    return result


async def _record_authorization_outcome(
    tx: Tx[Store], intent: Intent, result: ProviderResult, wake: Wake
) -> None:
    """Policy on_shipment: the money is held (PaymentAuthorized; orders confirms on it) or the
    authorization was declined (PaymentFailed). A hold for an order that closed meanwhile is
    released at once."""
    if not result.ok:
        await _record_capture_outcome(tx, intent, result, wake)
        return
    order = await tx.store.orders.settle_capture(intent.order_id, "authorized", result.ref)
    if order is None:
        return  # recorded by another claim
    await _record_authorized(tx, order, intent.amount, intent.currency, result.ref or "")
    if order.closed:
        log.info("order %s closed while it was authorized: the hold is released", order.order_id)
        await tx.store.orders.save(
            replace(order, refund_status="pending", attempts=0), intent=intent.trace
        )
        tx.on_commit(wake)


async def record_shipped(tx: Tx[Store], order_id: str, *, trace: Trace, wake: Wake) -> None:
    """The order shipped: a hold (policy on_shipment) is captured now."""
    order = await tx.store.orders.lock_existing(order_id)
    if order is None:
        return
    shipped = ship(order)
    if shipped is None:
        return
    await tx.store.orders.save(shipped, intent=trace)
    tx.on_commit(wake)


async def lapse_holds(uow: UnitOfWork[Store], lifetime_s: float, limit: int = 100) -> int:
    """Holds authorized longer than `lifetime_s` (a card authorization lasts about 7 days) whose
    order has not shipped: each reported once, PaymentFailed `authorization_expired`, upon
    which orders cancels the order (reason payment_issue) and the close releases the hold.
    The token is gone by now, so payments cannot authorize again on its own. Returns how many."""
    async with uow() as tx:
        lapsed = await tx.store.orders.lapse_holds(lifetime_s, limit)
        for order in lapsed:
            assert order.amount is not None and order.currency is not None
            payment = await tx.store.payments.by_provider_ref(order.hold_ref or "")
            await tx.events.emit(
                PaymentFailed(
                    order_id=order.order_id,
                    payment_id=payment.id if payment else "",
                    reason=PAYMENT_DECLINED,
                    decline_code=AUTHORIZATION_EXPIRED,
                    amount=Money(amount=order.amount, currency=order.currency),
                ),
                subject=order.order_id,
            )
            log.warning("order %s: its hold lapsed before it shipped", order.order_id)
    return len(lapsed)


async def release_hold(
    uow: UnitOfWork[Store], provider: PaymentProvider, retry: RetryPolicy, intent: Intent
) -> None:
    """Void a closed order's hold (key `void:<order id>`) and record it: `voided`, answered with
    PaymentVoided; a declined release is left for an operator (the hold lapses on its own)."""
    order_id = intent.order_id
    assert intent.hold_ref is not None  # a release is owed only for a recorded hold
    hold = intent.hold_ref
    result = await retry.run(
        f"release of the hold of order {order_id}",
        lambda: provider.void(void_key(order_id), hold),
        retry_on=(TransientProviderError,),
    )
    crash_point("payments.after_provider_refund")
    async with uow(intent.trace.correlation_id, intent.trace.causation_id) as tx:
        order = await tx.store.orders.settle_release(order_id, released=result.ok)
        if order is None:
            return  # recorded by another claim
        if not result.ok:
            log.error(
                "release of the hold of order %s declined (%s): an operator must look",
                order_id,
                result.decline_reason,
            )
            return
        await tx.store.payments.conclude_hold(order_id)
        await tx.events.emit(
            PaymentVoided(order_id=order_id, reason=order.refund_reason or "cancelled"),
            subject=order_id,
        )
        log.info("order %s: the hold was released", order_id)


async def _record_capture_outcome(
    tx: Tx[Store], intent: Intent, result: ProviderResult, wake: Wake
) -> None:
    order_id, moved = intent.order_id, result.ok
    order = await tx.store.orders.settle_capture(
        order_id, "captured" if moved else "failed", result.ref
    )
    if order is None:
        if not moved:
            return  # recorded by another claim (the same key always answers the same)
        # No capture pending: another claim recorded this one, or it was dropped as never made
        # (a claim that expired while its call was still on the way to the provider).
        order = await tx.store.orders.lock(order_id)
        if order.capture_status in ("captured", "refunded"):
            return
        log.warning("order %s: recording a capture that landed after it was dropped", order_id)
        order = decided(order, "captured", result.ref)
        await tx.store.orders.save(order)
    if not moved:
        await _record_failure(tx, order, result.decline_reason)
    else:
        await _record_capture(tx, order, intent, result.ref or "")
    follow_up = after_capture(order, moved=moved)
    if follow_up is CloseDecision.REFUND:
        log.info("order %s closed while it was captured: refund owed", order_id)
        await _owe_the_rest(tx, order, intent.trace, wake)
    elif follow_up is CloseDecision.VOID:
        await tx.events.emit(PaymentVoided(order_id=order_id, reason="cancelled"), subject=order_id)


async def _record_capture(tx: Tx[Store], order: OrderPayment, intent: Intent, ref: str) -> None:
    await _record_captured(tx, order, intent.amount, intent.currency, ref)


async def _record_captured(
    tx: Tx[Store], order: OrderPayment, amount: int, currency: str, ref: str
) -> None:
    await _record_paid(tx, order, amount, currency, ref, held=False)


async def _record_authorized(
    tx: Tx[Store], order: OrderPayment, amount: int, currency: str, ref: str
) -> None:
    await _record_paid(tx, order, amount, currency, ref, held=True)


async def _record_paid(
    tx: Tx[Store], order: OrderPayment, amount: int, currency: str, ref: str, *, held: bool
) -> None:
    """The money the provider took (or, `held`, holds for a capture when the order ships): the
    order's payment row and PaymentCaptured (PaymentAuthorized)."""
    assert order.customer_id is not None
    payment_id = await tx.store.payments.add(
        NewPayment(
            id=new_id(),
            order_id=order.order_id,
            customer_id=order.customer_id,
            kind="capture",
            amount=amount,
            currency=currency,
            status="authorized" if held else "captured",
            provider_ref=ref,
        )
    )
    announced = PaymentAuthorized if held else PaymentCaptured
    await tx.events.emit(
        announced(
            order_id=order.order_id,
            payment_id=payment_id,
            amount=Money(amount=amount, currency=currency),
            provider_ref=ref,
        ),
        subject=order.order_id,
    )
    log.info(
        "order %s %s (payment %s)", order.order_id, "authorized" if held else "captured", payment_id
    )


async def _record_awaiting_action(tx: Tx[Store], intent: Intent, result: ProviderResult) -> None:
    """The provider wants the shopper's confirmation first (3-D Secure): the order's payment
    shows `requires_action` with the provider's `next_action`; no money moved, the order stays
    pending until the provider's webhook brings the verdict (or its deadline rejects it)."""
    order = await tx.store.orders.settle_capture(intent.order_id, "requires_action", result.ref)
    if order is None:
        return  # recorded by another claim
    assert order.customer_id is not None
    await tx.store.payments.add(
        NewPayment(
            id=new_id(),
            order_id=order.order_id,
            customer_id=order.customer_id,
            kind="capture",
            amount=intent.amount,
            currency=intent.currency,
            status="requires_action",
            provider_ref=result.ref,
            next_action=result.next_action,
        )
    )
    log.info("order %s: the shopper must confirm the payment first", order.order_id)


async def _drop_capture(tx: Tx[Store], intent: Intent) -> None:
    """The order closed before the provider made its capture: it never will now."""
    order = await tx.store.orders.drop_capture(intent.order_id)
    if order is None:
        return
    log.info("order %s closed before its capture was made: nothing captured", intent.order_id)
    if after_capture(order, moved=False) is CloseDecision.VOID:
        await tx.events.emit(
            PaymentVoided(order_id=intent.order_id, reason="cancelled"), subject=intent.order_id
        )


async def give_back(
    uow: UnitOfWork[Store], provider: PaymentProvider, retry: RetryPolicy, intent: Intent
) -> None:
    """Carry out a closed order's refund intent (its key is `refund:<order id>`, so a repeat
    refunds nothing more) and record its outcome; a declined refund is left for an operator."""
    order_id = intent.order_id
    amount = intent.refund_amount if intent.refund_amount is not None else intent.amount
    if intent.capture_ref is None:  # cannot happen: a refund is owed only for a recorded capture
        result = ProviderResult.declined("unknown_capture")
    else:
        capture_ref = intent.capture_ref
        result = await retry.run(
            f"refund of order {order_id}",
            lambda: provider.refund(refund_key(order_id), capture_ref, amount),
            retry_on=(TransientProviderError,),
        )
        crash_point("payments.after_provider_refund")
    async with uow(intent.trace.correlation_id, intent.trace.causation_id) as tx:
        order = await tx.store.orders.settle_refund(order_id, "refunded" if result.ok else "failed")
        if order is None:
            return  # recorded by another claim
        if not result.ok:
            log.error(
                "refund of order %s declined (%s): an operator must look",
                order_id,
                result.decline_reason,
            )
            return
        capture = await tx.store.payments.mark_refunded(order_id)
        if capture is None:
            log.error("order %s refunded at the provider without a capture on record", order_id)
            return
        refund_id = new_id()
        reason = order.refund_reason or "cancelled"
        await tx.store.payments.add(
            NewPayment(
                id=refund_id,
                order_id=order_id,
                customer_id=capture.customer_id,
                kind="refund",
                amount=amount,
                currency=capture.currency,
                status="refunded",
                provider_ref=result.ref,
            )
        )
        # Listed with the operators' refunds of the capture.
        await tx.store.refunds.add(
            Refund(
                id=refund_id,
                payment_id=capture.payment_id,
                order_id=order_id,
                amount=amount,
                currency=capture.currency,
                reason=reason,
                status="succeeded",
                provider_ref=result.ref,
                failure_reason=None,
                created_at=datetime.now(UTC),
            ),
            capture_ref=intent.capture_ref or "",
        )
        await tx.events.emit(
            PaymentRefunded(
                order_id=order_id,
                payment_id=capture.payment_id,
                amount=Money(amount=amount, currency=capture.currency),
                provider_ref=result.ref or "",
                reason=reason,
                refund_id=refund_id,
            ),
            subject=order_id,
        )
        log.info("order %s refunded (payment %s, %s)", order_id, capture.payment_id, reason)


# --- the provider's webhooks -------------------------------------------------------------------


async def apply_provider_event(
    tx: Tx[Store], provider: str, event: ProviderEvent, wake: Wake
) -> str:
    """A verified provider webhook, once (the inbox row is in this transaction): the verdict on
    a payment that awaited the shopper, or a dispute. Returns what it did, for the log and the
    provider's delivery log. Other events (the provider's echo of what we did, types we do not
    act on) are acknowledged and change nothing."""
    if not await tx.store.deliveries.claim(provider, event.id, event.provider_type):
        return "duplicate"
    if event.kind == "disputed":
        return await _record_dispute(tx, provider, event)
    if event.kind in ("succeeded", "authorized", "failed", "canceled") and event.order_id:
        return await _record_verdict(tx, event, event.order_id, wake)
    if event.kind == "refunded":
        return await _record_provider_refund(tx, provider, event)
    return "ignored"


async def _record_verdict(tx: Tx[Store], event: ProviderEvent, order_id: str, wake: Wake) -> str:
    order = await tx.store.orders.lock_existing(order_id)
    if order is not None and order.capture_status == "pending" and order.attempts > 0:
        # The verdict overtook the provider's answer to our own call (a quick shopper, a slow
        # commit): not ours to drop. Unavailable rolls the inbox row back and asks the
        # provider to deliver it again later, when the answer is recorded.
        raise Unavailable(f"order {order_id}: the payment's answer is not recorded yet", 5)
    if order is None or order.capture_status != "requires_action" or order.capture_ref != event.ref:
        return "ignored"  # not a payment awaiting the shopper (our own captures echo back too)
    moved = event.kind in ("succeeded", "authorized")
    held = event.kind == "authorized"
    settled = await tx.store.orders.settle_capture(
        order_id,
        ("authorized" if held else "captured") if moved else "failed",
        event.ref,
        awaiting=True,
    )
    assert settled is not None  # the row is locked and awaited this verdict
    assert settled.amount is not None and settled.currency is not None
    if held:
        await _record_authorized(tx, settled, settled.amount, settled.currency, event.ref or "")
        if settled.closed:
            await tx.store.orders.save(replace(settled, refund_status="pending", attempts=0))
            tx.on_commit(wake)
        return "authorized"
    if moved:
        await _record_captured(tx, settled, settled.amount, settled.currency, event.ref or "")
    else:
        await _record_failure(tx, settled, event.reason or "authentication_failed")
    if after_verdict(settled, moved=moved) is CloseDecision.REFUND:
        log.info("order %s closed before the shopper confirmed: refund owed", order_id)
        await _owe_the_rest(tx, settled, Trace(None, None), wake)
    return "captured" if moved else "failed"


async def _record_provider_refund(tx: Tx[Store], provider: str, event: ProviderEvent) -> str:
    """The provider reports what it refunded of a payment in total (Stripe's
    `charge.amount_refunded`). What exceeds what our refunds gave back or are giving back was
    refunded outside Backroom (the provider's dashboard): recorded as a refund of the payment,
    with its PaymentRefunded, so the payment and the order show it. Our own refunds' echoes
    change nothing."""
    if not event.ref or event.amount is None:
        return "ignored"
    payment = await tx.store.payments.by_provider_ref(event.ref)
    capture = await tx.store.payments.lock_capture(payment.id) if payment else None
    if capture is None or capture.provider_ref is None:
        return "ignored"
    outside = min(event.amount, capture.amount) - capture.reserved
    if outside <= 0:
        return "ignored"
    refund = Refund(
        id=new_id(),
        payment_id=capture.payment_id,
        order_id=capture.order_id,
        amount=outside,
        currency=capture.currency,
        reason=f"refunded at {provider}",
        status="succeeded",
        provider_ref=None,
        failure_reason=None,
        created_at=datetime.now(UTC),
    )
    await tx.store.payments.reserve_refund(capture.payment_id, outside)
    balance = await tx.store.payments.settle_refund(capture.payment_id, outside, moved=True)
    await tx.store.refunds.add(refund, capture_ref=capture.provider_ref)
    await tx.events.emit(
        PaymentRefunded(
            order_id=capture.order_id,
            payment_id=capture.payment_id,
            amount=Money(amount=outside, currency=capture.currency),
            provider_ref="",
            reason=refund.reason,
            refund_id=refund.id,
            fully_refunded=balance.status == "refunded",
        ),
        subject=capture.order_id,
    )
    log.warning(
        "payment %s: %s %s refunded at %s outside Backroom",
        capture.payment_id,
        outside,
        capture.currency,
        provider,
    )
    return "refunded"


async def _record_dispute(tx: Tx[Store], provider: str, event: ProviderEvent) -> str:
    payment = await tx.store.payments.by_provider_ref(event.ref) if event.ref else None
    if payment is None:
        log.error("provider %s reports a dispute on unknown payment %s", provider, event.ref)
        return "ignored"
    await tx.events.emit(
        PaymentDisputed(
            order_id=payment.order_id,
            payment_id=payment.id,
            amount=Money(
                amount=event.amount if event.amount is not None else payment.amount,
                currency=(event.currency or payment.currency).upper(),
            ),
            reason=event.reason or "unknown",
            provider_ref=payment.provider_ref or "",
            provider=provider,
        ),
        subject=payment.order_id,
    )
    log.warning("payment %s of order %s disputed: %s", payment.id, payment.order_id, event.reason)
    return "disputed"


# --- refunds an operator asks for -------------------------------------------------------------


@dataclass(frozen=True)
class RefundAsked:
    """`POST /payments/{id}/refunds` as the use case takes it."""

    payment_id: str
    amount: Money
    reason: str
    idempotency_key: str
    request_hash: str
    trace: Trace


@dataclass(frozen=True)
class RefundAnswer:
    refund: Refund
    replayed: bool  # the same key and body asked before: the refund it made


async def ask_refund(tx: Tx[Store], asked: RefundAsked, wake: Wake) -> RefundAnswer:
    """Record an operator's refund, owed to the provider once this commits (the charger makes
    the call, as for every provider call): the capture row locked, at most what is left of it
    held for this refund. Same Idempotency-Key and body: the refund made then."""
    capture = await tx.store.payments.lock_capture(asked.payment_id)
    if capture is None:
        raise NotFound(f"payment {asked.payment_id}")
    known = await tx.store.refunds.by_key(asked.payment_id, asked.idempotency_key)
    if known is not None:
        refund, request_hash = known
        if request_hash != asked.request_hash:
            raise Conflict("this Idempotency-Key was already used with a different request body")
        return RefundAnswer(refund, replayed=True)
    problem = refund_problem(capture, asked.amount.amount, asked.amount.currency)
    if problem is not None:
        if problem.field is None:
            raise Conflict(problem.message)
        raise Invalid.field(problem.field, problem.message)
    assert capture.provider_ref is not None  # refund_problem refuses a capture without one
    refund = Refund(
        id=new_id(),
        payment_id=capture.payment_id,
        order_id=capture.order_id,
        amount=asked.amount.amount,
        currency=capture.currency,
        reason=asked.reason,
        status="pending",
        provider_ref=None,
        failure_reason=None,
        created_at=datetime.now(UTC),
    )
    await tx.store.payments.reserve_refund(capture.payment_id, refund.amount)
    await tx.store.refunds.add(
        refund,
        capture_ref=capture.provider_ref,
        idempotency_key=asked.idempotency_key,
        request_hash=asked.request_hash,
        trace=asked.trace,
    )
    tx.on_commit(wake)
    log.info("refund %s of payment %s asked for", refund.id, capture.payment_id)
    return RefundAnswer(refund, replayed=False)


async def make_refund(
    uow: UnitOfWork[Store], provider: PaymentProvider, retry: RetryPolicy, intent: RefundIntent
) -> None:
    """Carry out an operator's refund (key `refund:<refund id>`: a repeat moves nothing more)
    and record the answer: given back (PaymentRefunded with its amount) or declined (the hold
    on the capture released; logged for an operator)."""
    result = await retry.run(
        f"refund {intent.refund_id}",
        lambda: provider.refund(
            admin_refund_key(intent.refund_id), intent.capture_ref, intent.amount
        ),
        retry_on=(TransientProviderError,),
    )
    crash_point("payments.after_provider_refund")
    async with uow(intent.trace.correlation_id, intent.trace.causation_id) as tx:
        refund = await tx.store.refunds.settle(
            intent.refund_id,
            "succeeded" if result.ok else "failed",
            result.ref if result.ok else None,
            None if result.ok else result.decline_reason,
        )
        if refund is None:
            return  # recorded by another claim
        capture = await tx.store.payments.settle_refund(
            intent.payment_id, intent.amount, moved=result.ok
        )
        if not result.ok:
            log.error(
                "refund %s of payment %s declined (%s): an operator must look",
                intent.refund_id,
                intent.payment_id,
                result.decline_reason,
            )
            return
        await tx.events.emit(
            PaymentRefunded(
                order_id=intent.order_id,
                payment_id=intent.payment_id,
                amount=Money(amount=intent.amount, currency=intent.currency),
                provider_ref=result.ref or "",
                reason=intent.reason,
                refund_id=intent.refund_id,
                fully_refunded=capture.status == "refunded",
                return_id=intent.return_id,
            ),
            subject=intent.order_id,
        )
        log.info("refund %s of payment %s made", intent.refund_id, intent.payment_id)


class Charger:
    """Carries out the provider calls orders owe: `step` (run by a kit Worker) claims what is
    due and starts each call in its own task, at most `concurrency` at once, so a slow call
    delays no other order. Set `wake` to the worker's wake (outcomes that owe a refund call it)."""

    def __init__(
        self,
        uow: UnitOfWork[Store],
        provider: PaymentProvider,
        retry: RetryPolicy,
        *,
        lease_s: float = 30.0,
        concurrency: int = 16,
        policy: CapturePolicy = "immediate",
    ) -> None:
        self.uow = uow
        self.provider = provider
        self.policy: CapturePolicy = policy
        self.retry = retry
        self.lease_s = lease_s
        self.concurrency = concurrency
        self.wake: Wake = lambda: None
        # Captures claimed by the transaction that made them owed, for this process (HandOver).
        self._handed: Handoff[Intent] = Handoff(concurrency, lambda: self.wake())
        self._running: dict[str, asyncio.Task[None]] = {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._stopped = False

    def has_room(self) -> bool:
        """HandOver: whether a call claimed now would start without waiting for a free slot
        (a waiting claim's lease would run down meanwhile)."""
        return len(self._handed) + len(self._running) < self.concurrency and not self._stopped

    def give(self, tx: Tx[Store], intent: Intent) -> None:
        """HandOver: carry out `intent` (claimed by `tx`) once `tx` commits."""
        self._handed.give(tx, intent)

    async def settled(self, key: str, timeout_s: float) -> None:
        """Wait until this process has carried out the call `key` (e.g. `refund:<id>`), at most
        `timeout_s` (another replica may be making it, or the provider is slow)."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout_s)
        except TimeoutError:
            pass
        finally:
            waiters = self._waiters.get(key, [])
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self._waiters.pop(key, None)

    async def step(self) -> int:
        """Claim up to the free capacity (waiting for a free slot first) and start the calls.
        Returns how many it claimed if that filled the capacity (more may be due: the worker
        steps again at once), else 0 (everything due is under way: the worker waits for its
        wake or poll, with no trailing empty claim)."""
        while len(self._running) >= self.concurrency:
            await asyncio.wait(self._running.values(), return_when=asyncio.FIRST_COMPLETED)
        if self._stopped:
            return 0
        free = self.concurrency - len(self._running)
        intents: list[Intent | RefundIntent] = [*self._handed.take(free)]
        if not intents:
            async with self.uow() as tx:
                intents += await tx.store.orders.claim_due(free, self.lease_s)
                if len(intents) < free:
                    intents += await tx.store.refunds.claim_due(free - len(intents), self.lease_s)
        for intent in intents:
            key = (
                f"{intent.operation}:{intent.order_id}"
                if isinstance(intent, Intent)
                else f"refund:{intent.refund_id}"
            )
            if key in self._running:
                continue  # its lease ran out while this process still waits for the provider
            task = asyncio.create_task(self._carry_out(intent), name=f"payments-{key}")
            self._running[key] = task
            task.add_done_callback(partial(self._finished, key))
        return len(intents) if len(intents) == free else 0

    @property
    def busy(self) -> bool:
        """Whether calls are in flight."""
        return bool(self._running)

    def _finished(self, key: str, _task: "asyncio.Task[None]") -> None:
        self._running.pop(key, None)
        for waiter in self._waiters.pop(key, []):
            if not waiter.done():
                waiter.set_result(None)

    async def _carry_out(self, intent: Intent | RefundIntent) -> None:
        crash_point("payments.after_intent_commit")
        try:
            if isinstance(intent, RefundIntent):
                await make_refund(self.uow, self.provider, self.retry, intent)
            elif intent.operation == "capture":
                await charge(self.uow, self.provider, self.retry, intent, self.wake, self.policy)
            elif intent.operation == "void":
                await release_hold(self.uow, self.provider, self.retry, intent)
            else:
                await give_back(self.uow, self.provider, self.retry, intent)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the intent stays owed: claimed again once its lease ends
            what = (
                f"refund {intent.refund_id}"
                if isinstance(intent, RefundIntent)
                else f"{intent.operation} of order {intent.order_id}"
            )
            log.warning(
                "%s not done (claim %d), again after the lease: %r", what, intent.attempts, exc
            )

    async def idle(self) -> None:
        """Wait until every started call has finished (tests, shutdown)."""
        while self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def stop(self) -> None:
        """Claim nothing more and abandon calls in flight (their intents stay owed, as after a
        crash, and are claimed again when their leases end)."""
        self._stopped = True
        for task in list(self._running.values()):
            task.cancel()
        await self.idle()


# --- refunds of returns (issue 12) ----------------------------------------------------------

RETURN_REFUND_REASON = "return"


class ReturnRefundsRepo(Protocol):
    async def lock_capture_of(self, order_id: str) -> CaptureBalance | None: ...

    async def add(
        self, refund: Refund, *, capture_ref: str, return_id: str, trace: Trace
    ) -> bool: ...


async def refund_return(
    tx: Tx[Store], order_id: str, return_id: str, refund: Money, *, trace: Trace, wake: Wake
) -> Refund | None:
    """ReturnReceived: owe the provider a refund of the return's share of the order's capture
    (the charger makes the call once this commits, as for an operator's refund: PaymentRefunded
    then carries `return_id`). Once per return (its id is unique among refunds), capped at what is
    left of the capture; nothing for a 0 share. A return that cannot be refunded (no capture, a
    currency that is not the capture's, nothing left) is logged for an operator: orders keeps the
    return `received`."""
    if refund.amount <= 0:
        return None
    repo = tx.store.return_refunds
    capture = await repo.lock_capture_of(order_id)
    if capture is None:
        log.error("return %s of order %s: no capture to refund from", return_id, order_id)
        return None
    amount = min(refund.amount, capture.refundable)
    problem = refund_problem(capture, amount, refund.currency)
    if problem is not None:
        log.error(
            "return %s of order %s cannot be refunded: %s", return_id, order_id, problem.message
        )
        return None
    if amount < refund.amount:
        log.warning(
            "return %s of order %s: %d of %d %s refunded, the rest was refunded before",
            return_id,
            order_id,
            amount,
            refund.amount,
            refund.currency,
        )
    assert capture.provider_ref is not None  # refund_problem refuses a capture without one
    made = Refund(
        id=new_id(),
        payment_id=capture.payment_id,
        order_id=order_id,
        amount=amount,
        currency=capture.currency,
        reason=RETURN_REFUND_REASON,
        status="pending",
        provider_ref=None,
        failure_reason=None,
        created_at=datetime.now(UTC),
    )
    if not await repo.add(made, capture_ref=capture.provider_ref, return_id=return_id, trace=trace):
        log.info("return %s has its refund already; ReturnReceived ignored", return_id)
        return None
    await tx.store.payments.reserve_refund(capture.payment_id, amount)
    tx.on_commit(wake)
    log.info("refund %s of return %s (order %s) owed", made.id, return_id, order_id)
    return made


# --- reads -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PaymentsPage:
    items: list[Payment]
    more: bool


async def list_payments(
    store: Store,
    *,
    caller: str,
    is_admin: bool,
    order_id: str | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> PaymentsPage:
    """Owner or admin. A customer sees only their own payments; naming another customer's
    order is answered NotFound, like reading that order itself."""
    if order_id is not None and not is_admin:
        owner = await store.orders.customer_of(order_id)
        if owner is not None and owner != caller:
            raise NotFound(f"order {order_id}")
    rows = await store.payments.page(
        customer_id=None if is_admin else caller, order_id=order_id, after=after, limit=limit
    )
    return PaymentsPage(items=rows[:limit], more=len(rows) > limit)


async def list_refunds(
    store: Store,
    *,
    payment_id: str,
    caller: str,
    is_admin: bool,
    after: tuple[datetime, str] | None,
    limit: int,
) -> tuple[list[Refund], bool]:
    """Owner or admin; another customer's payment is answered NotFound."""
    payment = await store.payments.get(payment_id)
    if payment is None or (not is_admin and payment.customer_id != caller):
        raise NotFound(f"payment {payment_id}")
    rows = await store.refunds.of_payment(payment_id, after, limit)
    return rows[:limit], len(rows) > limit


async def get_payment(store: Store, payment_id: str, *, caller: str, is_admin: bool) -> Payment:
    payment = await store.payments.get(payment_id)
    if payment is None or (not is_admin and payment.customer_id != caller):
        raise NotFound(f"payment {payment_id}")
    return payment


# --- reconciliation (issue 14) ---


class ReconcileReads(Protocol):
    """The read-only queries payments' reconciliation runs (db.ReconcileReads)."""

    async def capture_tallies(
        self, window_s: float, grace_s: float, limit: int
    ) -> tuple[list[CaptureTally], datetime | None]: ...


async def reconcile_captures(
    reads: ReconcileReads, window_s: float, refund_grace_s: float, limit: int
) -> list[Finding]:
    """Captures against their orders' outcomes and refunds. Payments consumes no confirmation
    (only OrderRejected, OrderCancellationRequested and OrderShipped), so "a capture whose order
    never reached an outcome" is orders' check (order_overdue: a pending order past its deadline,
    whatever it holds), not this one."""
    tallies, now = await reads.capture_tallies(window_s, refund_grace_s, limit)
    if now is None:
        return []
    return capture_findings(tallies, now, refund_grace_s)
