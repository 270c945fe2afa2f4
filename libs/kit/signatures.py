"""Timestamped HMAC signatures in Stripe's scheme, `t=<unix seconds>,v1=<hex HMAC-SHA256 of
"<t>.<payload>">`: what the sandbox PSP and the sandbox carrier sign their webhooks with."""

import hashlib
import hmac


class SignatureRejected(ValueError):
    """The header does not sign the payload with the secret within the tolerance."""


def timestamped_signature(secret: str, timestamp: int, payload: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_timestamped_signature(
    secret: str, header: str | None, payload: bytes, now: int, tolerance_s: int
) -> None:
    """Raises SignatureRejected unless one `v1` of `header` signs `payload` with `secret` and its
    `t` is within `tolerance_s` of `now` (a replayed old delivery is refused)."""
    if not header:
        raise SignatureRejected("no signature header")
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        parts.setdefault(name, []).append(value)
    try:
        timestamp = int(parts["t"][0])
    except (KeyError, ValueError) as exc:
        raise SignatureRejected("no timestamp in the signature header") from exc
    if abs(now - timestamp) > tolerance_s:
        raise SignatureRejected("timestamp outside the tolerance")
    expected = timestamped_signature(secret, timestamp, payload).split("v1=", 1)[1]
    if not any(hmac.compare_digest(expected, v) for v in parts.get("v1", [])):
        raise SignatureRejected("signature does not match")
