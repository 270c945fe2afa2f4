"""Alembic environment of the inventory database."""

from libs.kit.migrations import run_migrations
from services.inventory.db import metadata

run_migrations(metadata)
