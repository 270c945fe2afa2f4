"""Tokens for tests, signed with the development secret the services of this checkout verify.

The test suite runs the services as `make test` does, in development mode (BACKROOM_ENV=dev:
HS256 with the checkout's generated secret in .run/), so in-process apps built by any test that
mints its tokens here accept them. A test of production settings passes its own settings."""

import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from libs.kit.auth import mint_dev_token
from libs.kit.settings import ServiceSettings

os.environ.setdefault("BACKROOM_ENV", "dev")


def token(
    sub: str,
    *roles: str,
    groups: list[str] | None = None,
    email: str | None = None,
    channel: str | None = None,
) -> str:
    return mint_dev_token(
        ServiceSettings(),
        sub,
        list(roles) or ["customer"],
        groups=groups,
        email=email,
        channel=channel,
    )


def bearer(
    sub: str,
    *roles: str,
    groups: list[str] | None = None,
    email: str | None = None,
    channel: str | None = None,
) -> dict[str, str]:
    minted = token(sub, *roles, groups=groups, email=email, channel=channel)
    return {"Authorization": f"Bearer {minted}"}


def channel_bearer(channel: str, sub: str | None = None) -> dict[str, str]:
    """A sales channel's integration principal (issue 13): role `channel`, claim `channel`."""
    return bearer(sub or f"{channel}-integration", "channel", channel=channel)


def admin() -> dict[str, str]:
    return bearer("ops-admin", "admin")


@dataclass(frozen=True)
class ProviderKey:
    """A signing key of a pretend identity provider: signs tokens, publishes its public JWK."""

    kid: str
    algorithm: str  # RS256 or ES256
    private: RSAPrivateKey | EllipticCurvePrivateKey

    @classmethod
    def generate(cls, algorithm: str, kid: str | None = None) -> "ProviderKey":
        private: RSAPrivateKey | EllipticCurvePrivateKey
        if algorithm == "RS256":
            private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif algorithm == "ES256":
            private = ec.generate_private_key(ec.SECP256R1())
        else:
            raise ValueError(algorithm)
        return cls(kid or f"{algorithm.lower()}-{uuid.uuid4().hex[:8]}", algorithm, private)

    def jwk(self) -> dict[str, Any]:
        """The public key as it appears in the provider's JWKS document."""
        public: dict[str, Any] = (
            RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
            if isinstance(self.private, RSAPrivateKey)
            else ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        )
        return {**public, "kid": self.kid, "use": "sig", "alg": self.algorithm}

    def sign(self, claims: dict[str, Any], kid: str | None = None) -> str:
        return jwt.encode(
            claims, self.private, algorithm=self.algorithm, headers={"kid": kid or self.kid}
        )


def jwks(*keys: ProviderKey) -> dict[str, Any]:
    return {"keys": [key.jwk() for key in keys]}


def provider_claims(
    sub: str, *roles: str, issuer: str, audience: str, ttl_s: int = 300, **extra: Any
) -> dict[str, Any]:
    """The claims an identity provider puts in an access token for us."""
    now = int(time.time())
    return {
        "sub": sub,
        "roles": list(roles) or ["customer"],
        "iss": issuer,
        "aud": audience,
        "iat": now,
        "exp": now + ttl_s,
        **extra,
    }
