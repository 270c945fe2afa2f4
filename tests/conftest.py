"""Shared test set-up: markers by folder, and migrated service databases for real-infra tests."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Tests run the system in development mode (the checkout's random dev secret), as make test does.
os.environ.setdefault("BACKROOM_ENV", "dev")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT / "tests").parts
        if parts and parts[0] in {"integration", "e2e"}:
            item.add_marker(getattr(pytest.mark, parts[0]))


@pytest.fixture(scope="session")
def migrated_databases() -> None:
    """Apply every service's migrations once (idempotent), as `make test` does before the suite."""
    from libs.kit.cli import SERVICES
    from libs.kit.migrations import upgrade
    from libs.kit.settings import ServiceSettings

    for service in SERVICES:
        if (ROOT / "services" / service / "migrations" / "versions").is_dir():
            upgrade(service, ServiceSettings(service_name=service).sqlalchemy_url())
