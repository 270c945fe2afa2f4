"""Payments rules: when an order is charged, refunded or voided, and how the sandbox PSP answers."""

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import Enum
from typing import Literal

from libs.kit.findings import Finding
from libs.kit.signatures import (
    SignatureRejected,
    timestamped_signature,
    verify_timestamped_signature,
)

# --- what a provider answers ----------------------------------------------------------------


@dataclass(frozen=True)
class NextAction:
    """What the shopper must do before the provider decides (3-D Secure): the frontend completes
    it with the provider's client library and `client_secret`, or by following `redirect_url`."""

    type: str  # the provider's name for it, e.g. Stripe's "use_stripe_sdk" or "redirect_to_url"
    client_secret: str | None = field(default=None, repr=False)  # never in a log line
    redirect_url: str | None = None


@dataclass(frozen=True)
class ProviderResult:
    """A provider's answer to one operation: money moved or was authorized (`ref`), it was
    declined, or the shopper must act first (`next_action`, with `ref` naming the pending
    operation; the provider's webhook brings the verdict)."""

    ref: str | None = None
    decline_reason: str | None = None
    next_action: NextAction | None = None

    @classmethod
    def succeeded(cls, ref: str) -> "ProviderResult":
        return cls(ref=ref)

    @classmethod
    def declined(cls, reason: str) -> "ProviderResult":
        return cls(decline_reason=reason)

    @classmethod
    def requires_action(cls, ref: str, action: NextAction) -> "ProviderResult":
        return cls(ref=ref, next_action=action)

    @property
    def ok(self) -> bool:
        return self.ref is not None and self.next_action is None

    @property
    def awaits_action(self) -> bool:
        return self.next_action is not None


class WebhookRejected(Exception):
    """An inbound provider webhook that is not the provider's (bad or missing signature, stale
    timestamp) or not parseable. Its message names the problem, never the payload."""


ProviderEventKind = Literal[
    "authorized",  # the authorization holds money to capture (after 3-D Secure, for example)
    "succeeded",  # captured
    "failed",  # declined after all (3-D Secure failed, the authorization was refused)
    "canceled",  # voided, or an authorization that expired
    "refunded",  # money given back (in full or in part)
    "disputed",  # the shopper's bank opened a dispute (chargeback)
    "ignored",  # verified, but nothing payments acts on
]


@dataclass(frozen=True)
class ProviderEvent:
    """An inbound webhook, verified and mapped to what payments acts on. `id` is the provider's
    event id (deduplicated in the inbox); `order_id` comes from the metadata we sent with the
    operation; `ref` is the provider's reference of the payment (what our calls returned)."""

    id: str
    kind: ProviderEventKind
    provider_type: str  # the provider's own event type, e.g. "charge.dispute.created"
    order_id: str | None = None
    ref: str | None = None
    amount: int | None = None  # minor units: captured, refunded (in total) or disputed
    currency: str | None = None
    reason: str | None = None  # decline code, dispute reason


class TransientProviderError(Exception):
    """The provider could not answer now; the same call with the same key may succeed later.

    Never put a token in its message: it is logged."""


@dataclass(frozen=True)
class ProviderCapture:
    """A capture the provider made: its reference and the money it took."""

    ref: str
    amount: int
    currency: str


def refund_key(order_id: str) -> str:
    """The idempotency key of an order's (full) refund; the capture's key is the order id."""
    return f"refund:{order_id}"


# --- what payments knows about one order ------------------------------------------------------

TOKEN_MAX_LENGTH = 100
# Twelve or more digits (spaces or dashes between them) look like a card number (PAN).
_CARD_NUMBER = re.compile(r"(?:\d[ -]?){12,}")

# `pending`: the capture is decided and owed to the provider (an intent), no answer recorded yet.
# `requires_action`: the provider asked for the shopper's confirmation (3-D Secure); its webhook
# brings the verdict.
# `authorized` (capture policy on_shipment): the money is held, captured when the order ships;
# `voided`: that hold was released (the order closed before it shipped).
CaptureStatus = Literal[
    "pending", "requires_action", "authorized", "captured", "failed", "refunded", "voided"
]
RefundStatus = Literal["pending", "refunded", "failed"]
Operation = Literal["capture", "refund"]
# The provider call an order owes: a capture (or authorization, or the capture of a hold), a
# refund of a capture, or the release of a hold.
IntentOperation = Literal["capture", "refund", "void"]
CapturePolicy = Literal["immediate", "on_shipment"]

CLOSED_REJECTED = "rejected"
CLOSED_CANCELLED = "cancelled"


def storable_token(token: str) -> str | None:
    """The token if payments may keep it until the charge is decided; None for anything that is
    too long or looks like a card number (never kept, the charge is declined as invalid_token)."""
    if not token or len(token) > TOKEN_MAX_LENGTH or _CARD_NUMBER.search(token):
        return None
    return token


@dataclass(frozen=True)
class OrderPayment:
    """Payments' view of one order, assembled from facts that arrive in any order, with the
    provider call it still owes (a pending capture or refund)."""

    order_id: str
    customer_id: str | None = None
    amount: int | None = None  # None until the payment instruction arrived
    currency: str | None = None
    token: str | None = field(default=None, repr=False)  # never in a log line
    stock_reserved: bool = False
    closed_reason: str | None = None  # set once the order was rejected or cancelled
    refund_reason: str | None = None  # what PaymentRefunded will say, fixed by the first close
    capture_status: CaptureStatus | None = None  # None while nothing was decided
    capture_ref: str | None = None
    refund_status: RefundStatus | None = None
    attempts: int = 0  # claims of the pending provider call so far (0: never called)
    # What the close's refund gives back: the capture less what refunds gave back before.
    refund_amount: int | None = None
    hold_ref: str | None = None  # the provider's authorization, while one holds the money
    hold_lapsed: bool = False  # held past its lifetime and reported once (the order cancels)

    @property
    def instructed(self) -> bool:
        return self.amount is not None

    @property
    def has_token(self) -> bool:
        return self.token is not None

    @property
    def closed(self) -> bool:
        return self.closed_reason is not None

    @property
    def cancelled(self) -> bool:
        return self.closed_reason == CLOSED_CANCELLED


class CaptureDecision(Enum):
    WAIT = "wait"  # a fact is missing; the other event will decide
    NOTHING = "nothing"  # closed or already decided: never charge again
    CAPTURE = "capture"
    DECLINE_INVALID_TOKEN = "invalid_token"
    DECLINE_INVALID_AMOUNT = "invalid_amount"


def accepts_instruction(state: OrderPayment) -> bool:
    """The first instruction counts; a later one (or one for a closed order) changes nothing."""
    return not state.instructed and not state.closed and state.capture_status is None


def instruct(state: OrderPayment, amount: int, currency: str, token: str | None) -> OrderPayment:
    """The order after its (first) payment instruction; `token` as `storable_token` left it."""
    return replace(state, amount=amount, currency=currency, token=token)


def decide_capture(state: OrderPayment) -> CaptureDecision:
    """Charge exactly once, only when both the instruction and the reservation are known and
    the order is still open (a pending capture is decided already)."""
    if state.closed or state.capture_status is not None:
        return CaptureDecision.NOTHING
    if state.amount is None or not state.stock_reserved:
        return CaptureDecision.WAIT
    if state.amount <= 0:
        return CaptureDecision.DECLINE_INVALID_AMOUNT
    if not state.has_token:
        return CaptureDecision.DECLINE_INVALID_TOKEN
    return CaptureDecision.CAPTURE


def owe_capture(state: OrderPayment) -> OrderPayment:
    """The capture intent: recorded with the decision, carried out after the commit."""
    return replace(state, capture_status="pending", attempts=0)


def owe_refund(state: OrderPayment, amount: int) -> OrderPayment:
    """The refund intent for the order's recorded capture: `amount`, what is left of it (refunds
    an operator made before the close gave back the rest); nothing left, nothing owed."""
    if amount <= 0:
        return replace(state, refund_status="refunded", refund_amount=0)
    return replace(state, refund_status="pending", refund_amount=amount, attempts=0)


def decided(state: OrderPayment, status: CaptureStatus, ref: str | None = None) -> OrderPayment:
    """The charge is decided: the token must not stay at rest."""
    return replace(state, capture_status=status, capture_ref=ref, token=None)


class CloseDecision(Enum):
    REFUND = "refund"  # a capture exists that was not refunded: give the money back
    RELEASE = "release"  # an authorization holds the money: void it
    VOID = "void"  # a cancellation with nothing captured: answer that nothing ever will be
    AWAIT_CAPTURE = "await_capture"  # the provider may be capturing: its outcome answers
    NOTHING = "nothing"


def close(
    state: OrderPayment, *, cancellation: bool, reason: str
) -> tuple[OrderPayment, CloseDecision]:
    """The order rejected or cancelled (closing twice answers once): never charged from now on,
    its token erased, and what the close owes. A capture intent no claim has taken yet is
    withdrawn (the provider never heard of it); one already claimed may be capturing right now,
    so its outcome refunds it or answers the cancellation."""
    closed = replace(
        state,
        closed_reason=state.closed_reason
        or (CLOSED_CANCELLED if cancellation else CLOSED_REJECTED),
        refund_reason=state.refund_reason or ("cancelled" if cancellation else reason),
        token=None,
    )
    if closed.capture_status == "pending" and closed.attempts == 0:
        # Not claimed yet: the provider never heard of it. A hold's capture goes back to the
        # hold, which the close then releases.
        closed = replace(closed, capture_status="authorized" if closed.hold_ref else None)
    if closed.capture_status == "authorized":
        if closed.refund_status is None:
            return replace(closed, refund_status="pending", attempts=0), CloseDecision.RELEASE
        return closed, CloseDecision.NOTHING
    if closed.capture_status == "requires_action":
        # Nothing moved, and the shopper may never confirm: a cancellation is answered now. A
        # confirmation that still comes is captured and refunded (after_verdict).
        if cancellation and not state.closed:
            return closed, CloseDecision.VOID
        return closed, CloseDecision.NOTHING
    if closed.capture_status == "captured" and closed.refund_status is None:
        return closed, CloseDecision.REFUND  # the caller owes what is left (owe_refund)
    if closed.capture_status == "pending":
        return closed, CloseDecision.AWAIT_CAPTURE
    if cancellation and not state.closed and closed.capture_status in (None, "failed"):
        return closed, CloseDecision.VOID
    return closed, CloseDecision.NOTHING


def ship(state: OrderPayment) -> OrderPayment | None:
    """The order shipped (capture policy on_shipment): the hold is captured now; None if there
    is no hold to capture (captured at once, closed, or already asked)."""
    # A hold reported lapsed is still captured if the order ships after all (orders either
    # ships it or cancels it, never both): the provider may yet honour it.
    if state.capture_status != "authorized" or state.closed or state.refund_status is not None:
        return None
    return replace(state, capture_status="pending", attempts=0)


def after_capture(state: OrderPayment, *, moved: bool) -> CloseDecision:
    """What a capture's outcome owes an order that closed while the provider was asked: a
    capture that lost the race is refunded; a cancellation nothing was captured for is voided."""
    if moved and state.closed and state.refund_status is None:
        return CloseDecision.REFUND
    if not moved and state.cancelled:
        return CloseDecision.VOID
    return CloseDecision.NOTHING


def after_verdict(state: OrderPayment, *, moved: bool) -> CloseDecision:
    """What the provider's verdict on a payment that awaited the shopper owes: as a capture's
    outcome, except that a closed order was answered at its close already."""
    if moved and state.closed and state.refund_status is None:
        return CloseDecision.REFUND
    return CloseDecision.NOTHING


# --- what the worker hands to the provider ----------------------------------------------------


@dataclass(frozen=True)
class Trace:
    """The event a provider call was decided in: its outcome's events join that order's story."""

    correlation_id: str | None = None
    causation_id: str | None = None


@dataclass(frozen=True)
class Intent:
    """A provider call an order owes, as one claim took it (claims expire: see `lease`)."""

    order_id: str
    operation: IntentOperation
    attempts: int  # this claim included
    amount: int
    currency: str
    token: str | None = field(repr=False)
    closed: bool
    capture_ref: str | None
    trace: Trace
    refund_amount: int | None = None  # a refund's: what is left of the capture (owe_refund)
    hold_ref: str | None = None  # a capture of this authorization, or its release (void)

    @property
    def may_have_run(self) -> bool:
        """A claim before this one may have reached the provider (then died or timed out)."""
        return self.attempts > 1


def intent_of(state: OrderPayment, trace: Trace) -> Intent:
    """The provider call `state` owes, as its latest claim (counted in `attempts`) holds it."""
    assert state.amount is not None and state.currency is not None
    return Intent(
        order_id=state.order_id,
        operation=intent_operation(state.capture_status, state.refund_status),
        attempts=state.attempts,
        amount=state.amount,
        currency=state.currency,
        token=state.token,
        closed=state.closed,
        capture_ref=state.capture_ref,
        trace=trace,
        refund_amount=state.refund_amount,
        hold_ref=state.hold_ref,
    )


def claim_in_place(state: OrderPayment, trace: Trace) -> tuple[OrderPayment, Intent]:
    """The call `state` owes, claimed by the very transaction that makes it owed (one attempt
    more, as a claim counts it): the row to write and the intent to carry out after the commit."""
    claimed = replace(state, attempts=state.attempts + 1)
    return claimed, intent_of(claimed, trace)


def must_look_up_first(intent: Intent) -> bool:
    """Ask the provider what it already did under the key before (or instead of) a capture: on a
    re-claim, and for an order that closed (which is never charged now, only recorded)."""
    return (
        intent.operation == "capture"
        and intent.hold_ref is None  # a hold's capture is keyed apart and asked again as is
        and (intent.may_have_run or intent.closed)
    )


def intent_operation(capture_status: str | None, refund_status: str | None) -> IntentOperation:
    """Which call an order's row owes: its capture (pending), else the refund of its capture or
    the release of its hold."""
    if capture_status == "pending":
        return "capture"
    return "void" if capture_status == "authorized" else "refund"


def hold_capture_key(order_id: str) -> str:
    """The idempotency key of capturing an order's hold (its authorization's is the order id)."""
    return f"capture:{order_id}"


def void_key(order_id: str) -> str:
    return f"void:{order_id}"


# --- read models --------------------------------------------------------------------------

# `requires_action` (extension): the shopper must confirm (3-D Secure; see `next_action`);
# `authorized`: held for a capture when the order ships; `voided`: that hold was released.
PaymentStatus = Literal[
    "requires_action",
    "authorized",
    "captured",
    "failed",
    "refunded",
    "partially_refunded",
    "voided",
]


@dataclass(frozen=True)
class Payment:
    """One money movement as the payments route lists it."""

    id: str
    order_id: str
    customer_id: str
    amount: int
    currency: str
    status: PaymentStatus
    provider_ref: str | None
    failure_reason: str | None
    created_at: datetime
    refunded_at: datetime | None
    refunded: int = 0  # minor units given back so far
    provider: str = "sandbox"
    next_action: NextAction | None = None


@dataclass(frozen=True)
class RefundedCapture:
    """The capture a refund gave back."""

    payment_id: str
    customer_id: str
    amount: int
    currency: str


@dataclass(frozen=True)
class NewPayment:
    """A money movement (or declined capture) to record."""

    id: str
    order_id: str
    customer_id: str
    kind: Operation
    amount: int
    currency: str
    status: Literal["requires_action", "authorized", "captured", "failed", "refunded", "voided"]
    provider_ref: str | None = None
    failure_reason: str | None = None
    next_action: NextAction | None = None


# --- refunds an operator asks for -------------------------------------------------------------

RefundState = Literal["pending", "succeeded", "failed"]
REFUND_REASON_MAX = 200


def admin_refund_key(refund_id: str) -> str:
    """The provider's idempotency key of one refund an operator asked for."""
    return f"refund:{refund_id}"


@dataclass(frozen=True)
class Refund:
    """One refund of a capture, as `GET /payments/{id}/refunds` lists it: an operator's (while
    the provider has not answered, `pending`) or the one an order's close made."""

    id: str
    payment_id: str
    order_id: str
    amount: int
    currency: str
    reason: str
    status: RefundState
    provider_ref: str | None
    failure_reason: str | None
    created_at: datetime


@dataclass(frozen=True)
class CaptureBalance:
    """A capture as a refund sees it (its row locked): what it took, what refunds gave back and
    what refunds under way hold (`reserved` counts both)."""

    payment_id: str
    order_id: str
    customer_id: str
    amount: int
    currency: str
    status: PaymentStatus
    provider_ref: str | None
    refunded: int
    reserved: int

    @property
    def refundable(self) -> int:
        return self.amount - self.reserved


@dataclass(frozen=True)
class RefundProblem:
    """Why a refund cannot be made: the field at fault (None: the payment's state) and why."""

    field: str | None
    message: str


def refund_problem(capture: CaptureBalance, amount: int, currency: str) -> RefundProblem | None:
    """A refund gives back part or all of what a capture took, in its currency, never more in
    total than it took (refunds under way included)."""
    if capture.status == "failed" or capture.provider_ref is None:
        return RefundProblem(None, f"payment {capture.payment_id} captured nothing")
    if currency != capture.currency:
        return RefundProblem("amount.currency", f"must be the payment's, {capture.currency}")
    if amount <= 0:
        return RefundProblem("amount.amount", "must be positive")
    if amount > capture.refundable:
        return RefundProblem(
            "amount.amount",
            f"at most {capture.refundable} {capture.currency} of the payment is left to refund",
        )
    return None


def status_after_refunds(captured: int, refunded: int) -> PaymentStatus:
    return "refunded" if refunded >= captured else "partially_refunded"


@dataclass(frozen=True)
class RefundIntent:
    """An operator's refund the provider still owes an answer to, as one claim took it."""

    refund_id: str
    payment_id: str
    order_id: str
    amount: int
    currency: str
    capture_ref: str
    reason: str
    attempts: int
    trace: Trace
    return_id: str | None = None  # issue 12: the return whose share it refunds


# --- the sandbox PSP ----------------------------------------------------------------------

SANDBOX_TOKEN_PATTERN = re.compile(r"^tok_[A-Za-z0-9_]{1,60}$")
TOK_VISA = "tok_visa"
TOK_DECLINED = "tok_chargeDeclined"
TOK_PROCESSING_ERROR = "tok_processingError"
# Extension: succeeds after `sandbox_slow_s` seconds (tests a capture racing the order deadline).
TOK_SLOW = "tok_slowAuthorization"
# The contract's: the payment waits for the shopper's 3-D Secure confirmation, which the
# provider's webhook brings (the sandbox's is simulated, see `sandbox_confirm`).
TOK_3DS = "tok_threeDSecureRequired"
# Extensions: an authorization that has expired by the time it is captured, and a payment whose
# refunds the provider declines.
TOK_AUTH_EXPIRES = "tok_authorizationExpires"
TOK_REFUND_FAILS = "tok_refundFails"
PROCESSING_ERROR_FAILURES = 2
_SUCCEEDING = (
    TOK_VISA,
    TOK_PROCESSING_ERROR,
    TOK_SLOW,
    TOK_3DS,
    TOK_AUTH_EXPIRES,
    TOK_REFUND_FAILS,
)
# What a sandbox payment remembers of its token (never the token itself).
_BEHAVIOURS = {TOK_AUTH_EXPIRES: "auth_expires", TOK_REFUND_FAILS: "refund_fails"}

LedgerOperation = Literal["capture", "refund", "authorize", "void"]


@dataclass(frozen=True)
class LedgerEntry:
    """The sandbox's memory of one idempotency key: attempts so far, and the answer once given.
    A 3-D Secure payment has its `ref` and `awaiting_action` until the shopper's verdict."""

    key: str
    operation: LedgerOperation
    amount: int
    currency: str | None
    attempts: int = 0
    ref: str | None = None
    decline_reason: str | None = None
    capture_ref: str | None = None  # the payment it acts on (refund, void, capture of a hold)
    behaviour: str | None = None  # see _BEHAVIOURS
    awaiting_action: bool = False

    @property
    def decided(self) -> bool:
        return (self.ref is not None and not self.awaiting_action) or (
            self.decline_reason is not None
        )

    @property
    def moved(self) -> bool:
        """Money moved or is held: decided, with a reference."""
        return self.ref is not None and not self.awaiting_action

    def result(self) -> ProviderResult:
        """The recorded answer, or a transient error while the key has none yet."""
        if self.ref is not None and self.awaiting_action:
            return ProviderResult.requires_action(
                self.ref,
                NextAction("three_d_secure", client_secret=f"{self.ref}_secret_sandbox"),
            )
        if self.ref is not None:
            return ProviderResult.succeeded(self.ref)
        if self.decline_reason is not None:
            return ProviderResult.declined(self.decline_reason)
        raise TransientProviderError(f"sandbox processing error (attempt {self.attempts})")


def sandbox_payment(
    entry: LedgerEntry | None,
    key: str,
    operation: Literal["capture", "authorize"],
    amount: int,
    currency: str,
    token: str,
    new_ref: str,
) -> LedgerEntry:
    """The sandbox's ledger after one capture (or authorization) attempt with a token; a decided
    key never changes again."""
    if entry is not None and (entry.decided or entry.awaiting_action):
        return entry
    entry = entry or LedgerEntry(key=key, operation=operation, amount=amount, currency=currency)
    entry = replace(entry, attempts=entry.attempts + 1)
    if not SANDBOX_TOKEN_PATTERN.match(token):
        return replace(entry, decline_reason="invalid_token")
    if token == TOK_DECLINED:
        return replace(entry, decline_reason="card_declined")
    if token == TOK_PROCESSING_ERROR and entry.attempts <= PROCESSING_ERROR_FAILURES:
        return entry  # undecided: result() raises a transient error
    if token in _SUCCEEDING:
        return replace(
            entry, ref=new_ref, behaviour=_BEHAVIOURS.get(token), awaiting_action=token == TOK_3DS
        )
    return replace(entry, decline_reason="invalid_token")


def sandbox_capture(
    entry: LedgerEntry | None, key: str, amount: int, currency: str, token: str, new_ref: str
) -> LedgerEntry:
    """Authorize and capture in one."""
    return sandbox_payment(entry, key, "capture", amount, currency, token, new_ref)


def sandbox_confirm(entry: LedgerEntry, *, succeeded: bool) -> LedgerEntry:
    """The shopper's 3-D Secure verdict on a payment that awaits it (anything else: unchanged)."""
    if not entry.awaiting_action:
        return entry
    if succeeded:
        return replace(entry, awaiting_action=False)
    return replace(entry, awaiting_action=False, ref=None, decline_reason="authentication_failed")


def sandbox_capture_hold(
    entry: LedgerEntry | None,
    hold: LedgerEntry | None,
    taken: list[LedgerEntry],
    key: str,
    hold_ref: str,
    amount: int,
    new_ref: str,
) -> LedgerEntry:
    """The ledger after capturing `amount` of the authorization `hold` (`taken`: what was done
    to it already, captures and voids): once, at most what it holds, not after it expired."""
    if entry is not None and entry.decided:
        return entry
    entry = entry or LedgerEntry(
        key=key,
        operation="capture",
        amount=amount,
        currency=hold.currency if hold else None,
        capture_ref=hold_ref,
        behaviour=hold.behaviour if hold else None,
    )
    entry = replace(entry, attempts=entry.attempts + 1)
    if hold is None or hold.operation != "authorize" or not hold.moved:
        return replace(entry, decline_reason="unknown_authorization")
    if any(t.moved for t in taken if t.key != key):
        return replace(entry, decline_reason="authorization_closed")
    if hold.behaviour == "auth_expires":
        return replace(entry, decline_reason="authorization_expired")
    if not 0 < amount <= hold.amount:
        return replace(entry, decline_reason="invalid_amount")
    return replace(entry, ref=new_ref)


def sandbox_void(
    entry: LedgerEntry | None,
    hold: LedgerEntry | None,
    taken: list[LedgerEntry],
    key: str,
    hold_ref: str,
    new_ref: str,
) -> LedgerEntry:
    """The ledger after releasing the authorization `hold`: only one not captured yet."""
    if entry is not None and entry.decided:
        return entry
    entry = entry or LedgerEntry(
        key=key,
        operation="void",
        amount=hold.amount if hold else 0,
        currency=hold.currency if hold else None,
        capture_ref=hold_ref,
    )
    entry = replace(entry, attempts=entry.attempts + 1)
    if hold is None or hold.operation != "authorize" or not hold.moved:
        return replace(entry, decline_reason="unknown_authorization")
    if any(t.moved and t.operation == "capture" for t in taken):
        return replace(entry, decline_reason="authorization_captured")
    return replace(entry, ref=new_ref)


def sandbox_refund(
    entry: LedgerEntry | None,
    capture: LedgerEntry | None,
    refunded: int,
    key: str,
    capture_ref: str,
    amount: int,
    new_ref: str,
) -> LedgerEntry:
    """The sandbox's ledger after one refund attempt: only a known capture, and never more in
    total than it took (`refunded`: what other keys gave back of it already)."""
    if entry is not None and entry.decided:
        return entry
    entry = entry or LedgerEntry(
        key=key,
        operation="refund",
        amount=amount,
        currency=capture.currency if capture else None,
        capture_ref=capture_ref,
    )
    entry = replace(entry, attempts=entry.attempts + 1)
    if capture is None or capture.operation != "capture" or not capture.moved:
        return replace(entry, decline_reason="unknown_capture")
    if capture.behaviour == "refund_fails":
        return replace(entry, decline_reason="refund_failed")
    if not 0 < amount <= capture.amount - refunded:
        return replace(entry, decline_reason="invalid_amount")
    return replace(entry, ref=new_ref)


# --- the sandbox's webhooks: signed the way Stripe signs its own -----------------------------


def sandbox_signature(secret: str, timestamp: int, payload: bytes) -> str:
    """`t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<payload>">`, Stripe's scheme."""
    return timestamped_signature(secret, timestamp, payload)


def verify_sandbox_signature(
    secret: str, header: str | None, payload: bytes, now: int, tolerance_s: int
) -> None:
    """Raises WebhookRejected unless `header` signs `payload` with `secret` within tolerance."""
    try:
        verify_timestamped_signature(secret, header, payload, now, tolerance_s)
    except SignatureRejected as exc:
        raise WebhookRejected(str(exc)) from exc


# The sandbox's webhook event types, and what each means to payments.
SANDBOX_EVENT_KINDS: dict[str, ProviderEventKind] = {
    "payment.authorized": "authorized",
    "payment.succeeded": "succeeded",
    "payment.failed": "failed",
    "payment.canceled": "canceled",
    "payment.refunded": "refunded",
    "payment.disputed": "disputed",
}


def sandbox_event(event_id: str, event_type: str, entry: LedgerEntry, order_id: str) -> bytes:
    """The body of a webhook the sandbox sends about the payment `entry`."""
    data = {
        "ref": entry.ref,
        "order_id": order_id,
        "amount": entry.amount,
        "currency": entry.currency,
        "reason": entry.decline_reason,
    }
    return json.dumps({"id": event_id, "type": event_type, "data": data}).encode()


def parse_sandbox_event(payload: bytes) -> ProviderEvent:
    """A verified sandbox webhook body as payments reads it; WebhookRejected if malformed."""
    try:
        body = json.loads(payload)
        event_id, event_type, data = str(body["id"]), str(body["type"]), body["data"]
        if not isinstance(data, dict):
            raise TypeError("data is not an object")
        amount = data.get("amount")
        return ProviderEvent(
            id=event_id,
            kind=SANDBOX_EVENT_KINDS.get(event_type, "ignored"),
            provider_type=event_type,
            order_id=_text_or_none(data.get("order_id")),
            ref=_text_or_none(data.get("ref")),
            amount=amount if isinstance(amount, int) and not isinstance(amount, bool) else None,
            currency=_text_or_none(data.get("currency")),
            reason=_text_or_none(data.get("reason")),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise WebhookRejected("not a sandbox event") from exc


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


# --- reconciliation (issue 14) ---

# Payments' reconciliation kinds (besides the kit's outbox_stuck), in one place.
CAPTURE_NOT_REFUNDED = "capture_not_refunded"
REFUNDS_EXCEED_CAPTURE = "refunds_exceed_capture"
RECONCILIATION_KINDS = (CAPTURE_NOT_REFUNDED, REFUNDS_EXCEED_CAPTURE)


@dataclass(frozen=True)
class CaptureTally:
    """A capture as payments holds it, with its order's close (None while open) and the refunds
    that succeeded against it."""

    payment_id: str
    order_id: str
    status: str
    amount: int
    currency: str
    closed_reason: str | None
    closed_at: datetime | None
    refunded: int


def capture_findings(
    tallies: Iterable[CaptureTally], now: datetime, refund_grace_s: float
) -> list[Finding]:
    """A capture of an order that closed more than `refund_grace_s` ago and is not fully
    refunded (the close owes the shopper the money back), and refunds summing above the
    capture (the database's checks should make that impossible)."""
    findings: list[Finding] = []
    for t in tallies:
        ids = {"payment_id": t.payment_id, "order_id": t.order_id}
        if (
            t.closed_reason is not None
            and t.closed_at is not None
            and (now - t.closed_at).total_seconds() > refund_grace_s
            and t.status in ("captured", "partially_refunded")
        ):
            findings.append(
                Finding(
                    CAPTURE_NOT_REFUNDED,
                    ids,
                    f"order {t.closed_reason}, capture of {t.amount} {t.currency} still"
                    f" {t.status} ({t.refunded} refunded)",
                    t.closed_at,
                )
            )
        if t.refunded > t.amount:
            findings.append(
                Finding(
                    REFUNDS_EXCEED_CAPTURE,
                    ids,
                    f"refunds add up to {t.refunded} {t.currency}, above the capture of {t.amount}",
                    None,
                )
            )
    return findings
