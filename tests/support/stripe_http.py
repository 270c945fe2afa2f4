"""Seeing what the Stripe adapter sends: an SDK HTTP client that records every request (and its
answer) and either sends it on (to stripe-mock) or answers it from a queue of canned Stripe
responses (unit tests, no network); and Stripe's webhook signature scheme, written out."""

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import stripe


@dataclass(frozen=True)
class Sent:
    """One HTTP request the SDK made, as it went on the wire."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: str | None

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(self.url).query))

    @property
    def form(self) -> dict[str, str]:
        """The form-encoded parameters (`metadata[order_id]`, `payment_method_types[0]`, ...)."""
        return dict(parse_qsl(self.body or ""))

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)


class RecordingHTTPClient(stripe.HTTPXClient):
    """The SDK's httpx client, recording. With answers queued (`answer(status, body)`) each
    request takes the next one instead of going out; an answer may be an exception to raise
    (what the SDK raises for a network failure)."""

    def __init__(self, timeout: float = 10.0) -> None:
        super().__init__(timeout=timeout)
        self.sent: list[Sent] = []
        self.answers: list[Any] = []  # json bodies of what came back, in order
        self._queued: list[tuple[int, Any] | Exception] = []

    def answer(self, status: int, body: Any) -> None:
        self._queued.append((status, body))

    def fail(self, error: Exception) -> None:
        self._queued.append(error)

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        self.sent.append(Sent(method.upper(), url, dict(headers), post_data))
        if self._queued:
            queued = self._queued.pop(0)
            if isinstance(queued, Exception):
                raise queued
            status, body = queued
            content: bytes = json.dumps(body).encode()
            answer: tuple[bytes, int, Mapping[str, str]] = (
                content,
                status,
                {"request-id": "req_canned"},
            )
        else:
            answer = await super().request_async(method, url, headers, post_data)
        self.answers.append(json.loads(answer[0]))
        return answer

    def mutating(self) -> list[Sent]:
        return [s for s in self.sent if s.method == "POST"]


def stripe_signature(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The `Stripe-Signature` header Stripe sends: `t=<unix time>,v1=<hex HMAC-SHA256 of
    "<t>.<raw body>" keyed with the endpoint's signing secret>`."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256)
    return f"t={t},v1={mac.hexdigest()}"
