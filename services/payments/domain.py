"""Payments rules: when an order is charged, refunded or voided, and how the sandbox PSP answers."""

import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import Enum
from typing import Literal

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
CaptureStatus = Literal["pending", "captured", "failed", "refunded"]
RefundStatus = Literal["pending", "refunded", "failed"]
Operation = Literal["capture", "refund"]

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


def owe_refund(state: OrderPayment) -> OrderPayment:
    """The refund intent for the order's recorded capture."""
    return replace(state, refund_status="pending", attempts=0)


def decided(state: OrderPayment, status: CaptureStatus, ref: str | None = None) -> OrderPayment:
    """The charge is decided: the token must not stay at rest."""
    return replace(state, capture_status=status, capture_ref=ref, token=None)


class CloseDecision(Enum):
    REFUND = "refund"  # a capture exists that was not refunded: give the money back
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
        closed = replace(closed, capture_status=None)
    if closed.capture_status == "captured" and closed.refund_status is None:
        return owe_refund(closed), CloseDecision.REFUND
    if closed.capture_status == "pending":
        return closed, CloseDecision.AWAIT_CAPTURE
    if cancellation and not state.closed and closed.capture_status in (None, "failed"):
        return closed, CloseDecision.VOID
    return closed, CloseDecision.NOTHING


def after_capture(state: OrderPayment, *, moved: bool) -> CloseDecision:
    """What a capture's outcome owes an order that closed while the provider was asked: a
    capture that lost the race is refunded; a cancellation nothing was captured for is voided."""
    if moved and state.closed and state.refund_status is None:
        return CloseDecision.REFUND
    if not moved and state.cancelled:
        return CloseDecision.VOID
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
    operation: Operation
    attempts: int  # this claim included
    amount: int
    currency: str
    token: str | None = field(repr=False)
    closed: bool
    capture_ref: str | None
    trace: Trace

    @property
    def may_have_run(self) -> bool:
        """A claim before this one may have reached the provider (then died or timed out)."""
        return self.attempts > 1


def must_look_up_first(intent: Intent) -> bool:
    """Ask the provider what it already did under the key before (or instead of) a capture: on a
    re-claim, and for an order that closed (which is never charged now, only recorded)."""
    return intent.operation == "capture" and (intent.may_have_run or intent.closed)


# --- read models --------------------------------------------------------------------------


@dataclass(frozen=True)
class Payment:
    """One money movement as the payments route lists it."""

    id: str
    order_id: str
    customer_id: str
    amount: int
    currency: str
    status: Literal["captured", "failed", "refunded"]
    provider_ref: str | None
    failure_reason: str | None
    created_at: datetime
    refunded_at: datetime | None


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
    status: Literal["captured", "failed", "refunded"]
    provider_ref: str | None = None
    failure_reason: str | None = None


# --- the sandbox PSP ----------------------------------------------------------------------

SANDBOX_TOKEN_PATTERN = re.compile(r"^tok_[A-Za-z0-9_]{1,60}$")
TOK_VISA = "tok_visa"
TOK_DECLINED = "tok_chargeDeclined"
TOK_PROCESSING_ERROR = "tok_processingError"
# Extension: succeeds after `sandbox_slow_s` seconds (tests a capture racing the order deadline).
TOK_SLOW = "tok_slowAuthorization"
PROCESSING_ERROR_FAILURES = 2


@dataclass(frozen=True)
class LedgerEntry:
    """The sandbox's memory of one idempotency key: attempts so far, and the answer once given."""

    key: str
    operation: Literal["capture", "refund"]
    amount: int
    currency: str | None
    attempts: int = 0
    ref: str | None = None
    decline_reason: str | None = None
    capture_ref: str | None = None  # for refunds: the capture they give back

    @property
    def decided(self) -> bool:
        return self.ref is not None or self.decline_reason is not None

    def result(self) -> ProviderResult:
        """The recorded answer, or a transient error while the key has none yet."""
        if self.ref is not None:
            return ProviderResult.succeeded(self.ref)
        if self.decline_reason is not None:
            return ProviderResult.declined(self.decline_reason)
        raise TransientProviderError(f"sandbox processing error (attempt {self.attempts})")


def sandbox_capture(
    entry: LedgerEntry | None, key: str, amount: int, currency: str, token: str, new_ref: str
) -> LedgerEntry:
    """The sandbox's ledger after one capture attempt; a decided key never changes again."""
    if entry is not None and entry.decided:
        return entry
    entry = entry or LedgerEntry(key=key, operation="capture", amount=amount, currency=currency)
    entry = replace(entry, attempts=entry.attempts + 1)
    if not SANDBOX_TOKEN_PATTERN.match(token):
        return replace(entry, decline_reason="invalid_token")
    if token == TOK_DECLINED:
        return replace(entry, decline_reason="card_declined")
    if token == TOK_PROCESSING_ERROR and entry.attempts <= PROCESSING_ERROR_FAILURES:
        return entry  # undecided: result() raises a transient error
    if token in (TOK_VISA, TOK_PROCESSING_ERROR, TOK_SLOW):
        return replace(entry, ref=new_ref)
    return replace(entry, decline_reason="invalid_token")


def sandbox_refund(
    entry: LedgerEntry | None,
    capture: LedgerEntry | None,
    key: str,
    capture_ref: str,
    amount: int,
    new_ref: str,
) -> LedgerEntry:
    """The sandbox's ledger after one refund attempt: only a known capture, at most its amount."""
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
    if capture is None or capture.operation != "capture" or capture.ref != capture_ref:
        return replace(entry, decline_reason="unknown_capture")
    if not 0 < amount <= capture.amount:
        return replace(entry, decline_reason="invalid_amount")
    return replace(entry, ref=new_ref)
