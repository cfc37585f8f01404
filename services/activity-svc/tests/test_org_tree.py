"""The org-unit tree's rules, without HTTP: versions, moves and the membership they imply."""

from __future__ import annotations

from datetime import date

import pytest
from activity_testing import CHU, SINCE
from sqlalchemy import select

from activity_svc.errors import InvalidInput, OrgUnitConflict
from activity_svc.models import OrgUnitKind, OrgUnitMembership
from activity_svc.referential.tree import OrgUnitChange, capacity_on, upsert_org_unit
from ght_shared.db import Database

pytestmark = pytest.mark.usefixtures("territory")

MOVE_DAY = date(2024, 7, 1)


async def _ancestors(database: Database, unit: str) -> set[tuple[str, date, date | None]]:
    async with database.transaction() as session:
        rows = await session.execute(
            select(
                OrgUnitMembership.ancestor,
                OrgUnitMembership.valid_from,
                OrgUnitMembership.valid_to,
            ).where(OrgUnitMembership.unit == unit)
        )
        return {tuple(row) for row in rows}  # type: ignore[misc]


def _move_scanner_to_medicine() -> OrgUnitChange:
    return OrgUnitChange(
        code="CHU-1101",
        kind=OrgUnitKind.UNIT,
        name="Scanner",
        parent="CHU-CAR",
        valid_from=MOVE_DAY,
        uf="1101",
    )


async def test_a_unit_rolls_up_to_every_ancestor_from_its_creation(database: Database) -> None:
    assert await _ancestors(database, "CHU-1101") == {
        ("CHU-1101", SINCE, None),
        ("CHU-RAD", SINCE, None),
        ("CHU-IMG", SINCE, None),
        (CHU, SINCE, None),
        ("G4", SINCE, None),
    }


async def test_a_unit_moving_to_another_pole_keeps_its_past_under_the_old_one(
    database: Database,
) -> None:
    async with database.transaction() as session:
        moved = await upsert_org_unit(session, _move_scanner_to_medicine(), "test")
    assert moved.changed and not moved.created
    assert await _ancestors(database, "CHU-1101") == {
        ("CHU-1101", SINCE, None),
        ("CHU-RAD", SINCE, MOVE_DAY),
        ("CHU-IMG", SINCE, MOVE_DAY),
        ("CHU-CAR", MOVE_DAY, None),
        ("CHU-MED", MOVE_DAY, None),
        (CHU, SINCE, None),
        ("G4", SINCE, None),
    }


async def test_moving_a_department_moves_the_units_below_it(database: Database) -> None:
    async with database.transaction() as session:
        await upsert_org_unit(
            session,
            OrgUnitChange(
                "CHU-NUC", OrgUnitKind.DEPARTMENT, "Médecine nucléaire", "CHU-MED", MOVE_DAY
            ),
            "test",
        )
    ancestors = await _ancestors(database, "CHU-1201")
    assert ("CHU-IMG", SINCE, MOVE_DAY) in ancestors
    assert ("CHU-MED", MOVE_DAY, None) in ancestors


async def test_sending_the_same_org_unit_again_changes_nothing(database: Database) -> None:
    async with database.transaction() as session:
        again = await upsert_org_unit(
            session,
            OrgUnitChange(
                "CHU-1102", OrgUnitKind.UNIT, "IRM", "CHU-RAD", date(2025, 1, 1), uf="1102"
            ),
            "test",
        )
    assert not again.changed


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (OrgUnitChange("123456789", OrgUnitKind.ESTABLISHMENT, "X", "G4", SINCE), InvalidInput),
        (OrgUnitChange("CHU-X", OrgUnitKind.UNIT, "X", "CHU-RAD", SINCE), InvalidInput),
        (OrgUnitChange("CHU-X", OrgUnitKind.UNIT, "X", "NOPE", SINCE, uf="9"), InvalidInput),
        (OrgUnitChange("CHU-X", OrgUnitKind.UNIT, "X", "G4", SINCE, uf="9"), InvalidInput),
        (
            OrgUnitChange("CHU-X", OrgUnitKind.UNIT, "X", "CHU-RAD", SINCE, uf="1101"),
            OrgUnitConflict,
        ),
        (
            OrgUnitChange("CHU-1101", OrgUnitKind.UNIT, "X", "NORD-INT", MOVE_DAY, uf="1101"),
            OrgUnitConflict,
        ),
        (OrgUnitChange("CHU-IMG", OrgUnitKind.POLE, "X", "CHU-1101", MOVE_DAY), InvalidInput),
        (
            OrgUnitChange("CHU-RAD", OrgUnitKind.DEPARTMENT, "X", "CHU-IMG", date(2022, 1, 1)),
            InvalidInput,
        ),
    ],
    ids=[
        "bad-finess",
        "unit-without-uf",
        "unknown-parent",
        "unit-under-territory",
        "uf-taken",
        "other-establishment",
        "wrong-parent-kind",
        "rewrites-history",
    ],
)
async def test_a_change_breaking_a_rule_is_refused(
    database: Database, change: OrgUnitChange, error: type[Exception]
) -> None:
    with pytest.raises(error):
        async with database.transaction() as session:
            await upsert_org_unit(session, change, "test")


async def test_a_unit_created_mid_month_counts_in_that_month_as_it_was(
    database: Database,
) -> None:
    async with database.transaction() as session:
        await upsert_org_unit(
            session,
            OrgUnitChange(
                "CHU-1199", OrgUnitKind.UNIT, "Échographie", "CHU-RAD", date(2025, 3, 15), uf="1199"
            ),
            "test",
        )
    starts = {ancestor: start for ancestor, start, _ in await _ancestors(database, "CHU-1199")}
    assert starts == {
        code: date(2025, 3, 1) for code in ("CHU-1199", "CHU-RAD", "CHU-IMG", CHU, "G4")
    }


async def test_closing_a_unit_takes_its_beds_out_of_the_capacity(database: Database) -> None:
    closing = date(2025, 6, 1)
    async with database.transaction() as session:
        await upsert_org_unit(
            session,
            OrgUnitChange(
                "CHU-2101",
                OrgUnitKind.UNIT,
                "Cardiologie HC",
                "CHU-CAR",
                closing,
                uf="2101",
                active=False,
            ),
            "test",
        )
        assert await capacity_on(session, "CHU-2101", date(2025, 5, 31)) == 30
        assert await capacity_on(session, "CHU-2101", closing) == 0
