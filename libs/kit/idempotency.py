"""Idempotency-Key requests: the same key with the same body is a replay, with another body a
conflict. What identifies a body is its hash."""

import hashlib
import json
from typing import Any


def request_hash(body: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a request body (sorted keys, no insignificant spaces)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
