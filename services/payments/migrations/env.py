"""Alembic environment of the payments database."""

from libs.kit.migrations import run_migrations
from services.payments.db import metadata

run_migrations(metadata)
