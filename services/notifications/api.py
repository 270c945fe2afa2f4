"""HTTP in: the notifications log and webhook subscriptions (admin only)."""

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, HttpUrl
from sqlalchemy import Row

from libs.kit.app import Session
from libs.kit.auth import Admin
from libs.kit.pagination import DEFAULT_LIMIT, Cursor, Limit, Page, decode_cursor, encode_cursor
from libs.kit.problems import invalid
from services.notifications import domain, service

router = APIRouter(prefix="/notifications", tags=["notifications"])


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


EventType = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_known_event_type)]
WebhookUrl = Annotated[HttpUrl, AfterValidator(_not_too_long)]


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: WebhookUrl
    events: list[EventType] = Field(min_length=1, max_length=30)
    secret: str = Field(min_length=16, max_length=200)


class WebhookOut(BaseModel):
    """A subscription as shown back: never with its secret."""

    id: str
    url: str
    events: list[str]
    created_at: str

    @classmethod
    def from_row(cls, row: Row[Any]) -> "WebhookOut":
        return cls(id=row.id, url=row.url, events=row.events, created_at=row.created_at.isoformat())


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
    def from_row(cls, row: Row[Any]) -> "NotificationOut":
        return cls(
            id=row.id,
            channel=row.channel,
            template=row.template,
            to=row.recipient,
            status=row.status,
            at=row.at.isoformat(),
            order_id=row.order_id,
            error=row.error,
        )


def _after_seq(cursor: str | None) -> int | None:
    position = decode_cursor(cursor)
    if position is None:
        return None
    seq = position.get("seq")
    if not isinstance(seq, int):
        raise invalid("cursor", "malformed cursor", status=400)
    return seq


def _next_cursor(rows: list[Row[Any]], limit: int) -> str | None:
    return encode_cursor({"seq": rows[limit - 1].seq}) if len(rows) > limit else None


@router.get("", response_model=Page[NotificationOut])
async def list_notifications(
    _: Admin,
    session: Session,
    order_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[NotificationOut]:
    rows = await service.list_notifications(session, order_id, _after_seq(cursor), limit)
    return Page[NotificationOut](
        items=[NotificationOut.from_row(r) for r in rows[:limit]],
        next_cursor=_next_cursor(rows, limit),
    )


@router.post("/webhooks", status_code=201, response_model=WebhookOut)
async def create_webhook(
    body: WebhookIn, _: Admin, session: Session, request: Request
) -> WebhookOut:
    events = list(dict.fromkeys(body.events))  # a type listed twice is still delivered once
    # Before the commit: if it fails, the consumer merely looks at a few events too many.
    request.app.state.webhook_interest.widen(events)
    row = await service.create_subscription(session, str(body.url), events, body.secret)
    return WebhookOut.from_row(row)


@router.get("/webhooks", response_model=Page[WebhookOut])
async def list_webhooks(
    _: Admin, session: Session, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[WebhookOut]:
    rows = await service.list_subscriptions(session, _after_seq(cursor), limit)
    return Page[WebhookOut](
        items=[WebhookOut.from_row(r) for r in rows[:limit]],
        next_cursor=_next_cursor(rows, limit),
    )


@router.delete("/webhooks/{subscription_id}", status_code=204)
async def delete_webhook(
    subscription_id: Annotated[str, Path(max_length=64)], _: Admin, session: Session
) -> Response:
    await service.delete_subscription(session, subscription_id)
    return Response(status_code=204)
