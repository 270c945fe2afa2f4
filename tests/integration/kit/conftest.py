"""Fixtures for the kit's own tests on the real broker and database."""

from collections.abc import AsyncIterator

import pytest

from libs.kit.runtime import Runtime
from tests.integration.kit.harness import create_database, producer_runtime


@pytest.fixture(scope="session")
async def kit_databases() -> None:
    await create_database("kit_a")
    await create_database("kit_b")


@pytest.fixture
async def producer(kit_databases: None) -> AsyncIterator[Runtime]:
    runtime = producer_runtime()
    await runtime.start()
    yield runtime
    await runtime.stop()
