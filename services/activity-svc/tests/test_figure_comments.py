"""Comments on figures: written by who steers the org unit, shown with the figure on the
dashboards and the values, removed by their author only, bounded and audited."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest
from activity_testing import CH_NORD, CHU
from sqlalchemy import insert, select

from activity_svc.indicators.comments import MAX_PER_FIGURE
from activity_svc.models import FigureComment
from activity_svc.months import add_months, first_of_month
from activity_svc.referential.tree import today
from ght_shared import tables
from ght_shared.db import Database
from ght_shared.testing import Headers

pytestmark = pytest.mark.usefixtures("territory")

EXPLANATION = "Fermeture de 6 lits du 3 au 21 mars (travaux).\nReprise le 22."


def _comment(period: str = "2026-03", org_unit: str = "CHU-IMG", **fields: Any) -> dict[str, Any]:
    return {"org_unit": org_unit, "period": period, "text": EXPLANATION, **fields}


def _cadre(auth: Headers) -> dict[str, str]:
    return auth("pole_manager", CHU, pole="CHU-IMG", name="Claire Martin")


async def test_a_cadres_comment_is_shown_with_its_figure_to_whoever_reads_it(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    written = await activity.post(
        "/indicators/imaging_exams/comments", json=_comment(), headers=_cadre(auth)
    )

    assert written.status_code == 201, written.text
    comment = written.json()
    assert (comment["indicator"], comment["org_unit"], comment["period"]) == (
        "imaging_exams",
        "CHU-IMG",
        "2026-03",
    )
    assert (comment["text"], comment["author"], comment["author_name"]) == (
        EXPLANATION,
        f"pole_manager-{CHU}",
        "Claire Martin",
    )
    assert abs(datetime.fromisoformat(comment["written_at"]) - datetime.now(UTC)).seconds < 60

    # The chef de pôle's direction reads it on the dashboard, with the figure it explains.
    reader = auth("direction", CHU)
    board = await activity.get(
        "/dashboards/CHU-IMG", params={"period": "2026-04", "months": 2}, headers=reader
    )
    assert board.status_code == 200, board.text
    shown = {
        (f["indicator"], f["period"]): f["comments"] for f in board.json()["org_unit"]["figures"]
    }
    assert shown[("imaging_exams", "2026-03")] == [comment]
    assert shown[("imaging_exams", "2026-04")] == []
    assert shown[("stays_full", "2026-03")] == []
    assert all(not f["comments"] for child in board.json()["children"] for f in child["figures"])

    values = await activity.get(
        "/indicators/imaging_exams/values",
        params={"org_unit": "CHU-IMG", "from": "2026-01", "to": "2026-04"},
        headers=reader,
    )
    assert [v["comments"] for v in values.json()["values"]] == [[], [], [comment], []]
    exported = await activity.get(
        "/indicators/imaging_exams/values",
        params={"org_unit": "CHU-IMG", "from": "2026-03", "to": "2026-03", "format": "csv"},
        headers=reader,
    )
    assert exported.status_code == 200, exported.text
    assert "Commentaires" in exported.text
    assert f'"Claire Martin, {today():%d/%m/%Y} : Fermeture de 6 lits' in exported.text

    listed = await activity.get(
        "/indicators/imaging_exams/comments", params={"org_unit": "CHU-IMG"}, headers=reader
    )
    assert listed.status_code == 200, listed.text
    assert listed.json()["items"] == [comment]
    other = await activity.get(
        "/indicators/imaging_exams/comments",
        params={"org_unit": "CHU-IMG"},
        headers=auth("direction", CH_NORD),
    )
    assert other.status_code == 403


async def test_comments_come_month_by_month_in_pages(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    for period in ("2026-05", "2026-02", "2026-05", "2026-03"):
        response = await activity.post(
            "/indicators/stays_full/comments",
            json=_comment(period, text=f"sur {period}"),
            headers=_cadre(auth),
        )
        assert response.status_code == 201, response.text
    seen: list[str] = []
    params = {"org_unit": "CHU-IMG", "from": "2026-03", "limit": "2"}
    while True:
        page = await activity.get(
            "/indicators/stays_full/comments", params=params, headers=_cadre(auth)
        )
        assert page.status_code == 200, page.text
        seen += [c["period"] for c in page.json()["items"]]
        if page.json()["next_cursor"] is None:
            break
        params["cursor"] = page.json()["next_cursor"]
    assert seen == ["2026-03", "2026-05", "2026-05"]


@pytest.mark.parametrize(
    ("body", "field", "rule"),
    [
        (_comment(text=""), "text", "string_too_short"),
        (_comment(text="x" * 2001), "text", "string_too_long"),
        (_comment(text="voir \x1b[31m"), "text", "control_character"),
        (_comment(period="2026-13"), "period", "period"),
        (_comment(colour="red"), "colour", "extra_forbidden"),
    ],
)
async def test_a_wrong_comment_is_a_422_naming_the_field_and_nothing_is_written(
    activity: httpx.AsyncClient, auth: Headers, database: Database, body: Any, field: str, rule: str
) -> None:
    response = await activity.post(
        "/indicators/imaging_exams/comments", json=body, headers=_cadre(auth)
    )

    assert response.status_code == 422, response.text
    assert (field, rule) in {(e["field"], e["rule"]) for e in response.json()["errors"]}
    async with database.transaction() as session:
        assert (await session.scalars(select(FigureComment))).all() == []


async def test_a_month_to_come_and_an_unknown_indicator_are_refused(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    coming = add_months(first_of_month(today()), 1)
    future = await activity.post(
        "/indicators/imaging_exams/comments",
        json=_comment(f"{coming:%Y-%m}"),
        headers=_cadre(auth),
    )
    assert future.status_code == 422
    assert future.json()["errors"][0]["rule"] == "future_month"
    unknown = await activity.post(
        "/indicators/nothing/comments", json=_comment(), headers=_cadre(auth)
    )
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "indicator_not_found"


@pytest.mark.parametrize(
    ("role", "establishment", "claims", "status"),
    [
        ("pole_manager", CHU, {"pole": "CHU-MED"}, 403),  # another pôle
        ("direction", CH_NORD, {}, 403),  # another establishment
        ("commission", "*", {}, 403),  # reads the territory, steers nothing
        ("bed_manager", CHU, {}, 403),
        ("direction", CHU, {}, 201),
    ],
)
async def test_only_who_steers_the_org_unit_writes_on_its_figures(
    activity: httpx.AsyncClient,
    auth: Headers,
    role: str,
    establishment: str,
    claims: dict[str, str],
    status: int,
) -> None:
    response = await activity.post(
        "/indicators/imaging_exams/comments",
        json=_comment(org_unit="CHU-RAD"),
        headers=auth(role, establishment, **claims),
    )

    assert response.status_code == status, response.text


async def test_only_its_author_removes_a_comment_and_both_writes_are_audited(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    written = await activity.post(
        "/indicators/imaging_exams/comments", json=_comment(), headers=_cadre(auth)
    )
    url = f"/comments/{written.json()['id']}"

    assert (await activity.delete(url, headers=auth("direction", CHU))).status_code == 403
    assert (await activity.delete(url, headers=auth("direction", CH_NORD))).status_code == 404
    assert (await activity.delete(url, headers=_cadre(auth))).status_code == 204
    gone = await activity.delete(url, headers=_cadre(auth))
    assert gone.status_code == 404 and gone.json()["code"] == "comment_not_found"

    board = await activity.get(
        "/dashboards/CHU-IMG", params={"period": "2026-03"}, headers=_cadre(auth)
    )
    assert all(not f["comments"] for f in board.json()["org_unit"]["figures"])
    async with database.transaction() as session:
        audit = (
            await session.execute(
                select(tables.audit_log.c.action, tables.audit_log.c.actor).where(
                    tables.audit_log.c.resource == f"comment/{written.json()['id']}"
                )
            )
        ).all()
    assert sorted(audit) == [
        ("comment.added", f"pole_manager-{CHU}"),
        ("comment.removed", f"pole_manager-{CHU}"),
    ]


async def test_a_figure_holds_a_bounded_number_of_comments(
    activity: httpx.AsyncClient, auth: Headers, database: Database
) -> None:
    async with database.transaction() as session:
        await session.execute(
            insert(FigureComment),
            [
                {
                    "id": f"00000000-0000-0000-0000-{n:012d}",
                    "indicator": "imaging_exams",
                    "org_unit": "CHU-IMG",
                    "finess": CHU,
                    "month": date(2026, 3, 1),
                    "text": f"n° {n}",
                    "author": "someone",
                    "author_name": "Someone",
                    "written_at": datetime.now(UTC),
                }
                for n in range(MAX_PER_FIGURE)
            ],
        )

    full = await activity.post(
        "/indicators/imaging_exams/comments", json=_comment(), headers=_cadre(auth)
    )
    assert full.status_code == 409, full.text
    assert full.json()["code"] == "too_many_comments"
    other_month = await activity.post(
        "/indicators/imaging_exams/comments", json=_comment("2026-04"), headers=_cadre(auth)
    )
    assert other_month.status_code == 201


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"org_unit": "X" * 101, "period": "2026-03", "text": "x"}, "org_unit"),
        ({"org_unit": "CHU-IMG", "period": "2026-03-01", "text": "x"}, "period"),
        ({"org_unit": "CHU-IMG", "period": "2026-03", "text": 42}, "text"),
        ({"org_unit": "CHU-IMG", "period": "2026-03", "text": "a\x00b"}, "text"),
        ({"org_unit": ["CHU-IMG"], "period": "2026-03", "text": "x"}, "org_unit"),
    ],
)
async def test_a_fuzzed_comment_from_a_valid_token_is_a_422_naming_the_field(
    activity: httpx.AsyncClient, auth: Headers, body: dict[str, Any], field: str
) -> None:
    response = await activity.post(
        "/indicators/imaging_exams/comments", json=body, headers=_cadre(auth)
    )

    assert response.status_code == 422, response.text
    assert field in {e["field"] for e in response.json()["errors"]}


async def test_the_comment_list_refuses_an_unknown_parameter_and_a_bad_cursor(
    activity: httpx.AsyncClient, auth: Headers
) -> None:
    for params, field in (
        ({"org_unit": "CHU-IMG", "colour": "red"}, "colour"),
        ({"org_unit": "CHU-IMG", "cursor": "not-a-cursor"}, "cursor"),
        ({"org_unit": "CHU-IMG", "limit": "100000"}, "limit"),
    ):
        response = await activity.get(
            "/indicators/imaging_exams/comments", params=params, headers=_cadre(auth)
        )
        assert response.status_code == 422, response.text
        assert field in {e["field"] for e in response.json()["errors"]}
