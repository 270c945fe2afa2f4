"""Alembic environment of the orders database."""

from libs.kit.migrations import run_migrations
from services.orders.db import metadata

run_migrations(metadata)
