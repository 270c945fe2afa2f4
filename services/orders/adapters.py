"""The outside world of orders: pricing's quote endpoint (HTTP), behind the `PricingClient` protocol,
and catalog's public product read (HTTP, for carts), behind the `CatalogClient` protocol,
and the carriers that sell shipping labels and send tracking webhooks (`Carrier`)."""

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol
from urllib.parse import quote

import httpx
from easypost.easypost_client import EasyPostClient
from easypost.errors.api.api_error import ApiError
from easypost.errors.general.easypost_error import EasyPostError
from easypost.errors.general.filtering_error import FilteringError
from easypost.errors.general.signature_verification_error import SignatureVerificationError
from easypost.util import validate_webhook
from fpdf import FPDF
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from libs.events import topics
from libs.events.common import Money
from libs.events.orders import CreditNote, Invoice
from libs.kit import documents
from libs.kit.errors import FieldError, Invalid, Unavailable
from libs.kit.kafka import read_dlq
from services.orders.domain import (
    TRACKING_STATUSES,
    CatalogProduct,
    TrackingEvent,
    TrackingStatus,
    WebhookRejected,
    sandbox_carrier_signature,
    verify_sandbox_carrier_signature,
)

log = logging.getLogger(__name__)


class QuoteLine(BaseModel):
    model_config = ConfigDict(extra="ignore")

    sku: str
    quantity: int
    unit_price: Money
    discount: Money
    # Not in contract v1's quote line; read when pricing sends it, zero otherwise.
    tax: Money | None = None
    total: Money


class Quote(BaseModel):
    """Pricing's answer for the order lines: what the order charges, exactly."""

    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    lines: list[QuoteLine]
    subtotal: Money
    discount: Money
    tax: Money
    total: Money
    # v2 shipping line (issue 12): absent from an older pricing, which means no shipping.
    shipping: Money | None = None
    shipping_tax: Money | None = None
    shipping_method: str | None = None
    # The lines' weight pricing chose the rate by (grams; absent from an older pricing).
    weight_g: int | None = None


class PricingClient(Protocol):
    async def quote(
        self,
        lines: Sequence[tuple[str, int]],
        region: str,
        *,
        authorization: str | None,
        request_id: str,
        shipping_method: str | None = None,
        channel: str = "web",
    ) -> Quote:
        """Price the lines for the caller (their `authorization` selects customer-group prices),
        shipped by `shipping_method` (None: the region's default), from `channel`'s price list
        (issue 13; the base prices where it has none). Raises Invalid with pricing's
        own field errors when it refuses the lines (unknown sku, discontinued, unknown region,
        unusable shipping method), Unavailable when it cannot give a trustworthy quote."""
        ...


class HttpPricing:
    """Pricing's quote endpoint through one pooled HTTP client, opened in the app's lifespan."""

    def __init__(self, base_url: str, timeout_s: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.client: httpx.AsyncClient | None = None

    async def open(self) -> None:
        self.client = httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout_s)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    async def quote(
        self,
        lines: Sequence[tuple[str, int]],
        region: str,
        *,
        authorization: str | None,
        request_id: str,
        shipping_method: str | None = None,
        channel: str = "web",
    ) -> Quote:
        if self.client is None:
            raise Unavailable("pricing is unavailable: client not started")
        # The caller's token travels on so customer-group prices apply to them.
        headers = {"X-Request-ID": request_id}
        if authorization:
            headers["Authorization"] = authorization
        body: dict[str, Any] = {
            "lines": [{"sku": s, "quantity": q} for s, q in lines],
            "region": region,
        }
        if shipping_method is not None:  # absent: pricing picks the region's default
            body["shipping_method"] = shipping_method
        if channel != "web":  # absent: web (a pricing from before issue 13 knows no channel)
            body["channel"] = channel
        try:
            response = await self.client.post("/pricing/quotes", json=body, headers=headers)
        except httpx.HTTPError as exc:
            log.warning("pricing unreachable: %r", exc)
            raise Unavailable("pricing is unavailable, try again later") from exc
        if response.status_code in (400, 404, 422):
            raise _relayed(response)
        if not response.is_success:
            raise Unavailable(f"pricing answered {response.status_code}, try again later")
        try:
            quote = Quote.model_validate_json(response.content)
        except ValidationError as exc:
            log.error("pricing sent a quote we cannot read: %s", exc)
            raise Unavailable("pricing answered an unreadable quote") from exc
        if sorted((ln.sku, ln.quantity) for ln in quote.lines) != sorted(lines):
            raise Unavailable("pricing quoted other lines than asked")
        return quote


def _relayed(response: httpx.Response) -> Invalid:
    """Pricing's verdict on the lines, passed on as ours: a 400 stays a 400, 404/422 are 422."""
    try:
        problem = response.json()
    except ValueError:
        problem = {}
    if not isinstance(problem, dict):
        problem = {}
    return Invalid(
        str(problem.get("detail") or "pricing refused the order lines"),
        _field_errors(problem.get("errors")),
        malformed=response.status_code == 400,
    )


def _field_errors(errors: Any) -> list[FieldError]:
    if not isinstance(errors, list):
        return []
    return [
        FieldError(str(e.get("field", "")), str(e.get("message", "")))
        for e in errors
        if isinstance(e, dict)
    ]


# --- carts (issue 12) ---------------------------------------------------------------------------


class _AvailabilityIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    available: int
    in_stock: bool


class _ProductIn(BaseModel):
    """The part of catalog's `GET /catalog/products/{sku}` answer a cart line needs."""

    model_config = ConfigDict(extra="ignore")

    sku: str
    status: str
    price: Money | None = None
    availability: _AvailabilityIn


class CatalogClient(Protocol):
    async def product(self, sku: str, *, request_id: str) -> CatalogProduct | None:
        """The sku's state, base price and availability now; None when catalog does not know
        it. Raises Unavailable when catalog cannot answer."""
        ...


class HttpCatalog:
    """Catalog's public product read through one pooled HTTP client, opened in the app's
    lifespan (no caller token: the read is public)."""

    def __init__(self, base_url: str, timeout_s: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.client: httpx.AsyncClient | None = None

    async def open(self) -> None:
        self.client = httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout_s)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    async def product(self, sku: str, *, request_id: str) -> CatalogProduct | None:
        if self.client is None:
            raise Unavailable("catalog is unavailable: client not started")
        try:
            response = await self.client.get(
                f"/catalog/products/{quote(sku, safe='')}", headers={"X-Request-ID": request_id}
            )
        except httpx.HTTPError as exc:
            log.warning("catalog unreachable: %r", exc)
            raise Unavailable("catalog is unavailable, try again later") from exc
        if response.status_code in (404, 422):
            return None  # 422: catalog refuses the sku's form, so it has no such product
        if not response.is_success:
            raise Unavailable(f"catalog answered {response.status_code}, try again later")
        try:
            found = _ProductIn.model_validate_json(response.content)
        except ValidationError as exc:
            log.error("catalog sent a product we cannot read: %s", exc)
            raise Unavailable("catalog answered an unreadable product") from exc
        if found.sku != sku:
            raise Unavailable("catalog answered another product than asked")
        return CatalogProduct(
            sku=found.sku,
            active=found.status == "active",
            price=found.price,
            available=max(found.availability.available, 0),
            in_stock=found.availability.in_stock,
        )


# --- shipments (issue 12) ---
# Carriers: where a shipment's label is bought and whose tracking webhooks move it. The label
# worker calls `create_shipment` outside any transaction, with the shipment id as the
# idempotency key; the webhook route calls `parse_webhook` on the exact body it received.


@dataclass(frozen=True)
class ShipmentRequest:
    """What a carrier needs to sell a label: where to (the order's shipping address), how
    heavy, and the key that makes a repeated call the same purchase."""

    idempotency_key: str
    order_id: str
    address: dict[str, Any]
    lines: tuple[tuple[str, int], ...]
    weight_grams: int


@dataclass(frozen=True)
class PurchasedLabel:
    """A bought label: the tracking number, the carrier's own id of the shipment, and the label
    itself, as a PDF we keep (`label_pdf`, the sandbox) or at the carrier's URL (`label_url`)."""

    tracking_number: str
    carrier_ref: str
    label_pdf: bytes | None = None
    label_url: str | None = None
    tracking_url: str | None = None

    def __repr__(self) -> str:  # the PDF's bytes are no use in a log line
        return (
            f"PurchasedLabel(tracking_number={self.tracking_number!r}, "
            f"carrier_ref={self.carrier_ref!r}, label_url={self.label_url!r})"
        )


class CarrierError(Exception):
    """A carrier did not sell the label. The message names the problem for an operator."""


class TransientCarrierError(CarrierError):
    """Unreachable, timed out, rate limited, 5xx: the same call may succeed later."""


class PermanentCarrierError(CarrierError):
    """The carrier refused the shipment itself (bad address, no rate, unauthorised): asking
    again will not help; an operator must look (the shipment is `failed`)."""


class Carrier(Protocol):
    @property
    def name(self) -> str: ...

    async def create_shipment(self, request: ShipmentRequest) -> PurchasedLabel:
        """Buy the label (the same `idempotency_key` buys it once). Raises
        TransientCarrierError or PermanentCarrierError."""
        ...

    def parse_webhook(self, headers: dict[str, str], body: bytes) -> TrackingEvent | None:
        """A verified tracking update (headers lower-cased), None for an event that is not one
        (the carrier's other event types); raises WebhookRejected if it is not the carrier's."""
        ...


SANDBOX_CARRIER_SIGNATURE_HEADER = "sandbox-signature"
SANDBOX_TRACKING_PREFIX = "SBX"


class SandboxCarrier:
    """The default carrier: sells every label at once, a real PDF (fpdf2) with the address, the
    order and the tracking number as text and as a Code 39 barcode. The tracking number derives
    from the idempotency key, so a repeated call (a re-claimed shipment) buys the same label.
    Its webhooks are signed like payments' sandbox: `sandbox-signature: t=<unix>,v1=<hex
    HMAC-SHA256 of "<t>.<body>">`."""

    name = "sandbox"

    def __init__(
        self,
        webhook_secret: str,
        *,
        webhook_tolerance_s: int = 300,
        tracking_url: str | None = None,
    ) -> None:
        self._webhook_secret = webhook_secret
        self.webhook_tolerance_s = webhook_tolerance_s
        self.tracking_url = tracking_url

    def __repr__(self) -> str:
        return "SandboxCarrier()"

    async def create_shipment(self, request: ShipmentRequest) -> PurchasedLabel:
        digest = hashlib.sha256(request.idempotency_key.encode()).hexdigest()
        tracking_number = SANDBOX_TRACKING_PREFIX + str(int(digest[:16], 16))[:14].zfill(14)
        pdf = await asyncio.to_thread(render_label, request, tracking_number)
        return PurchasedLabel(
            tracking_number=tracking_number,
            carrier_ref=f"sbx_shp_{digest[:24]}",
            label_pdf=pdf,
            tracking_url=(
                self.tracking_url.format(tracking_number=tracking_number)
                if self.tracking_url
                else None
            ),
        )

    def sign(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        """The headers the sandbox sends its webhook `body` with (tests, demos)."""
        t = int(time.time()) if timestamp is None else timestamp
        return {
            SANDBOX_CARRIER_SIGNATURE_HEADER: sandbox_carrier_signature(
                self._webhook_secret, t, body
            )
        }

    def parse_webhook(self, headers: dict[str, str], body: bytes) -> TrackingEvent | None:
        verify_sandbox_carrier_signature(
            self._webhook_secret,
            headers.get(SANDBOX_CARRIER_SIGNATURE_HEADER),
            body,
            int(time.time()),
            self.webhook_tolerance_s,
        )
        try:
            event = SandboxTrackingWebhook.model_validate_json(body)
        except ValidationError as exc:
            raise WebhookRejected("not a sandbox tracking event") from exc
        return TrackingEvent(
            event_id=event.id,
            event_type=event.type,
            tracking_number=event.tracking_number,
            status=event.status,
            at=event.at or datetime.now(UTC),
            detail=event.detail,
        )


class SandboxTrackingWebhook(BaseModel):
    """The sandbox carrier's tracking event, signed: `{"id", "type": "tracker.updated",
    "tracking_number", "status", "at"?, "detail"?}`."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=200)
    type: Literal["tracker.updated"] = "tracker.updated"
    tracking_number: str = Field(min_length=1, max_length=100)
    status: TrackingStatus
    at: AwareDatetime | None = None
    detail: str | None = Field(default=None, max_length=500)


def _latin1(text: Any) -> str:
    """The core PDF fonts speak Latin-1: anything else is shown as '?', never an error."""
    return str(text).encode("latin-1", "replace").decode("latin-1")


def render_label(request: ShipmentRequest, tracking_number: str) -> bytes:
    """A 4x6 inch shipping label as PDF bytes: the address, the order, the tracking number."""
    pdf = FPDF(orientation="P", unit="mm", format=(101.6, 152.4))
    pdf.set_auto_page_break(False)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 14)
    documents.write_line(pdf, 8, "BACKROOM SANDBOX CARRIER")
    pdf.set_font("Helvetica", "", 9)
    documents.write_line(pdf, 5, _latin1(f"Order {request.order_id}"))
    documents.write_line(pdf, 5, f"Weight {request.weight_grams} g")
    pdf.ln(3)
    pdf.set_font("Helvetica", "B", 11)
    documents.write_line(pdf, 6, "SHIP TO")
    pdf.set_font("Helvetica", "", 10)
    for key, value in request.address.items():
        documents.write_line(pdf, 5, _latin1(f"{key}: {value}"))
    pdf.ln(4)
    pdf.set_font("Helvetica", "B", 12)
    documents.write_line(pdf, 7, f"Tracking {tracking_number}")
    pdf.code39(f"*{tracking_number}*", x=6, y=pdf.get_y() + 2, w=0.5, h=18)
    return bytes(pdf.output())


# EasyPost's Tracker statuses we act on (others, such as `unknown`, change nothing).
EASYPOST_TRACKER_STATUSES = frozenset(TRACKING_STATUSES)


class EasyPostCarrier:
    """EasyPost through its official SDK (sync `requests`, so each call runs in a thread):
    create the shipment (from our ship-from address to the order's, a parcel of the order's
    weight), buy its lowest rate (or the configured service's), and read `tracking_code` and
    `postage_label.label_url`. The shipment id is sent as the shipment's `reference`. Webhooks
    are verified with the SDK's `validate_webhook` (`X-Hmac-Signature`)."""

    name = "easypost"

    def __init__(
        self,
        api_key: str,
        webhook_secret: str,
        from_address: dict[str, str],
        *,
        api_base: str | None = None,
        timeout_s: int = 30,
        service: str | None = None,
        carriers: Sequence[str] = (),
    ) -> None:
        options: dict[str, Any] = {"timeout": timeout_s}
        if api_base:
            options["api_base"] = api_base
        self._client = EasyPostClient(api_key, **options)
        self._webhook_secret = webhook_secret
        self.from_address = from_address
        self.service = service
        self.carriers = list(carriers)

    def __repr__(self) -> str:  # never the key
        return f"EasyPostCarrier(service={self.service!r})"

    async def create_shipment(self, request: ShipmentRequest) -> PurchasedLabel:
        return await asyncio.to_thread(self._buy, request)

    def _buy(self, request: ShipmentRequest) -> PurchasedLabel:
        try:
            shipment = self._client.shipment.create(
                reference=request.idempotency_key,
                to_address=easypost_address(request.address),
                from_address=dict(self.from_address),
                # EasyPost weighs parcels in ounces.
                parcel={"weight": round(max(request.weight_grams, 1) / 28.349523125, 1)},
                options={"label_format": "PDF"},
            )
            rate = shipment.lowest_rate(
                carriers=self.carriers, services=[self.service] if self.service else []
            )
            bought = self._client.shipment.buy(shipment.id, rate={"id": rate.id})
        except FilteringError as exc:
            raise PermanentCarrierError(f"easypost offered no rate that fits: {exc}") from exc
        except ApiError as exc:
            raise _easypost_error(exc) from exc
        except EasyPostError as exc:
            raise TransientCarrierError(f"easypost: {exc}") from exc
        label = getattr(bought, "postage_label", None)
        tracker = getattr(bought, "tracker", None)
        tracking_code = getattr(bought, "tracking_code", None)
        if not tracking_code or label is None or not getattr(label, "label_url", None):
            raise TransientCarrierError("easypost bought the label but sent no tracking code")
        return PurchasedLabel(
            tracking_number=str(tracking_code),
            carrier_ref=str(bought.id),
            label_url=str(label.label_url),
            tracking_url=_public_url(tracker),
        )

    def parse_webhook(self, headers: dict[str, str], body: bytes) -> TrackingEvent | None:
        signature = headers.get("x-hmac-signature")
        try:
            event = validate_webhook(body, {"X-Hmac-Signature": signature}, self._webhook_secret)
        except SignatureVerificationError as exc:
            raise WebhookRejected("signature does not match") from exc
        except ValueError as exc:
            raise WebhookRejected("not an EasyPost event") from exc
        return easypost_tracking_event(event)


def easypost_tracking_event(event: Any) -> TrackingEvent | None:
    """A tracking update from an EasyPost Event (`tracker.updated` / `tracker.created` with its
    Tracker in `result`); None for other events or statuses we do not act on."""
    if not isinstance(event, dict) or not isinstance(event.get("result"), dict):
        raise WebhookRejected("not an EasyPost event")
    if event.get("description") not in ("tracker.updated", "tracker.created"):
        return None
    tracker = event["result"]
    status = tracker.get("status")
    code = tracker.get("tracking_code")
    event_id = event.get("id")
    if status not in EASYPOST_TRACKER_STATUSES or not code or not event_id:
        return None
    details = tracker.get("tracking_details") or []
    last = details[-1] if details and isinstance(details[-1], dict) else {}
    at = _easypost_time(last.get("datetime")) or _easypost_time(tracker.get("updated_at"))
    detail = tracker.get("status_detail") or last.get("message")
    return TrackingEvent(
        event_id=str(event_id),
        event_type=str(event["description"]),
        tracking_number=str(code),
        status=status,
        at=at or datetime.now(UTC),
        detail=str(detail)[:500] if detail else None,
    )


def _public_url(tracker: Any) -> str | None:
    url = getattr(tracker, "public_url", None) if tracker is not None else None
    return str(url) if url else None


def _easypost_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# Our free-form shipping address keys, as EasyPost's Address fields.
_EASYPOST_ADDRESS_KEYS = {
    "name": "name",
    "company": "company",
    "street1": "street1",
    "line1": "street1",
    "street": "street1",
    "address": "street1",
    "street2": "street2",
    "line2": "street2",
    "city": "city",
    "state": "state",
    "region": "state",
    "zip": "zip",
    "postal_code": "zip",
    "postcode": "zip",
    "country": "country",
    "phone": "phone",
    "email": "email",
}


def easypost_address(address: dict[str, Any]) -> dict[str, str]:
    """The order's shipping address as an EasyPost Address (unknown keys are left out)."""
    out: dict[str, str] = {}
    for key, value in address.items():
        field = _EASYPOST_ADDRESS_KEYS.get(key.lower())
        if field and field not in out and value:
            out[field] = str(value)
    return out


def _easypost_error(exc: Any) -> CarrierError:
    """EasyPost's 4xx (but 408/429) refuse the shipment itself; the rest may pass."""
    status = getattr(exc, "http_status", None)
    if isinstance(status, int) and 400 <= status < 500 and status not in (408, 429):
        return PermanentCarrierError(f"easypost refused the shipment ({status}): {exc}")
    return TransientCarrierError(f"easypost answered {status}: {exc}")


# --- invoices and credit notes (issue 12) ---


class DocumentRenderer(Protocol):
    """Documents as PDF bytes (the one renderer of libs/kit/documents.py, shared with
    notifications, so the attachment and the download are the same file)."""

    def invoice(self, invoice: Invoice) -> bytes: ...

    def credit_note(self, note: CreditNote) -> bytes: ...


class PdfDocuments:
    """`DocumentRenderer` with fpdf2 (libs.kit.documents)."""

    def invoice(self, invoice: Invoice) -> bytes:
        return documents.render_invoice(invoice)

    def credit_note(self, note: CreditNote) -> bytes:
        return documents.render_credit_note(note)


# --- timeline (issue 14) ---


class HttpServiceRecords:
    """The other services' records of an order, read from their own admin routes with a service
    bearer: inventory's reservation, payments' payments and their refunds, notifications' emails.
    Each service gets `timeout_s`; one that does not answer in time, or answers an error, is
    `{"error": ...}` for that service alone."""

    def __init__(
        self,
        inventory_url: str,
        payments_url: str,
        notifications_url: str,
        bearer: Callable[[], str | None],
        timeout_s: float = 3.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.urls = {
            "inventory": inventory_url.rstrip("/"),
            "payments": payments_url.rstrip("/"),
            "notifications": notifications_url.rstrip("/"),
        }
        self.bearer = bearer
        self.timeout_s = timeout_s
        self.transport = transport

    async def for_order(self, order_id: str) -> dict[str, Any]:
        try:
            token = self.bearer()
        except Exception as exc:  # e.g. no service token configured: say so per service
            log.warning("no service bearer for the timeline: %r", exc)
            return {name: {"error": f"no service token: {exc}"} for name in self.urls}
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(
            timeout=self.timeout_s, headers=headers, transport=self.transport
        ) as client:
            reads = {
                "inventory": self._inventory(client, order_id),
                "payments": self._payments(client, order_id),
                "notifications": self._notifications(client, order_id),
            }
            answers = await asyncio.gather(
                *(self._bounded(name, read) for name, read in reads.items())
            )
        return dict(zip(reads, answers, strict=True))

    async def _bounded(self, name: str, read: Awaitable[dict[str, Any]]) -> dict[str, Any]:
        try:
            return await asyncio.wait_for(read, self.timeout_s)
        except TimeoutError:
            return {"error": f"{name} did not answer within {self.timeout_s:g} s"}
        except httpx.HTTPError as exc:
            return {"error": f"{name} unreachable: {type(exc).__name__}"}
        except _Refused as exc:
            return {"error": str(exc)}

    async def _get(self, client: httpx.AsyncClient, name: str, path: str) -> Any:
        response = await client.get(self.urls[name] + path)
        if response.status_code == 404:
            return None
        if not response.is_success:
            raise _Refused(f"{name} answered {response.status_code}")
        return response.json()

    async def _inventory(self, client: httpx.AsyncClient, order_id: str) -> dict[str, Any]:
        reservation = await self._get(
            client, "inventory", f"/inventory/reservations/{quote(order_id, safe='')}"
        )
        return {"reservation": reservation}

    async def _payments(self, client: httpx.AsyncClient, order_id: str) -> dict[str, Any]:
        page = await self._get(
            client, "payments", f"/payments?order_id={quote(order_id, safe='')}&limit=100"
        )
        payments: list[dict[str, Any]] = list((page or {}).get("items", []))
        refunds = await asyncio.gather(
            *(
                self._get(client, "payments", f"/payments/{quote(str(p['id']), safe='')}/refunds")
                for p in payments
            )
        )
        return {
            "payments": payments,
            "refunds": [r for page in refunds for r in (page or {}).get("items", [])],
        }

    async def _notifications(self, client: httpx.AsyncClient, order_id: str) -> dict[str, Any]:
        page = await self._get(
            client,
            "notifications",
            f"/notifications?order_id={quote(order_id, safe='')}&limit=100",
        )
        return {"notifications": list((page or {}).get("items", []))}


class _Refused(Exception):
    """A service answered the timeline's read with an error status."""


def is_about(entry: dict[str, Any], order_id: str) -> bool:
    """A dead letter is about the order when its key, its CloudEvent subject or its data's
    `order_id` is the order id."""
    if entry.get("key") == order_id:
        return True
    event = entry.get("event") or {}
    data = event.get("data") if isinstance(event, dict) else None
    return isinstance(event, dict) and (
        event.get("subject") == order_id
        or (isinstance(data, dict) and data.get("order_id") == order_id)
    )


class KafkaDeadLetters:
    """`dead_letters_for(order_id)`: the order's entries on every `<topic>.dlq`, read with the
    kit's `read_dlq` (the source to swap for a database-backed dead-letter store)."""

    def __init__(self, kafka: Any, timeout_s: float = 10.0) -> None:
        self.kafka = kafka
        self.timeout_s = timeout_s

    async def __call__(self, order_id: str) -> list[dict[str, Any]]:
        return await self.dead_letters_for(order_id)

    async def dead_letters_for(self, order_id: str) -> list[dict[str, Any]]:
        entries = await asyncio.wait_for(
            read_dlq(self.kafka, [topics.dlq(t) for t in topics.ALL_TOPICS]), self.timeout_s
        )
        found: list[dict[str, Any]] = []
        for entry in entries:
            record = entry.pop("_record", None)
            try:
                event = json.loads(record.value) if record is not None else {}
            except ValueError:
                event = {}
            if is_about({**entry, "event": event}, order_id):
                # The payment instruction's data carries the token: never shown.
                if entry.get("original_topic") != topics.PAYMENT_INSTRUCTIONS and isinstance(
                    event, dict
                ):
                    entry["data"] = event.get("data")
                entry["subject"] = event.get("subject") if isinstance(event, dict) else None
                found.append(entry)
        return found
