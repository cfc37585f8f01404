"""The records behind an indicator's value (the drill-down): which, in which order.

A month's records are read unit by unit, kind by kind, day by day, then by their key:
the order of the index ``activity_record_unit_day`` (see ``models``), so that a page
starts where its cursor points and an export of a million records streams with no sort.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import ColumnElement, Select, or_, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from activity_svc.catalogue import Indicator, RecordKind
from activity_svc.indicators.values import Scope, constant_tree_day
from activity_svc.models import ActivityRecord, OrgUnitMembership
from activity_svc.months import add_months

ORDER: tuple[InstrumentedAttribute[Any], ...] = (
    ActivityRecord.unit,
    ActivityRecord.month,
    ActivityRecord.kind,
    ActivityRecord.occurred_on,
    ActivityRecord.finess,
    ActivityRecord.source,
    ActivityRecord.source_id,
)
"""The drill-down's order, that of its cursor."""
CURSOR_TYPES: tuple[type, ...] = (str, date, RecordKind, date, str, str, str)


def cursor_key(record: ActivityRecord) -> tuple[Any, ...]:
    return (
        record.unit,
        record.month,
        record.kind,
        record.occurred_on,
        record.finess,
        record.source,
        record.source_id,
    )


@dataclass(frozen=True)
class RecordFilters:
    """The drill-down's filters on what its records carry (None: any). ``drg``: a GHM, or
    its root without the level, which matches its levels."""

    coded: bool | None = None
    code: str | None = None
    drg: str | None = None
    severity: int | None = None
    mode: str | None = None
    source: str | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        found: list[ColumnElement[bool]] = []
        if self.coded is not None:
            found.append(ActivityRecord.coded.is_(self.coded))
        if self.code is not None:
            found.append(ActivityRecord.code == self.code)
        if self.drg is not None:
            found.append(
                ActivityRecord.drg == self.drg
                if len(self.drg) == 6
                else ActivityRecord.drg.startswith(self.drg)
            )
        if self.severity is not None:
            found.append(ActivityRecord.severity == self.severity)
        if self.mode is not None:
            found.append(ActivityRecord.mode == self.mode)
        if self.source is not None:
            found.append(ActivityRecord.source == self.source)
        return found


async def member_units(
    session: AsyncSession, org_unit: str, month: date, scope: Scope
) -> list[str]:
    """The units below ``org_unit`` in ``month`` (as it was: on its first day), or in the
    tree of :func:`constant_tree_day` (constant scope), sorted."""
    day = month if scope is Scope.AS_WAS else constant_tree_day(month)
    rows = await session.scalars(
        select(OrgUnitMembership.unit)
        .where(
            OrgUnitMembership.ancestor == org_unit,
            OrgUnitMembership.valid_from <= day,
            or_(OrgUnitMembership.valid_to.is_(None), OrgUnitMembership.valid_to > day),
        )
        .distinct()
        .order_by(OrgUnitMembership.unit)
    )
    return list(rows)


def records_query(
    indicator: Indicator,
    records_sql: str,
    units: Collection[str],
    month: date,
    filters: RecordFilters,
    after: tuple[Any, ...] | None = None,
) -> Select[Any]:
    """The records of ``units`` behind ``indicator`` in ``month`` (``records_sql``: the
    catalogue's SQL of the records or of one side of the ratio), matching ``filters``,
    after the cursor's key ``after``, in :data:`ORDER`."""
    query = (
        select(ActivityRecord)
        .where(
            # A list, not a subquery: the index then gives the records in order, unit by unit.
            ActivityRecord.unit.in_(sorted(units)),
            *in_month(indicator, month),
            # The catalogue's own SQL (never the request's).
            text(f"({records_sql.replace('{r}', ActivityRecord.__tablename__)})"),
            *filters.conditions(),
        )
        .order_by(*ORDER)
    )
    if after is not None:
        query = query.where(tuple_(*ORDER) > after)
    return query


def in_month(indicator: Indicator, month: date) -> list[ColumnElement[bool]]:
    """The records counted in ``month``: discharged then, or for an indicator of days
    present (bed occupancy) the stays present then, discharged that month or later."""
    if not indicator.whole_months_only:
        return [ActivityRecord.month == month]
    return [
        ActivityRecord.month >= month,
        ActivityRecord.occurred_on > month,
        ActivityRecord.occurred_on - ActivityRecord.stay_days < add_months(month, 1),
    ]
