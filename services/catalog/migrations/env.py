"""Alembic environment of the catalog database."""

from libs.kit.migrations import run_migrations
from services.catalog.db import metadata

run_migrations(metadata)
