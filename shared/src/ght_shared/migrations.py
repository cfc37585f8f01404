"""Alembic helpers shared by every service: the env script and the infra tables.

The infra DDL is versioned here (``infra_v1``) and frozen once released: a
later change is a new function called by a new migration of each service.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import context, op
from alembic.config import Config
from sqlalchemy import MetaData, pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import async_engine_from_config

from ght_shared import tables
from ght_shared.urls import asyncpg_url

INFRA_V1_STATEMENTS: tuple[str, ...] = (
    """
    CREATE TABLE outbox (
        id            bigserial PRIMARY KEY,
        event_id      uuid NOT NULL UNIQUE,
        event_type    text NOT NULL,
        subject       text NOT NULL,
        aggregate     text NOT NULL,
        payload       bytea NOT NULL,
        created_at    timestamptz NOT NULL DEFAULT now(),
        published_at  timestamptz,
        attempts      integer NOT NULL DEFAULT 0,
        last_error    text
    )
    """,
    "CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL",
    "CREATE INDEX outbox_published_at ON outbox (published_at) WHERE published_at IS NOT NULL",
    """
    CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('ght_outbox', '');
        RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER outbox_inserted AFTER INSERT ON outbox
        FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify()
    """,
    """
    CREATE TABLE aggregate_sequence (
        aggregate      text PRIMARY KEY,
        last_sequence  bigint NOT NULL
    )
    """,
    """
    CREATE TABLE inbox (
        consumer      text NOT NULL,
        event_id      uuid NOT NULL,
        event_type    text NOT NULL,
        processed_at  timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (consumer, event_id)
    )
    """,
    """
    CREATE TABLE dead_letter (
        id          bigserial PRIMARY KEY,
        consumer    text NOT NULL,
        event_id    uuid,
        event_type  text,
        subject     text NOT NULL,
        payload     bytea NOT NULL,
        error       text NOT NULL,
        deliveries  integer NOT NULL,
        created_at  timestamptz NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE TABLE audit_log (
        id             bigserial PRIMARY KEY,
        at             timestamptz NOT NULL DEFAULT now(),
        actor          text NOT NULL,
        action         text NOT NULL,
        resource       text NOT NULL,
        establishment  text,
        request_id     text,
        detail         jsonb NOT NULL DEFAULT '{}'::jsonb
    )
    """,
    "CREATE INDEX audit_log_at ON audit_log (at)",
    # The audit trail is append-only: forbid rewriting history at the database level.
    """
    CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
    END $$
    """,
    """
    CREATE TRIGGER audit_log_no_rewrite BEFORE UPDATE OR DELETE ON audit_log
        FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()
    """,
)


def create_infra_v1() -> None:
    """Create the outbox, sequence, inbox, dead-letter and audit tables (first migration)."""
    for statement in INFRA_V1_STATEMENTS:
        op.execute(statement)


def drop_infra_v1() -> None:
    for name in ("audit_log", "dead_letter", "inbox", "aggregate_sequence", "outbox"):
        op.execute(f"DROP TABLE IF EXISTS {name} CASCADE")
    op.execute("DROP FUNCTION IF EXISTS outbox_notify()")
    op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")


def _include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    # Autogenerate must not try to drop the infra tables, which the service's
    # models do not declare.
    return not (type_ == "table" and name in tables.INFRA_TABLES)


def run_env(target_metadata: MetaData | None, database_url: Callable[[], str]) -> None:
    """The body of a service's ``alembic/env.py`` (online and offline modes)."""
    config = context.config
    url = config.get_main_option("sqlalchemy.url") or asyncpg_url(database_url())

    if context.is_offline_mode():
        context.configure(
            url=url,
            target_metadata=target_metadata,
            literal_binds=True,
            include_object=_include_object,
        )
        with context.begin_transaction():
            context.run_migrations()
        return

    def run(connection: Connection) -> None:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            include_object=_include_object,
            transaction_per_migration=True,
        )
        with context.begin_transaction():
            context.run_migrations()

    async def run_async() -> None:
        engine = async_engine_from_config(
            {"sqlalchemy.url": url}, prefix="sqlalchemy.", poolclass=pool.NullPool
        )
        async with engine.connect() as connection:
            await connection.run_sync(run)
        await engine.dispose()

    asyncio.run(run_async())


def upgrade(alembic_ini: Path, database_url: str, revision: str = "head") -> None:
    """Migrate a database programmatically (used by the test plugin and the runner)."""
    from alembic import command

    config = Config(str(alembic_ini))
    config.set_main_option("script_location", str(alembic_ini.parent / "alembic"))
    # configparser interpolates "%": escape it (URL-encoded passwords contain it).
    config.set_main_option("sqlalchemy.url", asyncpg_url(database_url).replace("%", "%%"))
    command.upgrade(config, revision)
