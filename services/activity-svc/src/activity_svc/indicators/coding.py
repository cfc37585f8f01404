"""The coding worklist: the outpatient acts not coded yet, for the cadre de gestion to
chase with the departments ("le contrôle du codage des actes externes et de leur
exhaustivité"), oldest first, with each unit's backlog and the amount at stake.

The units are those below the org unit in today's tree. The acts are read through a
partial index on the acts not coded (``activity_record_uncoded``): a small share of the
records, whatever the history kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Select, or_, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from activity_svc.catalogue import RecordKind
from activity_svc.models import ActivityRecord, OrgUnitMembership

# Per unit below :org_unit today: its acts not coded yet, done on or before :before.
_BACKLOG = text(
    """
    SELECT r.unit, v.name, count(*) AS uncoded, coalesce(sum(r.amount), 0) AS amount,
           min(r.occurred_on) AS oldest
    FROM org_unit_membership m
    JOIN activity_record r ON r.unit = m.unit
    JOIN org_unit_version v ON v.code = r.unit
        AND v.valid_from <= :today AND (v.valid_to IS NULL OR v.valid_to > :today)
    WHERE m.ancestor = :org_unit
      AND m.valid_from <= :today AND (m.valid_to IS NULL OR m.valid_to > :today)
      AND r.kind = 'outpatient_act' AND NOT r.coded AND r.occurred_on <= :before
    GROUP BY r.unit, v.name
    ORDER BY min(r.occurred_on), r.unit
    """
)


@dataclass(frozen=True)
class Backlog:
    unit: str
    name: str
    uncoded: int
    amount: float
    oldest: date


async def backlog_by_unit(
    session: AsyncSession, org_unit: str, today: date, before: date
) -> list[Backlog]:
    """Each unit's acts not coded yet, done on or before ``before``, oldest unit first."""
    rows = await session.execute(_BACKLOG, {"org_unit": org_unit, "today": today, "before": before})
    return [
        Backlog(unit, name, int(uncoded), float(amount), oldest)
        for unit, name, uncoded, amount, oldest in rows
    ]


def uncoded_acts(
    org_unit: str, today: date, before: date, after: Sequence[Any] | None, limit: int
) -> Select[ActivityRecord]:
    """The acts not coded yet below ``org_unit``, done on or before ``before``, oldest
    first (then by key), after the cursor's ``after``; ``limit + 1`` of them."""
    units = select(OrgUnitMembership.unit).where(
        OrgUnitMembership.ancestor == org_unit,
        OrgUnitMembership.valid_from <= today,
        or_(OrgUnitMembership.valid_to.is_(None), OrgUnitMembership.valid_to > today),
    )
    order = (
        ActivityRecord.occurred_on,
        ActivityRecord.finess,
        ActivityRecord.source,
        ActivityRecord.source_id,
    )
    query = select(ActivityRecord).where(
        ActivityRecord.unit.in_(units),
        ActivityRecord.kind == RecordKind.OUTPATIENT_ACT,
        ActivityRecord.coded.is_(False),
        ActivityRecord.occurred_on <= before,
    )
    if after is not None:
        query = query.where(tuple_(*order) > tuple_(*after))
    return query.order_by(*order).limit(limit + 1)
