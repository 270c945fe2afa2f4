"""Issue 9, finding 1, through the gateway: a token signed with the secret that used to be written
in the repository is refused by every service (401, also in development mode), while tokens
signed with this checkout's generated development secret (`backroom token`) work."""

import asyncio
import os
import sys
import uuid
from pathlib import Path

import httpx
import jwt
import pytest

from libs.kit.auth import REPOSITORY_SECRETS, mint_token
from tests.support.auth import admin, bearer

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = "backroom-dev-secret-change-me-please-32b"

# A route of each service that needs a token (catalog's only one writes: the test below).
GUARDED = [
    ("GET", "/inventory/reservations/no-such-order", "admin"),
    ("GET", "/pricing/rules", "admin"),
    ("GET", "/orders", "customer"),
    ("GET", "/payments?order_id=no-such-order", "customer"),
    ("GET", "/notifications", "admin"),
]


def test_the_formerly_committed_secret_is_on_the_refused_list() -> None:
    assert COMMITTED in REPOSITORY_SECRETS


@pytest.mark.parametrize(("method", "path", "role"), GUARDED, ids=[p for _, p, _ in GUARDED])
async def test_admin_token_signed_with_the_committed_secret_is_401_everywhere(
    gateway: httpx.AsyncClient, method: str, path: str, role: str | None
) -> None:
    forged = mint_token(COMMITTED, "mallory", ["admin", "customer"])
    response = await gateway.request(method, path, headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(("method", "path", "role"), GUARDED, ids=[p for _, p, _ in GUARDED])
async def test_dev_key_token_is_accepted_everywhere(
    gateway: httpx.AsyncClient, method: str, path: str, role: str | None
) -> None:
    headers = admin() if role == "admin" else bearer(f"sec-auth-{uuid.uuid4().hex[:8]}")
    response = await gateway.request(method, path, headers=headers)
    assert response.status_code not in (401, 403), response.text


async def test_admin_write_with_the_committed_secret_is_refused_and_with_the_dev_key_works(
    gateway: httpx.AsyncClient,
) -> None:
    sku = f"E2E-SEC-{uuid.uuid4().hex[:8].upper()}"
    body = {"sku": sku, "name": "Forged", "category": "e2e"}
    forged = jwt.encode(
        {"sub": "mallory", "roles": ["admin"], "exp": 4102444800}, COMMITTED, algorithm="HS256"
    )
    refused = await gateway.post(
        "/catalog/products", json=body, headers={"Authorization": f"Bearer {forged}"}
    )
    assert refused.status_code == 401, refused.text
    assert (await gateway.get(f"/catalog/products/{sku}")).status_code == 404

    created = await gateway.post("/catalog/products", json=body, headers=admin())
    assert created.status_code == 201, created.text


async def test_backroom_token_from_the_checkout_is_accepted(gateway: httpx.AsyncClient) -> None:
    """`backroom token` as a developer runs it: no BACKROOM_ENV in the shell, the checkout's
    generated secret signs."""
    env = {k: v for k, v in os.environ.items() if k not in ("BACKROOM_ENV", "BACKROOM_JWT_SECRET")}
    minting = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "libs.kit.cli", "token", "--sub", "e2e-ops", "--role", "admin"],
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(minting.communicate(), timeout=60)
    assert minting.returncode == 0
    token = out.decode().strip()
    response = await gateway.get("/notifications", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
