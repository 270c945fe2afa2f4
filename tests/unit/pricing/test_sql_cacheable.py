"""Pricing's statement constants are cached by SQLAlchemy (compiled once, not per execution)."""

import re

import pytest
from sqlalchemy import ClauseElement, Executable
from sqlalchemy.ext.asyncio import create_async_engine

from services.pricing import db

STATEMENTS = {
    name: value
    for name, value in vars(db).items()
    if isinstance(value, Executable) and isinstance(value, ClauseElement)
}
ASYNCPG = create_async_engine("postgresql+asyncpg://").dialect  # numbered binds: $1, $2, ...
# A ":name" left in the compiled SQL was not taken as a bind (text() reads ":x::int" as text).
UNPARSED_BIND = re.compile(r"(?<!:):\w")


@pytest.mark.parametrize("name", sorted(STATEMENTS))
def test_statement_has_a_cache_key(name: str) -> None:
    assert STATEMENTS[name]._generate_cache_key() is not None


@pytest.mark.parametrize("name", sorted(STATEMENTS))
def test_every_parameter_is_a_bind(name: str) -> None:
    compiled = STATEMENTS[name].compile(dialect=ASYNCPG)
    assert UNPARSED_BIND.search(compiled.string) is None, compiled.string
