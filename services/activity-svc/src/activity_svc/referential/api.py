"""Routes of the territory referential: the dated org-unit tree (``/org-units``).

Reads need ``activity:read``; writes need ``activity:write`` and the right to act for
the org unit's establishment (the territory and its establishments: territorial
principals only). Every change publishes ``ght.referential.orgunit.upserted``; a change
of a unit's installed beds also the occupancy figures it changes.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from sqlalchemy import ColumnElement, Select, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from activity_svc.access import Reader, Writer
from activity_svc.errors import InvalidInput, OrgUnitNotFound
from activity_svc.models import OrgUnit, OrgUnitKind, OrgUnitVersion, UnitCapacity
from activity_svc.referential.org_units import SaveOrgUnit, cancel_planned_change, save_org_unit
from activity_svc.referential.schemas import (
    CODE_PATTERN,
    TEXT_PATTERN,
    CapacityRead,
    OrgUnitCreate,
    OrgUnitHistory,
    OrgUnitNode,
    OrgUnitRead,
    OrgUnitVersionRead,
    OrgUnitWrite,
)
from activity_svc.referential.tree import capacity_on, today
from ght_shared.db import SessionDep
from ght_shared.identifiers import Finess
from ght_shared.pagination import Cursor, Limit, Page, decode_cursor
from ght_shared.schemas import IsoDate

router = APIRouter(
    prefix="/org-units",
    tags=["referential"],
    responses={
        401: {"description": "No valid bearer token (`unauthenticated`)."},
        403: {"description": "The token lacks the scope or the establishment (`forbidden`)."},
    },
)

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such org unit on that day (`org_unit_not_found`)."}
}
_WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    409: {
        "description": "The org unit exists (POST), or the change contradicts what cannot"
        " change: kind, establishment, UF code (`org_unit_conflict`)."
    },
    422: {
        "description": "A field breaks a rule: pattern, FINESS, unknown or wrong kind of"
        " parent, cycle, history rewrite (`validation_failed`, `invalid_input`)."
    },
}

CodePath = Annotated[str, Path(pattern=CODE_PATTERN, description="The org unit's code.")]
AtQuery = Annotated[
    IsoDate | None,
    Query(description="The day to read the tree as it was (YYYY-MM-DD); default today."),
]


# --- reads ----------------------------------------------------------------------------


@router.get("", summary="List org units as they were on a day", response_model=Page[OrgUnitRead])
async def list_org_units(
    _: Reader,
    session: SessionDep,
    kind: Annotated[OrgUnitKind | None, Query(description="Only this kind.")] = None,
    parent: Annotated[
        str | None,
        Query(pattern=CODE_PATTERN, description="Only the direct children of this code."),
    ] = None,
    finess: Annotated[Finess | None, Query(description="Only this establishment's.")] = None,
    q: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=100,
            pattern=TEXT_PATTERN,
            description="Code or name contains (any case).",
        ),
    ] = None,
    at: AtQuery = None,
    include_inactive: Annotated[
        bool, Query(description="Also the org units closed (inactive) on that day.")
    ] = False,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[OrgUnitRead]:
    day = at or today()
    query = _units_on(day, include_inactive)
    if kind is not None:
        query = query.where(OrgUnit.kind == kind)
    if parent is not None:
        query = query.where(OrgUnitVersion.parent == parent)
    if finess is not None:
        query = query.where(OrgUnit.finess == finess)
    if q is not None:
        pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(
            or_(
                OrgUnit.code.ilike(pattern, escape="\\"),
                OrgUnitVersion.name.ilike(pattern, escape="\\"),
            )
        )
    if cursor is not None:
        (after,) = decode_cursor(cursor, str)
        query = query.where(OrgUnit.code > after)
    rows = (await session.execute(query.order_by(OrgUnit.code).limit(limit + 1))).all()
    return Page.of(rows, limit, key=lambda row: (row[0].code,), read=lambda row: _read(*row))


@router.get("/{code}", summary="One org unit", response_model=OrgUnitRead, responses=_NOT_FOUND)
async def read_org_unit(
    code: CodePath, _: Reader, session: SessionDep, at: AtQuery = None
) -> OrgUnitRead:
    """The org unit on ``at``; without ``at``, today's version (or, for an org unit planned
    to open later, its first version)."""
    unit, version = await _unit_and_version(session, code, at)
    beds = await capacity_on(session, code, max(at or today(), version.valid_from))
    return _read(unit, version, beds)


@router.get(
    "/{code}/tree",
    summary="The tree below an org unit as it was on a day",
    response_model=OrgUnitNode,
    responses=_NOT_FOUND,
)
async def read_tree(
    code: CodePath,
    _: Reader,
    session: SessionDep,
    at: AtQuery = None,
    depth: Annotated[
        int | None,
        Query(ge=0, le=10, description="Levels below the org unit to include; default all."),
    ] = None,
    include_inactive: Annotated[
        bool, Query(description="Also the org units closed (inactive) on that day.")
    ] = False,
) -> OrgUnitNode:
    day = at or today()
    rows = (await session.execute(_units_on(day, include_inactive))).all()
    nodes = {
        unit.code: OrgUnitNode(**_read(unit, ver, beds).model_dump()) for unit, ver, beds in rows
    }
    root = nodes.get(code)
    if root is None:
        raise _not_found(code, day)
    children: dict[str, list[OrgUnitNode]] = defaultdict(list)
    for node in sorted(nodes.values(), key=lambda n: n.code):
        if node.parent is not None:
            children[node.parent].append(node)

    def attach(node: OrgUnitNode, level: int, seen: frozenset[str]) -> None:
        if depth is not None and level >= depth:
            return
        for child in children.get(node.code, ()):
            if child.code not in seen:  # a cycle cannot be written; stay safe on reading
                node.children.append(child)
                attach(child, level + 1, seen | {child.code})

    attach(root, 0, frozenset({code}))
    return root


@router.get(
    "/{code}/history",
    summary="Every version of an org unit: moves, renames, closures, capacity",
    response_model=OrgUnitHistory,
    responses=_NOT_FOUND,
)
async def read_history(code: CodePath, _: Reader, session: SessionDep) -> OrgUnitHistory:
    unit = await session.get(OrgUnit, code)
    if unit is None:
        raise OrgUnitNotFound(f"No org unit {code}.", org_unit=code)
    versions = (
        await session.scalars(
            select(OrgUnitVersion)
            .where(OrgUnitVersion.code == code)
            .order_by(OrgUnitVersion.valid_from)
        )
    ).all()
    capacity = (
        await session.scalars(
            select(UnitCapacity)
            .where(UnitCapacity.unit == code)
            .order_by(UnitCapacity.effective_from)
        )
    ).all()
    previous: OrgUnitVersion | None = None
    reads = []
    for version in versions:
        reads.append(
            OrgUnitVersionRead(
                valid_from=version.valid_from,
                valid_to=version.valid_to,
                parent=version.parent,
                name=version.name,
                active=version.active,
                changes=_changes(previous, version),
                recorded_at=version.recorded_at,
                recorded_by=version.recorded_by,
            )
        )
        previous = version
    return OrgUnitHistory(
        code=unit.code,
        kind=unit.kind,
        finess=unit.finess,
        uf=unit.uf,
        specialty=unit.specialty,
        versions=reads,
        capacity=[
            CapacityRead(
                effective_from=row.effective_from,
                installed_beds=row.installed_beds,
                source=row.source,
            )
            for row in capacity
        ],
    )


# --- writes ---------------------------------------------------------------------------


@router.post(
    "",
    status_code=201,
    summary="Create an org unit",
    response_model=OrgUnitRead,
    responses={201: {"headers": {"Location": {"schema": {"type": "string"}}}}, **_WRITE_ERRORS},
)
async def create_org_unit(
    body: OrgUnitCreate, principal: Writer, session: SessionDep, response: Response
) -> OrgUnitRead:
    """Create an org unit; 409 when the code exists (use PUT to change it).

    ``Location`` is a reference relative to this URL (``org-units/{code}``), so that it
    resolves both on the service and through the gateway's ``/api/activity`` prefix.
    """
    upserted = await save_org_unit(session, principal, _command(body.code, body, new_only=True))
    response.headers["Location"] = f"org-units/{body.code}"
    return _read(upserted.unit, upserted.version, upserted.installed_beds)


@router.put(
    "/{code}",
    summary="Create an org unit or give it a new version (move, rename, close)",
    response_model=OrgUnitRead,
    responses={
        200: {"description": "The org unit existed: changed, or already so (nothing written)."},
        201: {"description": "The org unit was created."},
        **_WRITE_ERRORS,
    },
)
async def put_org_unit(
    code: CodePath, body: OrgUnitWrite, principal: Writer, session: SessionDep, response: Response
) -> OrgUnitRead:
    """What the org unit is from ``valid_from`` (default today) on.

    A different parent, name or ``active`` closes the current version on ``valid_from``
    and opens a new one: the past stays where it was (``/history``). ``uf`` and
    ``specialty`` omitted on an existing org unit keep their values. Sending what the org
    unit already is changes nothing and publishes no event.
    """
    if body.code is not None and body.code != code:
        raise InvalidInput(
            f"The body's code {body.code} differs from the path's {code}.",
            field="code",
            rule="matches_path",
        )
    upserted = await save_org_unit(session, principal, _command(code, body))
    if upserted.created:
        response.status_code = 201
        response.headers["Location"] = code
    return _read(upserted.unit, upserted.version, upserted.installed_beds)


@router.delete(
    "/{code}/versions/{valid_from}",
    summary="Cancel a planned version (a move, a rename, a closing still to come)",
    response_model=OrgUnitRead,
    responses={
        404: {"description": "No such org unit or version (`org_unit_not_found`)."},
        409: {"description": "The version has begun: history is not rewritten."},
    },
)
async def delete_planned_version(
    code: CodePath,
    valid_from: Annotated[IsoDate, Path(description="The planned version's first day.")],
    principal: Writer,
    session: SessionDep,
) -> OrgUnitRead:
    """The version before it holds on; the org unit as it now is. To bring a planned
    version forward or postpone it, send it again (`PUT`) with another `valid_from`."""
    upserted = await cancel_planned_change(session, principal, code, valid_from)
    return _read(upserted.unit, upserted.version, upserted.installed_beds)


def _command(code: str, body: OrgUnitWrite, *, new_only: bool = False) -> SaveOrgUnit:
    given = body.model_fields_set
    return SaveOrgUnit(
        code=code,
        kind=body.kind,
        name=body.name,
        parent=body.parent,
        valid_from=body.valid_from,
        uf=body.uf,
        specialty=body.specialty,
        installed_beds=body.installed_beds,
        active=body.active,
        keep_uf="uf" not in given,
        keep_specialty="specialty" not in given,
        new_only=new_only,
    )


# --- helpers --------------------------------------------------------------------------


def _units_on(day: date, include_inactive: bool) -> Select[OrgUnit, OrgUnitVersion, int | None]:
    """Org units with their version valid on ``day`` and their installed beds that day."""
    beds = (
        select(UnitCapacity.installed_beds)
        .where(UnitCapacity.unit == OrgUnit.code, UnitCapacity.effective_from <= day)
        .order_by(UnitCapacity.effective_from.desc())
        .limit(1)
        .correlate(OrgUnit)
        .scalar_subquery()
    )
    query = (
        select(OrgUnit, OrgUnitVersion, beds)
        .join(OrgUnitVersion, OrgUnitVersion.code == OrgUnit.code)
        .where(_valid_on(day))
    )
    if not include_inactive:
        query = query.where(OrgUnitVersion.active.is_(True))
    return query


def _valid_on(day: date) -> ColumnElement[bool]:
    return and_(
        OrgUnitVersion.valid_from <= day,
        or_(OrgUnitVersion.valid_to.is_(None), OrgUnitVersion.valid_to > day),
    )


async def _unit_and_version(
    session: AsyncSession, code: str, at: date | None
) -> tuple[OrgUnit, OrgUnitVersion]:
    unit = await session.get(OrgUnit, code)
    if unit is None:
        raise OrgUnitNotFound(f"No org unit {code}.", org_unit=code)
    day = at or today()
    version = await session.scalar(
        select(OrgUnitVersion).where(OrgUnitVersion.code == code, _valid_on(day))
    )
    if version is None and at is None:
        version = await session.scalar(
            select(OrgUnitVersion)
            .where(OrgUnitVersion.code == code)
            .order_by(OrgUnitVersion.valid_from)
            .limit(1)
        )
    if version is None:
        raise _not_found(code, day)
    return unit, version


def _not_found(code: str, day: date) -> OrgUnitNotFound:
    return OrgUnitNotFound(
        f"No org unit {code} on {day.isoformat()}.", org_unit=code, at=day.isoformat()
    )


def _read(unit: OrgUnit, version: OrgUnitVersion, beds: int | None) -> OrgUnitRead:
    return OrgUnitRead(
        code=unit.code,
        kind=unit.kind,
        name=version.name,
        parent=version.parent,
        finess=unit.finess,
        uf=unit.uf,
        specialty=unit.specialty,
        active=version.active,
        valid_from=version.valid_from,
        valid_to=version.valid_to,
        installed_beds=beds,
    )


def _changes(previous: OrgUnitVersion | None, version: OrgUnitVersion) -> list[str]:
    if previous is None:
        return ["created"]
    changes = []
    if previous.parent != version.parent:
        changes.append("moved")
    if previous.name != version.name:
        changes.append("renamed")
    if previous.active and not version.active:
        changes.append("deactivated")
    if not previous.active and version.active:
        changes.append("reactivated")
    return changes
