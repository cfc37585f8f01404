"""Rules of the org-unit tree: dated versions, moves, and the membership they imply.

An org unit's identity (code, kind, establishment, UF code) never changes; what it is
attached to, its name and whether it is active change by **versions** with a date of
validity. A unit moving to another pôle closes its current version and opens a new
one: its past stays where it was ("as it was"), and today's tree can still be applied
to the past ("constant scope"). Both read ``org_unit_membership``, recomputed here for
the units below an org unit whenever that org unit changes.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from activity_svc.errors import InvalidInput, OrgUnitConflict, OrgUnitNotFound
from activity_svc.models import (
    OrgUnit,
    OrgUnitKind,
    OrgUnitMembership,
    OrgUnitVersion,
    UnitCapacity,
)
from ght_shared.identifiers import is_finess
from ght_shared.payloads.referential import OrgUnitUpserted

try:
    # The establishments' days: a version "from today" starts at midnight in France.
    LOCAL_TIME: tzinfo = ZoneInfo("Europe/Paris")
except ZoneInfoNotFoundError:  # an image without time zone data
    LOCAL_TIME = UTC


def local_date(moment: datetime) -> date:
    """The establishments' calendar day of ``moment`` (naive: taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(LOCAL_TIME).date()


def today() -> date:
    return local_date(datetime.now(UTC))


ALLOWED_PARENTS: dict[OrgUnitKind, frozenset[OrgUnitKind]] = {
    OrgUnitKind.TERRITORY: frozenset(),
    OrgUnitKind.ESTABLISHMENT: frozenset({OrgUnitKind.TERRITORY}),
    OrgUnitKind.SITE: frozenset({OrgUnitKind.ESTABLISHMENT}),
    OrgUnitKind.POLE: frozenset({OrgUnitKind.ESTABLISHMENT, OrgUnitKind.SITE}),
    OrgUnitKind.DEPARTMENT: frozenset({OrgUnitKind.POLE}),
    OrgUnitKind.UNIT: frozenset({OrgUnitKind.DEPARTMENT, OrgUnitKind.POLE}),
}


@dataclass(frozen=True)
class OrgUnitChange:
    """What a client asks an org unit to be from ``valid_from`` on."""

    code: str
    kind: OrgUnitKind
    name: str
    parent: str | None
    valid_from: date
    uf: str | None = None
    specialty: str | None = None
    installed_beds: int | None = None
    active: bool = True


@dataclass(frozen=True)
class Upserted:
    unit: OrgUnit
    version: OrgUnitVersion
    created: bool
    changed: bool
    """False when the org unit already was exactly this (nothing written, no event)."""
    installed_beds: int | None
    capacity_changed: bool = False
    """The unit's installed beds changed from the change's ``valid_from``."""

    def payload(self) -> OrgUnitUpserted:
        """The ``ght.referential.orgunit.upserted`` of the org unit as it now is."""
        return OrgUnitUpserted(
            code=self.unit.code,
            kind=self.unit.kind,
            name=self.version.name,
            parent=self.version.parent,
            finess=self.unit.finess,
            uf=self.unit.uf,
            specialty=self.unit.specialty,
            active=self.version.active,
            valid_from=self.version.valid_from,
            installed_beds=self.installed_beds,
        )


async def current_version(
    session: AsyncSession, code: str, at: date | None = None
) -> OrgUnitVersion | None:
    """The version of ``code`` valid on ``at`` (the latest one when ``at`` is None)."""
    query = select(OrgUnitVersion).where(OrgUnitVersion.code == code)
    if at is None:
        query = query.order_by(OrgUnitVersion.valid_from.desc()).limit(1)
    else:
        query = query.where(
            OrgUnitVersion.valid_from <= at,
            (OrgUnitVersion.valid_to.is_(None)) | (OrgUnitVersion.valid_to > at),
        )
    result: OrgUnitVersion | None = await session.scalar(query)
    return result


async def capacity_on(session: AsyncSession, unit: str, day: date) -> int | None:
    """Installed beds of ``unit`` on ``day`` (None when never given)."""
    beds: int | None = await session.scalar(
        select(UnitCapacity.installed_beds)
        .where(UnitCapacity.unit == unit, UnitCapacity.effective_from <= day)
        .order_by(UnitCapacity.effective_from.desc())
        .limit(1)
    )
    return beds


async def set_capacity(
    session: AsyncSession, unit: str, effective_from: date, installed_beds: int, source: str
) -> bool:
    """Record the installed beds of ``unit`` from ``effective_from``; False when unchanged."""
    if await capacity_on(session, unit, effective_from) == installed_beds:
        return False
    await session.merge(
        UnitCapacity(
            unit=unit,
            effective_from=effective_from,
            installed_beds=installed_beds,
            source=source,
        )
    )
    await session.flush()
    return True


async def upsert_org_unit(session: AsyncSession, change: OrgUnitChange, actor: str) -> Upserted:
    """Create the org unit, or give it a new version from ``change.valid_from``.

    Raises :class:`InvalidInput` (422) for a rule broken by the change itself and
    :class:`OrgUnitConflict` (409) for a change the current state refuses.
    """
    now = datetime.now(UTC)
    unit = await session.get(OrgUnit, change.code, with_for_update=True)
    parent_unit = await _parent_of(session, change)
    finess = _finess_of(change, parent_unit)
    if change.kind is OrgUnitKind.UNIT and not change.uf:
        raise InvalidInput("A unit needs its UF code.", field="uf", rule="required")
    if change.kind is not OrgUnitKind.UNIT and change.uf:
        raise InvalidInput("Only a unit has a UF code.", field="uf", rule="unit_only")
    if change.installed_beds is not None and change.kind is not OrgUnitKind.UNIT:
        raise InvalidInput(
            "Installed beds are given on a unit.", field="installed_beds", rule="unit_only"
        )

    created = unit is None
    if unit is None:
        if change.uf and await session.scalar(
            select(OrgUnit.code).where(OrgUnit.finess == finess, OrgUnit.uf == change.uf)
        ):
            raise OrgUnitConflict(
                f"UF {change.uf} already exists in establishment {finess}.", uf=change.uf
            )
        unit = OrgUnit(
            code=change.code,
            kind=change.kind,
            finess=finess,
            uf=change.uf,
            specialty=change.specialty,
            created_at=now,
            updated_at=now,
        )
        session.add(unit)
        await session.flush()
    else:
        _check_identity(unit, change, finess)

    if parent_unit is not None and not created:
        await _refuse_cycle(session, change.code, parent_unit.code)

    latest = await current_version(session, change.code)
    changed = created or unit.specialty != change.specialty
    unit.specialty = change.specialty
    if (
        latest is not None
        and latest.valid_from > today()
        and not _differs(latest, change)
        and change.valid_from != latest.valid_from
    ):
        # The planned version again, on another day: brought forward or postponed.
        await _reschedule(session, latest, change.valid_from, actor, now)
        changed = True
        version = latest
    elif latest is None or _differs(latest, change):
        changed = True
        if latest is None or change.valid_from > latest.valid_from:
            if latest is not None:
                latest.valid_to = change.valid_from
            version = OrgUnitVersion(
                code=change.code,
                valid_from=change.valid_from,
                valid_to=None,
                parent=change.parent,
                name=change.name,
                active=change.active,
                recorded_at=now,
                recorded_by=actor,
            )
            session.add(version)
        elif change.valid_from == latest.valid_from:
            version = latest
            version.parent, version.name, version.active = change.parent, change.name, change.active
            version.recorded_at, version.recorded_by = now, actor
        else:
            planned = (
                " It is planned: send it again with another valid_from to move it, or cancel"
                f" it (DELETE /org-units/{change.code}/versions/{latest.valid_from}) first."
                if latest.valid_from > today()
                else ""
            )
            raise InvalidInput(
                f"valid_from {change.valid_from} precedes the current version of {change.code}"
                f" (valid from {latest.valid_from}): history is not rewritten.{planned}",
                field="valid_from",
                rule="after_current_version",
            )
        await session.flush()
        await recompute_membership(session, change.code)
    else:
        version = latest

    beds = None
    capacity_changed = False
    if (
        unit.kind == OrgUnitKind.UNIT
        and not change.active
        and change.installed_beds is None
        and (await capacity_on(session, change.code, change.valid_from) or 0) > 0
    ):
        # A closed unit has no beds: they must not weigh in the occupancy rate after it.
        capacity_changed |= await set_capacity(
            session, change.code, change.valid_from, 0, "referential"
        )
    if change.installed_beds is not None:
        beds = change.installed_beds
        capacity_changed |= await set_capacity(
            session, change.code, change.valid_from, change.installed_beds, "referential"
        )
    elif unit.kind == OrgUnitKind.UNIT:
        beds = await capacity_on(session, change.code, change.valid_from)
    changed |= capacity_changed
    if changed:
        unit.updated_at = now
        await session.flush()
    return Upserted(unit, version, created, changed, beds, capacity_changed)


async def _previous_version(
    session: AsyncSession, version: OrgUnitVersion
) -> OrgUnitVersion | None:
    previous: OrgUnitVersion | None = await session.scalar(
        select(OrgUnitVersion).where(
            OrgUnitVersion.code == version.code, OrgUnitVersion.valid_to == version.valid_from
        )
    )
    return previous


async def _reschedule(
    session: AsyncSession, planned: OrgUnitVersion, day: date, actor: str, now: datetime
) -> None:
    """Move a planned version to ``day``: from today on, after the version before it."""
    if day < today():
        raise InvalidInput(
            f"A planned version can be brought forward to today at the earliest, not {day}:"
            " history is not rewritten.",
            field="valid_from",
            rule="not_before_today",
        )
    previous = await _previous_version(session, planned)
    if previous is not None and day <= previous.valid_from:
        raise InvalidInput(
            f"valid_from {day} is not after the version before the planned one (valid from"
            f" {previous.valid_from}).",
            field="valid_from",
            rule="after_previous_version",
        )
    if previous is not None:
        previous.valid_to = day
    planned.valid_from = day
    planned.recorded_at, planned.recorded_by = now, actor
    await session.flush()
    await recompute_membership(session, planned.code)


async def cancel_planned_version(
    session: AsyncSession, code: str, valid_from: date
) -> OrgUnitVersion:
    """Cancel the version of ``code`` planned from ``valid_from`` (the one before it holds
    on); return the cancelled version's content. 404 without such a version, 409 when it
    is not planned (history is not rewritten) or is the org unit's only one."""
    version = await session.get(OrgUnitVersion, (code, valid_from), with_for_update=True)
    if version is None:
        raise OrgUnitNotFound(
            f"{code} has no version from {valid_from}.", org_unit=code, valid_from=str(valid_from)
        )
    if valid_from <= today():
        raise OrgUnitConflict(
            f"The version of {code} from {valid_from} has begun: only a planned version can be"
            " cancelled, history is not rewritten.",
            field="valid_from",
        )
    previous = await _previous_version(session, version)
    if previous is None:
        raise OrgUnitConflict(
            f"{code} has no version before {valid_from} to fall back on.", field="valid_from"
        )
    previous.valid_to = version.valid_to
    await session.delete(version)
    await session.flush()
    await recompute_membership(session, code)
    return version


async def _parent_of(session: AsyncSession, change: OrgUnitChange) -> OrgUnit | None:
    allowed = ALLOWED_PARENTS[change.kind]
    if change.parent is None:
        if allowed:
            kinds = ", ".join(sorted(allowed))
            raise InvalidInput(
                f"A {change.kind} needs a parent ({kinds}).", field="parent", rule="required"
            )
        return None
    if change.parent == change.code:
        raise InvalidInput("An org unit cannot be its own parent.", field="parent", rule="cycle")
    parent = await session.get(OrgUnit, change.parent)
    if parent is None:
        raise InvalidInput(f"Parent {change.parent} does not exist.", field="parent", rule="exists")
    if parent.kind not in allowed:
        kinds = ", ".join(sorted(allowed)) or "none"
        raise InvalidInput(
            f"A {change.kind} cannot be placed under a {parent.kind} (allowed: {kinds}).",
            field="parent",
            rule="allowed_parent_kind",
        )
    parent_version = await current_version(session, parent.code, change.valid_from)
    if parent_version is None:
        raise InvalidInput(
            f"Parent {parent.code} does not exist on {change.valid_from}.",
            field="valid_from",
            rule="parent_valid",
        )
    return parent


def _finess_of(change: OrgUnitChange, parent: OrgUnit | None) -> str | None:
    if change.kind is OrgUnitKind.TERRITORY:
        return None
    if change.kind is OrgUnitKind.ESTABLISHMENT:
        if not is_finess(change.code):
            raise InvalidInput(
                "An establishment's code is its FINESS number: 9 digits (département,"
                " number, Luhn key).",
                field="code",
                rule="finess",
            )
        return change.code
    assert parent is not None
    return parent.finess


def _check_identity(unit: OrgUnit, change: OrgUnitChange, finess: str | None) -> None:
    if unit.kind != change.kind:
        raise OrgUnitConflict(
            f"{unit.code} is a {unit.kind}; its kind cannot change.", field="kind"
        )
    if unit.finess != finess:
        raise OrgUnitConflict(
            f"{unit.code} belongs to establishment {unit.finess}; it cannot move to another"
            " establishment.",
            field="parent",
        )
    if unit.uf != change.uf:
        raise OrgUnitConflict(
            f"{unit.code} has UF code {unit.uf}; a UF code cannot change.", field="uf"
        )


def _differs(version: OrgUnitVersion, change: OrgUnitChange) -> bool:
    return (version.parent, version.name, version.active) != (
        change.parent,
        change.name,
        change.active,
    )


async def _refuse_cycle(session: AsyncSession, code: str, new_parent: str) -> None:
    ancestors = await ancestors_of(session, new_parent)
    if code in ancestors:
        raise InvalidInput(
            f"{new_parent} is below {code}: the move would make a cycle.",
            field="parent",
            rule="cycle",
        )


async def ancestors_of(session: AsyncSession, code: str) -> list[str]:
    """``code`` and its ancestors in today's tree, nearest first."""
    chain = [code]
    seen = {code}
    while True:
        version = await current_version(session, chain[-1])
        if version is None or version.parent is None or version.parent in seen:
            return chain
        chain.append(version.parent)
        seen.add(version.parent)


# --- membership -----------------------------------------------------------------------

_END = date.max


@dataclass(frozen=True)
class _Span:
    ancestor: str
    depth: int
    start: date
    end: date


async def recompute_membership(session: AsyncSession, code: str) -> None:
    """Recompute the membership of every unit that is, was, or now is below ``code``."""
    previously_below = set(
        (
            await session.scalars(
                select(OrgUnitMembership.unit).where(OrgUnitMembership.ancestor == code)
            )
        ).all()
    )
    versions = (await session.scalars(select(OrgUnitVersion))).all()
    kinds = dict((await session.execute(select(OrgUnit.code, OrgUnit.kind))).all())
    by_code: dict[str, list[OrgUnitVersion]] = defaultdict(list)
    for version in versions:
        by_code[version.code].append(version)
    # Changing `code` moves its whole subtree with it: the units below it are the same
    # before and after, and none other is affected.
    units = previously_below | ({code} if kinds.get(code) == "unit" else set())
    spans_by_unit = {unit: membership_spans(unit, by_code) for unit in units}
    if not units:
        return
    await session.execute(delete(OrgUnitMembership).where(OrgUnitMembership.unit.in_(units)))
    rows = [
        {
            "unit": unit,
            "ancestor": span.ancestor,
            "valid_from": span.start,
            "valid_to": None if span.end == _END else span.end,
            "depth": span.depth,
        }
        for unit, spans in spans_by_unit.items()
        for span in spans
    ]
    if rows:
        await session.execute(insert(OrgUnitMembership), rows)


def membership_spans(unit: str, by_code: dict[str, list[OrgUnitVersion]]) -> list[_Span]:
    """Which org units ``unit`` rolls up to, over which dates (adjacent spans merged)."""
    raw: list[_Span] = []

    def walk(code: str, depth: int, start: date, end: date, seen: frozenset[str]) -> None:
        if code in seen:
            return  # a cycle cannot be written; stay safe on reading
        for version in by_code.get(code, ()):
            lo = max(start, version.valid_from)
            hi = min(end, version.valid_to or _END)
            if lo >= hi:
                continue
            raw.append(_Span(code, depth, lo, hi))
            if version.parent is not None:
                walk(version.parent, depth + 1, lo, hi, seen | {code})

    walk(unit, 0, date.min, _END, frozenset())
    raw.sort(key=lambda s: (s.ancestor, s.depth, s.start))
    merged: list[_Span] = []
    for span in raw:
        last = merged[-1] if merged else None
        if (
            last is not None
            and (last.ancestor, last.depth) == (span.ancestor, span.depth)
            and last.end == span.start
        ):
            merged[-1] = _Span(span.ancestor, span.depth, last.start, span.end)
        else:
            merged.append(span)
    # "As it was" reads each month's tree on its first day. A unit created on the 15th
    # takes records from that day: its first month counts where it was created.
    created = min((v.valid_from for v in by_code.get(unit, ())), default=None)
    if created is not None and created.day != 1:
        month_start = created.replace(day=1)
        merged = [
            _Span(s.ancestor, s.depth, month_start, s.end) if s.start == created else s
            for s in merged
        ]
    return merged
