"""Each service's alembic migrations build exactly the tables its db.py declares, plus the kit's."""

import asyncio
import importlib
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import CheckConstraint, MetaData, inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from libs.kit.cli import SERVICES
from libs.kit.db import kit_metadata
from libs.kit.migrations import upgrade
from libs.kit.settings import ServiceSettings


def declared_metadata(service: str) -> MetaData:
    """What the service's code expects to find: its db.py tables and the kit's outbox and inbox
    (read from the modules each time, so a table added with its migration is checked too)."""
    combined = MetaData()
    for metadata in (importlib.import_module(f"services.{service}.db").metadata, kit_metadata):
        for table in metadata.tables.values():
            table.to_metadata(combined)
    return combined


async def _admin(statement: str) -> None:
    settings = ServiceSettings()
    conn = await asyncpg.connect(
        host=settings.pg_host,
        port=settings.pg_port,
        user=settings.pg_user,
        password=settings.pg_password or None,
        database="postgres",
    )
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def _unseen_differences(connection: Connection, metadata: MetaData) -> list[Any]:
    """Per table present on both sides: the primary-key columns, and the CHECK constraints by
    name (PostgreSQL rewrites their expressions, so those are not compared; an unnamed one in
    db.py counts only towards the number)."""
    inspector = inspect(connection)
    present = set(inspector.get_table_names())
    differences: list[Any] = []
    for table in metadata.tables.values():
        if table.name not in present:
            continue  # autogenerate reports the missing table itself
        declared_pk = [column.name for column in table.primary_key.columns]
        migrated_pk = inspector.get_pk_constraint(table.name)["constrained_columns"]
        if declared_pk != migrated_pk:
            differences.append(("primary_key", table.name, migrated_pk, declared_pk))
        declared = [c.name for c in table.constraints if isinstance(c, CheckConstraint)]
        migrated = {str(c["name"]) for c in inspector.get_check_constraints(table.name)}
        named = {str(name) for name in declared if name is not None}
        if len(declared) != len(migrated) or not named <= migrated:
            differences.append(("check_constraints", table.name, sorted(migrated), declared))
    return differences


@pytest.fixture
def scratch_database(request: pytest.FixtureRequest) -> Iterator[str]:
    """A new, empty database (random name), created by the superuser and owned by the service's
    role, which applies the migrations as `backroom migrate` does; dropped afterwards."""
    service = request.node.callspec.params["service"]
    name = f"migcheck_{service}_{uuid.uuid4().hex[:10]}"
    role = ServiceSettings(service_name=service).pg_user
    asyncio.run(_admin(f'CREATE DATABASE "{name}" OWNER "{role}"'))
    try:
        yield ServiceSettings(service_name=service, database_name=name).sqlalchemy_url()
    finally:
        # FORCE: a connection a failed migration left behind must not keep the database alive.
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def schema_differences(url: str, metadata: MetaData) -> list[Any]:
    """Alembic autogenerate's diff between the migrated database and `metadata`: tables, columns,
    types, nullability, server defaults, indexes, unique and foreign keys; empty when they agree.
    Nothing is filtered out: every difference autogenerate can see fails the test. What it
    cannot see (CHECK constraints, a changed primary key) is compared by `_unseen_differences`."""

    def compare(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        return [*compare_metadata(context, metadata), *_unseen_differences(connection, metadata)]

    async def run() -> list[Any]:
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(compare)
        finally:
            await engine.dispose()

    return asyncio.run(run())


# Sync on purpose: upgrade() runs alembic's env.py, which starts its own event loop.
@pytest.mark.parametrize("service", SERVICES)
def test_migrations_build_the_declared_tables(service: str, scratch_database: str) -> None:
    upgrade(service, scratch_database)
    differences = schema_differences(scratch_database, declared_metadata(service))
    assert differences == [], "\n".join(repr(d) for d in differences)
