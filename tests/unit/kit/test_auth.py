"""Token verification: identity-provider tokens (RS256/ES256 from a JWKS, `iss`, `aud`, key
rotation), development HS256 tokens only with BACKROOM_ENV=dev, and no secret written in the
repository ever accepted or used."""

import base64
import hashlib
import hmac
import json
import threading
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from libs.kit.app import create_service_app
from libs.kit.auth import (
    REPOSITORY_SECRETS,
    AuthConfigError,
    ProviderKeys,
    TokenVerifier,
    dev_signing_secret,
    mint_dev_token,
    mint_token,
)
from libs.kit.cli import main as backroom
from libs.kit.problems import Problem
from libs.kit.runtime import Runtime
from libs.kit.settings import ServiceSettings, load_dev_jwt_secret
from tests.support.auth import ProviderKey, jwks, provider_claims

SECRET = "unit-test-secret-that-is-long-enough-32b"
ISSUER = "https://idp.test/"
AUDIENCE = "backroom"
COMMITTED = "backroom-dev-secret-change-me-please-32b"


class Document(jwt.PyJWKClient):
    """A JWKS endpoint in memory: the document can be swapped (rotation) or taken down."""

    def __init__(self, document: dict[str, Any]) -> None:
        super().__init__("http://idp.test/jwks.json", cache_jwk_set=False)
        self.document: dict[str, Any] | None = document
        self.fetches = 0

    def fetch_data(self) -> Any:
        self.fetches += 1
        if self.document is None:
            raise jwt.PyJWKClientConnectionError("identity provider down")
        return self.document


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def provider_verifier(
    document: Document, clock: Clock | None = None, min_interval_s: float = 0.0
) -> TokenVerifier:
    keys = ProviderKeys(
        document, cache_s=300, refresh_min_interval_s=min_interval_s, clock=clock or Clock()
    )
    return TokenVerifier(provider=keys, issuer=ISSUER, audience=AUDIENCE)


def dev_settings(tmp_path: Path, **overrides: Any) -> ServiceSettings:
    return ServiceSettings(env="dev", dev_jwt_secret_file=tmp_path / "dev-jwt-secret", **overrides)


def production_settings(**overrides: Any) -> ServiceSettings:
    # Kafka credentials are not what these tests are about (tests/unit/kit/test_kafka_acl.py).
    base = {"env": "production", "jwt_secret": None, "kafka_password": "broker-credential"}
    return ServiceSettings(**(base | overrides))


def hmac_token(claims: dict[str, Any], key: bytes, kid: str) -> str:
    """An HS256 JWS built by hand (pyjwt refuses a PEM key as an HMAC secret, an attacker won't)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = b64(json.dumps(claims).encode())
    signature = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(signature)}"


async def status_of(verifier: TokenVerifier, token: str) -> int:
    with pytest.raises(Problem) as caught:
        await verifier.verify(token)
    return caught.value.status


# --- identity provider: RS256 and ES256 ----------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
async def test_provider_token_maps_the_contract_claims(algorithm: str) -> None:
    key = ProviderKey.generate(algorithm)
    verifier = provider_verifier(Document(jwks(key)))
    claims = provider_claims(
        "alice", "customer", issuer=ISSUER, audience=AUDIENCE, email="a@x.test", groups=["vip"]
    )
    principal = await verifier.verify(key.sign(claims))
    assert principal.sub == "alice"
    assert principal.roles == {"customer"} and not principal.is_admin
    assert principal.groups == {"vip"}
    assert principal.email == "a@x.test"


@pytest.mark.parametrize(
    "change",
    [
        {"iss": "https://evil.test/"},
        {"aud": "someone-else"},
        {"exp": int(time.time()) - 60},
        {"roles": "admin"},
    ],
    ids=["wrong-iss", "wrong-aud", "expired", "roles-not-a-list"],
)
async def test_provider_token_with_wrong_claims_is_401(change: dict[str, Any]) -> None:
    key = ProviderKey.generate("RS256")
    verifier = provider_verifier(Document(jwks(key)))
    claims = provider_claims("a", "admin", issuer=ISSUER, audience=AUDIENCE) | change
    assert await status_of(verifier, key.sign(claims)) == 401


@pytest.mark.parametrize("missing", ["iss", "aud", "exp", "sub"])
async def test_provider_token_missing_a_required_claim_is_401(missing: str) -> None:
    key = ProviderKey.generate("ES256")
    verifier = provider_verifier(Document(jwks(key)))
    claims = provider_claims("a", "admin", issuer=ISSUER, audience=AUDIENCE)
    del claims[missing]
    assert await status_of(verifier, key.sign(claims)) == 401


async def test_token_signed_by_a_key_the_provider_does_not_publish_is_401() -> None:
    published, stranger = ProviderKey.generate("RS256"), ProviderKey.generate("RS256")
    verifier = provider_verifier(Document(jwks(published)))
    claims = provider_claims("a", "admin", issuer=ISSUER, audience=AUDIENCE)
    # Its own kid (unknown), and the published key's kid (signature does not match).
    assert await status_of(verifier, stranger.sign(claims)) == 401
    assert await status_of(verifier, stranger.sign(claims, kid=published.kid)) == 401


async def test_hs256_and_none_tokens_are_401_without_development_mode() -> None:
    key = ProviderKey.generate("RS256")
    verifier = provider_verifier(Document(jwks(key)))
    claims = provider_claims("a", "admin", issuer=ISSUER, audience=AUDIENCE)
    assert await status_of(verifier, jwt.encode(claims, SECRET, algorithm="HS256")) == 401
    assert await status_of(verifier, jwt.encode(claims, COMMITTED, algorithm="HS256")) == 401
    unsigned = jwt.encode(claims, "", algorithm="none", headers={"kid": key.kid})
    assert await status_of(verifier, unsigned) == 401


async def test_hs256_token_keyed_with_the_providers_public_key_is_401(tmp_path: Path) -> None:
    """Algorithm confusion: the provider's public key (anyone has it) as an HMAC secret, even
    in development mode where HS256 is accepted."""
    key = ProviderKey.generate("RS256")
    keys = ProviderKeys(Document(jwks(key)), refresh_min_interval_s=0)
    secret = dev_signing_secret(dev_settings(tmp_path))
    verifier = TokenVerifier(dev_secret=secret, provider=keys, issuer=ISSUER, audience=AUDIENCE)
    public_pem = key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = provider_claims("a", "admin", issuer=ISSUER, audience=AUDIENCE)
    assert await status_of(verifier, hmac_token(claims, public_pem, kid=key.kid)) == 401


# --- key rotation and caching -------------------------------------------------------------------


async def test_rotated_keys_are_fetched_on_an_unknown_kid_and_removed_keys_stop_verifying() -> None:
    a, b = ProviderKey.generate("RS256"), ProviderKey.generate("ES256")
    document = Document(jwks(a))
    verifier = provider_verifier(document)
    claims = provider_claims("a", "customer", issuer=ISSUER, audience=AUDIENCE)
    assert (await verifier.verify(a.sign(claims))).sub == "a"
    assert (await verifier.verify(a.sign(claims))).sub == "a"
    assert document.fetches == 1, "keys are cached"

    document.document = jwks(b)  # the provider rotated: A is gone, B signs
    assert (await verifier.verify(b.sign(claims))).sub == "a"
    assert document.fetches == 2
    assert await status_of(verifier, a.sign(claims)) == 401


async def test_unknown_kids_fetch_at_most_once_per_refresh_interval() -> None:
    a = ProviderKey.generate("RS256")
    document, clock = Document(jwks(a)), Clock()
    verifier = provider_verifier(document, clock, min_interval_s=10)
    claims = provider_claims("a", "customer", issuer=ISSUER, audience=AUDIENCE)
    await verifier.verify(a.sign(claims))
    for n in range(5):
        assert await status_of(verifier, a.sign(claims, kid=f"made-up-{n}")) == 401
    assert document.fetches == 1
    clock.now += 11
    assert await status_of(verifier, a.sign(claims, kid="made-up-later")) == 401
    assert document.fetches == 2


async def test_keys_expire_after_the_cache_lifetime() -> None:
    a, b = ProviderKey.generate("RS256"), ProviderKey.generate("RS256")
    document, clock = Document(jwks(a, b)), Clock()
    verifier = provider_verifier(document, clock)
    claims = provider_claims("a", "customer", issuer=ISSUER, audience=AUDIENCE)
    await verifier.verify(a.sign(claims))
    document.document = jwks(b)
    assert (await verifier.verify(a.sign(claims))).sub == "a"  # still cached
    clock.now += 301
    assert await status_of(verifier, a.sign(claims)) == 401


async def test_provider_down_is_503_until_keys_were_fetched_then_the_old_keys_serve() -> None:
    a = ProviderKey.generate("RS256")
    document, clock = Document(jwks(a)), Clock()
    verifier = provider_verifier(document, clock)
    claims = provider_claims("a", "customer", issuer=ISSUER, audience=AUDIENCE)
    document.document = None
    assert await status_of(verifier, a.sign(claims)) == 503
    document.document = jwks(a)
    await verifier.verify(a.sign(claims))
    document.document = None
    clock.now += 301
    assert (await verifier.verify(a.sign(claims))).sub == "a"


# --- development mode ----------------------------------------------------------------------------


async def test_dev_token_round_trips_roles_groups_and_email(tmp_path: Path) -> None:
    settings = dev_settings(tmp_path)
    verifier = TokenVerifier.from_settings(settings)
    token = mint_dev_token(settings, "alice", ["customer"], groups=["vip"], email="a@x.test")
    principal = await verifier.verify(token)
    assert principal.sub == "alice"
    assert principal.roles == {"customer"} and principal.groups == {"vip"}
    assert principal.email == "a@x.test"
    assert principal.can_see("alice") and not principal.can_see("bob")
    admin = await verifier.verify(mint_dev_token(settings, "ops", ["admin"]))
    assert admin.is_admin and admin.can_see("bob")


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "a", "roles": ["admin"], "exp": int(time.time()) - 60},
        {"sub": "a", "roles": ["admin"]},
        {"sub": "a", "roles": "admin", "exp": int(time.time()) + 60},
    ],
    ids=["expired", "no-exp", "roles-not-a-list"],
)
async def test_bad_dev_tokens_are_401(tmp_path: Path, claims: dict[str, Any]) -> None:
    settings = dev_settings(tmp_path)
    verifier = TokenVerifier.from_settings(settings)
    secret = dev_signing_secret(settings)
    assert await status_of(verifier, jwt.encode(claims, secret, algorithm="HS256")) == 401
    assert await status_of(verifier, "not-a-jwt") == 401
    assert (
        await status_of(verifier, mint_token("another-secret-that-is-long-enough-32", "a", []))
        == 401
    )


@pytest.mark.parametrize("committed", sorted(REPOSITORY_SECRETS))
async def test_a_secret_written_in_the_repository_never_verifies(
    tmp_path: Path, committed: str
) -> None:
    verifier = TokenVerifier.from_settings(dev_settings(tmp_path))
    assert await status_of(verifier, mint_token(committed, "mallory", ["admin"])) == 401
    with pytest.raises(AuthConfigError, match="written in the Backroom repository"):
        TokenVerifier.from_settings(dev_settings(tmp_path, jwt_secret=committed))
    with pytest.raises(AuthConfigError):
        mint_dev_token(dev_settings(tmp_path, jwt_secret=committed), "mallory", ["admin"])


async def test_dev_mode_also_accepts_the_identity_providers_tokens(tmp_path: Path) -> None:
    key = ProviderKey.generate("ES256")
    keys = ProviderKeys(Document(jwks(key)), refresh_min_interval_s=0)
    secret = dev_signing_secret(dev_settings(tmp_path))
    verifier = TokenVerifier(dev_secret=secret, provider=keys, issuer=ISSUER, audience=AUDIENCE)
    claims = provider_claims("a", "customer", issuer=ISSUER, audience=AUDIENCE)
    assert (await verifier.verify(key.sign(claims))).sub == "a"
    assert (await verifier.verify(mint_token(secret, "b", ["customer"]))).sub == "b"


# --- refusing to start ---------------------------------------------------------------------------


def test_no_keys_outside_development_refuses_to_start() -> None:
    with pytest.raises(AuthConfigError, match="no token signing keys configured"):
        TokenVerifier.from_settings(production_settings())
    with pytest.raises(AuthConfigError, match="no token signing keys configured"):
        create_service_app(
            Runtime(production_settings(service_name="kit-test")), routers=[], title="t"
        )


def test_hs256_secret_outside_development_refuses_to_start() -> None:
    with pytest.raises(AuthConfigError, match="only with BACKROOM_ENV=dev"):
        TokenVerifier.from_settings(production_settings(jwt_secret=SECRET))


def test_jwks_needs_issuer_and_audience() -> None:
    url = "https://idp.test/jwks.json"
    with pytest.raises(AuthConfigError, match="ISSUER and BACKROOM_JWT_AUDIENCE"):
        TokenVerifier.from_settings(production_settings(jwks_url=url, jwt_issuer=ISSUER))
    TokenVerifier.from_settings(
        production_settings(jwks_url=url, jwt_issuer=ISSUER, jwt_audience=AUDIENCE)
    )


def test_short_secret_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(AuthConfigError, match="shorter than 32"):
        TokenVerifier.from_settings(dev_settings(tmp_path, jwt_secret="short"))


def test_empty_variables_mean_not_configured() -> None:
    settings = production_settings(jwks_url="", jwt_issuer=" ", jwt_audience="")
    assert (settings.jwks_url, settings.jwt_issuer, settings.jwt_audience) == (None, None, None)


# --- the per-checkout development secret ---------------------------------------------------------


def test_dev_secret_is_random_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "run" / "dev-jwt-secret"
    secret = load_dev_jwt_secret(path)
    assert len(secret) >= 32 and secret not in REPOSITORY_SECRETS
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_dev_jwt_secret(path) == secret
    assert load_dev_jwt_secret(tmp_path / "other") != secret
    assert list(path.parent.iterdir()) == [path], "no draft left behind"


def test_processes_starting_together_agree_on_one_dev_secret(tmp_path: Path) -> None:
    path = tmp_path / "dev-jwt-secret"
    seen: list[str] = []
    start = threading.Barrier(8)

    def load() -> None:
        start.wait()
        seen.append(load_dev_jwt_secret(path))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 8 and len(set(seen)) == 1


async def test_backroom_token_mints_with_the_checkouts_dev_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`backroom token` needs no BACKROOM_ENV: it signs with the secret `make run` services use."""
    monkeypatch.delenv("BACKROOM_ENV", raising=False)
    monkeypatch.delenv("BACKROOM_JWT_SECRET", raising=False)
    monkeypatch.setenv("BACKROOM_DEV_JWT_SECRET_FILE", str(tmp_path / "dev-jwt-secret"))
    assert backroom(["token", "--sub", "alice", "--role", "admin"]) == 0
    token = capsys.readouterr().out.strip()
    principal = await TokenVerifier.from_settings(dev_settings(tmp_path)).verify(token)
    assert principal.sub == "alice" and principal.is_admin
