"""A tiny HTTP server on loopback that records webhook deliveries (for integration and e2e tests)."""

import asyncio
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def signature_valid(self, secret: str) -> bool:
        """v1's `X-Backroom-Signature` (hex HMAC-SHA256 of the body)."""
        expected = "sha256=" + hmac.new(secret.encode(), self.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, self.headers.get("x-backroom-signature", ""))

    def standard_signature_valid(self, secret: str) -> bool:
        """The Standard Webhooks headers, checked by the reference library as a receiver would
        (signature of `id.timestamp.body`, timestamp within five minutes). A `whsec_` secret
        is the library's base64 form; any other is used as its UTF-8 bytes."""
        from standardwebhooks.webhooks import Webhook, WebhookVerificationError

        verifier = Webhook(secret if secret.startswith("whsec_") else secret.encode())
        try:
            verifier.verify(self.body, self.headers, json_parse=False)
        except WebhookVerificationError:
            return False
        return True


@dataclass
class WebhookReceiver:
    """Answers each POST with the next status in `statuses` (then 200) and keeps what it got."""

    statuses: list[int] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def __aenter__(self) -> "WebhookReceiver":
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request_line = await reader.readline()
                if not request_line:
                    return
                headers: dict[str, str] = {}
                while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status = self.statuses.pop(0) if self.statuses else 200
                if status < 300:
                    self.deliveries.append(Delivery(headers, body))
                writer.write(
                    f"HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: keep-alive\r\n\r\n".encode()
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return
        finally:
            writer.close()
