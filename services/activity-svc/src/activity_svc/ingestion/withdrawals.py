"""Withdrawing records: a PMSI correction removes stays, a system takes back what it sent.

An establishment's system names its records by ``(finess, source, source_id)``; those
stored are deleted, their contribution is taken from the monthly measures, and the
figures they moved are published (``indicator.updated``) and evaluated against the
alert rules, all in one transaction. Withdrawing a record already absent changes
nothing (the call can be repeated). Withdrawals of an establishment wait for its
imports, and its imports for them: both take the same lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

from sqlalchemy import text

from activity_svc import reactions
from activity_svc.access import ensure_may_write_records
from activity_svc.ingestion.imports import APPLY_STATEMENT, merge_lock_key
from activity_svc.ingestion.merge import MergeOutcome, withdrawal_statement
from activity_svc.ingestion.parts import recover_imports
from ght_shared.audit import record_audit
from ght_shared.auth import Principal
from ght_shared.db import Database, driver_connection

WITHDRAWAL_STATEMENT = withdrawal_statement()


@dataclass(frozen=True)
class RecordKey:
    """What names a record: its establishment, the system that sent it and its id there."""

    finess: str
    source: str
    source_id: str


@dataclass(frozen=True)
class Withdrawal:
    """What a withdrawal did."""

    requested: int
    """Distinct records named."""
    withdrawn: int
    """Those that were stored, now deleted."""
    months: list[date]
    """Months whose figures changed."""
    sources: list[str]

    @property
    def absent(self) -> int:
        return self.requested - self.withdrawn


async def withdraw_records(
    database: Database, principal: Principal, keys: Sequence[RecordKey]
) -> Withdrawal:
    """Delete the stored records among ``keys`` (403, nothing deleted, for a record of an
    establishment the principal does not act for), take them from the figures, publish."""
    named = sorted(set(keys), key=lambda k: (k.finess, k.source, k.source_id))
    establishments = sorted({k.finess for k in named})
    ensure_may_write_records(principal, establishments)
    async with database.transaction() as session:
        for finess in establishments:
            await session.execute(
                text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
                {"key": merge_lock_key(finess)},
            )
        # An import that died may have left prepared parts of these records: settle them.
        await recover_imports(database)
        connection = await driver_connection(session)
        row = await connection.fetchrow(
            WITHDRAWAL_STATEMENT,
            [k.finess for k in named],
            [k.source for k in named],
            [k.source_id for k in named],
        )
        assert row is not None
        now = datetime.now(UTC)
        applied = None
        if row["withdrawn"]:
            applied = await connection.fetchval(
                APPLY_STATEMENT, [row["deltas"]], now, [row["cube"]], [row["days"]]
            )
        cells = MergeOutcome.of([], applied).cells
        measures: set[str] = set().union(*cells.values()) if cells else set()
        await reactions.figures_changed(session, set(cells), measures, None)
        result = Withdrawal(
            requested=len(named),
            withdrawn=int(row["withdrawn"]),
            months=sorted({month for _, month in cells}),
            sources=sorted(row["sources"]),
        )
        await record_audit(
            session,
            principal,
            "records.withdrawn",
            "records",
            establishment=establishments[0] if len(establishments) == 1 else None,
            detail={
                "establishments": establishments,
                "requested": result.requested,
                "withdrawn": result.withdrawn,
                "sources": result.sources,
            },
        )
    return result
