"""The outside world of orders: pricing's quote endpoint (HTTP), behind the `PricingClient` protocol."""

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from libs.events.common import Money
from libs.events.orders import CreditNote, Invoice
from libs.kit import documents
from libs.kit.errors import FieldError, Invalid, Unavailable

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


class PricingClient(Protocol):
    async def quote(
        self,
        lines: Sequence[tuple[str, int]],
        region: str,
        *,
        authorization: str | None,
        request_id: str,
    ) -> Quote:
        """Price the lines for the caller (their `authorization` selects customer-group prices).
        Raises Invalid with pricing's own field errors when it refuses the lines (unknown sku,
        discontinued, unknown region), Unavailable when it cannot give a trustworthy quote."""
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
    ) -> Quote:
        if self.client is None:
            raise Unavailable("pricing is unavailable: client not started")
        # The caller's token travels on so customer-group prices apply to them.
        headers = {"X-Request-ID": request_id}
        if authorization:
            headers["Authorization"] = authorization
        body = {"lines": [{"sku": s, "quantity": q} for s, q in lines], "region": region}
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
