"""The payment provider payments calls outside its transactions, and the sandbox PSP."""

import asyncio
import uuid
from collections.abc import Callable, Mapping
from typing import Protocol

from services.payments.domain import (
    TOK_SLOW,
    LedgerEntry,
    ProviderCapture,
    ProviderEvent,
    ProviderResult,
    sandbox_capture,
    sandbox_refund,
)


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


class SandboxLedger(Protocol):
    """Where the sandbox keeps its idempotency keys (its own storage, outside our transactions)."""

    async def get(self, key: str) -> LedgerEntry | None: ...

    async def by_ref(self, ref: str) -> LedgerEntry | None: ...

    async def apply(
        self, key: str, step: Callable[[LedgerEntry | None], LedgerEntry]
    ) -> LedgerEntry: ...


class SandboxProvider:
    """The default PSP: deterministic answers per test token (see domain.sandbox_capture), an
    idempotency ledger that survives our crashes (`db.PgSandboxLedger`), and no card numbers."""

    def __init__(self, ledger: SandboxLedger, slow_s: float = 10.0) -> None:
        self.ledger = ledger
        self.slow_s = slow_s

    async def capture(
        self, idempotency_key: str, amount: int, currency: str, token: str
    ) -> ProviderResult:
        if token == TOK_SLOW:  # the ledger is read only for the token that needs it
            known = await self.ledger.get(idempotency_key)
            if not (known and known.decided):
                await asyncio.sleep(self.slow_s)
        ref = f"ch_sbx_{uuid.uuid4().hex[:24]}"
        entry = await self.ledger.apply(
            idempotency_key,
            lambda e: sandbox_capture(e, idempotency_key, amount, currency, token, ref),
        )
        return entry.result()

    async def find_capture(self, idempotency_key: str) -> ProviderCapture | None:
        entry = await self.ledger.get(idempotency_key)
        if entry is None or entry.operation != "capture" or entry.ref is None:
            return None
        return ProviderCapture(ref=entry.ref, amount=entry.amount, currency=entry.currency or "")

    async def refund(self, idempotency_key: str, capture_ref: str, amount: int) -> ProviderResult:
        capture = await self.ledger.by_ref(capture_ref)
        ref = f"re_sbx_{uuid.uuid4().hex[:24]}"
        entry = await self.ledger.apply(
            idempotency_key,
            lambda e: sandbox_refund(e, capture, idempotency_key, capture_ref, amount, ref),
        )
        return entry.result()
