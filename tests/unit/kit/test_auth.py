"""JWT handling as the contract describes it."""

import time

import jwt
import pytest

from libs.kit.auth import decode_token, mint_token
from libs.kit.problems import Problem

SECRET = "unit-test-secret-that-is-long-enough-32b"


def test_minted_token_round_trips_roles_and_groups() -> None:
    principal = decode_token(mint_token(SECRET, "alice", ["customer"], groups=["vip"]), SECRET)
    assert principal.sub == "alice"
    assert principal.roles == {"customer"}
    assert principal.groups == {"vip"}
    assert not principal.is_admin
    assert principal.can_see("alice") and not principal.can_see("bob")


def test_admin_can_see_everyone() -> None:
    principal = decode_token(mint_token(SECRET, "ops", ["admin"]), SECRET)
    assert principal.is_admin and principal.can_see("bob")


@pytest.mark.parametrize(
    "token",
    [
        jwt.encode(
            {"sub": "a", "roles": ["admin"], "exp": int(time.time()) + 60},
            "other-secret-that-is-long-enough-32",
        ),
        jwt.encode({"sub": "a", "roles": ["admin"], "exp": int(time.time()) - 10}, SECRET),
        jwt.encode({"sub": "a", "roles": ["admin"]}, SECRET),
        jwt.encode({"sub": "a", "roles": "admin", "exp": int(time.time()) + 60}, SECRET),
        "not-a-jwt",
    ],
    ids=["wrong-secret", "expired", "no-exp", "roles-not-a-list", "garbage"],
)
def test_bad_tokens_are_401(token: str) -> None:
    with pytest.raises(Problem) as caught:
        decode_token(token, SECRET)
    assert caught.value.status == 401
