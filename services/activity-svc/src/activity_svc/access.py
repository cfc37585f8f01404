"""Who may read and write what in activity-svc, on top of the scope checks.

- Reading the referential needs ``activity:read``.
- Reading figures (indicators, dashboards, records, imports, alerts) of an org unit
  needs ``activity:read`` and the right to act for its establishment; the territory
  root's figures are for territorial principals only.
- Writing records needs ``activity:write`` and each record's establishment; an import's
  report is read by territorial principals, its submitter and the principals of an
  establishment it wrote records for (any other: 404, as if there were none).
- Writing the referential needs ``activity:write``: an establishment's tree for its
  own principals; the territory and its establishments for territorial principals only.
- Targets and alert rules are steering decisions: ``activity:write`` or
  ``contracts:write`` (direction, chefs de pôle and cadres de gestion negotiate them),
  and the org unit's establishment; a chef de pôle or cadre de gestion (role
  ``pole_manager`` alone) steers their own pôle (the token's ``pole``) and below only.
  They read the whole establishment's figures, as the dialogue de gestion shares them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import Depends
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from activity_svc.lookups import subtree
from activity_svc.models import OrgUnit, OrgUnitKind, RecordImport
from ght_shared.auth import AUTH_RESPONSES as AUTH_RESPONSES
from ght_shared.auth import Principal, ensure_establishment, require_scope
from ght_shared.errors import Forbidden

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "Unknown resource."}}

POLE_MANAGER = "pole_manager"
_ESTABLISHMENT_WIDE = frozenset({"admin", "direction", "it_system"})

READ = "activity:read"
WRITE = "activity:write"
STEER = ("activity:write", "contracts:write")


Reader = Annotated[Principal, Depends(require_scope(READ))]
Writer = Annotated[Principal, Depends(require_scope(WRITE))]
Steerer = Annotated[Principal, Depends(require_scope(*STEER))]


def ensure_may_read(principal: Principal, finess: str | None) -> None:
    """Refuse (403) figures of an establishment, or of the territory (``finess`` None)."""
    if finess is None:
        if not principal.is_territorial:
            raise Forbidden("Territory-wide figures are for territorial roles only.")
        return
    ensure_establishment(principal, finess)


def may_read(principal: Principal, finess: str | None) -> bool:
    """Whether the figures of an establishment (the territory's: None) are the principal's
    to read, for a lookup that answers 404 rather than 403."""
    return principal.is_territorial if finess is None else principal.may_act_for(finess)


def ensure_may_write(principal: Principal, finess: str | None) -> None:
    """Refuse (403) a write for an establishment, or for the territory (``finess`` None)."""
    ensure_may_read(principal, finess)


def is_pole_bound(principal: Principal) -> bool:
    """A chef de pôle or cadre de gestion with no establishment-wide role: their steering
    is limited to their pôle."""
    roles = set(principal.roles)
    return POLE_MANAGER in roles and not roles & _ESTABLISHMENT_WIDE


async def ensure_may_steer(session: AsyncSession, principal: Principal, unit: OrgUnit) -> None:
    """Refuse (403) a steering write (a target, an alert rule, an acknowledgement) on
    ``unit``: its establishment's principals may; a chef de pôle or cadre de gestion, on
    their own pôle and what is below it only."""
    ensure_may_write(principal, unit.finess)
    if not is_pole_bound(principal):
        return
    if principal.pole is not None:
        pole = subtree(principal.pole).subquery()
        if await session.scalar(select(pole.c.code).where(pole.c.code == unit.code).limit(1)):
            return
    raise Forbidden(
        f"A pôle manager steers their own pôle ({principal.pole or 'none in the token'})"
        f" and what is below it: {unit.code} is not in it.",
        org_unit=unit.code,
    )


_TERRITORIAL_KINDS = frozenset({OrgUnitKind.TERRITORY, OrgUnitKind.ESTABLISHMENT})


async def ensure_may_write_org_unit(
    session: AsyncSession,
    principal: Principal,
    existing: OrgUnit | None,
    kind: OrgUnitKind,
    parent: str | None,
) -> None:
    """Refuse (403) a write of the referential the principal may not make.

    The territory and establishments are territorial decisions; below an establishment,
    the principal must act for the org unit's establishment and, for a move, for the
    establishment of the new parent.
    """
    kinds = {kind} | ({existing.kind} if existing is not None else set())
    if kinds & _TERRITORIAL_KINDS:
        ensure_may_write(principal, None)
        return
    establishments: set[str] = set()
    if existing is not None and existing.finess is not None:
        establishments.add(existing.finess)
    if parent is not None:
        parent_unit = await session.get(OrgUnit, parent)
        # An unknown parent, or one that cannot hold this kind, is the tree's to refuse (422).
        if parent_unit is not None and parent_unit.finess is not None:
            establishments.add(parent_unit.finess)
    for finess in sorted(establishments):
        ensure_may_write(principal, finess)


def ensure_may_write_records(principal: Principal, establishments: Iterable[str]) -> None:
    """Refuse (403, nothing written) records of an establishment the principal does not act
    for: an establishment's system writes its own establishment's records only."""
    forbidden = sorted(f for f in establishments if not principal.may_act_for(f))
    if forbidden:
        raise Forbidden(
            f"Not allowed to write records for establishment {', '.join(forbidden)}: an"
            " establishment's system writes its own establishment's records only.",
            establishments=forbidden,
        )


def may_read_import(principal: Principal, report: RecordImport) -> bool:
    """An import's report is for territorial principals, its submitter, and the principals
    of an establishment it wrote records for."""
    return (
        principal.is_territorial
        or report.submitted_by == principal.sub
        or bool(set(report.establishments) & set(principal.establishments))
    )
