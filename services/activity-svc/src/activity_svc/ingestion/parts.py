"""Merging a large import on several connections at once, still all-or-nothing.

PostgreSQL runs a data-modifying statement on one core, so a big import's merge is
split into parts (by a hash of ``source_id``, see ``merge.part_statement``), each run on
its own connection and left *prepared* (``PREPARE TRANSACTION``). The import's own
transaction then stores its report; its commit is the decision. Every part is then
committed (``COMMIT PREPARED``) or, for a rejected import, rolled back.

Should the process die in between, :func:`recover_imports` (at start-up, every minute,
and in each import once it holds its establishments' locks) settles the parts it left as
its committed report says: parts of a completed import are committed, any other is
rolled back; it also drops the staging tables nobody uses any more. While an import
runs, its own transaction holds the import's advisory lock, which keeps recovery away
from it; :meth:`PreparedParts.settle` waits for that lock too, so that it reads the
report once the import's transaction has really ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import asyncpg
from sqlalchemy import text

from activity_svc.ingestion.merge import GID_PREFIX, PartOutcome, import_of_staging_table
from ght_shared.db import Database, driver_connection

_log = logging.getLogger(__name__)

_SETTLED = ("completed", "completed_with_rejections")
_BUSY_RETRIES = 500
_BUSY_PAUSE_S = 0.01


def import_lock_key(import_id: uuid.UUID) -> str:
    """The advisory lock an import's transaction holds while it runs."""
    return f"activity-import:{import_id}"


_GID = re.compile(r"^activity-import:([0-9a-f-]{36}):[0-9]+$")
_LOCK_WAIT_S = 60
RECOVERY_INTERVAL_S = 60.0
"""How often a running service settles what interrupted imports left (besides start-up
and each import)."""


@contextlib.asynccontextmanager
async def _raw_connection(database: Database) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection's driver, for statements SQLAlchemy does not offer. Discarded
    rather than returned to the pool if it is left in a transaction (a BEGIN not ended)
    or if anything failed (a session advisory lock may still be held)."""
    async with database.engine.connect() as connection:
        raw = await driver_connection(connection)
        try:
            yield raw
        except BaseException:
            await connection.invalidate()
            raise
        if raw.is_in_transaction():
            await connection.invalidate()


async def run_part(
    raw: asyncpg.Connection, statement: str, args: Sequence[object], timeout: float
) -> PartOutcome:
    """Run a part's statement in the connection's transaction."""
    row = await raw.fetchrow(statement, *args, timeout=timeout)
    assert row is not None
    return PartOutcome.from_row(row)


@dataclass
class PreparedParts:
    """The prepared parts of one import."""

    database: Database
    import_id: uuid.UUID
    gids: list[str] = field(default_factory=list)

    async def merge(
        self,
        statements: Sequence[str],
        setup: str,
        args: Sequence[object],
        timeout: float,
    ) -> list[PartOutcome]:
        """Run each part's statement on its own connection, at once, and prepare it.

        If a part fails, the error is raised once every part has ended; the parts
        already prepared are left to :meth:`settle`.
        """
        results = await asyncio.gather(
            *(
                self._merge_part(index, statement, setup, args, timeout)
                for index, statement in enumerate(statements)
            ),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [result for result in results if isinstance(result, PartOutcome)]

    async def _merge_part(
        self,
        index: int,
        statement: str,
        setup: str,
        args: Sequence[object],
        timeout: float,
    ) -> PartOutcome:
        gid = f"{GID_PREFIX}{self.import_id}:{index}"
        async with _raw_connection(self.database) as raw:
            await raw.execute("BEGIN")
            try:
                await raw.execute(setup)
                outcome = await run_part(raw, statement, args, timeout)
                # Recorded before PREPARE, which may succeed on the server even if this
                # call fails: such a part is settled too (a gid never prepared is skipped).
                self.gids.append(gid)
                await raw.execute(f"PREPARE TRANSACTION '{gid}'")
            except BaseException:
                with contextlib.suppress(Exception):
                    await raw.execute("ROLLBACK")
                raise
        return outcome

    async def abandon(self) -> None:
        """Roll the prepared parts back, while the import's transaction is still open
        (it has decided nothing yet)."""
        gids, self.gids = self.gids, []
        if gids:
            async with _raw_connection(self.database) as raw:
                for gid in gids:
                    await _finish(raw, f"ROLLBACK PREPARED '{gid}'")

    async def settle(self) -> None:
        """Once the import's transaction has ended: commit or roll back the prepared parts,
        as its committed report says (no report, or a rejected one: rolled back). A part
        this cannot reach is left to :func:`recover_imports`."""
        gids, self.gids = self.gids, []
        if not gids:
            return
        async with _raw_connection(self.database) as raw:
            # The import's lock is free once its transaction has ended: should its COMMIT
            # have failed on the way back (a cut connection), the server may still be
            # committing it, and the report must be read after that, not before.
            key = await _lock_key(raw, self.import_id)
            await raw.execute(f"SET lock_timeout = '{_LOCK_WAIT_S}s'")
            try:
                await raw.execute("SELECT pg_advisory_lock($1)", key)
            finally:
                await raw.execute("RESET lock_timeout")
            try:
                await _settle(raw, self.import_id, gids)
            finally:
                await raw.execute("SELECT pg_advisory_unlock($1)", key)


async def _lock_key(raw: asyncpg.Connection, import_id: uuid.UUID) -> int:
    key: int = await raw.fetchval("SELECT hashtextextended($1, 0)", import_lock_key(import_id))
    return key


async def _settle(raw: asyncpg.Connection, import_id: uuid.UUID, gids: Sequence[str]) -> None:
    status = await raw.fetchval("SELECT status FROM record_import WHERE id = $1", import_id)
    verb = "COMMIT" if status in _SETTLED else "ROLLBACK"
    for gid in gids:
        await _finish(raw, f"{verb} PREPARED '{gid}'")
    _log.debug("import parts settled", extra={"import_id": str(import_id), "verb": verb})


async def _finish(raw: asyncpg.Connection, command: str) -> None:
    """Run a ``COMMIT PREPARED`` or ``ROLLBACK PREPARED``; return once the part is settled,
    by this call or by another (the import's own process and recovery may race)."""
    for _ in range(_BUSY_RETRIES):
        try:
            await raw.execute(command)
            return
        except asyncpg.UndefinedObjectError:
            return  # never prepared, or settled already
        except asyncpg.ObjectInUseError:
            await asyncio.sleep(_BUSY_PAUSE_S)  # being settled by another session
    raise RuntimeError(f"could not settle a prepared import part: {command}")


async def free_prepared_slots(connection: asyncpg.Connection) -> int:
    """How many more transactions the server can hold prepared (0 when it allows none)."""
    free: int = await connection.fetchval(
        "SELECT current_setting('max_prepared_transactions')::int"
        " - (SELECT count(*) FROM pg_prepared_xacts)"
    )
    return free


async def recover_imports(database: Database) -> int:
    """Settle the prepared parts and drop the staging tables of imports that no longer
    run (their process died); return how many imports were recovered."""
    async with _raw_connection(database) as raw:
        prepared = await raw.fetch(
            "SELECT gid FROM pg_prepared_xacts"
            " WHERE database = current_database() AND starts_with(gid, $1)",
            GID_PREFIX,
        )
        tables = await raw.fetch(
            "SELECT relname FROM pg_class WHERE relkind IN ('r', 'p') AND NOT relispartition"
            " AND relnamespace = to_regnamespace(current_schema())"
            " AND starts_with(relname::text, 'import_staging_')"
        )
        gids: dict[uuid.UUID, list[str]] = {}
        for row in prepared:
            import_id = _import_of_gid(row["gid"])
            if import_id is not None:
                gids.setdefault(import_id, []).append(row["gid"])
        staging = {
            import_id: row["relname"]
            for row in tables
            if (import_id := import_of_staging_table(row["relname"])) is not None
        }
        recovered = 0
        for import_id in sorted(gids.keys() | staging.keys()):
            key = await _lock_key(raw, import_id)
            if not await raw.fetchval("SELECT pg_try_advisory_lock($1)", key):
                continue  # still running (or being recovered by another session)
            try:
                await _settle(raw, import_id, gids.get(import_id, []))
                if import_id in staging:
                    await drop_staging(database, staging[import_id])
                recovered += 1
            except Exception:
                # One import that cannot be recovered now must not stop the others.
                _log.exception("could not recover import %s", import_id)
            finally:
                await raw.execute("SELECT pg_advisory_unlock($1)", key)
        if recovered:
            _log.warning("recovered interrupted imports", extra={"imports": recovered})
        return recovered


async def drop_staging(database: Database, table: str) -> None:
    """Drop a shared staging table; if it cannot be now, recovery will."""
    try:
        async with database.transaction() as session:
            await session.execute(text("SET LOCAL lock_timeout = '5s'"))
            await session.execute(text(f"DROP TABLE IF EXISTS {table}"))
    except Exception:
        _log.exception("could not drop the staging table %s", table)


def _import_of_gid(gid: str) -> uuid.UUID | None:
    """The import of a prepared part's gid, as :class:`PreparedParts` writes it; None for
    any other gid."""
    match = _GID.match(gid)
    if match is None:
        return None
    import_id = uuid.UUID(match.group(1))
    return import_id if gid.startswith(f"{GID_PREFIX}{import_id}:") else None


async def recover_periodically(database: Database) -> None:
    """Run :func:`recover_imports` every ``RECOVERY_INTERVAL_S``, until cancelled: a part
    left prepared holds its records' locks and holds back VACUUM, even when no import
    comes to recover it."""
    while True:
        await asyncio.sleep(RECOVERY_INTERVAL_S)
        try:
            await recover_imports(database)
        except Exception:  # the database may be down: next time
            _log.exception("could not recover interrupted imports")
