"""Alembic environment of the pricing database."""

from libs.kit.migrations import run_migrations
from services.pricing.db import metadata

run_migrations(metadata)
