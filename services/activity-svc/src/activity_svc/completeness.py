"""How far each establishment's data is complete: "data complete up to" (ADR 0018).

An establishment's data is complete up to the day its system declared with its latest
import that declared one (``complete_up_to``); without a declaration, up to the last day
its records cover that had ended when they were received (records of the day an import
is sent do not make that day complete). The territory's is the earliest of its
establishments' with data; an org unit's is its establishment's.

A month is complete when its last day is. The default period of a reader is the last
complete month; the figures of a partial month compare its complete days with the same
days of last year (``indicators.values``), and neither projections nor alerts read it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from activity_svc.errors import InvalidInput
from activity_svc.ingestion.merge import EARLIEST
from activity_svc.models import DataCompleteness
from activity_svc.months import add_months, first_of_month, last_day_of
from activity_svc.referential.tree import today


@dataclass(frozen=True)
class Completeness:
    """An establishment's data: what its system declared and what its records show."""

    finess: str
    declared_up_to: date | None
    declared_at: datetime | None
    last_day_received: date | None

    @property
    def complete_up_to(self) -> date | None:
        """The declaration when there is one, else what the records show."""
        return self.declared_up_to if self.declared_up_to is not None else self.last_day_received


def last_complete_month(complete_up_to: date | None) -> date:
    """The last month whose every day is complete (its first day); the previous calendar
    month when nothing is known."""
    if complete_up_to is None:
        return add_months(first_of_month(today()), -1)
    return add_months(first_of_month(complete_up_to + timedelta(days=1)), -1)


def is_complete(month: date, complete_up_to: date | None) -> bool:
    """Whether every day of ``month`` is complete (a month is when nothing is known)."""
    return complete_up_to is None or last_day_of(month) <= complete_up_to


def declared_day(value: date | None) -> date | None:
    """A day a sender declares its data complete up to: from 2000 to today (422
    ``complete_up_to`` naming the rule otherwise)."""
    if value is None:
        return None
    if value > today():
        raise InvalidInput(
            f"complete_up_to {value} is a day to come: data cannot be complete up to it.",
            field="complete_up_to",
            rule="future_day",
        )
    if value < date.fromisoformat(EARLIEST):
        raise InvalidInput(
            f"complete_up_to {value} is before {EARLIEST}, the earliest day a record can have.",
            field="complete_up_to",
            rule="range",
        )
    return value


async def completeness_of(session: AsyncSession) -> dict[str, Completeness]:
    """Every establishment's completeness (a few rows: one per establishment with data)."""
    rows = await session.scalars(select(DataCompleteness))
    return {
        row.finess: Completeness(
            row.finess, row.declared_up_to, row.declared_at, row.last_day_received
        )
        for row in rows
    }


def territory_complete_up_to(completeness: Mapping[str, Completeness]) -> date | None:
    """The earliest day complete among the establishments with data."""
    days = [c.complete_up_to for c in completeness.values() if c.complete_up_to is not None]
    return min(days) if days else None


async def complete_up_to(
    session: AsyncSession, establishments: Collection[str | None]
) -> dict[str | None, date | None]:
    """The day each establishment's data is complete up to (None: the territory's)."""
    completeness = await completeness_of(session)
    known = {finess: c.complete_up_to for finess, c in completeness.items()}
    return {
        finess: known.get(finess) if finess is not None else territory_complete_up_to(completeness)
        for finess in establishments
    }


async def record_received(
    session: AsyncSession,
    establishments: Collection[str],
    last_days: Mapping[str, date],
    declared: date | None,
    declared_by: str,
    now: datetime,
) -> dict[str, tuple[date | None, date | None]]:
    """Record what an import says of its establishments' data: the last day its records
    cover (kept when later than the one known), and the day declared complete, if any.

    Returns, for each establishment whose complete-up-to day moved, the day before and
    after (their months between changed from partial to complete, or back).
    """
    if not establishments:
        return {}
    before = await completeness_of(session)
    for finess in sorted(establishments):
        known = before.get(finess)
        values: dict[str, object] = {"updated_at": now}
        last_day = last_days.get(finess)
        if last_day is not None and (
            known is None or known.last_day_received is None or last_day > known.last_day_received
        ):
            values["last_day_received"] = last_day
        if declared is not None:
            values |= {"declared_up_to": declared, "declared_at": now, "declared_by": declared_by}
        await session.execute(
            pg_insert(DataCompleteness)
            .values(finess=finess, **values)
            .on_conflict_do_update(index_elements=[DataCompleteness.finess], set_=values)
        )
    after = await completeness_of(session)
    moved: dict[str, tuple[date | None, date | None]] = {}
    for finess in establishments:
        old = before[finess].complete_up_to if finess in before else None
        new = after[finess].complete_up_to if finess in after else None
        if old != new:
            moved[finess] = (old, new)
    return moved
