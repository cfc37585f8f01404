"""Targets: what an indicator should reach for an org unit in a year.

A target is set by hand (``PUT /targets/...``) or from a signed contract's objective
(:mod:`activity_svc.steering.contracts`), through the same use cases
(:func:`set_target`, :func:`remove_target`). Whichever writes last wins; ``source``
and ``contract`` say where the current value came from. A volume target may be spread
over the months by a profile of 12 weights; a rate target holds for every month. A
target that moves republishes its figures and re-evaluates the alert rules on them
(:func:`activity_svc.reactions.targets_changed`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, literal_column
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import ReturningInsert

from activity_svc import reactions
from activity_svc.access import ensure_may_steer
from activity_svc.catalogue import Indicator
from activity_svc.errors import InvalidInput, TargetNotFound
from activity_svc.lookups import indicator_of, org_unit_of
from activity_svc.models import Target, TargetSource
from ght_shared.audit import record_audit
from ght_shared.auth import Principal

FIRST_YEAR = 2000
LAST_YEAR = 2100
MONTHS = 12
PROFILE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class TargetChange:
    """What a target is to become."""

    indicator: str
    org_unit: str
    year: int
    value: float
    monthly_profile: tuple[float, ...] | None = None
    source: TargetSource = TargetSource.MANUAL
    contract: str | None = None


@dataclass(frozen=True)
class TargetSet:
    target: Target
    created: bool
    previous: dict[str, Any] | None
    """The replaced target's value, source and contract (None when created)."""
    changed: bool
    """Created, or a different value or monthly profile (the figures' target moved)."""


def check_target(
    indicator: Indicator, year: int, value: float, monthly_profile: Sequence[float] | None
) -> None:
    """Refuse (422) a target its indicator cannot have.

    Every indicator of the catalogue is a non-negative quantity, a rate in % lies in
    [0, 100], and only a volume (a plain sum over the months) can be spread by a
    monthly profile: a rate or a median of a year is not the sum of its months.
    """
    if not FIRST_YEAR <= year <= LAST_YEAR:
        raise InvalidInput(
            f"The year must lie between {FIRST_YEAR} and {LAST_YEAR}.", field="year", rule="range"
        )
    if not math.isfinite(value) or value < 0:
        raise InvalidInput(
            "A target is a finite, non-negative number.", field="value", rule="non_negative"
        )
    if indicator.unit == "%" and value > 100:
        raise InvalidInput(
            f"{indicator.name} is a rate in %: its target lies between 0 and 100.",
            field="value",
            rule="percentage",
        )
    if monthly_profile is None:
        return
    if not indicator.is_volume:
        raise InvalidInput(
            f"{indicator.name} is not a volume: its target cannot be spread by month.",
            field="monthly_profile",
            rule="volume_only",
        )
    if len(monthly_profile) != MONTHS:
        raise InvalidInput(
            f"A monthly profile has {MONTHS} weights, January to December"
            f" ({len(monthly_profile)} given).",
            field="monthly_profile",
            rule="twelve_months",
        )
    if any(not math.isfinite(weight) or weight < 0 for weight in monthly_profile):
        raise InvalidInput(
            "The weights of a monthly profile are non-negative numbers.",
            field="monthly_profile",
            rule="non_negative",
        )
    total = math.fsum(monthly_profile)
    if abs(total - 1.0) > PROFILE_TOLERANCE:
        raise InvalidInput(
            f"The weights of a monthly profile sum to 1 (they sum to {total:.6g}).",
            field="monthly_profile",
            rule="sum_to_one",
        )


async def set_target(
    session: AsyncSession, actor: Principal, change: TargetChange, *, republish: bool = True
) -> TargetSet:
    """Create or replace the target of ``change`` (last writer wins), audit it, and
    republish its figures when it moved (404 for an unknown indicator or org unit, 403
    for an org unit the actor may not steer, 422 for a value the indicator cannot have).

    ``republish=False``: the caller republishes the figures of several targets at once
    (:func:`activity_svc.reactions.targets_changed`), as a contract's objectives are."""
    indicator = indicator_of(change.indicator)
    unit = await org_unit_of(session, change.org_unit)
    await ensure_may_steer(session, actor, unit)
    check_target(indicator, change.year, change.value, change.monthly_profile)
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "value": change.value,
        "monthly_profile": list(change.monthly_profile) if change.monthly_profile else None,
        "source": change.source,
        "contract": change.contract,
        "updated_at": now,
        "updated_by": actor.sub,
    }
    # PostgreSQL 18's RETURNING OLD tells a creation from a replacement in the same
    # statement, so two concurrent first writers cannot both try to INSERT.
    statement: ReturningInsert[Target, Any, Any, Any, Any] = (
        pg_insert(Target)
        .values(indicator=change.indicator, org_unit=change.org_unit, year=change.year, **values)
        .on_conflict_do_update(
            index_elements=[Target.indicator, Target.org_unit, Target.year], set_=values
        )
        .returning(
            Target,
            literal_column("old.value"),
            literal_column("old.source"),
            literal_column("old.contract"),
            literal_column("old.monthly_profile"),
        )
    )
    row = (await session.execute(statement, execution_options={"populate_existing": True})).one()
    target, old_value, old_source, old_contract, old_profile = row
    previous = (
        None
        if old_source is None
        else {"value": old_value, "source": old_source, "contract": old_contract}
    )
    await record_audit(
        session,
        actor,
        "target.set",
        f"target/{change.indicator}/{change.org_unit}/{change.year}",
        establishment=unit.finess,
        detail={
            "value": change.value,
            "monthly_profile": values["monthly_profile"],
            "source": change.source.value,
            "contract": change.contract,
            "previous": previous,
        },
    )
    changed = previous is None or (old_value, old_profile) != (
        change.value,
        values["monthly_profile"],
    )
    if changed and republish:
        await reactions.targets_changed(session, [(change.indicator, change.org_unit, change.year)])
    return TargetSet(target, previous is None, previous, changed)


async def remove_target(
    session: AsyncSession,
    actor: Principal,
    indicator: str,
    org_unit: str,
    year: int,
    *,
    republish: bool = True,
) -> Target:
    """Remove a target (404 ``target_not_found`` when there is none), audit it, and
    republish its figures (their target is gone; ``republish``: as :func:`set_target`)."""
    indicator_of(indicator)
    unit = await org_unit_of(session, org_unit)
    await ensure_may_steer(session, actor, unit)
    deleted: Target | None = await session.scalar(
        delete(Target)
        .where(Target.indicator == indicator, Target.org_unit == org_unit, Target.year == year)
        .returning(Target)
    )
    if deleted is None:
        raise TargetNotFound(
            f"No target of {indicator} for {org_unit} in {year}.",
            indicator=indicator,
            org_unit=org_unit,
            year=year,
        )
    await record_audit(
        session,
        actor,
        "target.deleted",
        f"target/{indicator}/{org_unit}/{year}",
        establishment=unit.finess,
        detail={"value": deleted.value, "source": deleted.source, "contract": deleted.contract},
    )
    if republish:
        await reactions.targets_changed(session, [(indicator, org_unit, year)])
    return deleted
