"""Alembic environment of the notifications database."""

from libs.kit.migrations import run_migrations
from services.notifications.db import metadata

run_migrations(metadata)
