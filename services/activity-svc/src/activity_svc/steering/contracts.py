"""Targets from contracts-svc: a signed or amended contract's objectives become targets.

The events are ``ght.contracts.contract.signed`` and ``.amended`` (their consumer is in
:mod:`activity_svc.consumers`), whose ``data`` is
:class:`ght_shared.payloads.contracts.ContractSigned` (or ``ContractAmended``, the same
terms): the contract's id, period and objectives. An event whose data does not fit the
model raises :class:`~ght_shared.payloads.UnreadablePayload` and is dead-lettered at once.

Each objective gives the target of its indicator and org unit for every year the period
touches (source ``contract``). An objective this service cannot apply (unknown
indicator or org unit, a value its indicator cannot have) is logged and skipped: one
objective the domain refuses never blocks the others (an objective whose shape does not
fit the model makes the whole event unreadable: its producer is broken). A period outside
the years targets may have (:data:`~activity_svc.steering.targets.FIRST_YEAR` to
``LAST_YEAR``) makes the event unreadable (:class:`UnreadableContract`).

The objectives and period of the latest event are the contract's targets: a target
still held by the contract that they no longer name (an objective or a year dropped by
an amendment) is removed. A target written by hand since then is not the contract's any
more and stays.

Each target is set or removed through the use cases of ``PUT`` and ``DELETE /targets``
(:mod:`activity_svc.steering.targets`, audited with the producing service as the actor);
the figures of all the targets that moved are then republished, and the alert rules
re-evaluated on them, at once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from activity_svc import reactions
from activity_svc.models import Target, TargetSource
from activity_svc.steering.targets import (
    FIRST_YEAR,
    LAST_YEAR,
    TargetChange,
    remove_target,
    set_target,
)
from ght_shared.auth import Principal
from ght_shared.errors import DomainError
from ght_shared.payloads import UnreadablePayload
from ght_shared.payloads.contracts import (
    ContractAmended,
    ContractObjective,
    ContractPeriod,
    ContractSigned,
)

_log = logging.getLogger(__name__)


class UnreadableContract(UnreadablePayload):
    """The contract's period lies outside the years a target may have."""


async def apply_contract(
    session: AsyncSession, actor: Principal, terms: ContractSigned | ContractAmended
) -> None:
    """Make a signed or amended contract's objectives its targets, and remove those it no
    longer names (each through the target use cases: audit, figures, alert rules)."""
    years = _years(terms.period)
    named: set[tuple[str, str]] = set()
    changed: set[tuple[str, str, int]] = set()
    applied = 0
    for position, objective in enumerate(terms.objectives):
        named.add((objective.indicator, objective.org_unit))
        try:
            for change in _changes(terms.contract, objective, years):
                if (await set_target(session, actor, change, republish=False)).changed:
                    changed.add((change.indicator, change.org_unit, change.year))
        except DomainError as exc:
            # Checked before anything is written: a skipped objective leaves no trace.
            _skip(terms.contract, position, objective, str(exc))
            continue
        applied += 1
    removed = await _remove_dropped(session, actor, terms.contract, named, years)
    # One republication for the whole contract, not one per target.
    await reactions.targets_changed(session, changed | removed)
    _log.info(
        "contract targets applied",
        extra={
            "contract": terms.contract,
            "event_type": terms.EVENT_TYPE,
            "objectives": len(terms.objectives),
            "applied": applied,
            "removed": len(removed),
        },
    )


def _years(period: ContractPeriod) -> range:
    """The calendar years the contract's period touches."""
    first, last = period.start.year, period.end.year
    if first < FIRST_YEAR or last > LAST_YEAR:
        raise UnreadableContract(
            f"the period {first}-{last} is not within {FIRST_YEAR}-{LAST_YEAR}"
        )
    return range(first, last + 1)


def _changes(
    contract: str, objective: ContractObjective, years: Iterable[int]
) -> list[TargetChange]:
    profile = tuple(objective.monthly_profile) if objective.monthly_profile is not None else None
    return [
        TargetChange(
            indicator=objective.indicator,
            org_unit=objective.org_unit,
            year=year,
            value=objective.target,
            monthly_profile=profile,
            source=TargetSource.CONTRACT,
            contract=contract,
        )
        for year in years
    ]


async def _remove_dropped(
    session: AsyncSession,
    actor: Principal,
    contract: str,
    named: set[tuple[str, str]],
    years: range,
) -> set[tuple[str, str, int]]:
    """Remove the contract's targets no objective of the period names any more; return
    their (indicator, org unit, year)."""
    held = await session.execute(
        select(Target.indicator, Target.org_unit, Target.year).where(
            Target.source == TargetSource.CONTRACT, Target.contract == contract
        )
    )
    removed: set[tuple[str, str, int]] = set()
    for indicator, org_unit, year in held.all():
        if (indicator, org_unit) not in named or year not in years:
            await remove_target(session, actor, indicator, org_unit, year, republish=False)
            removed.add((indicator, org_unit, year))
    return removed


def _skip(contract: str, position: int, objective: ContractObjective, reason: str) -> None:
    _log.warning(
        "contract objective skipped",
        extra={
            "contract": contract,
            "position": position,
            "objective": objective.objective,
            "reason": reason,
        },
    )
