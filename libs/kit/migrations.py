"""Alembic glue: every service's migrations/env.py calls `run_migrations`; `upgrade` applies them."""

import asyncio
from pathlib import Path

import sqlalchemy as sa
from alembic import command, context, op
from alembic.config import Config
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from libs.kit.db import kit_metadata

SERVICES_DIR = Path(__file__).resolve().parents[2] / "services"


def run_migrations(service_metadata: MetaData) -> None:
    """Body of a service's env.py: migrate its own tables plus the kit's outbox and inbox."""
    url = context.config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url must be set"
    targets = [service_metadata, kit_metadata]

    def do_run(connection: Connection) -> None:
        context.configure(connection=connection, target_metadata=targets, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()

    if context.is_offline_mode():
        context.configure(url=url, target_metadata=targets, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return

    async def run_async() -> None:
        engine = create_async_engine(url, poolclass=NullPool)
        async with engine.connect() as connection:
            await connection.run_sync(do_run)
            await connection.commit()
        await engine.dispose()

    asyncio.run(run_async())


def alembic_config(service: str, url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(SERVICES_DIR / service / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url)
    return cfg


def upgrade(service: str, url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(service, url), revision)


# --- dead letters (issue 14 part 7) ---
# The kit's dead-letter store and the inbox's retention index, created by each service's
# `*_dead_letters` migration. Frozen as those migrations ran: a later change to these tables is a
# new function called by a new migration, never an edit here.


def create_dead_letter_tables() -> None:
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("consumer_group", sa.String(length=200), nullable=False),
        sa.Column("source_topic", sa.String(length=249), nullable=False),
        sa.Column("source_partition", sa.Integer(), nullable=False),
        sa.Column("source_offset", sa.BigInteger(), nullable=False),
        sa.Column("message_key", sa.Text(), nullable=True),
        sa.Column("event_id", sa.String(length=64), nullable=True),
        sa.Column("event_type", sa.String(length=100), nullable=True),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("error_type", sa.String(length=200), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column(
            "failed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("status", sa.String(length=10), server_default="open", nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_by", sa.String(length=200), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('open', 'replayed', 'dropped')", name="ck_dead_letters_status"
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "consumer_group",
            "source_topic",
            "source_partition",
            "source_offset",
            name="uq_dead_letters_source",
        ),
    )
    op.create_index(
        "ix_dead_letters_open",
        "dead_letters",
        ["consumer_group", "id"],
        postgresql_where=sa.text("status = 'open'"),
    )
    op.create_index(
        "ix_dead_letters_resolved",
        "dead_letters",
        ["resolved_at"],
        postgresql_where=sa.text("status <> 'open'"),
    )
    op.create_table(
        "dead_letter_actions",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("dead_letter_id", sa.BigInteger(), nullable=True),
        sa.Column("action", sa.String(length=10), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "action IN ('list', 'replay', 'drop')", name="ck_dead_letter_actions_action"
        ),
        sa.ForeignKeyConstraint(["dead_letter_id"], ["dead_letters.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_dead_letter_actions_dead_letter", "dead_letter_actions", ["dead_letter_id", "id"]
    )
    op.create_index("ix_dead_letter_actions_at", "dead_letter_actions", ["at"])
    op.create_index("ix_processed_events_processed_at", "processed_events", ["processed_at"])


def drop_dead_letter_tables() -> None:
    op.drop_index("ix_processed_events_processed_at", table_name="processed_events")
    op.drop_table("dead_letter_actions")
    op.drop_table("dead_letters")
