"""The payment provider payments calls outside its transactions, and the sandbox PSP."""

import asyncio
import hashlib
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any, Literal, Protocol, runtime_checkable

import stripe

from services.payments.domain import (
    TOK_SLOW,
    LedgerEntry,
    NextAction,
    ProviderCapture,
    ProviderEvent,
    ProviderEventKind,
    ProviderResult,
    TransientProviderError,
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
        lost_answer_share: float = 0.0,
        lost_answer_calls: int = 4,
    ) -> None:
        self.ledger = ledger
        self.slow_s = slow_s
        self._webhook_secret = webhook_secret
        self.webhook_tolerance_s = webhook_tolerance_s
        # Fault injection (`make faults`): for this share of capture keys (chosen by the key,
        # so every process agrees) the sandbox takes the money and then "times out", on the
        # first `lost_answer_calls` calls of the key in this process: the caller never hears
        # that it was charged until it asks again.
        self.lost_answer_share = lost_answer_share
        self.lost_answer_calls = lost_answer_calls
        self._lost: dict[str, int] = {}

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
        if entry.moved and self._answer_lost(key):
            raise TransientProviderError("sandbox: no answer in time (the payment went through)")
        return entry.result()

    def _answer_lost(self, key: str) -> bool:
        if self.lost_answer_share <= 0:
            return False
        digest = hashlib.sha256(key.encode()).digest()
        if int.from_bytes(digest[:4], "big") / 2**32 >= self.lost_answer_share:
            return False
        calls = self._lost.get(key, 0)
        if calls >= self.lost_answer_calls:
            return False
        self._lost[key] = calls + 1
        return True

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


# --- Stripe -------------------------------------------------------------------------------
# Every Stripe call payments makes is in this section (an import contract keeps the SDK here).

log = logging.getLogger(__name__)

# A PaymentIntent not decided yet: find_capture cancels it, so that its answer stays final.
STRIPE_UNDECIDED = frozenset(
    {"requires_capture", "processing", "requires_action", "requires_confirmation"}
)
_ORDER_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def order_id_of_key(idempotency_key: str) -> str:
    """The order an idempotency key belongs to: our keys are the order id (a capture) or name it
    (`refund:<order id>`); a key naming no order id is its own order id."""
    found = _ORDER_ID.search(idempotency_key)
    return found.group(0) if found else idempotency_key


def _currency(value: Any) -> str | None:
    return value.upper() if isinstance(value, str) else None


def _metadata_order_id(obj: Mapping[str, Any]) -> str | None:
    metadata = obj.get("metadata") or {}
    order_id = metadata.get("order_id")
    return order_id if isinstance(order_id, str) and order_id else None


def payment_error_reason(error: Mapping[str, Any] | None, default: str = "card_declined") -> str:
    """A Stripe error object's reason as payments reports it: the decline code, else the code."""
    error = error or {}
    return str(error.get("decline_code") or error.get("code") or default)


def stripe_next_action(intent: Mapping[str, Any]) -> NextAction:
    """What the shopper must do for a PaymentIntent in `requires_action` (3-D Secure)."""
    action = intent.get("next_action") or {}
    redirect = action.get("redirect_to_url") or {}
    return NextAction(
        type=str(action.get("type") or "use_stripe_sdk"),
        client_secret=intent.get("client_secret"),
        redirect_url=redirect.get("url"),
    )


def stripe_intent_result(intent: Mapping[str, Any]) -> ProviderResult:
    """A PaymentIntent as the answer to a capture, an authorization or a capture of one:
    `succeeded` (captured) and `requires_capture` (authorized) are money held or moved, its id
    the reference; `requires_action` waits for the shopper; `requires_payment_method` is a
    decline. One still `processing` (or unconfirmed) is not an answer yet: a transient error,
    so that the call stays owed and a later claim asks `find_capture`."""
    ref = str(intent["id"])
    status = intent.get("status")
    if status in ("succeeded", "requires_capture"):
        return ProviderResult.succeeded(ref)
    if status == "requires_action":
        return ProviderResult.requires_action(ref, stripe_next_action(intent))
    if status == "requires_payment_method":
        return ProviderResult.declined(payment_error_reason(intent.get("last_payment_error")))
    if status == "canceled":
        return ProviderResult.declined(str(intent.get("cancellation_reason") or "canceled"))
    raise TransientProviderError(f"stripe payment intent {ref} is {status}, not decided yet")


def stripe_refund_result(refund: Mapping[str, Any]) -> ProviderResult:
    """A Refund as the answer to a refund: `succeeded`, or `pending` (card refunds are final
    unless a `charge.refund.updated` says `failed` later), is the money given back."""
    status = refund.get("status")
    if status in ("succeeded", "pending", "requires_action"):
        return ProviderResult.succeeded(str(refund["id"]))
    return ProviderResult.declined(str(refund.get("failure_reason") or status or "refund_failed"))


def stripe_capture(intent: Mapping[str, Any]) -> ProviderCapture | None:
    """The money a PaymentIntent moved, if it succeeded."""
    if intent.get("status") != "succeeded":
        return None
    return ProviderCapture(
        ref=str(intent["id"]),
        amount=int(intent.get("amount_received") or 0),
        currency=_currency(intent.get("currency")) or "",
    )


def _expired_authorization(error: stripe.StripeError) -> bool:
    """A capture refused because the authorization lapsed (Stripe cancels an uncaptured
    PaymentIntent after its hold window: the capture finds it `canceled`)."""
    if error.code == "charge_expired_for_capture":
        return True
    body = error.json_body if isinstance(error.json_body, dict) else {}
    intent = (body.get("error") or {}).get("payment_intent") or {}
    return error.code == "payment_intent_unexpected_state" and intent.get("status") == "canceled"


def stripe_failure(operation: str, error: stripe.StripeError) -> ProviderResult:
    """The answer a Stripe error means for one operation: a decline, or (raised) a transient
    error for anything a later call with the same key may get past. No message names the key,
    the token or Stripe's own message (it may repeat a parameter we sent)."""
    what = (
        f"stripe {operation}: {type(error).__name__} (http {error.http_status}, "
        f"code {error.code}, request {error.request_id})"
    )
    if isinstance(error, stripe.CardError):
        body = error.json_body if isinstance(error.json_body, dict) else {}
        return ProviderResult.declined(payment_error_reason(body.get("error"), error.code or ""))
    if isinstance(error, stripe.InvalidRequestError):
        if operation == "capture_authorized" and _expired_authorization(error):
            return ProviderResult.declined("authorization_expired")
        log.warning("%s refused (param %s)", what, error.param)
        return ProviderResult.declined(error.code or "invalid_request")
    if isinstance(error, stripe.IdempotencyError):
        # The key was used before with other parameters: a bug of ours, never retried.
        log.warning("%s refused", what)
        return ProviderResult.declined("idempotency_error")
    # Connection errors and timeouts, rate limits, 409 conflicts (a request with the same key
    # still running), 5xx; authentication and permission errors too: a configuration an operator
    # fixes, not the shopper's decline (the call stays owed meanwhile).
    raise TransientProviderError(what) from None


class StripeProvider:
    """Stripe's PaymentIntents behind `PaymentProvider`, with the official SDK's async client.

    Tokens: a PaymentMethod id (`pm_…`) is used as it is; a card token (`tok_…`, e.g. Stripe's
    test tokens) becomes a PaymentMethod first (`POST /v1/payment_methods` with `card[token]`,
    the documented way: a PaymentIntent takes no token). Every mutating call carries an
    `Idempotency-Key` derived from ours and `metadata` naming the order (`order_id`) and the key
    (`backroom_key`, which `find_capture` searches). The API key and the webhook secret are
    never logged, never in a message or the repr."""

    name = "stripe"

    def __init__(
        self,
        api_key: str,
        webhook_secret: str,
        *,
        api_base: str = "https://api.stripe.com",
        timeout_s: float = 20.0,
        max_network_retries: int = 0,
        webhook_tolerance_s: int = 300,
        http_client: stripe.HTTPClient | None = None,
    ) -> None:
        # At INFO the SDK logs Stripe's error messages (they may repeat a token), at DEBUG every
        # request body and response (tokens, client secrets): keep its logger to warnings.
        logging.getLogger("stripe").setLevel(logging.WARNING)
        self.api_base = api_base
        self._http = http_client or stripe.HTTPXClient(timeout=timeout_s)
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base},
            max_network_retries=max_network_retries,  # 0: payments' RetryPolicy retries
            http_client=self._http,
        )
        self._webhook_secret = webhook_secret
        self._webhook_tolerance_s = webhook_tolerance_s

    def __repr__(self) -> str:
        return f"StripeProvider(api_base={self.api_base!r})"

    async def aclose(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]  # untyped in the SDK

    async def capture(
        self, idempotency_key: str, amount: int, currency: str, token: str
    ) -> ProviderResult:
        return await self._create_intent(idempotency_key, amount, currency, token, "automatic")

    async def authorize(
        self, idempotency_key: str, amount: int, currency: str, token: str
    ) -> ProviderResult:
        return await self._create_intent(idempotency_key, amount, currency, token, "manual")

    async def capture_authorized(
        self, idempotency_key: str, authorization_ref: str, amount: int
    ) -> ProviderResult:
        answer = await self._send(
            "capture_authorized",
            self._client.v1.payment_intents.capture_async(
                authorization_ref,
                {"amount_to_capture": amount, "metadata": self._metadata(idempotency_key)},
                {"idempotency_key": idempotency_key},
            ),
        )
        return answer if isinstance(answer, ProviderResult) else stripe_intent_result(answer)

    async def void(self, idempotency_key: str, authorization_ref: str) -> ProviderResult:
        """Stripe answers a cancel with the canceled PaymentIntent, or an error; cancelling one
        that is canceled already (voided before, or expired) is a void that holds."""
        try:
            intent = await self._client.v1.payment_intents.cancel_async(
                authorization_ref, None, {"idempotency_key": idempotency_key}
            )
        except stripe.InvalidRequestError as error:
            body = error.json_body if isinstance(error.json_body, dict) else {}
            current = (body.get("error") or {}).get("payment_intent") or {}
            if current.get("status") == "canceled":
                return ProviderResult.succeeded(authorization_ref)
            return stripe_failure("void", error)
        except stripe.StripeError as error:
            return stripe_failure("void", error)
        return ProviderResult.succeeded(str(intent.id))

    async def refund(self, idempotency_key: str, capture_ref: str, amount: int) -> ProviderResult:
        answer = await self._send(
            "refund",
            self._client.v1.refunds.create_async(
                {
                    "payment_intent": capture_ref,
                    "amount": amount,
                    # Only our key: an operator's refund is keyed by the refund's id, which is
                    # no order id (the payment intent names the order).
                    "metadata": {"backroom_key": idempotency_key},
                },
                {"idempotency_key": idempotency_key},
            ),
        )
        return answer if isinstance(answer, ProviderResult) else stripe_refund_result(answer)

    async def find_capture(self, idempotency_key: str) -> ProviderCapture | None:
        """Searches PaymentIntents by `metadata['backroom_key']`; one still undecided is
        cancelled first, so that no capture lands after this said None. Stripe's search is
        eventually consistent (normally under a minute): an intent created moments ago may not
        be found yet."""
        quoted = idempotency_key.replace("\\", "\\\\").replace("'", "\\'")
        try:
            found = await self._client.v1.payment_intents.search_async(
                {"query": f"metadata['backroom_key']:'{quoted}'", "limit": 100}
            )
        except stripe.StripeError as error:
            raise TransientProviderError(
                f"stripe find_capture: {type(error).__name__} (http {error.http_status}, "
                f"request {error.request_id})"
            ) from None
        capture = None
        for intent in found.to_dict().get("data") or []:
            if (intent.get("metadata") or {}).get("backroom_key") != idempotency_key:
                continue  # the query names the key; this guards against any other answer
            if intent.get("status") in STRIPE_UNDECIDED:
                intent = await self._cancel_undecided(idempotency_key, str(intent["id"]))
            capture = capture or stripe_capture(intent)
        return capture

    def parse_webhook(self, payload: bytes, headers: Mapping[str, str]) -> ProviderEvent:
        try:
            event = self._client.construct_event(
                payload,
                headers.get("stripe-signature"),
                self._webhook_secret,
                tolerance=self._webhook_tolerance_s,
            )
        except stripe.SignatureVerificationError as error:
            # Its message names the problem (no header, no match, stale); never the payload.
            raise WebhookRejected(f"stripe webhook: {error.user_message}") from None
        except (ValueError, AttributeError, TypeError):  # not UTF-8, not JSON, not an event
            raise WebhookRejected("stripe webhook: the body is not a Stripe event") from None
        try:
            return stripe_event(event.to_dict())
        except (KeyError, TypeError, AttributeError, ValueError):
            raise WebhookRejected("stripe webhook: the event lacks id, type or object") from None

    # --- helpers ---

    @staticmethod
    def _metadata(idempotency_key: str) -> dict[str, str]:
        return {"order_id": order_id_of_key(idempotency_key), "backroom_key": idempotency_key}

    async def _send(
        self, operation: str, request: Awaitable[stripe.StripeObject]
    ) -> dict[str, Any] | ProviderResult:
        """The answer's object, or the decline its Stripe error means (transient ones raise)."""
        try:
            answer = await request
        except stripe.StripeError as error:
            return stripe_failure(operation, error)
        return answer.to_dict()

    async def _payment_method(self, idempotency_key: str, token: str) -> str | ProviderResult:
        """The PaymentMethod id to confirm with, or the decline of a token Stripe cannot use."""
        if token.startswith("pm_"):
            return token
        if not token.startswith("tok_"):
            return ProviderResult.declined("invalid_token")
        try:
            method = await self._client.v1.payment_methods.create_async(
                {"type": "card", "card": {"token": token}},
                {"idempotency_key": f"{idempotency_key}:payment_method"},
            )
        except stripe.InvalidRequestError as error:
            # A token Stripe does not know (resource_missing) or that was used already.
            log.info("stripe refused the card token (code %s): invalid_token", error.code)
            return ProviderResult.declined("invalid_token")
        except stripe.StripeError as error:
            return stripe_failure("payment_method", error)
        return str(method.id)

    async def _create_intent(
        self,
        idempotency_key: str,
        amount: int,
        currency: str,
        token: str,
        capture_method: Literal["automatic", "manual"],
    ) -> ProviderResult:
        payment_method = await self._payment_method(idempotency_key, token)
        if isinstance(payment_method, ProviderResult):
            return payment_method
        answer = await self._send(
            "capture" if capture_method == "automatic" else "authorize",
            self._client.v1.payment_intents.create_async(
                {
                    "amount": amount,
                    "currency": currency.lower(),
                    "payment_method": payment_method,
                    "payment_method_types": ["card"],
                    "confirm": True,
                    "capture_method": capture_method,
                    "metadata": self._metadata(idempotency_key),
                },
                {"idempotency_key": idempotency_key},
            ),
        )
        return answer if isinstance(answer, ProviderResult) else stripe_intent_result(answer)

    async def _cancel_undecided(self, idempotency_key: str, intent_id: str) -> dict[str, Any]:
        """Cancel a PaymentIntent found undecided; if Stripe refuses (it decided meanwhile, or it
        is `processing`), the lookup is not final yet: a transient error, asked again later."""
        try:
            intent = await self._client.v1.payment_intents.cancel_async(
                intent_id, None, {"idempotency_key": f"{idempotency_key}:cancel"}
            )
        except stripe.StripeError as error:
            raise TransientProviderError(
                f"stripe find_capture: the undecided payment intent {intent_id} could not be "
                f"cancelled ({type(error).__name__}, code {error.code})"
            ) from None
        return intent.to_dict()


_EVENT_KINDS: dict[str, ProviderEventKind] = {
    "payment_intent.succeeded": "succeeded",
    "payment_intent.amount_capturable_updated": "authorized",
    "payment_intent.payment_failed": "failed",
    "payment_intent.canceled": "canceled",
    "charge.refunded": "refunded",
    "charge.dispute.created": "disputed",
}


def stripe_event(event: Mapping[str, Any]) -> ProviderEvent:
    """A verified Stripe event (its JSON) as payments acts on it; types it does not act on are
    `ignored`, still with their id (so the inbox records them once)."""
    event_type = str(event["type"])
    obj: Mapping[str, Any] = event["data"]["object"]
    kind = _EVENT_KINDS.get(event_type, "ignored")
    fields: dict[str, Any] = {}
    if event_type.startswith("payment_intent."):
        fields = {"ref": str(obj["id"]), "amount": obj.get("amount")}
        if kind == "succeeded":
            fields["amount"] = obj.get("amount_received")
        elif kind == "authorized":
            fields["amount"] = obj.get("amount_capturable")
        elif kind == "failed":
            fields["reason"] = payment_error_reason(obj.get("last_payment_error"))
        elif kind == "canceled":
            fields["reason"] = obj.get("cancellation_reason")
    elif kind == "refunded":  # a Charge: what was refunded so far, in total
        fields = {"ref": obj.get("payment_intent"), "amount": obj.get("amount_refunded")}
    elif kind == "disputed":  # a Dispute: none of our metadata, its payment intent names it
        fields = {"ref": obj.get("payment_intent"), "amount": obj.get("amount")}
        fields["reason"] = obj.get("reason")
    if kind != "ignored":
        fields["order_id"] = _metadata_order_id(obj)
        fields["currency"] = _currency(obj.get("currency"))
    return ProviderEvent(id=str(event["id"]), kind=kind, provider_type=event_type, **fields)
