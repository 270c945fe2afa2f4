"""HTTP in: the notifications log and webhook subscriptions (admin only)."""

from collections.abc import Sequence
from typing import Annotated, Protocol

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import AfterValidator, BaseModel, Field, HttpUrl

from libs.kit.app import add_reconciliation_routes, transaction_of
from libs.kit.auth import Admin
from libs.kit.deadletters import include_dead_letter_routes
from libs.kit.pagination import DEFAULT_LIMIT, Cursor, Limit, Page, decode_cursor, encode_cursor
from libs.kit.problems import invalid
from libs.kit.transactions import SessionTx
from libs.kit.validation import RequestBody
from services.notifications import domain, service
from services.notifications.db import Store

router = APIRouter(prefix="/notifications", tags=["notifications"])

TxDep = Annotated[SessionTx[Store], Depends(transaction_of(Store.of), scope="function")]


def _known_event_type(name: str) -> str:
    if name not in domain.WEBHOOK_EVENT_TYPES:
        raise ValueError(
            f"unknown event type {name!r}; one of {', '.join(domain.WEBHOOK_EVENT_TYPES)}"
        )
    return name


def _not_too_long(url: HttpUrl) -> HttpUrl:
    # Checked after normalisation, which may percent-encode and so lengthen the URL.
    if len(str(url)) > 2000:
        raise ValueError("URL should have at most 2000 characters")
    return url


EventType = Annotated[
    str,
    Field(
        min_length=1, max_length=100, json_schema_extra={"enum": list(domain.WEBHOOK_EVENT_TYPES)}
    ),
    AfterValidator(_known_event_type),
]
WebhookUrl = Annotated[HttpUrl, AfterValidator(_not_too_long)]


class WebhookIn(RequestBody):
    url: WebhookUrl
    events: list[EventType] = Field(min_length=1, max_length=30)
    secret: str = Field(min_length=16, max_length=200)
    # Issue 13: a sales channel's listing subscription (ListingChanged of that channel only).
    channel: Annotated[str, Field(pattern=domain.CHANNEL_CODE_PATTERN)] | None = None


class WebhookOut(BaseModel):
    """A subscription as shown back: never with its secrets, only how many are active."""

    id: str
    url: str
    events: list[str]
    created_at: str
    active_secrets: int
    channel: str | None = None  # issue 13

    @classmethod
    def of(cls, subscription: domain.Subscription) -> "WebhookOut":
        return cls(
            id=subscription.id,
            url=subscription.url,
            events=list(subscription.events),
            created_at=subscription.created_at.isoformat(),
            active_secrets=subscription.active_secrets,
            channel=subscription.channel,
        )


class SecretIn(RequestBody):
    secret: str = Field(min_length=16, max_length=200)


class DeliveryOut(BaseModel):
    """One webhook delivery of a subscription (its body is the event: not repeated here)."""

    id: str
    event_id: str
    event_type: str
    status: str
    attempts: int
    last_error: str | None
    next_attempt_at: str | None
    created_at: str
    updated_at: str
    redeliveries: int

    @classmethod
    def of(cls, delivery: domain.DeliveryRecord) -> "DeliveryOut":
        return cls(
            id=delivery.id,
            event_id=delivery.event_id,
            event_type=delivery.event_type,
            status=delivery.status,
            attempts=delivery.attempts,
            last_error=delivery.last_error,
            next_attempt_at=(
                delivery.next_attempt_at.isoformat() if delivery.next_attempt_at else None
            ),
            created_at=delivery.created_at.isoformat(),
            updated_at=delivery.updated_at.isoformat(),
            redeliveries=delivery.redeliveries,
        )


class NotificationOut(BaseModel):
    id: str
    channel: str
    template: str
    to: str
    status: str
    at: str
    order_id: str | None
    error: str | None

    @classmethod
    def of(cls, entry: domain.LogEntry) -> "NotificationOut":
        return cls(
            id=entry.id,
            channel=entry.channel,
            template=entry.template,
            to=entry.to,
            status=entry.status,
            at=entry.at.isoformat(),
            order_id=entry.order_id,
            error=entry.error,
        )


def _after_seq(cursor: str | None) -> int | None:
    position = decode_cursor(cursor)
    if position is None:
        return None
    seq = position.get("seq")
    if not isinstance(seq, int):
        raise invalid("cursor", "malformed cursor", status=400)
    return seq


class _Sequenced(Protocol):
    @property
    def seq(self) -> int: ...


def _next_cursor(items: Sequence[_Sequenced], limit: int) -> str | None:
    return encode_cursor({"seq": items[limit - 1].seq}) if len(items) > limit else None


@router.get("", response_model=Page[NotificationOut])
async def list_notifications(
    _: Admin,
    tx: TxDep,
    order_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[NotificationOut]:
    entries = await service.list_notifications(tx, order_id, _after_seq(cursor), limit)
    return Page[NotificationOut](
        items=[NotificationOut.of(e) for e in entries[:limit]],
        next_cursor=_next_cursor(entries, limit),
    )


@router.post("/webhooks", status_code=201, response_model=WebhookOut)
async def create_webhook(body: WebhookIn, _: Admin, tx: TxDep, request: Request) -> WebhookOut:
    # Before the commit: if it fails, the consumer merely looks at a few events too many.
    request.app.state.webhook_interest.widen(body.events)
    subscription = await service.create_subscription(
        tx, request.app.state.webhook_guard, str(body.url), body.events, body.secret, body.channel
    )
    return WebhookOut.of(subscription)


@router.get("/webhooks", response_model=Page[WebhookOut])
async def list_webhooks(
    _: Admin, tx: TxDep, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[WebhookOut]:
    subscriptions = await service.list_subscriptions(tx, _after_seq(cursor), limit)
    return Page[WebhookOut](
        items=[WebhookOut.of(s) for s in subscriptions[:limit]],
        next_cursor=_next_cursor(subscriptions, limit),
    )


@router.delete("/webhooks/{subscription_id}", status_code=204)
async def delete_webhook(
    subscription_id: Annotated[str, Path(max_length=64)], _: Admin, tx: TxDep
) -> Response:
    await service.delete_subscription(tx, subscription_id)
    return Response(status_code=204)


SubscriptionId = Annotated[str, Path(max_length=64)]


@router.post("/webhooks/{subscription_id}/secrets", status_code=201, response_model=WebhookOut)
async def add_webhook_secret(
    subscription_id: SubscriptionId, body: SecretIn, _: Admin, tx: TxDep
) -> WebhookOut:
    """Rotation: the new secret signs every delivery beside the current one (409 if two are
    active already)."""
    return WebhookOut.of(await service.add_secret(tx, subscription_id, body.secret))


@router.delete("/webhooks/{subscription_id}/secrets/previous", status_code=204)
async def retire_webhook_secret(subscription_id: SubscriptionId, _: Admin, tx: TxDep) -> Response:
    """Rotation done: the older secret stops signing (409 if only one is active)."""
    await service.retire_previous_secret(tx, subscription_id)
    return Response(status_code=204)


@router.get("/webhooks/{subscription_id}/deliveries", response_model=Page[DeliveryOut])
async def list_webhook_deliveries(
    subscription_id: SubscriptionId,
    _: Admin,
    tx: TxDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[DeliveryOut]:
    """Newest first."""
    deliveries = await service.list_deliveries(tx, subscription_id, _after_seq(cursor), limit)
    return Page[DeliveryOut](
        items=[DeliveryOut.of(d) for d in deliveries[:limit]],
        next_cursor=_next_cursor(deliveries, limit),
    )


@router.post(
    "/webhooks/{subscription_id}/deliveries/{delivery_id}/redeliver",
    status_code=202,
    response_model=DeliveryOut,
)
async def redeliver_webhook(
    subscription_id: SubscriptionId,
    delivery_id: Annotated[str, Path(max_length=64)],
    _: Admin,
    tx: TxDep,
    request: Request,
) -> DeliveryOut:
    """Due again at once (409 while it is still pending)."""
    worker = request.app.state.webhook_worker
    delivery = await service.redeliver(
        tx, subscription_id, delivery_id, worker.clock(), wake=worker.worker.wake
    )
    return DeliveryOut.of(delivery)


# --- reconciliation (issue 14) ---

add_reconciliation_routes(router)


# --- dead letters (issue 14) ---

include_dead_letter_routes(router)  # /notifications/dead-letters (libs/kit/deadletters.py)
