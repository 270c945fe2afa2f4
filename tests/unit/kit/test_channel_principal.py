"""The channel principal (issue 13): a token with role `channel` is bound to its `channel` claim,
is neither a customer-owner nor an admin, and without the claim (or mixed with other roles) is a
401; `backroom token --role channel --channel C` mints one."""

import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI

from libs.kit.auth import (
    Admin,
    Caller,
    ChannelOrCaller,
    Principal,
    ProviderKeys,
    TokenVerifier,
    dev_signing_secret,
    mint_dev_token,
)
from libs.kit.cli import main as backroom
from libs.kit.problems import Problem, install_problem_handlers
from libs.kit.settings import ServiceSettings
from tests.support.auth import ProviderKey, jwks, provider_claims
from tests.unit.kit.test_auth import AUDIENCE, ISSUER, Document, dev_settings


def hs256(settings: ServiceSettings, claims: dict[str, Any]) -> str:
    base = {"sub": "amazon-bot", "exp": int(time.time()) + 60}
    return jwt.encode(base | claims, dev_signing_secret(settings), algorithm="HS256")


async def test_a_channel_token_is_bound_to_its_channel_and_owns_nothing(tmp_path: Path) -> None:
    settings = dev_settings(tmp_path)
    verifier = TokenVerifier.from_settings(settings)
    principal = await verifier.verify(
        mint_dev_token(settings, "amazon-bot", ["channel"], channel="amazon")
    )
    assert principal.channel == "amazon" and principal.roles == {"channel"}
    assert not principal.is_admin
    # Not even what its own sub would own: a channel's integration reads orders by channel.
    assert not principal.can_see("amazon-bot") and not principal.can_see("alice")
    # Every other token has no channel, whatever claims it carries.
    customer = await verifier.verify(hs256(settings, {"roles": ["customer"], "channel": "x"}))
    assert customer.channel is None and customer.can_see("amazon-bot")


@pytest.mark.parametrize(
    "claims",
    [
        {"roles": ["channel"]},
        {"roles": ["channel"], "channel": ""},
        {"roles": ["channel"], "channel": 7},
        {"roles": ["channel"], "channel": "x" * 65},
        {"roles": ["channel", "admin"], "channel": "amazon"},
        {"roles": ["channel", "customer"], "channel": "amazon"},
    ],
    ids=["no-claim", "empty", "not-a-string", "too-long", "with-admin", "with-customer"],
)
async def test_a_channel_token_without_its_claim_or_with_other_roles_is_401(
    tmp_path: Path, claims: dict[str, Any]
) -> None:
    settings = dev_settings(tmp_path)
    verifier = TokenVerifier.from_settings(settings)
    with pytest.raises(Problem) as refused:
        await verifier.verify(hs256(settings, claims))
    assert refused.value.status == 401


async def test_an_identity_providers_channel_token_maps_the_same_way() -> None:
    key = ProviderKey.generate("RS256")
    verifier = TokenVerifier(
        provider=ProviderKeys(Document(jwks(key))),
        issuer=ISSUER,
        audience=AUDIENCE,
    )
    claims = provider_claims("mkt", "channel", issuer=ISSUER, audience=AUDIENCE, channel="ebay")
    assert (await verifier.verify(key.sign(claims))).channel == "ebay"
    without = provider_claims("mkt", "channel", issuer=ISSUER, audience=AUDIENCE)
    with pytest.raises(Problem) as refused:
        await verifier.verify(key.sign(without))
    assert refused.value.status == 401


def app_with_routes(tmp_path: Path) -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)
    app.state.token_verifier = TokenVerifier.from_settings(dev_settings(tmp_path))

    @app.get("/customer")
    async def customer(caller: Caller) -> str:
        return caller.sub

    @app.get("/admin")
    async def admin(caller: Admin) -> str:
        return caller.sub

    @app.get("/either")
    async def either(caller: ChannelOrCaller) -> str | None:
        return caller.channel

    return app


async def test_a_channel_token_reaches_only_the_routes_open_to_channels(tmp_path: Path) -> None:
    settings = dev_settings(tmp_path)
    app = app_with_routes(tmp_path)
    channel = {
        "Authorization": f"Bearer {mint_dev_token(settings, 'bot', ['channel'], channel='pos1')}"
    }
    alice = {"Authorization": f"Bearer {mint_dev_token(settings, 'alice', ['customer'])}"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as http:
        assert (await http.get("/customer", headers=channel)).status_code == 403
        assert (await http.get("/admin", headers=channel)).status_code == 403
        either = await http.get("/either", headers=channel)
        assert either.status_code == 200 and either.json() == "pos1"
        # Customers are where they were; no token is still a 401 everywhere.
        assert (await http.get("/customer", headers=alice)).status_code == 200
        assert (await http.get("/either", headers=alice)).json() is None
        assert (await http.get("/either")).status_code == 401


def test_principals_built_in_code_follow_the_same_rule() -> None:
    mixed = Principal(sub="ops", roles=frozenset({"admin"}), channel="amazon")
    assert not mixed.is_admin and not mixed.can_see("ops")


async def test_backroom_token_mints_a_channel_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("BACKROOM_ENV", raising=False)
    monkeypatch.delenv("BACKROOM_JWT_SECRET", raising=False)
    monkeypatch.setenv("BACKROOM_DEV_JWT_SECRET_FILE", str(tmp_path / "dev-jwt-secret"))
    argv = ["token", "--sub", "amazon-bot", "--role", "channel", "--channel", "amazon"]
    assert backroom(argv) == 0
    token = capsys.readouterr().out.strip()
    principal = await TokenVerifier.from_settings(dev_settings(tmp_path)).verify(token)
    assert principal.channel == "amazon" and principal.sub == "amazon-bot"
    # One without the other is refused before anything is minted.
    assert backroom(["token", "--sub", "x", "--role", "channel"]) == 2
    assert backroom(["token", "--sub", "x", "--channel", "amazon"]) == 2
    assert capsys.readouterr().out == ""
