"""Ingestion: JSON batches and file imports, idempotent replacement, all-or-nothing vs skip-row."""

from __future__ import annotations

import gzip
import os
from datetime import date
from typing import Any

import httpx
import orjson
import pytest
from activity_testing import CH_NORD, CHU
from sqlalchemy import func, select, text

from activity_svc.models import ActivityRecord, OrgUnitKind, RecordImport, UnitMonth
from activity_svc.referential.tree import OrgUnitChange, upsert_org_unit
from ght_shared.db import Database

pytestmark = pytest.mark.usefixtures("territory")

JAN = date(2025, 1, 1)


def stay(source_id: str, **overrides: Any) -> dict[str, Any]:
    record = {
        "kind": "stay",
        "source": "pmsi-chu",
        "source_id": source_id,
        "finess": CHU,
        "unit": "2101",
        "admitted_at": "2025-01-10T09:00:00+01:00",
        "discharged_at": "2025-01-14T11:00:00+01:00",
        "drg": "05M092",
        "severity": 3,
        "mode": "full",
        "amount": 3150.40,
    }
    record.update(overrides)
    return record


def act(source_id: str, **overrides: Any) -> dict[str, Any]:
    record = {
        "kind": "outpatient_act",
        "source": "actes-chu",
        "source_id": source_id,
        "finess": CHU,
        "unit": "1101",
        "date": "2025-01-06",
        "code": "ZBQK002",
        "code_system": "CCAM",
        "coded": True,
        "coded_on": "2025-01-09",
        "amount": 25.0,
    }
    record.update(overrides)
    return record


async def unit_month(database: Database, unit: str, month: date) -> UnitMonth | None:
    async with database.transaction() as session:
        return await session.get(UnitMonth, (unit, month))


async def record_count(database: Database) -> int:
    async with database.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(ActivityRecord)) or 0)


async def post_records(
    activity: httpx.AsyncClient,
    headers: dict[str, str],
    records: list[dict[str, Any]],
    **params: str,
) -> httpx.Response:
    return await activity.post(
        "/records", json={"records": records}, headers=headers, params=params
    )


# --- JSON batches ---------------------------------------------------------------------


async def test_a_batch_of_records_is_merged_into_the_monthly_measures(
    activity: httpx.AsyncClient, auth: Any, database: Database
) -> None:
    records = [
        stay("S1"),
        stay(
            "S2",
            mode="ambulatory",
            severity=None,
            discharged_at="2025-01-10T17:00:00+01:00",
            drg="06C041",
        ),
        act("A1"),
        act("A2", coded=False, coded_on=None),
    ]
    response = await post_records(activity, auth("it_system", CHU), records)
    assert response.status_code == 201, response.text
    report = response.json()
    assert report["status"] == "completed"
    assert (report["received"], report["accepted"], report["rejected"]) == (4, 4, 0)
    assert report["months"] == ["2025-01-01"]
    assert response.headers["location"] == f"imports/{report['id']}"

    cardiology = await unit_month(database, "CHU-2101", JAN)
    assert cardiology is not None
    assert (cardiology.stays_full, cardiology.stays_ambulatory, cardiology.stay_days) == (1, 1, 4)
    assert (cardiology.surgical_stays, cardiology.surgical_stays_ambulatory) == (1, 1)
    assert cardiology.stays_severity_34 == 1
    assert cardiology.stay_valuation == pytest.approx(3150.40 * 2)
    scanner = await unit_month(database, "CHU-1101", JAN)
    assert scanner is not None
    assert (scanner.outpatient_acts, scanner.outpatient_acts_coded) == (2, 1)
    assert scanner.coding_delay_b03 == 1  # coded 3 days after the act


async def test_sending_a_record_again_replaces_it_and_never_counts_it_twice(
    activity: httpx.AsyncClient, auth: Any, database: Database
) -> None:
    headers = auth("it_system", CHU)
    await post_records(activity, headers, [stay("S1")])
    again = await post_records(activity, headers, [stay("S1")])
    assert again.json()["unchanged"] == 1
    assert again.json()["months"] == []

    # The stay is corrected: it moves to February and to another unit.
    corrected = stay("S1", unit="2102", discharged_at="2025-02-02T10:00:00+01:00")
    assert (await post_records(activity, headers, [corrected])).status_code == 201

    assert await record_count(database) == 1
    january = await unit_month(database, "CHU-2101", JAN)
    february = await unit_month(database, "CHU-2102", date(2025, 2, 1))
    assert january is not None and february is not None
    assert (january.stays_full, january.stay_days, january.stay_valuation) == (0, 0, 0)
    assert (february.stays_full, february.stay_days) == (1, 23)


async def test_the_last_occurrence_of_a_record_repeated_in_one_batch_wins(
    activity: httpx.AsyncClient, auth: Any, database: Database
) -> None:
    response = await post_records(
        activity, auth("it_system", CHU), [stay("S1", severity=1), stay("S1", severity=4)]
    )
    assert response.status_code == 201
    assert "repeated" in response.json()["detail"]
    async with database.transaction() as session:
        stored = await session.get(ActivityRecord, ("S1", CHU, "pmsi-chu"))
    assert stored is not None and stored.severity == 4
    cardiology = await unit_month(database, "CHU-2101", JAN)
    assert cardiology is not None and cardiology.stays_full == 1


@pytest.mark.parametrize(
    ("record", "field", "reason"),
    [
        (stay("S9", unit="9999"), "records.0.unit", "UF 9999 is unknown"),
        (
            stay("S9", discharged_at="2025-01-01T10:00:00+01:00"),
            "records.0.discharged_at",
            "before admitted_at",
        ),
        (
            stay(
                "S9",
                discharged_at="2022-06-01T10:00:00+01:00",
                admitted_at="2022-05-30T10:00:00+01:00",
            ),
            "records.0.unit",
            "did not exist",
        ),
        (act("A9", coded_on="2025-01-01"), "records.0.coded_on", "before the act"),
        (act("A9", date="2099-01-01", coded_on="2099-01-02"), "records.0.date", "out of range"),
        (stay("S9", finess="420000028"), "records.0.finess", "not an establishment"),
    ],
    ids=[
        "unknown-uf",
        "discharge-before-admission",
        "unit-not-yet-created",
        "coded-before-performed",
        "future-date",
        "unknown-establishment",
    ],
)
async def test_a_record_breaking_a_rule_rejects_the_batch_naming_the_field(
    activity: httpx.AsyncClient,
    auth: Any,
    database: Database,
    record: dict[str, Any],
    field: str,
    reason: str,
) -> None:
    response = await post_records(activity, auth("admin"), [stay("S1"), record])
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == "import_rejected"
    (error,) = problem["errors"]
    assert error["field"] == field.replace("records.0", "records.1")
    assert reason in error["message"]
    assert await record_count(database) == 0


@pytest.mark.parametrize(
    ("record", "field"),
    [
        (stay("S9", finess="420784879"), "finess"),
        (stay("S9", severity=7), "severity"),
        (stay("S9", admitted_at="yesterday"), "admitted_at"),
        (stay("S9", drg="ABC"), "drg"),
        (stay("S9", mode="week"), "mode"),
        (stay("S9", colour="blue"), "colour"),
        (act("A9", coded="perhaps"), "coded"),
        (
            {"kind": "transfusion", "source": "x", "source_id": "1", "finess": CHU, "unit": "1101"},
            "kind",
        ),
    ],
    ids=[
        "bad-finess-key",
        "severity",
        "not-a-date-time",
        "drg",
        "mode",
        "unknown-field",
        "not-a-boolean",
        "unknown-kind",
    ],
)
async def test_a_malformed_record_is_a_422_naming_the_field(
    activity: httpx.AsyncClient,
    auth: Any,
    database: Database,
    record: dict[str, Any],
    field: str,
) -> None:
    response = await post_records(activity, auth("it_system", CHU), [record])
    assert response.status_code == 422, response.text
    fields = [error["field"] for error in response.json()["errors"]]
    assert any(f.startswith("records.0") and field in f for f in fields), fields
    assert await record_count(database) == 0


async def test_skip_row_merges_the_good_records_and_reports_the_bad_ones(
    activity: httpx.AsyncClient, auth: Any, database: Database
) -> None:
    response = await post_records(
        activity, auth("admin"), [stay("S1"), stay("S2", unit="9999")], on_error="skip_row"
    )
    assert response.status_code == 201, response.text
    report = response.json()
    assert report["status"] == "completed_with_rejections"
    assert (report["accepted"], report["rejected"]) == (1, 1)
    assert report["rejections"] == [
        {
            "line": 1,
            "field": "unit",
            "reason": "UF 9999 is unknown in establishment 420784878",
            "source_id": "S2",
        }
    ]
    assert await record_count(database) == 1


async def test_a_batch_is_limited_in_size(
    activity: httpx.AsyncClient, auth: Any, activity_settings: Any
) -> None:
    too_many = [stay(f"S{i}") for i in range(activity_settings.max_batch_records + 1)]
    response = await post_records(activity, auth("it_system", CHU), too_many)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "records"


# --- authorisation --------------------------------------------------------------------


async def test_writing_records_needs_a_token(activity: httpx.AsyncClient) -> None:
    response = await activity.post("/records", json={"records": [stay("S1")]})
    assert response.status_code == 401


async def test_writing_records_needs_the_activity_write_scope(
    activity: httpx.AsyncClient, auth: Any
) -> None:
    response = await post_records(activity, auth("direction", CHU), [stay("S1")])
    assert response.status_code == 403


async def test_an_establishment_system_cannot_write_another_establishments_records(
    activity: httpx.AsyncClient, auth: Any, database: Database
) -> None:
    northern = stay("N1", finess=f" {CH_NORD} ", unit="3101")  # padded: still the CH du Nord
    for path, kwargs in (
        ("/records", {"json": {"records": [stay("S1"), {**northern, "finess": CH_NORD}]}}),
        (
            "/imports",
            {"content": _csv([stay("S1"), northern]), "headers": {"content-type": "text/csv"}},
        ),
    ):
        headers = {**kwargs.pop("headers", {}), **auth("it_system", CHU)}  # type: ignore[dict-item]
        response = await activity.post(path, headers=headers, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 403, response.text
        assert CH_NORD in response.json()["detail"]
    assert await record_count(database) == 0


# --- file imports ---------------------------------------------------------------------

CSV_FIELDS = (
    "kind",
    "source",
    "source_id",
    "finess",
    "unit",
    "admitted_at",
    "discharged_at",
    "drg",
    "severity",
    "mode",
    "date",
    "code",
    "code_system",
    "coded",
    "coded_on",
    "amount",
)


def _csv(records: list[dict[str, Any]], delimiter: str = ",") -> bytes:
    lines = [delimiter.join(CSV_FIELDS)]
    for record in records:
        values = []
        for name in CSV_FIELDS:
            value = record.get(name)
            values.append(
                ""
                if value is None
                else str(value).lower()
                if isinstance(value, bool)
                else str(value)
            )
        lines.append(delimiter.join(values))
    return ("\n".join(lines) + "\n").encode()


async def import_file(
    activity: httpx.AsyncClient,
    headers: dict[str, str],
    body: bytes,
    content_type: str = "text/csv",
    **params: str,
) -> httpx.Response:
    return await activity.post(
        "/imports",
        content=body,
        headers={**headers, "content-type": content_type},
        params=params,
    )


async def test_a_csv_file_is_imported_and_its_report_kept(
    activity: httpx.AsyncClient, auth: Any, database: Database
) -> None:
    headers = auth("it_system", CHU)
    body = _csv([stay(f"S{i}") for i in range(50)] + [act(f"A{i}") for i in range(30)])
    response = await import_file(activity, headers, body, filename="janvier.csv")
    assert response.status_code == 201, response.text
    report = response.json()
    assert (report["format"], report["accepted"], report["filename"]) == ("csv", 80, "janvier.csv")
    fetched = await activity.get(f"/imports/{report['id']}", headers=headers)
    assert fetched.status_code == 200
    assert fetched.json()["accepted"] == 80
    cardiology = await unit_month(database, "CHU-2101", JAN)
    assert cardiology is not None and cardiology.stays_full == 50


async def test_a_french_csv_with_semicolons_and_decimal_commas_is_understood(
    activity: httpx.AsyncClient, auth: Any, database: Database
) -> None:
    body = _csv([stay("S1", amount="1234,50")], delimiter=";")
    response = await import_file(activity, auth("it_system", CHU), body)
    assert response.status_code == 201, response.text
    cardiology = await unit_month(database, "CHU-2101", JAN)
    assert cardiology is not None and cardiology.stay_valuation == pytest.approx(1234.5)


async def test_a_gzip_compressed_ndjson_file_is_imported(
    activity: httpx.AsyncClient, auth: Any, database: Database
) -> None:
    body = b"\n".join(orjson.dumps(r) for r in [stay("S1"), act("A1")])
    response = await activity.post(
        "/imports",
        content=gzip.compress(body),
        headers={
            **auth("it_system", CHU),
            "content-type": "application/x-ndjson",
            "content-encoding": "gzip",
        },
    )
    assert response.status_code == 201, response.text
    assert response.json()["accepted"] == 2
    assert await record_count(database) == 2


async def test_a_file_with_bad_rows_is_rejected_whole_by_default(
    activity: httpx.AsyncClient, auth: Any, database: Database
) -> None:
    headers = auth("it_system", CHU)
    body = _csv([stay("S1"), stay("S2", unit="9999"), stay("S3", severity="x")])
    response = await import_file(activity, headers, body)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert [(e["line"], e["field"]) for e in problem["errors"]] == [(3, "unit"), (4, "severity")]
    assert await record_count(database) == 0

    report = (await activity.get(f"/imports/{problem['import_id']}", headers=headers)).json()
    assert report["status"] == "rejected"
    assert (report["received"], report["accepted"], report["rejected"]) == (3, 0, 2)
    download = await activity.get(
        f"/imports/{problem['import_id']}/rejections", headers={**headers, "accept": "text/csv"}
    )
    assert download.headers["content-type"].startswith("text/csv")
    lines = download.content.decode("utf-8-sig").splitlines()
    header = lines.index("Ligne;Champ;Motif;Identifiant source")
    assert "Lignes rejetées;2" in lines[:header]
    assert lines[header + 1].startswith("3;unit;UF 9999 is unknown")


async def test_a_file_with_bad_rows_merges_the_rest_with_skip_row(
    activity: httpx.AsyncClient, auth: Any, database: Database
) -> None:
    body = _csv([stay("S1"), stay("S2", unit="9999"), stay("S3")])
    response = await import_file(activity, auth("it_system", CHU), body, on_error="skip_row")
    assert response.status_code == 201, response.text
    assert (response.json()["accepted"], response.json()["rejected"]) == (2, 1)
    assert await record_count(database) == 2


@pytest.mark.parametrize(
    ("body", "rule"),
    [
        (b"kind,source,source_id,finess,unit,colour\n", "known_fields"),
        (b"kind,source,source_id,finess\n", "required_fields"),
        (b"kind,kind,source,source_id,finess,unit\n", "unique"),
        (b"", "header"),
    ],
    ids=["unknown-column", "missing-column", "duplicated-column", "empty"],
)
async def test_a_bad_csv_header_is_a_422_naming_it(
    activity: httpx.AsyncClient, auth: Any, body: bytes, rule: str
) -> None:
    response = await import_file(activity, auth("it_system", CHU), body)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0] == {
        "field": "header",
        "rule": rule,
        "message": response.json()["detail"],
    }


async def test_a_row_with_too_many_fields_rejects_the_file_naming_its_line(
    activity: httpx.AsyncClient, auth: Any, database: Database
) -> None:
    body = _csv([stay("S1"), stay("S2")]) + b"stay,x,y,z,1,2,3,4,5,6,7,8,9,10,11,12,13,14\n"
    response = await import_file(activity, auth("it_system", CHU), body, on_error="skip_row")
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["line"] == 4
    assert "more fields" in response.json()["detail"]
    assert await record_count(database) == 0


async def test_fifty_megabytes_of_garbage_are_rejected_and_nothing_is_written(
    activity: httpx.AsyncClient, auth: Any, database: Database
) -> None:
    garbage = _csv([stay("S1")]) + os.urandom(50 * 1024 * 1024)
    response = await import_file(activity, auth("it_system", CHU), garbage, on_error="skip_row")
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert await record_count(database) == 0
    async with database.transaction() as session:
        status = await session.scalar(select(RecordImport.status))
    assert status == "rejected"


async def test_an_ndjson_line_that_is_not_a_record_is_rejected_with_its_line(
    activity: httpx.AsyncClient, auth: Any
) -> None:
    body = b"\n".join(
        [
            orjson.dumps(stay("S1")),
            b"{not json",
            b"[1, 2]",
            orjson.dumps({**act("A1"), "colour": "blue"}),
        ]
    )
    response = await import_file(
        activity, auth("it_system", CHU), body, "application/x-ndjson", on_error="skip_row"
    )
    assert response.status_code == 201, response.text
    rejections = response.json()["rejections"]
    assert [(r["line"], r["field"]) for r in rejections] == [
        (2, "line"),
        (3, "line"),
        (4, "colour"),
    ]


async def test_an_import_needs_a_known_content_type(activity: httpx.AsyncClient, auth: Any) -> None:
    response = await import_file(activity, auth("it_system", CHU), b"x", "application/pdf")
    assert response.status_code == 415


async def test_an_establishment_sees_its_own_imports_only(
    activity: httpx.AsyncClient, auth: Any
) -> None:
    mine = await post_records(activity, auth("it_system", CHU), [stay("S1")])
    theirs = await activity.get(f"/imports/{mine.json()['id']}", headers=auth("it_system", CH_NORD))
    assert theirs.status_code == 404
    listed = await activity.get("/imports", headers=auth("it_system", CH_NORD))
    assert listed.json()["items"] == []
    assert len((await activity.get("/imports", headers=auth("commission"))).json()["items"]) == 1


async def test_nothing_is_left_in_the_session_after_an_import(database: Database) -> None:
    async with database.transaction() as session:
        leftover = await session.scalar(
            text("SELECT count(*) FROM pg_class WHERE relname = 'import_staging'")
        )
    assert leftover == 0


async def test_two_establishments_may_use_the_same_record_ids_without_touching_each_other(
    activity: httpx.AsyncClient, auth: Any, database: Database
) -> None:
    northern = stay("S1", finess=CH_NORD, unit="3101")
    assert (await post_records(activity, auth("it_system", CH_NORD), [northern])).status_code == 201
    assert (await post_records(activity, auth("it_system", CHU), [stay("S1")])).status_code == 201
    assert await record_count(database) == 2
    north = await unit_month(database, "NORD-3101", JAN)
    assert north is not None and north.stays_full == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [("date", "02/03/2025"), ("coded_on", "2025-1-9"), ("amount", "12.345"), ("amount", "1e3")],
)
async def test_dates_must_be_iso_and_amounts_have_at_most_two_decimals_in_files(
    activity: httpx.AsyncClient, auth: Any, field: str, value: str
) -> None:
    body = _csv([act("A1", **{field: value})])
    response = await import_file(activity, auth("it_system", CHU), body)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == field


async def test_the_imports_are_listed_page_by_page(activity: httpx.AsyncClient, auth: Any) -> None:
    headers = auth("it_system", CHU)
    for index in range(3):
        await post_records(activity, headers, [stay(f"S{index}")])
    first = (await activity.get("/imports", params={"limit": 2}, headers=headers)).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    rest = await activity.get(
        "/imports", params={"limit": 2, "cursor": first["next_cursor"]}, headers=headers
    )
    assert len(rest.json()["items"]) == 1 and rest.json()["next_cursor"] is None
    bad = await activity.get("/imports", params={"cursor": "not-a-cursor"}, headers=headers)
    assert bad.status_code == 422


async def test_a_record_of_a_day_its_unit_was_closed_is_rejected(
    activity: httpx.AsyncClient, auth: Any, database: Database
) -> None:
    async with database.transaction() as session:
        await upsert_org_unit(
            session,
            OrgUnitChange(
                "CHU-2102",
                OrgUnitKind.UNIT,
                "Cardiologie HDJ",
                "CHU-CAR",
                date(2025, 1, 1),
                uf="2102",
                active=False,
            ),
            "test",
        )
    headers = auth("it_system", CHU)
    closed = await post_records(activity, headers, [stay("S1", unit="2102")])
    assert closed.status_code == 422, closed.text
    assert "was closed on 2025-01-14" in closed.json()["errors"][0]["message"]
    before = stay(
        "S2",
        unit="2102",
        admitted_at="2024-12-02T09:00:00+01:00",
        discharged_at="2024-12-05T09:00:00+01:00",
    )
    assert (await post_records(activity, headers, [before])).status_code == 201


async def test_an_ndjson_line_with_a_nul_is_a_rejected_row_not_a_failure(
    activity: httpx.AsyncClient, auth: Any, database: Database
) -> None:
    nul = orjson.dumps({**stay("S2"), "source_id": "S\u00002"})
    body = b"\n".join([orjson.dumps(stay("S1")), nul])
    response = await import_file(
        activity, auth("it_system", CHU), body, "application/x-ndjson", on_error="skip_row"
    )
    assert response.status_code == 201, response.text
    rejections = response.json()["rejections"]
    assert [(r["line"], r["field"]) for r in rejections] == [(2, "source_id")]
    assert "NUL" in rejections[0]["reason"]
    assert await record_count(database) == 1


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("source_id", "S\x1b[31m2", "must not contain control or format characters"),
        ("source_id", "S\u202e2", "must not contain control or format characters"),
        ("source", "pmsi\r\nchu", "must not contain control or format characters"),
        ("unit", "99\x1b[2J" + "9" * 500, "must be a UF code (1 to 12 letters or digits)"),
    ],
)
async def test_an_imported_row_with_control_characters_is_rejected_and_never_quoted(
    activity: httpx.AsyncClient, auth: Any, database: Database, field: str, value: str, reason: str
) -> None:
    body = b"\n".join([orjson.dumps(stay("S1")), orjson.dumps({**stay("S2"), field: value})])
    response = await import_file(
        activity, auth("it_system", CHU), body, "application/x-ndjson", on_error="skip_row"
    )
    assert response.status_code == 201, response.text
    rejections = response.json()["rejections"]
    assert [(r["line"], r["field"], r["reason"]) for r in rejections] == [(2, field, reason)]
    assert await record_count(database) == 1
