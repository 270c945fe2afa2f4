"""How the outbox relay is woken, and the guard on statements SQLAlchemy compiles every time."""

from types import SimpleNamespace

from sqlalchemy.engine import default as engine_default

from libs.kit import db as kit_db
from libs.kit.db import Database
from libs.kit.outbox import ORIGIN, OutboxRelay


def test_a_relay_ignores_its_own_notifications_and_wakes_on_another_replicas() -> None:
    relay = OutboxRelay(Database("postgresql+asyncpg://u@127.0.0.1/none"), None, "unused")
    relay._notified(None, 0, "backroom_outbox", ORIGIN)
    assert not relay._wake.is_set(), "its own commit had woken it in-process already"
    relay._notified(None, 0, "backroom_outbox", "4242-another-replica")
    assert relay._wake.is_set()


def test_a_database_tells_its_relays_when_outbox_rows_commit() -> None:
    db = Database("postgresql+asyncpg://u@127.0.0.1/none")
    relay = OutboxRelay(db, None, "unused")
    db._outbox_committed()
    assert relay._wake.is_set()


def _context(cache_hit: object, *, compiled: object = object(), isddl: bool = False) -> object:
    return SimpleNamespace(cache_hit=cache_hit, compiled=compiled, isddl=isddl)


def test_statements_without_a_cache_key_are_counted_and_others_are_not() -> None:
    counter = kit_db.UNCACHEABLE_STATEMENTS
    before = counter._value.get()
    hook = kit_db._count_uncacheable
    hook(
        None,
        None,
        "INSERT INTO t VALUES ($1) ON CONFLICT DO NOTHING",
        (),
        _context(engine_default.NO_CACHE_KEY),
        False,
    )
    assert counter._value.get() == before + 1
    hook(None, None, "SELECT 1", (), _context(engine_default.CACHE_HIT), False)
    hook(None, None, "SELECT 1", (), _context(engine_default.CACHE_MISS), False)
    hook(None, None, "select 1", (), _context(engine_default.NO_CACHE_KEY, compiled=None), False)
    hook(
        None,
        None,
        "CREATE TABLE t ()",
        (),
        _context(engine_default.NO_CACHE_KEY, isddl=True),
        False,
    )
    assert counter._value.get() == before + 1


def test_the_kits_own_hot_statements_have_cache_keys() -> None:
    for statement in (kit_db.INBOX_CLAIM, kit_db.OUTBOX_APPEND):
        assert statement._generate_cache_key() is not None
