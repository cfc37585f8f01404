"""Async SQLAlchemy engine and one session per request or message.

The session is committed at the edge (end of the request or of the message
handler); domain code only adds and ``flush()``-es. Pools stay small: every
process of the platform shares one PostgreSQL ``max_connections``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import asyncpg
from fastapi import Depends, Request
from sqlalchemy import ClauseElement, text
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.sql.compiler import SQLCompiler

from ght_shared.settings import ServiceSettings
from ght_shared.urls import asyncpg_url


class Database:
    """The engine and session factory of one service."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.engine: AsyncEngine = create_async_engine(
            asyncpg_url(settings.database_url),
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_pre_ping=True,
            pool_timeout=settings.db_connect_timeout_s,
            connect_args={
                "timeout": settings.db_connect_timeout_s,
                "command_timeout": settings.db_statement_timeout_ms / 1000 or None,
                "server_settings": {"application_name": settings.service_name},
            },
        )
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session whose work is committed on success and rolled back on error."""
        async with self.sessionmaker() as session, session.begin():
            yield session

    async def ping(self) -> None:
        """Raise if the database cannot answer a trivial query."""
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()


def database_of(request: Request) -> Database:
    db: Database = request.app.state.database
    return db


async def _request_session(request: Request) -> AsyncIterator[AsyncSession]:
    # Committed when the endpoint returns, before the response is sent, so a 2xx
    # always means the change (and its outbox events) is durable.
    async with database_of(request).transaction() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(_request_session, scope="function")]
"""The request's session; inject it into endpoints as ``session: SessionDep``."""


async def driver_connection(on: AsyncSession | AsyncConnection) -> asyncpg.Connection:
    """The asyncpg connection under a session's (or a connection's), for what SQLAlchemy
    does not offer (``COPY``, a statement with its own timeout). Work done on it is in
    the session's transaction once that has begun (SQLAlchemy begins it lazily, at its
    first statement)."""
    connection = await on.connection() if isinstance(on, AsyncSession) else on
    raw = await connection.get_raw_connection()
    driver: asyncpg.Connection = raw.driver_connection
    return driver


async def stream_records(
    database: Database, query: ClauseElement, prefetch: int = 5_000
) -> AsyncIterator[asyncpg.Record]:
    """The rows of ``query`` as asyncpg reads them, ``prefetch`` at a time, from a
    connection of their own in a read-only snapshot: for a file of a million rows, where
    a SQLAlchemy row per record would cost more than writing it. A row is a tuple-like
    ``asyncpg.Record`` in the query's column order. The connection goes back to the pool
    when the rows end or the reader stops (``aclose``)."""
    async with database.engine.connect() as connection:
        compiled = query.compile(
            dialect=connection.dialect, compile_kwargs={"render_postcompile": True}
        )
        assert isinstance(compiled, SQLCompiler)  # numbered parameters ($1), asyncpg's
        params = [compiled.params[name] for name in compiled.positiontup or ()]
        driver = await driver_connection(connection)
        async with driver.transaction(isolation="repeatable_read", readonly=True):
            async for record in driver.cursor(compiled.string, *params, prefetch=prefetch):
                yield record
