"""Targets from contracts-svc: a signed or amended contract's objectives become targets.

contracts-svc does not exist yet; this is the payload expected in ``data`` of
``ght.contracts.contract.signed`` and ``ght.contracts.contract.amended`` (EVENTS.md:
contract id, kind, parties, period, objectives)::

    {
        "contract": "<contract id>",
        "kind": "pole_contract",
        "parties": [...],
        "period": {"start": "2026-01-01", "end": "2026-12-31"},   # or "year": 2026
        "objectives": [
            {
                "objective": "<objective id>",
                "indicator": "stays_full",          # a code of the catalogue
                "org_unit": "CHU-MED",
                "target": 1234.0,
                "floor": 1100.0, "stretch": 1300.0, "direction": "...", "weight": 0.2,
                "monthly_profile": [12 weights summing to 1]            # optional
            }
        ]
    }

``id`` is accepted for ``contract`` and ``value`` for ``target``; other fields are
ignored (consumers ignore what they do not know). Each objective gives the target of
its indicator and org unit for every year the period touches (source ``contract``).
An objective this service cannot apply (unknown indicator or org unit, a value its
indicator cannot have) is logged and skipped: one bad objective never blocks the
others. An event whose contract, period or objectives cannot be read raises, so the
consumer retries it and then dead-letters it.

The objectives and period of the latest event are the contract's targets: a target
still held by the contract that they no longer name (an objective or a year dropped by
an amendment) is removed.
A target written by hand since then is not the contract's any more and stays.

The targets set (with a new value or profile) or removed republish their figures and
re-evaluate the alert rules on them, as a ``PUT /targets`` does.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from activity_svc.indicators.changes import publish_target_changes
from activity_svc.models import Target
from activity_svc.steering.targets import (
    FIRST_YEAR,
    LAST_YEAR,
    TargetChange,
    TargetSource,
    delete_target,
    set_target,
)
from ght_shared.errors import DomainError
from ght_shared.events import Event

_log = logging.getLogger(__name__)


class UnreadableContract(ValueError):
    """The event does not say which contract, which years or which objectives."""


async def on_contract_signed(session: AsyncSession, event: Event) -> None:
    """Set the targets of a signed (or amended) contract's objectives."""
    data = event.data
    contract = _contract_id(data)
    years = _years(data)
    objectives = data.get("objectives")
    if objectives is None:
        objectives = []
    if not isinstance(objectives, list):
        raise UnreadableContract("'objectives' is not a list")
    actor = event.source
    named: set[tuple[str, str]] = set()
    changed: set[tuple[str, str, int]] = set()
    applied = 0
    for position, objective in enumerate(objectives):
        if not isinstance(objective, Mapping):
            _skip(contract, position, objective, "not an object")
            continue
        indicator, org_unit = objective.get("indicator"), objective.get("org_unit")
        if isinstance(indicator, str) and isinstance(org_unit, str):
            named.add((indicator, org_unit))
        try:
            changes = _changes(contract, objective, years)
            for change in changes:
                if (await set_target(session, change, actor)).changed:
                    changed.add((change.indicator, change.org_unit, change.year))
        except (DomainError, ValueError, TypeError) as exc:
            # Checked before anything is written: a skipped objective leaves no trace.
            _skip(contract, position, objective, str(exc))
            continue
        applied += 1
    removed = await _remove_dropped(session, contract, named, years, actor)
    await publish_target_changes(session, changed | removed)
    _log.info(
        "contract targets applied",
        extra={
            "contract": contract,
            "event_type": event.type,
            "objectives": len(objectives),
            "applied": applied,
            "removed": len(removed),
        },
    )


def _contract_id(data: Mapping[str, Any]) -> str:
    contract = data.get("contract", data.get("id"))
    if isinstance(contract, int) and not isinstance(contract, bool):
        contract = str(contract)
    if not isinstance(contract, str) or not contract.strip() or "\x00" in contract:
        raise UnreadableContract("no contract id ('contract')")
    return contract.strip()


def _years(data: Mapping[str, Any]) -> range:
    """The calendar years the contract's period touches."""
    period = data.get("period")
    year = data.get("year")
    if isinstance(period, Mapping):
        try:
            start = date.fromisoformat(str(period["start"])[:10])
            end = date.fromisoformat(str(period["end"])[:10])
        except (KeyError, ValueError) as exc:
            raise UnreadableContract(f"unreadable period {period!r}") from exc
        if end < start:
            raise UnreadableContract(f"the period ends ({end}) before it starts ({start})")
        first, last = start.year, end.year
    elif isinstance(year, int) and not isinstance(year, bool):
        first = last = year
    elif isinstance(period, int | str) and str(period).isdigit() and len(str(period)) == 4:
        first = last = int(period)
    else:
        raise UnreadableContract("no period ({'start', 'end'}) nor year")
    if first < FIRST_YEAR or last > LAST_YEAR:
        raise UnreadableContract(
            f"the period {first}-{last} is not within {FIRST_YEAR}-{LAST_YEAR}"
        )
    return range(first, last + 1)


def _changes(
    contract: str, objective: Mapping[str, Any], years: Iterable[int]
) -> list[TargetChange]:
    indicator, org_unit = objective.get("indicator"), objective.get("org_unit")
    if not isinstance(indicator, str) or not isinstance(org_unit, str):
        raise ValueError("no indicator or org_unit")
    value = objective.get("target", objective.get("value"))
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"target {value!r} is not a number")
    profile = objective.get("monthly_profile")
    if profile is not None:
        if not isinstance(profile, list) or not all(
            isinstance(w, int | float) and not isinstance(w, bool) for w in profile
        ):
            raise ValueError("monthly_profile is not a list of numbers")
        profile = tuple(float(w) for w in profile)
    return [
        TargetChange(
            indicator=indicator,
            org_unit=org_unit,
            year=year,
            value=float(value),
            monthly_profile=profile,
            source=TargetSource.CONTRACT,
            contract=contract,
        )
        for year in years
    ]


async def _remove_dropped(
    session: AsyncSession,
    contract: str,
    named: set[tuple[str, str]],
    years: range,
    actor: str,
) -> set[tuple[str, str, int]]:
    """Remove the contract's targets no objective of the period names any more; return
    their (indicator, org unit, year)."""
    held = await session.execute(
        select(Target.indicator, Target.org_unit, Target.year).where(
            Target.source == TargetSource.CONTRACT.value, Target.contract == contract
        )
    )
    removed: set[tuple[str, str, int]] = set()
    for indicator, org_unit, year in held.all():
        if (indicator, org_unit) not in named or year not in years:
            await delete_target(session, indicator, org_unit, year, actor)
            removed.add((indicator, org_unit, year))
    return removed


def _skip(contract: str, position: int, objective: object, reason: str) -> None:
    _log.warning(
        "contract objective skipped",
        extra={
            "contract": contract,
            "position": position,
            "objective": objective.get("objective") if isinstance(objective, Mapping) else None,
            "reason": reason,
        },
    )
