"""Payments rules: when an order is charged, refunded or voided, and how the sandbox PSP answers."""

import re
from dataclasses import dataclass, replace
from enum import Enum
from typing import Literal, Protocol

# --- the payment provider port ------------------------------------------------------------


@dataclass(frozen=True)
class ProviderResult:
    """A provider's final answer to one operation: money moved (`ref`) or it was declined."""

    ref: str | None = None
    decline_reason: str | None = None

    @classmethod
    def succeeded(cls, ref: str) -> "ProviderResult":
        return cls(ref=ref)

    @classmethod
    def declined(cls, reason: str) -> "ProviderResult":
        return cls(decline_reason=reason)

    @property
    def ok(self) -> bool:
        return self.ref is not None


class TransientProviderError(Exception):
    """The provider could not answer now; the same call with the same key may succeed later.

    Never put a token in its message: the kit logs it and copies it into dead-letter headers."""


class PaymentProvider(Protocol):
    """A PSP. Every call is idempotent on its key: a replay returns the first answer and moves
    no money."""

    async def capture(
        self, idempotency_key: str, amount: int, currency: str, token: str
    ) -> ProviderResult: ...

    async def refund(
        self, idempotency_key: str, capture_ref: str, amount: int
    ) -> ProviderResult: ...

    async def find_capture(self, idempotency_key: str) -> "ProviderCapture | None":
        """The money a capture with this key moved, or None if none did (never seen, declined,
        or only transient failures so far). Moves no money itself. An adapter for a PSP that may
        still be executing a request our process sent before it died must make the answer final
        (e.g. cancel the key at the PSP), so that no capture lands after it said None."""
        ...


@dataclass(frozen=True)
class ProviderCapture:
    """A capture the provider made: its reference and the money it took."""

    ref: str
    amount: int
    currency: str


def refund_key(order_id: str) -> str:
    """The idempotency key of an order's (full) refund; the capture's key is the order id."""
    return f"refund:{order_id}"


# --- what payments knows about one order, and what it decides ------------------------------

TOKEN_MAX_LENGTH = 100
# Twelve or more digits (spaces or dashes between them) look like a card number (PAN).
_CARD_NUMBER = re.compile(r"(?:\d[ -]?){12,}")

CaptureStatus = Literal["captured", "failed", "refunded"]


def storable_token(token: str) -> str | None:
    """The token if payments may keep it until the charge is decided; None for anything that is
    too long or looks like a card number (never kept, the charge is declined as invalid_token)."""
    if not token or len(token) > TOKEN_MAX_LENGTH or _CARD_NUMBER.search(token):
        return None
    return token


@dataclass(frozen=True)
class OrderPayment:
    """Payments' view of one order, assembled from facts that arrive in any order."""

    order_id: str
    amount: int | None = None  # None until the payment instruction arrived
    currency: str | None = None
    has_token: bool = False
    stock_reserved: bool = False
    closed_reason: str | None = None  # set once the order was rejected or cancelled
    capture_status: CaptureStatus | None = None  # None while nothing was attempted

    @property
    def instructed(self) -> bool:
        return self.amount is not None

    @property
    def closed(self) -> bool:
        return self.closed_reason is not None


class CaptureDecision(Enum):
    WAIT = "wait"  # a fact is missing; the other event will decide
    NOTHING = "nothing"  # closed or already decided: never charge again
    CAPTURE = "capture"
    DECLINE_INVALID_TOKEN = "invalid_token"
    DECLINE_INVALID_AMOUNT = "invalid_amount"


def accepts_instruction(state: OrderPayment) -> bool:
    """The first instruction counts; a later one (or one for a closed order) changes nothing."""
    return not state.instructed and not state.closed and state.capture_status is None


def decide_capture(state: OrderPayment) -> CaptureDecision:
    """Charge exactly once, only when both the instruction and the reservation are known and
    the order is still open."""
    if state.closed or state.capture_status is not None:
        return CaptureDecision.NOTHING
    if state.amount is None or not state.stock_reserved:
        return CaptureDecision.WAIT
    if state.amount <= 0:
        return CaptureDecision.DECLINE_INVALID_AMOUNT
    if not state.has_token:
        return CaptureDecision.DECLINE_INVALID_TOKEN
    return CaptureDecision.CAPTURE


def capture_may_be_unrecorded(state: OrderPayment) -> bool:
    """Whether closing the order must first ask the provider for a capture under its key.

    The process may die between the provider's capture and our commit; the redelivered fact
    that would record it can then arrive after the close, which never charges, and the money
    would stay taken. The fact that triggered the capture was rolled back with it, but the other
    one was committed earlier: a capture may exist whenever none is on record and at least one
    of the two facts is."""
    return state.capture_status is None and (state.instructed or state.stock_reserved)


class CloseDecision(Enum):
    REFUND = "refund"  # a capture exists that was not refunded: give the money back
    VOID = "void"  # a cancellation with nothing captured: answer that nothing ever will be
    NOTHING = "nothing"


CLOSED_REJECTED = "rejected"
CLOSED_CANCELLED = "cancelled"


def decide_close(state: OrderPayment, *, cancellation: bool) -> CloseDecision:
    """What closing an order (rejection or cancellation) requires; closing twice answers once."""
    if state.capture_status == "captured":
        return CloseDecision.REFUND
    if cancellation and not state.closed:
        return CloseDecision.VOID
    return CloseDecision.NOTHING


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
