"""The sandbox PSP's side of 3-D Secure, as `make faults` plays it: the shopper's verdict is
recorded in the sandbox's ledger (the PSP's own storage), then delivered to the public webhook
route the way a PSP delivers: at once (so it may overtake payments' recording of its own call,
which answers 503 until then), retried with backoff on 5xx, delivered again, and followed by a
stale failure event that arrives out of order after the success."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from typing import Any

import asyncpg
import httpx

from services.payments.adapters import SANDBOX_SIGNATURE_HEADER
from services.payments.domain import sandbox_signature

WEBHOOK_PATH = "/payments/webhooks/sandbox"


class SandboxPsp:
    def __init__(self, dsn: str, client: httpx.AsyncClient, secret: str) -> None:
        self.dsn = dsn
        self.client = client
        self.secret = secret
        self.stats: Counter[str] = Counter()

    async def confirm(self, order_id: str, patience_s: float = 60.0) -> None:
        """Wait for the sandbox to hold the order's payment awaiting the shopper, record the
        shopper's yes, and deliver its webhooks (success twice, then a stale failure)."""
        conn = await asyncpg.connect(self.dsn, timeout=5)
        try:
            row = await self._awaiting(conn, order_id, patience_s)
            if row is None:
                self.stats["3ds_never_awaiting"] += 1
                return
            await conn.execute(
                "UPDATE sandbox_ledger SET awaiting_action = false, updated_at = now()"
                " WHERE idempotency_key = $1 AND awaiting_action",
                order_id,
            )
        finally:
            await conn.close()
        data = {
            "ref": row["ref"],
            "order_id": order_id,
            "amount": row["amount"],
            "currency": row["currency"],
            "reason": None,
        }
        success = self._event("payment.succeeded", data)
        stale = self._event("payment.failed", data | {"reason": "authentication_failed"})
        self.stats[f"3ds_first:{await self._deliver(success, patience_s)}"] += 1
        self.stats[f"3ds_again:{await self._deliver(success, patience_s)}"] += 1
        self.stats[f"3ds_stale:{await self._deliver(stale, patience_s)}"] += 1

    async def _awaiting(
        self, conn: asyncpg.Connection, order_id: str, patience_s: float
    ) -> asyncpg.Record | None:
        deadline = time.monotonic() + patience_s
        while time.monotonic() < deadline:
            row = await conn.fetchrow(
                "SELECT ref, amount, currency FROM sandbox_ledger"
                " WHERE idempotency_key = $1 AND awaiting_action",
                order_id,
            )
            if row is not None:
                return row
            await asyncio.sleep(0.1)
        return None

    @staticmethod
    def _event(event_type: str, data: dict[str, Any]) -> bytes:
        return json.dumps(
            {"id": f"evt_sbx_{uuid.uuid4().hex[:24]}", "type": event_type, "data": data}
        ).encode()

    async def _deliver(self, body: bytes, patience_s: float) -> str:
        """POST until a 2xx (a PSP retries 5xx and transport errors); the outcome it named."""
        deadline = time.monotonic() + patience_s
        delay = 0.2
        while True:
            headers = {
                SANDBOX_SIGNATURE_HEADER: sandbox_signature(self.secret, int(time.time()), body),
                "content-type": "application/json",
            }
            try:
                answer = await self.client.post(WEBHOOK_PATH, content=body, headers=headers)
                if answer.status_code < 300:
                    return str(answer.json().get("outcome"))
                self.stats[f"3ds_http_{answer.status_code}"] += 1
                if answer.status_code < 500:
                    return f"refused_{answer.status_code}"
            except httpx.HTTPError as exc:
                self.stats[f"3ds_http_{type(exc).__name__}"] += 1
            if time.monotonic() > deadline:
                return "gave_up"
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
