"""Notification rules: which email an event calls for, dedupe keys, money text, webhook signing
and retries."""

import base64
import hashlib
import hmac
import logging
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from libs.events import EVENT_TYPES
from libs.events.common import Money
from libs.events.inventory import PurchaseOrderSent, StockLow
from libs.events.orders import (
    Invoice,
    OrderCancelled,
    OrderConfirmed,
    OrderDelivered,
    OrderRejected,
    OrderShipped,
    ReturnCompleted,
)
from libs.events.payments import PaymentDisputed
from libs.kit.money import format_money

log = logging.getLogger(__name__)

ORDER_CONFIRMED = "order_confirmed"
ORDER_REJECTED = "order_rejected"
ORDER_CANCELLED = "order_cancelled"
ORDER_SHIPPED = "order_shipped"
ORDER_DELIVERED = "order_delivered"
LOW_STOCK = "low_stock"
PAYMENT_DISPUTED = "payment_disputed"
TEMPLATES = (
    ORDER_CONFIRMED,
    ORDER_REJECTED,
    ORDER_CANCELLED,
    ORDER_SHIPPED,
    ORDER_DELIVERED,
    LOW_STOCK,
    PAYMENT_DISPUTED,
    "return_completed",  # issue 12: RETURN_COMPLETED
    "purchase_order_sent",  # issue 13: PURCHASE_ORDER_SENT
)

EMAIL_EVENTS = {
    "OrderConfirmed": ORDER_CONFIRMED,
    "OrderRejected": ORDER_REJECTED,
    "OrderCancelled": ORDER_CANCELLED,
    "OrderShipped": ORDER_SHIPPED,
    "OrderDelivered": ORDER_DELIVERED,
    "StockLow": LOW_STOCK,
    "PaymentDisputed": PAYMENT_DISPUTED,
}

# Events a webhook may subscribe to: every registered type except the internal one that carries
# payment tokens, which must never leave the system.
INTERNAL_EVENT_TYPES = frozenset({"PaymentInstructionIssued"})
WEBHOOK_EVENT_TYPES = tuple(sorted(t for t in EVENT_TYPES if t not in INTERNAL_EVENT_TYPES))

# Orders may carry no email address (the contract's OrderPlaced has it optional); customers then
# get mail at a per-customer mailbox of this domain, which the mail system routes.
CUSTOMER_EMAIL_DOMAIN = "customers.backroom.local"

REJECTION_REASONS = {
    "out_of_stock": "some of the items you ordered are out of stock",
    "payment_declined": "your payment was declined by the card issuer",
    "reservation_expired": "we could not confirm your payment in time, so the items were released",
    "invalid": "the order could not be accepted as placed (an item or the address was invalid)",
}
# The fixed set orders accepts (services/orders/domain.py CANCELLATION_REASONS), in words.
CANCELLATION_REASONS = {
    "customer_request": "you asked us to cancel it",
    "changed_my_mind": "you asked us to cancel it",
    "found_cheaper": "you asked us to cancel it",
    "ordered_by_mistake": "you asked us to cancel it, as it was ordered by mistake",
    "delivery_too_slow": "you asked us to cancel it, as delivery would take too long",
    "duplicate_order": "it duplicated another order",
    "payment_issue": "there was a problem with its payment",
    "suspected_fraud": "we could not verify it",
    "other": "you asked us to cancel it",
}
TRACKING_LABELS = {
    "carrier": "Carrier",
    "tracking_number": "Tracking number",
    "number": "Tracking number",
    "url": "Track your parcel",
    # Orders' carrier tracking (issue 12): the carrier's tracking page for the parcel.
    "tracking_url": "Track your parcel",
}


def money(value: Money) -> str:
    return format_money(value.amount, value.currency)


def customer_address(customer_id: str, email: str | None) -> str:
    """The event's email if it has one, else `<customer_id>@customers.backroom.local`."""
    if email:
        return email
    local = re.sub(r"[^A-Za-z0-9._+-]", "-", customer_id).strip(".") or "unknown"
    return f"{local[:64]}@{CUSTOMER_EMAIL_DOMAIN}"


def email_dedupe_key(aggregate: str, template: str) -> str:
    """One email per (order, template), or per (sku:crossing event, template) for stock alerts."""
    return f"{aggregate}:{template}"


def message_id(dedupe_key: str) -> str:
    """A deterministic Message-ID, so a resend after a crash is recognisably the same message.

    `<dedupe_key@backroom>` with each ':' written as '/': a colon is not allowed in a Message-ID
    (RFC 5322 dot-atom), and mail parsers (Python's email package among them) cut the id there."""
    return f"<{dedupe_key.replace(':', '/')}@backroom>"


def rejection_reason(reason: str) -> str:
    return REJECTION_REASONS.get(reason, "we could not complete it")


def cancellation_reason(reason: str) -> str:
    return CANCELLATION_REASONS.get(reason, f"it was cancelled ({reason.replace('_', ' ')})")


def describe_tracking(tracking: dict[str, Any]) -> list[str]:
    """Tracking details as `Label: value` lines, the well-known ones first."""
    known = [k for k in TRACKING_LABELS if k in tracking]
    others = sorted(k for k in tracking if k not in TRACKING_LABELS)
    return [
        f"{TRACKING_LABELS.get(k, k.replace('_', ' ').capitalize())}: {tracking[k]}"
        for k in known + others
        if tracking[k] not in (None, "")
    ]


@dataclass(frozen=True)
class Email:
    """An email to send for one event: template, recipient, dedupe key and the template context."""

    template: str
    to: str
    dedupe_key: str
    subject: str  # the aggregate id (order id or sku): NotificationSent's key
    order_id: str | None = None
    sku: str | None = None
    context: dict[str, Any] = field(default_factory=dict)
    # The receipt's invoice, attached as its PDF (issue 12).
    invoice: Invoice | None = None

    @property
    def message_id(self) -> str:
        return message_id(self.dedupe_key)

    def with_invoice(self, invoice: Invoice | None) -> "Email":
        return replace(self, invoice=invoice)


def _order_email(template: str, order_id: str, to: str, **context: Any) -> Email:
    return Email(
        template=template,
        to=to,
        dedupe_key=email_dedupe_key(order_id, template),
        subject=order_id,
        order_id=order_id,
        context={"order_id": order_id, **context},
    )


# The types `plan_email` may answer with an email for; every other type gets none.
EMAIL_EVENT_TYPES = frozenset(
    {
        "OrderConfirmed",
        "OrderRejected",
        "OrderCancelled",
        "OrderShipped",
        "OrderDelivered",
        "StockLow",
        "PaymentDisputed",
    }
)


def plan_email(
    event_type: str,
    data: dict[str, Any],
    event_id: str,
    warehouse_email: str,
    operator_email: str | None = None,
) -> Email | None:
    """The email an event calls for, or None if it calls for none. A dispute goes to the
    operators (`operator_email`; None: to nobody)."""
    if event_type == "ReturnCompleted":  # issue 12
        return return_completed_email(data)
    if event_type == "PurchaseOrderSent":  # issue 13
        return purchase_order_email(data)
    if event_type == "PaymentDisputed":
        if operator_email is None:
            return None
        disputed = PaymentDisputed.model_validate(data)
        # Each dispute is its own alert (a payment may be disputed again after a reversal).
        return Email(
            template=PAYMENT_DISPUTED,
            to=operator_email,
            dedupe_key=email_dedupe_key(f"{disputed.order_id}:{event_id}", PAYMENT_DISPUTED),
            subject=disputed.order_id,
            order_id=disputed.order_id,
            context={
                "order_id": disputed.order_id,
                "payment_id": disputed.payment_id,
                "amount": money(disputed.amount),
                "reason": disputed.reason,
                "provider": disputed.provider,
                "provider_ref": disputed.provider_ref,
            },
        )
    if event_type == "OrderConfirmed":
        confirmed = OrderConfirmed.model_validate(data)
        lines = [
            {
                "sku": line.sku,
                "quantity": line.quantity,
                "unit_price": money(line.unit_price),
                "discount": money(line.discount),
                "tax": money(line.tax),
                "total": money(line.total),
            }
            for line in confirmed.lines
        ]
        to = customer_address(confirmed.customer_id, confirmed.email)
        return _order_email(
            ORDER_CONFIRMED,
            confirmed.order_id,
            to,
            lines=lines,
            total=money(confirmed.total),
            invoice_number=confirmed.invoice.number if confirmed.invoice else None,
        ).with_invoice(confirmed.invoice)
    if event_type == "OrderRejected":
        rejected = OrderRejected.model_validate(data)
        to = customer_address(rejected.customer_id, rejected.email)
        return _order_email(
            ORDER_REJECTED, rejected.order_id, to, reason=rejection_reason(rejected.reason)
        )
    if event_type == "OrderCancelled":
        cancelled = OrderCancelled.model_validate(data)
        to = customer_address(cancelled.customer_id, cancelled.email)
        return _order_email(
            ORDER_CANCELLED, cancelled.order_id, to, reason=cancellation_reason(cancelled.reason)
        )
    if event_type == "OrderShipped":
        shipped = OrderShipped.model_validate(data)
        to = customer_address(shipped.customer_id, shipped.email)
        return _order_email(
            ORDER_SHIPPED, shipped.order_id, to, tracking=describe_tracking(shipped.tracking)
        )
    if event_type == "OrderDelivered":
        delivered = OrderDelivered.model_validate(data)
        to = customer_address(delivered.customer_id, delivered.email)
        return _order_email(ORDER_DELIVERED, delivered.order_id, to)
    if event_type == "StockLow":
        low = StockLow.model_validate(data)
        # StockLow is emitted once per crossing of the reorder point: each event is its own alert.
        return Email(
            template=LOW_STOCK,
            to=warehouse_email,
            dedupe_key=email_dedupe_key(f"{low.sku}:{event_id}", LOW_STOCK),
            subject=low.sku,
            sku=low.sku,
            context={
                "sku": low.sku,
                "available": low.available,
                "reorder_point": low.reorder_point,
            },
        )
    return None


def signature(secret: str, body: bytes) -> str:
    """`X-Backroom-Signature`: `sha256=<hex HMAC-SHA256 of the exact body>`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header: str) -> bool:
    """What a receiver does; kept here so tests and docs show the same rule."""
    return hmac.compare_digest(signature(secret, body), header)


# A subscription signs with at most two secrets at once: the current one and, while receivers
# move over, its successor (Standard Webhooks allows several signatures in one header).
MAX_ACTIVE_SECRETS = 2

_WHSEC = "whsec_"


def signing_key(secret: str) -> bytes:
    """The Standard Webhooks HMAC key of a subscription's secret: a `whsec_<base64>` secret is
    its decoded bytes (what the spec's libraries do with such a string), any other secret its
    UTF-8 bytes (give those to a verifier: `Webhook(secret.encode())`)."""
    if secret.startswith(_WHSEC):
        encoded = secret[len(_WHSEC) :]
        try:
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except ValueError:
            key = b""
        if key:
            return key
    return secret.encode()


def standard_signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One Standard Webhooks signature: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def delivery_headers(
    delivery_id: str, timestamp: int, body: bytes, secrets: tuple[str, ...]
) -> dict[str, str]:
    """The headers of one POST. Standard Webhooks: `webhook-id` (the delivery id, the same on
    every retry: receivers dedupe on it), `webhook-timestamp` (this attempt, in Unix seconds:
    receivers refuse old ones, so a captured request cannot be replayed later) and
    `webhook-signature` with one `v1,` signature per active secret, oldest first, separated by
    spaces. v1's `X-Backroom-Signature` is keyed with the oldest active secret (the one a
    receiver already has while a new one is being rolled out)."""
    return {
        "Content-Type": "application/cloudevents+json",
        "webhook-id": delivery_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            standard_signature(signing_key(s), delivery_id, timestamp, body) for s in secrets
        ),
        "X-Backroom-Signature": signature(secrets[0], body),
        "X-Backroom-Delivery": delivery_id,
        "User-Agent": "Backroom-Webhooks/1",
    }


def retry_delay(failed_attempts: int, base_s: float, max_s: float) -> timedelta:
    """Wait after the n-th failed delivery: base, 2·base, 4·base, ... capped at max."""
    exponent = min(max(failed_attempts - 1, 0), 32)
    return timedelta(seconds=min(base_s * 2**exponent, max_s))


def is_final_refusal(status_code: int | None) -> bool:
    """A 4xx answer says the request itself is wrong (gone, unauthorised, malformed): sending
    it again will not help. 408 (timeout) and 429 (slow down) are the exceptions."""
    return status_code is not None and 400 <= status_code < 500 and status_code not in (408, 429)


@dataclass(frozen=True)
class DeliveryOutcome:
    status: str  # pending | delivered | failed
    attempts: int
    next_attempt_at: datetime | None
    retry_from: datetime  # when this round of attempts began: the horizon counts from it


def after_attempt(
    *,
    status_code: int | None,
    refused: bool = False,
    attempts_before: int,
    retry_from: datetime | None,
    now: datetime,
    horizon_s: float,
    base_s: float,
    max_s: float,
) -> DeliveryOutcome:
    """Where a webhook delivery stands after one more POST that was answered `status_code`
    (None: no answer). A 2xx delivers it; a refused target or a final 4xx fails it at once;
    anything else is retried with backoff until `horizon_s` after the round's first attempt,
    the last retry falling on the horizon itself."""
    attempts = attempts_before + 1
    started = retry_from or now
    if status_code is not None and is_success(status_code):
        return DeliveryOutcome("delivered", attempts, None, started)
    horizon = started + timedelta(seconds=horizon_s)
    if refused or is_final_refusal(status_code) or now >= horizon:
        return DeliveryOutcome("failed", attempts, None, started)
    retry_at = min(now + retry_delay(attempts, base_s, max_s), horizon)
    return DeliveryOutcome("pending", attempts, retry_at, started)


def delivery_log_key(delivery_id: str, redeliveries: int) -> str:
    """The log row of one concluded round of a delivery (a redelivery logs a row of its own)."""
    return f"webhook:{delivery_id}" + (f":{redeliveries}" if redeliveries else "")


def is_success(status_code: int) -> bool:
    return 200 <= status_code < 300


# --- what the repositories hand back ------------------------------------------------------------


@dataclass(frozen=True)
class QueuedEmail:
    """An email recorded to be sent, rendered once when it was queued; `lease_until` is set
    while a worker holds it (its claim), None when it is only being queued."""

    id: str
    dedupe_key: str
    template: str
    to: str
    message_id: str
    mail_subject: str
    text: str
    subject: str  # the aggregate id: NotificationSent's key
    order_id: str | None
    sku: str | None
    correlation_id: str | None
    causation_id: str | None
    queued_at: datetime
    lease_until: datetime | None = None
    # Files sent with it (the receipt's invoice PDF), fixed when it is queued (issue 12).
    attachments: "tuple[Attachment, ...]" = ()


@dataclass(frozen=True)
class Announcement:
    """An event to queue for the webhooks subscribed to its type: the CloudEvent JSON as POSTed."""

    event_type: str
    event_id: str
    payload: str
    # A ListingChanged's sales channel: only that channel's subscriptions get it (issue 13).
    channel: str | None = None


@dataclass(frozen=True)
class DueDelivery:
    """A webhook delivery a worker claimed: what to POST where, signed with which secrets
    (oldest first); its `next_attempt_at` is `lease_until` until the outcome is recorded.
    `retry_from` is the first attempt of this round (None before it), `redeliveries` how many
    times an admin asked for it again."""

    id: str
    subscription_id: str
    event_type: str
    payload: str
    attempts: int
    url: str
    secrets: tuple[str, ...]
    lease_until: datetime
    retry_from: datetime | None = None
    redeliveries: int = 0


@dataclass(frozen=True)
class Subscription:
    id: str
    seq: int
    url: str
    events: tuple[str, ...]
    created_at: datetime
    active_secrets: int = 1
    channel: str | None = None  # issue 13: a sales channel's listing subscription


@dataclass(frozen=True)
class DeliveryRecord:
    """A webhook delivery as an admin lists it (newest first, by `seq`)."""

    id: str
    seq: int
    subscription_id: str
    event_id: str
    event_type: str
    status: str  # pending | delivered | failed
    attempts: int
    last_error: str | None
    next_attempt_at: datetime | None  # None once concluded
    created_at: datetime
    updated_at: datetime
    redeliveries: int


@dataclass(frozen=True)
class LogEntry:
    """One row of the notifications log (an email or a webhook delivery that was concluded)."""

    id: str
    seq: int
    channel: str
    template: str
    to: str
    status: str
    at: datetime
    order_id: str | None
    error: str | None


# --- returns (issue 12) ---
# The customer hears when a return is completed (its units taken back, its share refunded). An
# order may have several returns: one email per return.
RETURN_COMPLETED = "return_completed"
EMAIL_EVENTS = {**EMAIL_EVENTS, "ReturnCompleted": RETURN_COMPLETED}
EMAIL_EVENT_TYPES = EMAIL_EVENT_TYPES | {"ReturnCompleted"}


def return_completed_email(data: dict[str, Any]) -> Email:
    completed = ReturnCompleted.model_validate(data)
    return Email(
        template=RETURN_COMPLETED,
        to=customer_address(completed.customer_id, completed.email),
        dedupe_key=email_dedupe_key(
            f"{completed.order_id}:{completed.return_id}", RETURN_COMPLETED
        ),
        subject=completed.order_id,
        order_id=completed.order_id,
        context={
            "order_id": completed.order_id,
            "return_id": completed.return_id,
            "refund": money(completed.refund),
            "refunded": completed.refund.amount > 0,
        },
    )


# --- invoice attachments (issue 12) ---

PDF = "application/pdf"


@dataclass(frozen=True)
class Attachment:
    """A file sent with an email."""

    filename: str
    content_type: str
    content: bytes


def invoice_filename(invoice: Invoice) -> str:
    """`INV-2026-000001.pdf`: the invoice's number (letters, digits and dashes only)."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", invoice.number) + ".pdf"


# --- purchasing (issue 13) ---
# A sent purchase order is emailed to its supplier (when the supplier has an address): one
# email per purchase order. A supplier webhook is an ordinary subscription on PurchaseOrderSent.
PURCHASE_ORDER_SENT = "purchase_order_sent"
EMAIL_EVENTS = {**EMAIL_EVENTS, "PurchaseOrderSent": PURCHASE_ORDER_SENT}
EMAIL_EVENT_TYPES = EMAIL_EVENT_TYPES | {"PurchaseOrderSent"}


def purchase_order_email(data: dict[str, Any]) -> Email | None:
    """The purchase order for its supplier; None when the supplier has no email address."""
    sent = PurchaseOrderSent.model_validate(data)
    if not sent.supplier_email:
        log.info("purchase order %s: supplier has no email address", sent.purchase_order_id)
        return None
    return Email(
        template=PURCHASE_ORDER_SENT,
        to=sent.supplier_email,
        dedupe_key=email_dedupe_key(sent.purchase_order_id, PURCHASE_ORDER_SENT),
        subject=sent.purchase_order_id,
        context={
            "purchase_order_id": sent.purchase_order_id,
            "supplier_name": sent.supplier_name,
            "location": sent.location,
            "lines": [{"sku": line.sku, "quantity": line.quantity} for line in sent.lines],
            "expected_at": sent.expected_at.date().isoformat() if sent.expected_at else None,
        },
    )


# --- channel webhooks (issue 13) ---
# A sales channel's ListingChanged events (topic `backroom.listings.<channel>`) go to the
# subscriptions of that channel only; every other event to the subscriptions without a channel.

LISTING_CHANGED = "ListingChanged"
# Catalog's channel codes (services/catalog/domain.py CHANNEL_CODE_PATTERN).
CHANNEL_CODE_PATTERN = r"^[a-z0-9][a-z0-9-]{0,31}$"


def subscription_problem(events: list[str], channel: str | None) -> tuple[str, str] | None:
    """(field, message) if these events cannot be subscribed with this channel, else None:
    ListingChanged only with a channel (each channel has its own feed), and a channel's
    subscription lists ListingChanged only (the other events belong to no channel)."""
    if channel is None:
        if LISTING_CHANGED in events:
            return "channel", f"{LISTING_CHANGED} is per sales channel: name the channel"
        return None
    others = sorted(set(events) - {LISTING_CHANGED})
    if others:
        return "events", (
            f"a channel's subscription lists {LISTING_CHANGED} only, not {', '.join(others)}"
        )
    return None


def announcement_channel(event_type: str, data: dict[str, Any]) -> str | None:
    """The sales channel whose subscriptions an event is for: a ListingChanged's own, else
    None (the subscriptions without a channel)."""
    if event_type != LISTING_CHANGED:
        return None
    channel = data.get("channel")
    return channel if isinstance(channel, str) else None
