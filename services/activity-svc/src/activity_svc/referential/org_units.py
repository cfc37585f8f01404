"""The use cases of the referential: saving an org unit, setting a unit's installed beds.

Each checks the rights, applies the tree's rules (:mod:`.tree`), records the audit, adds
``ght.referential.orgunit.upserted`` when the org unit changed, and has the figures a
move in the tree (:func:`activity_svc.reactions.tree_changed`) or a change of installed
beds (:func:`activity_svc.reactions.capacity_changed`) moves republished. The routes of
``/org-units`` and the consumer of beds-svc's ``capacity.changed`` call them; so do the
tests and the demo.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from activity_svc import reactions
from activity_svc.access import ensure_may_write_org_unit
from activity_svc.errors import OrgUnitConflict, OrgUnitNotFound
from activity_svc.events import SOURCE
from activity_svc.models import OrgUnit, OrgUnitKind, OrgUnitVersion
from activity_svc.referential.tree import (
    OrgUnitChange,
    Upserted,
    cancel_planned_version,
    capacity_on,
    current_version,
    set_capacity,
    today,
    upsert_org_unit,
)
from ght_shared.audit import record_audit
from ght_shared.auth import Principal
from ght_shared.outbox import add_events


@dataclass(frozen=True)
class SaveOrgUnit:
    """What an org unit is to be from ``valid_from`` (today when None) on."""

    code: str
    kind: OrgUnitKind
    name: str
    parent: str | None
    valid_from: date | None = None
    uf: str | None = None
    specialty: str | None = None
    installed_beds: int | None = None
    active: bool = True
    keep_uf: bool = False
    """The request left ``uf`` out: an existing unit keeps its own."""
    keep_specialty: bool = False
    """The request left ``specialty`` out: an existing org unit keeps its own."""
    new_only: bool = False
    """Refuse (409) an org unit that exists already (``POST``)."""


async def save_org_unit(session: AsyncSession, actor: Principal, command: SaveOrgUnit) -> Upserted:
    """Create the org unit, or give it a new version; publish and audit what changed.

    403 for a write the actor may not make, 409 when it exists and ``new_only``, or when
    the change contradicts what cannot change; 422 for a rule of the tree broken.
    """
    existing = await session.get(OrgUnit, command.code)
    await ensure_may_write_org_unit(session, actor, existing, command.kind, command.parent)
    if existing is not None and command.new_only:
        raise OrgUnitConflict(
            f"Org unit {command.code} already exists; PUT /org-units/{command.code} changes it.",
            org_unit=command.code,
        )
    change = OrgUnitChange(
        code=command.code,
        kind=command.kind,
        name=command.name,
        parent=command.parent,
        valid_from=command.valid_from or today(),
        uf=existing.uf if existing is not None and command.keep_uf else command.uf,
        specialty=(
            existing.specialty
            if existing is not None and command.keep_specialty
            else command.specialty
        ),
        installed_beds=command.installed_beds,
        active=command.active,
    )
    move = await reactions.tree_changing(session, command.code, change.valid_from)
    try:
        upserted = await upsert_org_unit(session, change, actor.sub)
    except IntegrityError as exc:
        # Another request created the same code or UF code meanwhile.
        raise OrgUnitConflict(
            f"Org unit {command.code} (or its UF code) was written by another request; retry.",
            org_unit=command.code,
        ) from exc
    if upserted.changed:
        event = upserted.payload().event(source=SOURCE, establishment=upserted.unit.finess)
        await add_events(session, [event])
    if upserted.changed and not upserted.created:
        # A move (or a closing) changes the figures of the org units above, old and new.
        await reactions.tree_changed(session, move)
    if upserted.capacity_changed:
        await reactions.capacity_changed(session, command.code, change.valid_from)
    action = "created" if upserted.created else "changed" if upserted.changed else "unchanged"
    await record_audit(
        session,
        actor,
        f"org_unit.{action}",
        f"org_unit/{command.code}",
        establishment=upserted.unit.finess,
        detail={
            "kind": change.kind.value,
            "parent": change.parent,
            "name": change.name,
            "active": change.active,
            "valid_from": change.valid_from.isoformat(),
            "installed_beds": change.installed_beds,
        },
    )
    return upserted


async def cancel_planned_change(
    session: AsyncSession, actor: Principal, code: str, valid_from: date
) -> Upserted:
    """Cancel the version of ``code`` planned from ``valid_from``: the one before it holds
    on. Audited with what was planned; publishes the org unit as it now is and the figures
    the cancellation moves. 404 for no such version, 409 for one that has begun."""
    unit = await session.get(OrgUnit, code)
    if unit is None:
        raise OrgUnitNotFound(f"No org unit {code!r}.", org_unit=code)
    planned = await session.get(OrgUnitVersion, (code, valid_from))
    await ensure_may_write_org_unit(
        session, actor, unit, unit.kind, planned.parent if planned is not None else None
    )
    move = await reactions.tree_changing(session, code, valid_from)
    cancelled = await cancel_planned_version(session, code, valid_from)
    version = await current_version(session, code)
    assert version is not None  # the version before the cancelled one
    beds = await capacity_on(session, code, today()) if unit.kind is OrgUnitKind.UNIT else None
    upserted = Upserted(unit, version, created=False, changed=True, installed_beds=beds)
    await add_events(session, [upserted.payload().event(source=SOURCE, establishment=unit.finess)])
    await reactions.tree_changed(session, move)
    await record_audit(
        session,
        actor,
        "org_unit.plan_cancelled",
        f"org_unit/{code}",
        establishment=unit.finess,
        detail={
            "valid_from": cancelled.valid_from.isoformat(),
            "parent": cancelled.parent,
            "name": cancelled.name,
            "active": cancelled.active,
            "recorded_by": cancelled.recorded_by,
            "recorded_at": cancelled.recorded_at.isoformat(),
        },
    )
    return upserted


@dataclass(frozen=True)
class SetInstalledBeds:
    """A unit's installed beds from a day on, as beds-svc counts them."""

    unit: str
    """The unit's org code, or its UF code within ``establishment``."""
    establishment: str | None
    effective_from: date
    installed: int
    reference: str | None = None
    """What the count comes from (the event's id), for the audit trail."""


SOURCE_BEDS = "beds"
"""``unit_capacity.source`` of a count from beds-svc (``referential``: set on the unit)."""


async def set_installed_beds(
    session: AsyncSession, actor: Principal, command: SetInstalledBeds
) -> OrgUnit | None:
    """Record the unit's installed beds from ``effective_from`` and republish the figures
    they move; None when no unit of the establishment has that code (nothing written)."""
    unit = await _resolve_unit(session, command.unit, command.establishment)
    if unit is None:
        return None
    if await set_capacity(
        session, unit.code, command.effective_from, command.installed, SOURCE_BEDS
    ):
        await record_audit(
            session,
            actor,
            "org_unit.capacity_set",
            f"org_unit/{unit.code}",
            establishment=unit.finess,
            detail={
                "event": command.reference,
                "effective_from": command.effective_from.isoformat(),
                "installed_beds": command.installed,
            },
        )
        await reactions.capacity_changed(session, unit.code, command.effective_from)
    return unit


async def _resolve_unit(
    session: AsyncSession, reference: str, establishment: str | None
) -> OrgUnit | None:
    """The unit named by its org code, or else by its UF code in ``establishment``."""
    unit = await session.get(OrgUnit, reference)
    if (
        unit is not None
        and unit.kind is OrgUnitKind.UNIT
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
