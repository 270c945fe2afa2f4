"""Every statement constant of the six services' db.py and of the kit is cached by SQLAlchemy
(compiled once, not per execution: ADR 0009) and takes each `:name` as a bind parameter."""

import importlib
import re
from types import ModuleType

import pytest
from sqlalchemy import ClauseElement, Executable
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect

MODULES = [
    "libs.kit.db",
    *(
        f"services.{s}.db"
        for s in ("catalog", "inventory", "pricing", "orders", "payments", "notifications")
    ),
]
# A ":name" left in the compiled SQL was not taken as a bind (text() reads ":x::int" as text).
UNPARSED_BIND = re.compile(r"(?<!:):\w")


def statements(module: ModuleType) -> dict[str, ClauseElement]:
    return {
        name: value
        for name, value in vars(module).items()
        if isinstance(value, Executable) and isinstance(value, ClauseElement)
    }


CONSTANTS = [
    (module, name)
    for module in MODULES
    for name in sorted(statements(importlib.import_module(module)))
]


def test_the_hot_statements_are_among_the_constants() -> None:
    found = {name for _, name in CONSTANTS}
    assert {"INBOX_CLAIM", "OUTBOX_APPEND", "PLACE_ORDER", "MOVE_AND_RECORD_STOCK"} <= found


@pytest.mark.parametrize(("module", "name"), CONSTANTS)
def test_statement_constant_is_cacheable_and_fully_parsed(module: str, name: str) -> None:
    statement = statements(importlib.import_module(module))[name]
    assert statement._generate_cache_key() is not None
    compiled = statement.compile(dialect=asyncpg_dialect())  # type: ignore[no-untyped-call]
    assert UNPARSED_BIND.search(compiled.string) is None, compiled.string
