"""Tokens for tests, minted with the same secret the services use."""

from libs.kit.auth import mint_token
from libs.kit.settings import ServiceSettings


def token(sub: str, *roles: str, groups: list[str] | None = None, email: str | None = None) -> str:
    settings = ServiceSettings()
    return mint_token(
        settings.jwt_secret, sub, list(roles) or ["customer"], groups=groups, email=email
    )


def bearer(
    sub: str, *roles: str, groups: list[str] | None = None, email: str | None = None
) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub, *roles, groups=groups, email=email)}"}


def admin() -> dict[str, str]:
    return bearer("ops-admin", "admin")
