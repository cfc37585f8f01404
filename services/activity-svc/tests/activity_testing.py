"""Constants and builders shared by activity-svc's tests: a small territory, tokens."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from activity_svc.models import OrgUnitKind, UnitMonth
from activity_svc.referential.org_units import SaveOrgUnit, save_org_unit
from ght_shared.auth import TERRITORY as EVERYWHERE
from ght_shared.auth import Principal

ALEMBIC_INI = Path(__file__).resolve().parents[1] / "alembic.ini"

TERRITORY = "G4"
CHU = "420784878"
CH_NORD = "420000010"
SINCE = date(2023, 1, 1)
ADMINISTRATOR = Principal(sub="test", roles=("admin",), establishments=(EVERYWHERE,))


@dataclass(frozen=True)
class Node:
    code: str
    kind: OrgUnitKind
    name: str
    parent: str | None
    uf: str | None = None
    beds: int | None = None


# The CHU: two pôles; imaging has two departments, medicine one. CH du Nord: one pôle.
SMALL_TERRITORY: tuple[Node, ...] = (
    Node(TERRITORY, OrgUnitKind.TERRITORY, "GHT test", None),
    Node(CHU, OrgUnitKind.ESTABLISHMENT, "CHU de la Vallée", TERRITORY),
    Node(CH_NORD, OrgUnitKind.ESTABLISHMENT, "CH du Nord", TERRITORY),
    Node("CHU-IMG", OrgUnitKind.POLE, "Pôle imagerie", CHU),
    Node("CHU-MED", OrgUnitKind.POLE, "Pôle médecine", CHU),
    Node("CHU-RAD", OrgUnitKind.DEPARTMENT, "Radiologie", "CHU-IMG"),
    Node("CHU-NUC", OrgUnitKind.DEPARTMENT, "Médecine nucléaire", "CHU-IMG"),
    Node("CHU-CAR", OrgUnitKind.DEPARTMENT, "Cardiologie", "CHU-MED"),
    Node("CHU-1101", OrgUnitKind.UNIT, "Scanner", "CHU-RAD", uf="1101"),
    Node("CHU-1102", OrgUnitKind.UNIT, "IRM", "CHU-RAD", uf="1102"),
    Node("CHU-1201", OrgUnitKind.UNIT, "Scintigraphie", "CHU-NUC", uf="1201"),
    Node("CHU-2101", OrgUnitKind.UNIT, "Cardiologie HC", "CHU-CAR", uf="2101", beds=30),
    Node("CHU-2102", OrgUnitKind.UNIT, "Cardiologie HDJ", "CHU-CAR", uf="2102", beds=10),
    Node("NORD-MED", OrgUnitKind.POLE, "Pôle médecine", CH_NORD),
    Node("NORD-INT", OrgUnitKind.DEPARTMENT, "Médecine interne", "NORD-MED"),
    Node("NORD-3101", OrgUnitKind.UNIT, "Médecine interne HC", "NORD-INT", uf="3101", beds=24),
)


async def build_territory(
    session: AsyncSession, nodes: tuple[Node, ...] = SMALL_TERRITORY, since: date = SINCE
) -> None:
    """Create ``nodes`` (parents first) valid from ``since``, through the referential's
    use case (events and audit included), as the territory's administrator."""
    for node in nodes:
        await save_org_unit(
            session,
            ADMINISTRATOR,
            SaveOrgUnit(
                code=node.code,
                kind=node.kind,
                name=node.name,
                parent=node.parent,
                valid_from=since,
                uf=node.uf,
                installed_beds=node.beds,
            ),
        )


async def put_unit_month(session: AsyncSession, unit: str, month: date, **measures: float) -> None:
    """A unit-month's measures as merges would have left them (the others 0)."""
    await session.execute(
        insert(UnitMonth).values(unit=unit, month=month, updated_at=datetime.now(UTC), **measures)
    )
