"""A service (catalog, in-process on the real broker and database) in production mode, verifying
an identity provider's tokens against its JWKS document served over HTTP on 127.0.0.1: keys
rotate, `iss` and `aud` are checked, and HS256 (any secret, the committed one too) is refused."""

import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest

from libs.kit.auth import dev_signing_secret, mint_token
from libs.kit.settings import ServiceSettings
from services.catalog.main import create_app
from services.catalog.settings import CatalogSettings
from tests.support.auth import ProviderKey, jwks, provider_claims
from tests.support.service import running

ISSUER = "https://idp.backroom.test/"
AUDIENCE = "backroom-api"
COMMITTED = "backroom-dev-secret-change-me-please-32b"


class IdentityProvider:
    """The provider's JWKS endpoint: serves whatever document it holds now."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {"keys": []}
        self.fetches = 0
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                provider.fetches += 1
                body = json.dumps(provider.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"

    def publish(self, *keys: ProviderKey) -> None:
        self.document = jwks(*keys)


@pytest.fixture(scope="module")
def idp() -> Iterator[IdentityProvider]:
    provider = IdentityProvider()
    thread = threading.Thread(target=provider.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield provider
    finally:
        provider.server.shutdown()
        provider.server.server_close()


@pytest.fixture(scope="module")
async def catalog(
    migrated_databases: None, idp: IdentityProvider
) -> AsyncIterator[httpx.AsyncClient]:
    settings = CatalogSettings(
        env="production",
        jwt_secret=None,
        jwks_url=idp.url,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        jwks_refresh_min_interval_s=0,
        jwt_leeway_s=0,
        # Production settings need the database role's password: catalog's development one.
        pg_password=CatalogSettings(env="dev").database_password(),
        # And its Kafka principal's, on the local broker (SASL without TLS, on loopback).
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_password=CatalogSettings(env="dev").kafka_sasl_password(),
    )
    async with running(create_app(settings)) as client:
        yield client


def admin_claims(**change: Any) -> dict[str, Any]:
    return provider_claims("idp-admin", "admin", issuer=ISSUER, audience=AUDIENCE) | change


async def create_product(catalog: httpx.AsyncClient, token: str) -> httpx.Response:
    sku = f"JWKS-{uuid.uuid4().hex[:10]}"
    return await catalog.post(
        "/catalog/products",
        json={"sku": sku, "name": "Key ring", "category": "auth"},
        headers={"Authorization": f"Bearer {token}"},
    )


async def test_rotated_provider_keys_verify_and_retired_keys_stop(
    catalog: httpx.AsyncClient, idp: IdentityProvider
) -> None:
    a, b = ProviderKey.generate("RS256"), ProviderKey.generate("ES256")
    idp.publish(a)
    created = await create_product(catalog, a.sign(admin_claims()))
    assert created.status_code == 201, created.text
    fetched = idp.fetches
    assert (await create_product(catalog, a.sign(admin_claims()))).status_code == 201
    assert idp.fetches == fetched, "keys are cached between requests"

    idp.publish(b)  # rotation: B (a new kid) signs, A is retired
    created = await create_product(catalog, b.sign(admin_claims()))
    assert created.status_code == 201, created.text
    assert idp.fetches == fetched + 1, "an unknown kid fetches the document again"
    refused = await create_product(catalog, a.sign(admin_claims()))
    assert refused.status_code == 401, refused.text
    assert refused.headers["content-type"] == "application/problem+json"

    customer = b.sign(provider_claims("idp-carol", "customer", issuer=ISSUER, audience=AUDIENCE))
    assert (await create_product(catalog, customer)).status_code == 403


@pytest.mark.parametrize(
    "change",
    [
        {"iss": "https://attacker.test/"},
        {"aud": "some-other-api"},
        {"exp": int(time.time()) - 5},
    ],
    ids=["wrong-iss", "wrong-aud", "expired"],
)
async def test_provider_tokens_with_wrong_issuer_audience_or_expired_are_401(
    catalog: httpx.AsyncClient, idp: IdentityProvider, change: dict[str, Any]
) -> None:
    key = ProviderKey.generate("RS256")
    idp.publish(key)
    assert (await create_product(catalog, key.sign(admin_claims()))).status_code == 201
    refused = await create_product(catalog, key.sign(admin_claims(**change)))
    assert refused.status_code == 401, refused.text


async def test_hs256_tokens_are_401_outside_development(
    catalog: httpx.AsyncClient, idp: IdentityProvider
) -> None:
    claims = admin_claims()
    dev_secret = dev_signing_secret(ServiceSettings(env="dev"))
    for secret in (COMMITTED, dev_secret):
        token = jwt.encode(claims, secret, algorithm="HS256")
        assert (await create_product(catalog, token)).status_code == 401
        assert (
            await create_product(catalog, mint_token(secret, "x", ["admin"]))
        ).status_code == 401
