"""Territory comparisons: the same indicators across the establishments in their units
of a specialty (the maternities...), on the commission's overview and in the analytics."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from activity_testing import CH_NORD, CHU, TERRITORY
from sqlalchemy import update

from activity_svc.models import OrgUnit
from ght_shared.db import Database
from ght_shared.testing import Headers

pytestmark = pytest.mark.usefixtures("territory")


def _stay(finess: str, unit: str, n: str, day: str) -> dict[str, Any]:
    """A full stay of three days, admitted on ``day``."""
    return {
        "kind": "stay",
        "source": "pmsi",
        "source_id": n,
        "finess": finess,
        "unit": unit,
        "admitted_at": f"{day}T09:00:00+01:00",
        "discharged_at": f"{day[:8]}{int(day[8:]) + 3:02d}T17:00:00+01:00",
        "drg": "14Z141",
        "severity": 1,
        "mode": "full",
        "amount": 2500,
    }


# First quarter: the CHU's maternity 2 -> 3 stays, CH du Nord's 2 -> 1; the territory's
# stays the same. Every stay lasts three days.
CHU_STAYS = [
    *(_stay(CHU, "2101", f"C{i}", f"2025-0{i}-06") for i in (1, 2, 3)),
    *(_stay(CHU, "2101", f"D{i}", f"2024-0{i}-06") for i in (1, 2)),
]
NORD_STAYS = [
    _stay(CH_NORD, "3101", "N1", "2025-02-10"),
    *(_stay(CH_NORD, "3101", f"M{i}", f"2024-0{i}-10") for i in (1, 3)),
]


@pytest.fixture
async def maternities(
    territory: None, activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    async with database.transaction() as session:
        await session.execute(
            update(OrgUnit)
            .where(OrgUnit.code.in_(["CHU-2101", "NORD-3101"]))
            .values(specialty="obstétrique")
        )
        await session.execute(
            update(OrgUnit).where(OrgUnit.code == "CHU-2102").values(specialty="cardiologie")
        )
    for finess, records in ((CHU, CHU_STAYS), (CH_NORD, NORD_STAYS)):
        response = await activity.post(
            "/records",
            json={"records": records, "complete_up_to": "2025-03-31"},
            headers=auth("it_system", finess),
        )
        assert response.status_code == 201, response.text


@pytest.mark.usefixtures("maternities")
async def test_the_commission_compares_the_maternities_of_the_establishments(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    response = await activity.get("/overview", headers=auth("commission"))

    assert response.status_code == 200, response.text
    comparisons = {c["key"]: c for c in response.json()["territory"]["comparisons"]}
    assert list(comparisons) == ["maternities", "imaging", "emergencies"]
    maternities = comparisons["maternities"]
    assert (maternities["label_fr"], maternities["specialties"]) == ("Maternités", ["obstétrique"])
    assert (maternities["first_month"], maternities["last_month"]) == ("2025-01", "2025-03")
    stays, length = maternities["indicators"]
    assert (stays["indicator"], stays["variation_unit"]) == ("stays_full", "%")
    assert stays["territory"] == {"value": 4.0, "last_year": 4.0, "variation": 0.0}
    assert [
        (e["finess"], e["name"], e["value"], e["last_year"], e["variation"])
        for e in stays["establishments"]
    ] == [
        (CH_NORD, "CH du Nord", 1.0, 2.0, -50.0),
        (CHU, "CHU de la Vallée", 3.0, 2.0, 50.0),
    ]
    assert length["indicator"] == "average_length_of_stay"
    assert length["territory"] == {"value": 3.0, "last_year": 3.0, "variation": 0.0}
    # No imaging unit has data: each establishment is there, with no figure.
    imaging = comparisons["imaging"]["indicators"][0]
    assert [(e["finess"], e["value"]) for e in imaging["establishments"]] == [
        (CH_NORD, None),
        (CHU, None),
    ]

    # An establishment's direction has its own headline, not the territory's comparisons.
    own = await activity.get("/overview", headers=auth("direction", CHU))
    assert "territory" not in own.json()


@pytest.mark.usefixtures("maternities")
async def test_the_analytics_break_down_and_keep_units_by_specialty(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    params = {"org_unit": TERRITORY, "indicators": "stays_full", "period": "2025-Q1"}
    by_specialty = await activity.get(
        "/analytics", params={**params, "dimensions": "specialty"}, headers=auth("commission")
    )
    assert by_specialty.status_code == 200, by_specialty.text
    assert {
        row["dimensions"]["specialty"]: row["values"]["stays_full"]["value"]
        for row in by_specialty.json()["rows"]
    } == {"obstétrique": 4.0}

    kept = await activity.get(
        "/analytics",
        params={**params, "dimensions": "org_unit", "specialty": "obstétrique,cardiologie"},
        headers=auth("commission"),
    )
    assert kept.status_code == 200, kept.text
    assert [
        (row["dimensions"]["org_unit"], row["values"]["stays_full"]["value"])
        for row in kept.json()["rows"]
    ] == [(CH_NORD, 1.0), (CHU, 3.0)]

    wrong = await activity.get(
        "/analytics",
        params={**params, "specialty": "obst\x1bétrique"},
        headers=auth("commission"),
    )
    assert wrong.status_code == 422
    assert (wrong.json()["errors"][0]["field"], wrong.json()["errors"][0]["rule"]) == (
        "specialty",
        "pattern",
    )
