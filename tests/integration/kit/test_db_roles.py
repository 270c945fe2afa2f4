"""PostgreSQL least privilege: each service connects as its own role (no superuser), which owns
its database and its tables and cannot even connect to another service's database."""

import asyncpg
import pytest

from libs.kit.cli import SERVICES
from libs.kit.migrations import upgrade
from libs.kit.settings import SUPERUSER, ServiceSettings


def role_of(service: str) -> ServiceSettings:
    return ServiceSettings(service_name=service)


async def connect_as(service: str, database: str) -> asyncpg.Connection:
    settings = role_of(service)
    return await asyncpg.connect(
        host=settings.pg_host,
        port=settings.pg_port,
        user=settings.pg_user,
        password=settings.database_password(),
        database=database,
        timeout=5,
    )


def test_each_service_connects_as_its_own_role_not_the_superuser() -> None:
    for service in SERVICES:
        settings = role_of(service)
        assert settings.pg_user == service != SUPERUSER
        assert f"://{service}:" in settings.sqlalchemy_url()


async def test_notifications_role_cannot_connect_to_payments_database(
    migrated_databases: None,
) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
        await connect_as("notifications", "payments")


async def test_no_service_role_reaches_another_services_database(
    migrated_databases: None,
) -> None:
    for service in SERVICES:
        for other in (*SERVICES, "postgres"):
            if other == service:
                continue
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await connect_as(service, other)


async def test_a_wrong_password_is_refused(migrated_databases: None) -> None:
    settings = role_of("orders")
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(
            host=settings.pg_host,
            port=settings.pg_port,
            user="orders",
            password="not-the-password",
            database="orders",
            timeout=5,
        )


@pytest.mark.parametrize("service", SERVICES)
async def test_service_role_has_no_cluster_privilege_and_owns_its_tables(
    service: str, migrated_databases: None
) -> None:
    conn = await connect_as(service, service)
    try:
        role = await conn.fetchrow(
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls"
            " FROM pg_roles WHERE rolname = current_user"
        )
        assert role is not None
        assert not any(role.values()), dict(role)
        assert (
            await conn.fetchval(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
            )
            == service
        )
        owners = dict(
            await conn.fetch(
                "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'S', 'v', 'm')"
            )
        )
        assert {"alembic_version", "outbox", "processed_events"} <= owners.keys()
        assert set(owners.values()) == {service}, owners
        # The role cannot make itself more than it is.
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(f'ALTER ROLE "{service}" SUPERUSER')
    finally:
        await conn.close()


def test_migrations_apply_as_the_owning_role(migrated_databases: None) -> None:
    """`backroom migrate` runs as each service's role: applying again (head) and a fresh
    migration run both work without the superuser."""
    for service in SERVICES:
        url = role_of(service).sqlalchemy_url()
        assert f"://{service}:" in url
        upgrade(service, url)
