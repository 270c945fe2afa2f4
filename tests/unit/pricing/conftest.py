"""Fixtures of pricing's use-case tests: one in-memory store and a transaction over it."""

import pytest

from tests.support.fakes import FakeTx
from tests.unit.pricing.fakes import FakeStore


@pytest.fixture
def tx() -> FakeTx[FakeStore]:
    return FakeTx(FakeStore())
