"""The payment provider payments calls outside its transactions, and the sandbox PSP."""

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Literal, Protocol, runtime_checkable

from services.payments.domain import (
    TOK_SLOW,
    LedgerEntry,
    ProviderCapture,
    ProviderEvent,
    ProviderResult,
    WebhookRejected,
    parse_sandbox_event,
    sandbox_capture_hold,
    sandbox_confirm,
    sandbox_event,
    sandbox_payment,
    sandbox_refund,
    sandbox_signature,
    sandbox_void,
    verify_sandbox_signature,
)

# Where the sandbox puts its signature (Stripe's scheme, under our own header name).
SANDBOX_SIGNATURE_HEADER = "sandbox-signature"


class PaymentProvider(Protocol):
    """A PSP. Every mutating call is idempotent on its key: a replay returns the first answer and
    moves no money. Transient failures raise `domain.TransientProviderError`; amounts are minor
    units of `currency` (ISO 4217, lower or upper case as the PSP wants it is the adapter's job).
    Each operation carries the order id to the provider (metadata) so its webhooks name it."""

    name: str  # as a payment names its provider: "sandbox", "stripe"

    async def capture(
        self, idempotency_key: str, amount: int, currency: str, token: str
    ) -> ProviderResult:
        """Authorize and capture in one (capture policy `immediate`). `ref` is the reference
        refunds name. May answer `requires_action` (3-D Secure)."""
        ...

    async def authorize(
        self, idempotency_key: str, amount: int, currency: str, token: str
    ) -> ProviderResult:
        """Hold `amount` on the payment method for a later capture (policy `on_shipment`); `ref`
        names the authorization. May answer `requires_action`."""
        ...

    async def capture_authorized(
        self, idempotency_key: str, authorization_ref: str, amount: int
    ) -> ProviderResult:
        """Capture `amount` (all or part of what was authorized) of an authorization; the rest
        is released. Declined `authorization_expired` if the hold has lapsed."""
        ...

    async def void(self, idempotency_key: str, authorization_ref: str) -> ProviderResult:
        """Release an authorization that was not captured."""
        ...

    async def refund(self, idempotency_key: str, capture_ref: str, amount: int) -> ProviderResult:
        """Give back `amount` (all or part) of a capture; repeated refunds with distinct keys
        add up to at most what was captured."""
        ...

    async def find_capture(self, idempotency_key: str) -> ProviderCapture | None:
        """The money a capture with this key moved, or None if none did (never seen, declined,
        or only transient failures so far). Moves no money itself. An adapter for a PSP that may
        still be executing a request sent by a claim that expired must make the answer final
        (e.g. cancel the key at the PSP), so that no capture lands after it said None."""
        ...

    def parse_webhook(self, payload: bytes, headers: Mapping[str, str]) -> ProviderEvent:
        """Verify an inbound webhook's signature (with a timestamp tolerance) over the exact
        bytes received and map it; `headers` with lower-case names. Raises WebhookRejected."""
        ...


@runtime_checkable
class SimulatesActions(Protocol):
    """A provider whose shoppers' 3-D Secure verdicts can be simulated (the sandbox)."""

    async def confirm_action(
        self, ref: str, *, succeeded: bool, order_id: str | None = None
    ) -> tuple[bytes, dict[str, str]] | None: ...


class SandboxLedger(Protocol):
    """Where the sandbox keeps its idempotency keys (its own storage, outside our transactions)."""

    async def get(self, key: str) -> LedgerEntry | None: ...

    async def by_ref(self, ref: str) -> LedgerEntry | None: ...

    async def acting_on(self, ref: str) -> list[LedgerEntry]:
        """The entries whose operation acts on the payment `ref` (refunds, captures, voids)."""
        ...

    async def apply(
        self, key: str, step: Callable[[LedgerEntry | None], LedgerEntry]
    ) -> LedgerEntry: ...


class SandboxProvider:
    """The default PSP: deterministic answers per test token (see domain.sandbox_payment), an
    idempotency ledger that survives our crashes (`db.PgSandboxLedger`), and no card numbers.
    Its webhooks are signed with `webhook_secret` the way Stripe signs its own."""

    name = "sandbox"

    def __init__(
        self,
        ledger: SandboxLedger,
        slow_s: float = 10.0,
        webhook_secret: str = "",
        webhook_tolerance_s: int = 300,
    ) -> None:
        self.ledger = ledger
        self.slow_s = slow_s
        self._webhook_secret = webhook_secret
        self.webhook_tolerance_s = webhook_tolerance_s

    def __repr__(self) -> str:  # never the webhook secret
        return f"SandboxProvider(slow_s={self.slow_s})"

    async def capture(
        self, idempotency_key: str, amount: int, currency: str, token: str
    ) -> ProviderResult:
        return await self._pay(idempotency_key, "capture", amount, currency, token)

    async def authorize(
        self, idempotency_key: str, amount: int, currency: str, token: str
    ) -> ProviderResult:
        return await self._pay(idempotency_key, "authorize", amount, currency, token)

    async def _pay(
        self,
        key: str,
        operation: Literal["capture", "authorize"],
        amount: int,
        currency: str,
        token: str,
    ) -> ProviderResult:
        if token == TOK_SLOW:  # the ledger is read only for the token that needs it
            known = await self.ledger.get(key)
            if not (known and known.decided):
                await asyncio.sleep(self.slow_s)
        prefix = "ch" if operation == "capture" else "auth"
        ref = f"{prefix}_sbx_{uuid.uuid4().hex[:24]}"
        entry = await self.ledger.apply(
            key, lambda e: sandbox_payment(e, key, operation, amount, currency, token, ref)
        )
        return entry.result()

    async def capture_authorized(
        self, idempotency_key: str, authorization_ref: str, amount: int
    ) -> ProviderResult:
        hold = await self.ledger.by_ref(authorization_ref)
        taken = await self.ledger.acting_on(authorization_ref)
        ref = f"ch_sbx_{uuid.uuid4().hex[:24]}"
        entry = await self.ledger.apply(
            idempotency_key,
            lambda e: sandbox_capture_hold(
                e, hold, taken, idempotency_key, authorization_ref, amount, ref
            ),
        )
        return entry.result()

    async def void(self, idempotency_key: str, authorization_ref: str) -> ProviderResult:
        hold = await self.ledger.by_ref(authorization_ref)
        taken = await self.ledger.acting_on(authorization_ref)
        ref = f"void_sbx_{uuid.uuid4().hex[:24]}"
        entry = await self.ledger.apply(
            idempotency_key,
            lambda e: sandbox_void(e, hold, taken, idempotency_key, authorization_ref, ref),
        )
        return entry.result()

    async def find_capture(self, idempotency_key: str) -> ProviderCapture | None:
        entry = await self.ledger.get(idempotency_key)
        if entry is None or entry.operation != "capture" or not entry.moved or entry.ref is None:
            return None
        return ProviderCapture(ref=entry.ref, amount=entry.amount, currency=entry.currency or "")

    async def refund(self, idempotency_key: str, capture_ref: str, amount: int) -> ProviderResult:
        capture = await self.ledger.by_ref(capture_ref)
        refunded = sum(
            e.amount
            for e in await self.ledger.acting_on(capture_ref)
            if e.operation == "refund" and e.moved and e.key != idempotency_key
        )
        ref = f"re_sbx_{uuid.uuid4().hex[:24]}"
        entry = await self.ledger.apply(
            idempotency_key,
            lambda e: sandbox_refund(
                e, capture, refunded, idempotency_key, capture_ref, amount, ref
            ),
        )
        return entry.result()

    def parse_webhook(self, payload: bytes, headers: Mapping[str, str]) -> ProviderEvent:
        if not self._webhook_secret:
            raise WebhookRejected("no webhook secret is configured for the sandbox")
        verify_sandbox_signature(
            self._webhook_secret,
            headers.get(SANDBOX_SIGNATURE_HEADER),
            payload,
            int(time.time()),
            self.webhook_tolerance_s,
        )
        return parse_sandbox_event(payload)

    async def confirm_action(
        self, ref: str, *, succeeded: bool, order_id: str | None = None
    ) -> tuple[bytes, dict[str, str]] | None:
        """Simulate the shopper's 3-D Secure verdict on the payment `ref`: the sandbox records
        it and answers the webhook it sends about it (body and headers, signed); None if no
        payment of that ref awaits an action. The webhook names `order_id` (default: the
        payment's key, which is the order id for payments charges)."""
        entry = await self.ledger.by_ref(ref)
        if entry is None or not entry.awaiting_action:
            return None
        after = await self.ledger.apply(
            entry.key, lambda e: sandbox_confirm(e or entry, succeeded=succeeded)
        )
        if succeeded:
            kind = "payment.succeeded" if after.operation == "capture" else "payment.authorized"
        else:
            kind = "payment.failed"
        shown = after if succeeded else replace(after, ref=ref)
        body = sandbox_event(f"evt_sbx_{uuid.uuid4().hex[:24]}", kind, shown, order_id or entry.key)
        signature = sandbox_signature(self._webhook_secret, int(time.time()), body)
        return body, {SANDBOX_SIGNATURE_HEADER: signature}
