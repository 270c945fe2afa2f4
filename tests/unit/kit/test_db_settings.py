"""Database credentials in settings: a role per service, never a usable default password."""

import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from libs.kit.settings import (
    SERVICE_ROLES,
    SUPERUSER,
    DatabaseConfigError,
    ServiceSettings,
    load_dev_pg_password,
)


def dev(tmp_path: Path, **overrides: object) -> ServiceSettings:
    return ServiceSettings(
        env="dev",
        dev_jwt_secret_file=tmp_path / "dev-jwt-secret",
        dev_pg_password_dir=tmp_path / "dev-pg-passwords",
        **overrides,  # type: ignore[arg-type]
    )


def test_a_service_connects_as_the_role_named_after_it(tmp_path: Path) -> None:
    assert dev(tmp_path, service_name="payments").pg_user == "payments"
    assert dev(tmp_path, service_name="payments", pg_user="custom").pg_user == "custom"


def test_settings_naming_no_service_are_the_operators_superuser(tmp_path: Path) -> None:
    settings = dev(tmp_path)
    assert settings.pg_user == SUPERUSER
    assert settings.database_password() == ""


def test_in_development_a_role_gets_its_generated_password(tmp_path: Path) -> None:
    settings = dev(tmp_path, service_name="orders")
    url = settings.sqlalchemy_url()
    file = tmp_path / "dev-pg-passwords" / "orders"
    password = file.read_text().strip()
    assert len(password) >= 32
    assert url == f"postgresql+asyncpg://orders:{password}@127.0.0.1:{settings.pg_port}/orders"
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    # Stable: the same password every time, for every process of the checkout.
    assert dev(tmp_path, service_name="orders").database_password() == password
    assert dev(tmp_path, service_name="payments").database_password() != password


def test_a_configured_password_wins_and_is_quoted_in_the_url(tmp_path: Path) -> None:
    settings = dev(tmp_path, service_name="orders", pg_password="p@ss:/word")
    assert "orders:p%40ss%3A%2Fword@" in settings.sqlalchemy_url()
    assert not (tmp_path / "dev-pg-passwords").exists()


@pytest.mark.parametrize("service", SERVICE_ROLES)
def test_outside_development_a_service_without_password_refuses_to_start(service: str) -> None:
    with pytest.raises(ValidationError, match=r"no password for database role.*PG_PASSWORD"):
        ServiceSettings(env="production", service_name=service, pg_password="")
    # A tool naming no service may rely on libpq's own sources, but asking is refused.
    tool = ServiceSettings(env="production", pg_password="")
    with pytest.raises(DatabaseConfigError):
        tool.database_password()
    assert "postgres@" in tool.sqlalchemy_url()


def test_a_service_database_url_needs_no_separate_password() -> None:
    url = "postgresql+asyncpg://orders:x@db/orders"
    assert ServiceSettings(env="production", service_name="orders", database_url=url)


def test_outside_development_a_configured_password_is_used() -> None:
    settings = ServiceSettings(env="production", service_name="orders", pg_password="s3cret")
    assert settings.sqlalchemy_url().startswith("postgresql+asyncpg://orders:s3cret@")


def test_a_role_name_never_escapes_the_password_directory(tmp_path: Path) -> None:
    for bad in ("../orders", "a/b", ".hidden", ""):
        with pytest.raises(ValueError):
            load_dev_pg_password(tmp_path, bad)


def test_a_truncated_password_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "orders").write_text("short\n")
    with pytest.raises(ValueError, match="delete it"):
        load_dev_pg_password(tmp_path, "orders")


def test_migrate_applies_each_service_as_its_role_with_that_roles_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`backroom migrate` in a job holding every role's password (compose's, k8s'):
    BACKROOM_PG_PASSWORD_<SERVICE>, outside development too."""
    from libs.kit import cli, migrations

    applied: list[str] = []
    monkeypatch.setattr(migrations, "upgrade", lambda service, url: applied.append(url))
    monkeypatch.setenv("BACKROOM_ENV", "production")
    monkeypatch.delenv("BACKROOM_PG_PASSWORD", raising=False)
    monkeypatch.setenv("BACKROOM_PG_PASSWORD_ORDERS", "orders-secret")
    monkeypatch.setenv("BACKROOM_PG_PASSWORD_PAYMENTS", "payments-secret")
    assert cli.main(["migrate", "orders", "payments"]) == 0
    assert [url.split("@")[0] for url in applied] == [
        "postgresql+asyncpg://orders:orders-secret",
        "postgresql+asyncpg://payments:payments-secret",
    ]
