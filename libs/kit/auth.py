"""JWT bearer auth per the contract (`sub`, `roles`, `exp`, optional `groups`, `email`): RS256/ES256
tokens of an identity provider (its JWKS, `iss`, `aud`), and HS256 development tokens only when
BACKROOM_ENV=dev. No secret written in the repository ever verifies a token."""

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import jwt
from fastapi import Depends, Request

from libs.kit.problems import Problem
from libs.kit.settings import ServiceSettings, load_dev_jwt_secret

ROLES = ("customer", "admin", "channel")
DEV_ALGORITHM = "HS256"
PROVIDER_ALGORITHMS = ("RS256", "ES256")
MIN_SECRET_CHARS = 32
# Secrets that were once written in this repository (the old default of libs/kit/settings.py,
# docker-compose.yml and deploy/k8s): anyone can read them, so they are refused as a key.
REPOSITORY_SECRETS = frozenset(
    {
        "backroom-dev-secret-change-me-please-32b",
        "REPLACE-ME-with-a-random-secret-of-at-least-32-bytes",
    }
)
log = logging.getLogger(__name__)


class AuthConfigError(RuntimeError):
    """The settings give no safe way to verify tokens: the service must not start."""


@dataclass(frozen=True)
class Principal:
    """Who is calling."""

    sub: str
    roles: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    email: str | None = None
    claims: dict[str, object] = field(default_factory=dict)
    # Issue 13: the sales channel a `channel` token is bound to (None for everyone else).
    channel: str | None = None

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles and self.channel is None

    def can_see(self, owner_id: str) -> bool:
        """Owners and admins may read a customer's resources (a channel principal owns none:
        it reads its channel's orders through the orders service's own rule)."""
        return self.channel is None and (self.is_admin or self.sub == owner_id)


def mint_token(
    secret: str,
    sub: str,
    roles: list[str],
    groups: list[str] | None = None,
    ttl_s: int = 3600,
    email: str | None = None,
    channel: str | None = None,
) -> str:
    """An HS256 token with the contract's claims (development: see `dev_signing_secret`)."""
    now = int(time.time())
    claims: dict[str, object] = {"sub": sub, "roles": roles, "iat": now, "exp": now + ttl_s}
    if groups:
        claims["groups"] = groups
    if email:
        claims["email"] = email
    if channel:
        claims["channel"] = channel
    return jwt.encode(claims, secret, algorithm=DEV_ALGORITHM)


def checked_secret(secret: str, where: str) -> str:
    if secret in REPOSITORY_SECRETS:
        raise AuthConfigError(
            f"{where} is a secret written in the Backroom repository; generate your own,"
            " e.g. `openssl rand -hex 32`"
        )
    if len(secret) < MIN_SECRET_CHARS:
        raise AuthConfigError(f"{where} is shorter than {MIN_SECRET_CHARS} characters")
    return secret


def dev_signing_secret(settings: ServiceSettings) -> str:
    """The HS256 secret development tokens are signed with: BACKROOM_JWT_SECRET if set, else this
    checkout's generated one (the one `make run` and `make test` services verify with)."""
    if settings.jwt_secret is not None:
        return checked_secret(settings.jwt_secret, "BACKROOM_JWT_SECRET")
    path = settings.dev_jwt_secret_path()
    return checked_secret(load_dev_jwt_secret(path), str(path))


def mint_dev_token(
    settings: ServiceSettings,
    sub: str,
    roles: list[str],
    groups: list[str] | None = None,
    ttl_s: int = 3600,
    email: str | None = None,
    channel: str | None = None,
) -> str:
    """A development token the services of this checkout accept (they run with BACKROOM_ENV=dev)."""
    return mint_token(
        dev_signing_secret(settings),
        sub,
        roles,
        groups=groups,
        ttl_s=ttl_s,
        email=email,
        channel=channel,
    )


def _unauthorized(detail: str) -> Problem:
    return Problem(401, detail, headers={"WWW-Authenticate": "Bearer"})


class ProviderKeys:
    """The identity provider's signing keys from its JWKS URL (pyjwt's PyJWKClient fetches and
    parses). Kept for `cache_s`; a key id not among them fetches the document again (the
    provider rotated), at most once per `refresh_min_interval_s` so unknown ids cannot make us
    hammer it. A key removed from the document stops verifying once the document is fetched
    again. Fetches run in a thread: PyJWKClient is synchronous, and the event loop must not
    wait on the network. Not PyJWKClient's own key cache: its lru_cache never forgets a key."""

    def __init__(
        self,
        client: jwt.PyJWKClient,
        *,
        cache_s: float = 300.0,
        refresh_min_interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._cache_s = cache_s
        self._min_interval_s = refresh_min_interval_s
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._tried_at: float | None = None
        self._attempts = 0
        self._lock = asyncio.Lock()

    async def get(self, kid: str) -> jwt.PyJWK | None:
        now = self._clock()
        stale = self._fetched_at is None or now - self._fetched_at >= self._cache_s
        may_fetch = self._tried_at is None or now - self._tried_at >= self._min_interval_s
        if (stale or kid not in self._keys) and may_fetch:
            await self._fetch(self._attempts)
        if self._fetched_at is None:
            raise Problem(
                503,
                "the identity provider's signing keys are unavailable; try again shortly",
                headers={"Retry-After": "5"},
            )
        return self._keys.get(kid)

    async def _fetch(self, attempts_seen: int) -> None:
        async with self._lock:
            if self._attempts != attempts_seen:
                return  # fetched (or tried) while this request waited for the lock
            self._attempts += 1
            self._tried_at = self._clock()
            try:
                jwk_set = await asyncio.to_thread(self._client.get_jwk_set, True)
            except (jwt.PyJWTError, ValueError) as exc:
                # Keep the keys fetched before (if any): the provider being down for a while
                # should not log everyone out.
                log.warning("JWKS fetch from the identity provider failed: %s", exc)
                return
            self._keys = {
                key.key_id: key
                for key in jwk_set.keys
                if key.key_id
                and key.public_key_use in ("sig", None)
                and key.algorithm_name in PROVIDER_ALGORITHMS
            }
            self._fetched_at = self._clock()


class TokenVerifier:
    """Turns a bearer token into a Principal, or a 401 Problem."""

    def __init__(
        self,
        *,
        dev_secret: str | None = None,
        provider: ProviderKeys | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        leeway_s: int = 10,
    ) -> None:
        if provider is not None and not (issuer and audience):
            raise AuthConfigError("a JWKS URL needs BACKROOM_JWT_ISSUER and BACKROOM_JWT_AUDIENCE")
        self._dev_secret = checked_secret(dev_secret, "the HS256 secret") if dev_secret else None
        self._provider = provider
        self._issuer = issuer
        self._audience = audience
        self._leeway_s = leeway_s

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> "TokenVerifier":
        """Refuses (AuthConfigError) settings without keys, and HS256 outside development."""
        if settings.jwt_secret is not None and not settings.is_dev:
            raise AuthConfigError(
                "BACKROOM_JWT_SECRET (HS256) is accepted only with BACKROOM_ENV=dev; verify the"
                " identity provider's tokens instead: BACKROOM_JWKS_URL, BACKROOM_JWT_ISSUER,"
                " BACKROOM_JWT_AUDIENCE"
            )
        provider = None
        if settings.jwks_url:
            # Our own cache (ProviderKeys), so PyJWKClient's is off.
            client = jwt.PyJWKClient(
                settings.jwks_url, cache_jwk_set=False, timeout=settings.jwks_timeout_s
            )
            provider = ProviderKeys(
                client,
                cache_s=settings.jwks_cache_s,
                refresh_min_interval_s=settings.jwks_refresh_min_interval_s,
            )
        if provider is None and settings.jwt_secret is None:
            raise AuthConfigError(
                "no token signing keys configured: set BACKROOM_JWKS_URL, BACKROOM_JWT_ISSUER"
                " and BACKROOM_JWT_AUDIENCE (your identity provider), or BACKROOM_ENV=dev for"
                " local development (HS256 with a per-checkout secret in .run/)"
            )
        return cls(
            dev_secret=settings.jwt_secret,
            provider=provider,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            leeway_s=settings.jwt_leeway_s,
        )

    async def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise _unauthorized(f"invalid token: {exc}") from exc
        algorithm = header.get("alg")
        if algorithm == DEV_ALGORITHM:
            if self._dev_secret is None:
                raise _unauthorized("invalid token: HS256 tokens are accepted only in development")
            return self._decode(token, self._dev_secret, DEV_ALGORITHM, provider=False)
        if algorithm not in PROVIDER_ALGORITHMS:
            raise _unauthorized(f"invalid token: algorithm {algorithm!r} is not accepted")
        kid = header.get("kid")
        if self._provider is None or not isinstance(kid, str):
            raise _unauthorized("invalid token: no identity provider key for it")
        key = await self._provider.get(kid)
        if key is None or key.algorithm_name != algorithm:
            raise _unauthorized(f"invalid token: unknown signing key {kid!r}")
        return self._decode(token, key.key, algorithm, provider=True)

    def _decode(self, token: str, key: Any, algorithm: str, *, provider: bool) -> Principal:
        required = ["sub", "exp", "iss", "aud"] if provider else ["sub", "exp"]
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=self._issuer if provider else None,
                audience=self._audience if provider else None,
                leeway=self._leeway_s,
                options={"require": required, "verify_aud": provider},
            )
        except jwt.ExpiredSignatureError as exc:
            raise _unauthorized("token expired") from exc
        except jwt.PyJWTError as exc:
            raise _unauthorized(f"invalid token: {exc}") from exc
        return principal_of(claims)


def principal_of(claims: dict[str, Any]) -> Principal:
    """The contract's claims mapping."""
    roles = claims.get("roles") or []
    groups = claims.get("groups") or []
    if not isinstance(roles, list) or not isinstance(groups, list):
        raise _unauthorized("invalid token: roles and groups must be lists")
    email = claims.get("email")
    role_set = frozenset(map(str, roles))
    return Principal(
        sub=str(claims["sub"]),
        roles=role_set,
        groups=frozenset(map(str, groups)),
        email=email if isinstance(email, str) else None,
        claims=claims,
        channel=channel_claim(role_set, claims),
    )


# `async def`: FastAPI would run a plain `def` in a worker thread.
async def optional_principal(request: Request) -> Principal | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("expected 'Authorization: Bearer <token>'")
    verifier: TokenVerifier = request.app.state.token_verifier
    return await verifier.verify(token.strip())


async def require_customer(
    principal: Annotated[Principal | None, Depends(optional_principal)],
) -> Principal:
    """Any valid token but a channel's (issue 13: it reaches only `ChannelOrCaller` routes)."""
    if principal is None:
        raise _unauthorized("authentication required")
    if principal.channel is not None:
        raise Problem(403, CHANNEL_REFUSED)
    return principal


async def require_admin(principal: Annotated[Principal, Depends(require_customer)]) -> Principal:
    if not principal.is_admin:
        raise Problem(403, "admin role required")
    return principal


MaybeCaller = Annotated[Principal | None, Depends(optional_principal)]
Caller = Annotated[Principal, Depends(require_customer)]
Admin = Annotated[Principal, Depends(require_admin)]


# --- channel principal (issue 13) ---

CHANNEL_ROLE = "channel"
MAX_CHANNEL_CHARS = 64
CHANNEL_REFUSED = "a channel token may only place and read its channel's orders"


def channel_claim(roles: frozenset[str], claims: dict[str, Any]) -> str | None:
    """The channel a token with role `channel` is bound to (its `channel` claim); None for any
    other token. A channel token without the claim, or with other roles besides, is a 401: a
    channel's integration is neither a customer nor an admin."""
    if CHANNEL_ROLE not in roles:
        return None
    channel = claims.get("channel")
    if not isinstance(channel, str) or not channel or len(channel) > MAX_CHANNEL_CHARS:
        raise _unauthorized("invalid token: role channel needs a `channel` claim (the code)")
    if roles != {CHANNEL_ROLE}:
        raise _unauthorized("invalid token: role channel cannot be combined with other roles")
    return channel


async def require_customer_or_channel(
    principal: Annotated[Principal | None, Depends(optional_principal)],
) -> Principal:
    """Any valid token, a channel's included: for the routes a channel principal may use
    (placing and reading its channel's orders); the use case applies the channel's rule."""
    if principal is None:
        raise _unauthorized("authentication required")
    return principal


ChannelOrCaller = Annotated[Principal, Depends(require_customer_or_channel)]
