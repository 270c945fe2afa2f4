"""JWT bearer auth per the contract: `sub`, `roles` (customer/admin), optional `groups`, `exp`."""

import time
from dataclasses import dataclass, field
from typing import Annotated

import jwt
from fastapi import Depends, Request

from libs.kit.problems import Problem

ROLES = ("customer", "admin")


@dataclass(frozen=True)
class Principal:
    """Who is calling."""

    sub: str
    roles: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    email: str | None = None
    claims: dict[str, object] = field(default_factory=dict)

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    def can_see(self, owner_id: str) -> bool:
        """Owners and admins may read a customer's resources."""
        return self.is_admin or self.sub == owner_id


def mint_token(
    secret: str,
    sub: str,
    roles: list[str],
    groups: list[str] | None = None,
    ttl_s: int = 3600,
    email: str | None = None,
    algorithm: str = "HS256",
) -> str:
    now = int(time.time())
    claims: dict[str, object] = {"sub": sub, "roles": roles, "iat": now, "exp": now + ttl_s}
    if groups:
        claims["groups"] = groups
    if email:
        claims["email"] = email
    return jwt.encode(claims, secret, algorithm=algorithm)


def _unauthorized(detail: str) -> Problem:
    return Problem(401, detail, headers={"WWW-Authenticate": "Bearer"})


def decode_token(token: str, secret: str, algorithm: str = "HS256") -> Principal:
    try:
        claims = jwt.decode(
            token, secret, algorithms=[algorithm], options={"require": ["sub", "exp"]}
        )
    except jwt.ExpiredSignatureError as exc:
        raise _unauthorized("token expired") from exc
    except jwt.PyJWTError as exc:
        raise _unauthorized(f"invalid token: {exc}") from exc
    roles = claims.get("roles") or []
    groups = claims.get("groups") or []
    if not isinstance(roles, list) or not isinstance(groups, list):
        raise _unauthorized("invalid token: roles and groups must be lists")
    email = claims.get("email")
    return Principal(
        sub=str(claims["sub"]),
        roles=frozenset(map(str, roles)),
        groups=frozenset(map(str, groups)),
        email=email if isinstance(email, str) else None,
        claims=claims,
    )


# `async def` although nothing is awaited: FastAPI would run a plain `def` in a worker thread.
async def optional_principal(request: Request) -> Principal | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("expected 'Authorization: Bearer <token>'")
    settings = request.app.state.runtime.settings
    return decode_token(token.strip(), settings.jwt_secret, settings.jwt_algorithm)


async def require_customer(
    principal: Annotated[Principal | None, Depends(optional_principal)],
) -> Principal:
    """Any valid token."""
    if principal is None:
        raise _unauthorized("authentication required")
    return principal


async def require_admin(principal: Annotated[Principal, Depends(require_customer)]) -> Principal:
    if not principal.is_admin:
        raise Problem(403, "admin role required")
    return principal


MaybeCaller = Annotated[Principal | None, Depends(optional_principal)]
Caller = Annotated[Principal, Depends(require_customer)]
Admin = Annotated[Principal, Depends(require_admin)]
