"""Installed beds: the consumer of ``ght.beds.capacity.changed``, and what a change of
them does to the figures.

beds-svc owns the beds; activity keeps, per unit and day, the installed count that the
bed occupancy rate divides by. beds-svc publishes this event on every bed movement
(occupied and available change), so most events leave the installed count as it was
and write nothing. A count that changes (from beds-svc or ``PUT /org-units``) changes
the occupancy rate of the months it applies to: :func:`publish_capacity_change`.
"""

from __future__ import annotations

import logging
import re
from datetime import date
from typing import TypeGuard

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from activity_svc.catalogue import BED_DAYS
from activity_svc.indicators.changes import publish_indicator_changes
from activity_svc.models import OrgUnit
from activity_svc.referential.schemas import CODE_PATTERN
from activity_svc.referential.tree import OrgUnitKind, local_date, set_capacity
from ght_shared.audit import record_audit
from ght_shared.events import Event
from ght_shared.identifiers import is_finess

_log = logging.getLogger(__name__)

SOURCE = "beds"

MAX_MONTHS = 36
"""The most months one capacity change republishes (the latest): three years, as the
longest backlog an import would republish."""

# The months whose bed days the unit's beds installed from :effective_from make up: a
# month counts the beds installed on its first day, so from the first month starting on
# or after that day until the unit's next capacity change. Only the months in which
# the unit has figures (a unit_month row), the latest first.
_MONTHS_OF_CAPACITY = text(
    """
    SELECT u.month FROM unit_month u
    WHERE u.unit = :unit AND u.month >= :effective_from
      AND NOT EXISTS (
          SELECT FROM unit_capacity c
          WHERE c.unit = u.unit AND c.effective_from > :effective_from
            AND c.effective_from <= u.month
      )
    ORDER BY u.month DESC
    LIMIT :limit
    """
)


async def on_capacity_changed(session: AsyncSession, event: Event) -> None:
    """Record the unit's installed beds from the day of ``event.time`` (Paris time).

    ``data["unit"]`` is the unit's org code, or its UF code within the event's
    establishment. An event this service cannot place (unknown unit, no installed
    count) is logged and skipped: redelivering it would not make it any better.
    """
    data = event.data
    establishment = _finess(event.establishment) or _finess(data.get("establishment"))
    reference = _code(data.get("unit"))
    installed = data.get("installed")
    if reference is None or not _is_count(installed):
        _log.warning("capacity event %s skipped: it needs a unit and an installed count", event.id)
        return
    unit = await _resolve_unit(session, reference, establishment)
    if unit is None:
        _log.warning(
            "capacity event %s skipped: no unit %r in establishment %s",
            event.id,
            reference,
            establishment,
        )
        return
    day = local_date(event.time)
    if await set_capacity(session, unit.code, day, installed, SOURCE):
        await record_audit(
            session,
            "beds-svc",
            "org_unit.capacity_set",
            f"org_unit/{unit.code}",
            establishment=unit.finess,
            detail={
                "event": str(event.id),
                "effective_from": day.isoformat(),
                "installed_beds": installed,
            },
        )
        await publish_capacity_change(session, unit.code, day)


async def publish_capacity_change(session: AsyncSession, unit: str, effective_from: date) -> int:
    """Publish the occupancy figures that ``unit``'s beds installed from ``effective_from``
    changed, and evaluate the alert rules on them; return the number of events.

    The org units above the unit as it was each month get ``indicator.updated`` for the
    indicators reading ``bed_days``, for the months from the change on in which the unit
    has figures (at most :data:`MAX_MONTHS`, the latest). A month in which the unit
    recorded nothing gets none: its figures are read through the API, and the next
    import touching that month publishes them (a change dated in the future: its
    months' first records).
    """
    months = await session.scalars(
        _MONTHS_OF_CAPACITY,
        {"unit": unit, "effective_from": effective_from, "limit": MAX_MONTHS},
    )
    return await publish_indicator_changes(
        session, {(unit, month) for month in months}, {BED_DAYS}, None
    )


async def _resolve_unit(
    session: AsyncSession, reference: str, establishment: str | None
) -> OrgUnit | None:
    """The unit named by its org code, or else by its UF code in ``establishment``."""
    unit = await session.get(OrgUnit, reference)
    if (
        unit is not None
        and unit.kind == OrgUnitKind.UNIT
        and (establishment is None or unit.finess == establishment)
    ):
        return unit
    if establishment is None:
        return None
    found: OrgUnit | None = await session.scalar(
        select(OrgUnit).where(
            OrgUnit.finess == establishment,
            OrgUnit.uf == reference,
            OrgUnit.kind == OrgUnitKind.UNIT,
        )
    )
    return found


def _code(value: object) -> str | None:
    return value if isinstance(value, str) and re.fullmatch(CODE_PATTERN, value) else None


def _finess(value: object) -> str | None:
    return value if isinstance(value, str) and is_finess(value) else None


def _is_count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 100_000
