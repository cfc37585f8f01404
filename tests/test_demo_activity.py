"""The demo territory of activity-svc (``deploy/local/demo_activity.py``), without HTTP.

The records are generated once for a fixed "today" and summed up in one pass (the
whole list would hold a few hundred megabytes); the tests then read the rates and
stories off the sums, as the dashboards would.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import importlib.util
import io
import re
import statistics
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from itertools import islice, takewhile
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from ght_gateway import demo
from ght_shared.auth import Role
from ght_shared.identifiers import is_finess


def _load_module() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "deploy" / "local" / "demo_activity.py"
    spec = importlib.util.spec_from_file_location("demo_activity", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module while it executes
    spec.loader.exec_module(module)
    return module


demo_activity = _load_module()

TODAY = date(2026, 6, 15)
THIS_YEAR, LAST_YEAR = TODAY.year, TODAY.year - 1
FIRST_DAY = date(TODAY.year - 2, 1, 1)
CHU = demo.ESTABLISHMENTS[0].finess

FIELDS = {
    "stay": {"admitted_at", "discharged_at", "drg", "severity", "mode", "amount"},
    "outpatient_act": {"date", "code", "code_system", "coded", "coded_on", "amount"},
    "imaging_exam": {"date", "code", "amount"},
    "consultation": {"date", "code", "amount"},
    "expense": {"date", "budget_title", "account", "amount"},
    "revenue": {"date", "budget_title", "account", "amount"},
}
COMMON = {"kind", "source", "source_id", "finess", "unit"}
DRG = re.compile(r"^\d{2}[CKMZ]\d{2}[0-9A-Z]$")
CCAM = re.compile(r"^[A-Z]{4}\d{3}$")
NGAP = re.compile(r"^[A-Z]{1,3}$")
SOURCE_ID = re.compile(r"^[A-Z]+-[A-Z]+-\d{4}-\d{6}$")
FINANCE = {
    "expense": ((1, 2, 3, 4), re.compile(r"^6\d{1,9}$")),
    "revenue": ((1, 2, 3), re.compile(r"^7\d{1,9}$")),
}


def _day(value: str) -> date:
    return date.fromisoformat(value[:10])


# --------------------------------------------------------------------------------------------
# One pass over the records
# --------------------------------------------------------------------------------------------


@dataclass
class Summary:
    count: int = 0
    problems: list[str] = field(default_factory=list)
    tally: Counter[tuple[Any, ...]] = field(default_factory=Counter)
    delays: Counter[tuple[Any, ...]] = field(default_factory=Counter)
    """Coding delays in days: (finess, uf, year, delay) -> acts."""
    digest: str = ""

    def problem(self, record: dict[str, Any], what: str) -> None:
        if len(self.problems) < 20:
            self.problems.append(f"{what}: {record}")


def _ufs(referential: list[dict[str, Any]]) -> dict[str, set[str]]:
    finess_of: dict[str, str] = {}
    ufs: dict[str, set[str]] = {}
    for node in referential:
        if node["kind"] == "establishment":
            finess_of[node["code"]] = node["code"]
            ufs[node["code"]] = set()
        elif node["kind"] != "territory":
            finess_of[node["code"]] = finess_of[node["parent"]]
        if node["kind"] == "unit":
            ufs[finess_of[node["code"]]].add(node["uf"])
    return ufs


def _summarise(records: Iterable[dict[str, Any]], referential: list[dict[str, Any]]) -> Summary:
    summary = Summary()
    ufs = _ufs(referential)
    seen: set[tuple[str, str]] = set()
    cut = (TODAY.month, TODAY.day)  # year to date: the days before today's month and day
    digest = hashlib.sha256()
    for record in records:
        summary.count += 1
        digest.update(repr(record).encode())
        _check(summary, record, ufs, seen)
        kind, finess, uf = record["kind"], record["finess"], record["unit"]
        when = _day(record["discharged_at"] if kind == "stay" else record["date"])
        year, ytd = when.year, (when.month, when.day) < cut
        tally = summary.tally
        if kind == "stay":
            surgical = record["drg"][2] == "C"
            if record["mode"] == "full":
                days = (when - _day(record["admitted_at"])).days
                tally["full", finess, year] += 1
                tally["days", finess, year] += days
                tally["days_ytd", finess, year] += days if ytd else 0
                tally["severe", finess, year] += record["severity"] >= 3
                tally["full_by_month", finess, uf, year, when.month] += 1
                tally["full_ytd", finess, uf, year] += ytd
                tally["severe_ytd", finess, uf, year] += ytd and record["severity"] >= 3
                tally["days_ytd", finess, uf, year] += days if ytd else 0
                tally["valuation_ytd", finess, uf, year] += record["amount"] if ytd else 0
            tally["surgical", year] += surgical
            tally["surgical_ambulatory", year] += surgical and record["mode"] == "ambulatory"
            tally["surgical_ambulatory_by_month", year, when.month] += (
                surgical and record["mode"] == "ambulatory"
            )
        elif kind == "outpatient_act":
            tally["acts", finess, uf, year, ytd] += 1
            tally["coded", finess, uf, year, ytd] += record["coded"]
            if when >= TODAY - timedelta(days=28):
                tally["recent_acts"] += 1
                tally["recent_coded"] += record["coded"]
            if record["coded"]:
                summary.delays[finess, uf, year, (_day(record["coded_on"]) - when).days] += 1
        elif kind == "imaging_exam":
            tally["imaging_ytd", finess, year] += ytd
        elif kind == "expense":
            tally["expense", finess, year, record["budget_title"]] += record["amount"]
        elif kind == "revenue":
            tally["revenue", finess, year] += record["amount"]
    summary.digest = digest.hexdigest()
    return summary


def _check(
    summary: Summary,
    record: dict[str, Any],
    ufs: dict[str, set[str]],
    seen: set[tuple[str, str]],
) -> None:
    kind = record.get("kind")
    if kind not in FIELDS:
        return summary.problem(record, "unknown kind")
    if set(record) - COMMON - FIELDS[kind] or COMMON - set(record):
        return summary.problem(record, "fields")
    if record["unit"] not in ufs.get(record["finess"], ()):
        summary.problem(record, "UF not in its establishment's referential")
    if not SOURCE_ID.match(record["source_id"]) or not record["source"].islower():
        summary.problem(record, "source")
    key = (record["source"], record["source_id"])
    if key in seen:
        summary.problem(record, "source_id sent twice")
    seen.add(key)
    amount = record["amount"]
    if not isinstance(amount, float | int) or amount <= 0 or round(amount, 2) != amount:
        summary.problem(record, "amount")
    if kind == "stay":
        admitted = datetime.fromisoformat(record["admitted_at"])
        discharged = datetime.fromisoformat(record["discharged_at"])
        if admitted.utcoffset() is None or not admitted < discharged:
            summary.problem(record, "admission and discharge")
        if admitted.date() < FIRST_DAY or discharged.date() >= TODAY:
            summary.problem(record, "stay out of the demo period")
        if not DRG.match(record["drg"]):
            summary.problem(record, "drg")
        if record["mode"] == "full":
            severe = record.get("severity")
            if severe not in (1, 2, 3, 4) or record["drg"][5] != str(severe):
                summary.problem(record, "severity")
            if discharged.date() <= admitted.date():
                summary.problem(record, "full stay of no night")
        elif record["mode"] != "ambulatory" or discharged.date() != admitted.date():
            summary.problem(record, "ambulatory stay")
        return None
    day = date.fromisoformat(record["date"])
    if not FIRST_DAY <= day < TODAY:
        summary.problem(record, "date out of the demo period")
    if kind == "outpatient_act":
        pattern = CCAM if record["code_system"] == "CCAM" else NGAP
        if record["code_system"] not in ("CCAM", "NGAP") or not pattern.match(record["code"]):
            summary.problem(record, "act code")
        if record["coded"] is not ("coded_on" in record):
            summary.problem(record, "coded without a date")
        elif record["coded"] and not day <= date.fromisoformat(record["coded_on"]) < TODAY:
            summary.problem(record, "coded_on")
    elif kind == "imaging_exam" and not CCAM.match(record["code"]):
        summary.problem(record, "imaging code")
    elif kind == "consultation" and not NGAP.match(record["code"]):
        summary.problem(record, "consultation code")
    elif kind in FINANCE:
        titles, account = FINANCE[kind]
        if record["budget_title"] not in titles or not account.match(record["account"]):
            summary.problem(record, "budget title or account")
    return None


@pytest.fixture(scope="module")
def referential() -> list[dict[str, Any]]:
    nodes: list[dict[str, Any]] = demo_activity.generate_referential(TODAY)
    return nodes


@pytest.fixture(scope="module")
def summary(referential: list[dict[str, Any]]) -> Summary:
    return _summarise(demo_activity.generate_records(TODAY), referential)


def _digest(records: Iterator[dict[str, Any]]) -> str:
    digest = hashlib.sha256()
    for record in records:
        digest.update(repr(record).encode())
    return digest.hexdigest()


def _pct(numerator: float, denominator: float) -> float:
    return 100.0 * numerator / denominator


# --------------------------------------------------------------------------------------------
# Referential
# --------------------------------------------------------------------------------------------


def test_the_referential_lists_every_parent_before_its_children(referential):
    written: set[str] = set()
    for node in referential:
        assert node.get("parent") is None or node["parent"] in written, node
        written.add(node["code"])


def test_the_referential_has_a_chu_and_three_general_hospitals_with_their_poles(referential):
    establishments = [n for n in referential if n["kind"] == "establishment"]
    assert [e["code"] for e in establishments] == [e.finess for e in demo.ESTABLISHMENTS]
    assert all(is_finess(e["code"]) for e in establishments)
    poles = Counter(n["parent"] for n in referential if n["kind"] == "pole")
    assert 7 <= poles[CHU] <= 9
    assert all(3 <= poles[e.finess] <= 5 for e in demo.ESTABLISHMENTS[1:])


def test_org_codes_are_territory_unique_and_ufs_unique_within_their_establishment(referential):
    first_versions = [n for n in referential if n["valid_from"] == FIRST_DAY.isoformat()]
    codes = [n["code"] for n in first_versions]
    assert len(codes) == len(set(codes))
    units = [n for n in first_versions if n["kind"] == "unit"]
    for finess, ufs in _ufs(referential).items():
        establishment_units = [n for n in units if n["code"].startswith(_prefix(finess) + "-")]
        assert len(ufs) == len(establishment_units), finess
        assert all(re.fullmatch(r"\d{4}", uf) for uf in ufs), finess
    assert all(n["code"].endswith(f"-UF{n['uf']}") for n in units)
    inpatient = [n for n in units if "installed_beds" in n]
    assert 650 <= sum(n["installed_beds"] for n in inpatient) <= 850


def test_a_unit_moves_to_another_pole_during_last_year(referential):
    versions = [n for n in referential if n["code"] == demo_activity.MOVED_UNIT_CODE]
    assert len(versions) == 2
    before, after = versions
    poles = {n["code"]: n["parent"] for n in referential if n["kind"] == "department"}
    assert poles[before["parent"]] != poles[after["parent"]]
    assert date.fromisoformat(after["valid_from"]).year == LAST_YEAR


def test_the_cardiology_ward_closes_beds_on_january_first(referential):
    versions = [n for n in referential if n["code"] == demo_activity.CARDIOLOGY_UNIT_CODE]
    assert [(v["valid_from"], v["installed_beds"]) for v in versions] == [
        (FIRST_DAY.isoformat(), 30),
        (date(THIS_YEAR, 1, 1).isoformat(), 27),
    ]


def test_the_demo_cadre_de_gestion_manages_the_chu_imaging_pole(referential):
    (manager,) = [u for u in demo.USERS if u.role is Role.POLE_MANAGER]
    poles = {n["code"]: n for n in referential if n["kind"] == "pole"}
    assert manager.pole == demo_activity.IMAGING_POLE
    assert poles[manager.pole]["parent"] == manager.establishment == CHU


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


def test_every_record_follows_the_record_contract(summary):
    assert summary.problems == []
    assert 300_000 <= summary.count <= 600_000


def test_the_same_today_gives_the_same_records_and_referential(summary):
    assert _digest(demo_activity.generate_records(TODAY)) == summary.digest
    assert demo_activity.generate_referential(TODAY) == demo_activity.generate_referential(TODAY)


def test_on_january_first_the_new_year_has_no_record_yet():
    records = demo_activity.generate_records(date(2026, 1, 1))
    chu = takewhile(lambda record: record["finess"] == CHU, records)
    years = Counter(demo_activity.record_year(record) for record in chu)
    assert set(years) == {2024, 2025}
    assert years[2025] > years[2024] * 0.95


def _prefix(finess: str) -> str:
    (spec,) = [e for e in demo_activity.ESTABLISHMENTS if e.finess == finess]
    prefix: str = spec.prefix
    return prefix


def _installed_beds(referential: list[dict[str, Any]], finess: str, day: date) -> int:
    """The establishment's installed beds on ``day``: each unit's latest version by then."""
    beds: dict[str, int] = {}
    for node in referential:
        if (
            "installed_beds" in node
            and node["code"].startswith(_prefix(finess) + "-")
            and date.fromisoformat(node["valid_from"]) <= day
        ):
            beds[node["code"]] = node["installed_beds"]
    return sum(beds.values())


def test_occupancy_and_length_of_stay_are_those_of_real_wards(summary, referential):
    for establishment in demo.ESTABLISHMENTS:
        finess = establishment.finess
        beds = _installed_beds(referential, finess, date(LAST_YEAR, 1, 1))
        days = summary.tally["days", finess, LAST_YEAR]
        assert 80 <= _pct(days, beds * 365) <= 95, establishment.name
        assert 4 <= days / summary.tally["full", finess, LAST_YEAR] <= 8, establishment.name


def test_severity_levels_3_and_4_make_20_to_30_percent_of_full_stays(summary):
    for year in (LAST_YEAR, THIS_YEAR):
        severe = sum(summary.tally["severe", e.finess, year] for e in demo.ESTABLISHMENTS)
        full = sum(summary.tally["full", e.finess, year] for e in demo.ESTABLISHMENTS)
        assert 20 <= _pct(severe, full) <= 30


def test_the_outpatient_surgery_rate_is_55_to_65_percent_and_rises_every_year(summary):
    rates = [
        _pct(summary.tally["surgical_ambulatory", year], summary.tally["surgical", year])
        for year in (THIS_YEAR - 2, LAST_YEAR, THIS_YEAR)
    ]
    assert all(55 <= rate <= 65 for rate in rates), rates
    assert rates == sorted(rates) and rates[0] < rates[-1] - 2


def test_medicine_peaks_in_winter_and_scheduled_surgery_dips_in_august(summary):
    winter_units = ("2101", "2201", "2301")  # internal medicine, geriatrics, pneumology
    january = sum(summary.tally["full_by_month", CHU, uf, LAST_YEAR, 1] for uf in winter_units)
    august = sum(summary.tally["full_by_month", CHU, uf, LAST_YEAR, 8] for uf in winter_units)
    assert january > 1.15 * august
    by_month = [summary.tally["surgical_ambulatory_by_month", LAST_YEAR, m] for m in range(1, 13)]
    others = statistics.mean(by_month[:7] + by_month[8:])
    assert by_month[7] < 0.8 * others


def test_outpatient_acts_are_mostly_coded_a_few_days_after_being_performed(summary):
    acts = sum(v for k, v in summary.tally.items() if k[0] == "acts" and k[3] == LAST_YEAR)
    coded = sum(v for k, v in summary.tally.items() if k[0] == "coded" and k[3] == LAST_YEAR)
    assert 90 <= _pct(coded, acts) <= 97
    delays = Counter({k[3]: v for k, v in summary.delays.items() if k[2] == LAST_YEAR})
    assert 3 <= _histogram_median(delays) <= 8
    recent = _pct(summary.tally["recent_coded"], summary.tally["recent_acts"])
    assert recent < _pct(coded, acts) - 10


def _histogram_median(histogram: Counter[int]) -> float:
    return statistics.median(histogram.elements())


def test_expenses_are_mostly_staff_and_revenue_covers_them(summary):
    for establishment in demo.ESTABLISHMENTS:
        finess = establishment.finess
        titles = [summary.tally["expense", finess, LAST_YEAR, title] for title in (1, 2, 3, 4)]
        shares = [_pct(t, sum(titles)) for t in titles]
        assert 60 <= shares[0] <= 70 and 12 <= shares[1] <= 20, shares
        assert 9 <= shares[2] <= 15 and 5 <= shares[3] <= 11, shares
        coverage = summary.tally["revenue", finess, LAST_YEAR] / sum(titles)
        assert 0.9 <= coverage <= 1.05, establishment.name


# --------------------------------------------------------------------------------------------
# The stories the dashboards show
# --------------------------------------------------------------------------------------------


def _variation(this_year: float, last_year: float) -> float:
    return _pct(this_year - last_year, last_year)


def test_the_chu_imaging_exams_rise_after_the_second_mri(summary):
    change = _variation(
        summary.tally["imaging_ytd", CHU, THIS_YEAR], summary.tally["imaging_ytd", CHU, LAST_YEAR]
    )
    assert 8 < change < 18


def test_the_chu_cardiology_stays_fall_after_the_bed_closure(summary):
    uf = demo_activity.CARDIOLOGY_UNIT_CODE.removeprefix("CHU-UF")
    change = _variation(
        summary.tally["full_ytd", CHU, uf, THIS_YEAR], summary.tally["full_ytd", CHU, uf, LAST_YEAR]
    )
    assert -14 < change < -5


def test_the_chu_geriatrics_case_mix_turns_frailer_this_year(summary):
    uf = demo_activity.CASE_MIX_UNIT_CODE.removeprefix("CHU-UF")

    def share(tally: str, year: int) -> float:
        return summary.tally[tally, CHU, uf, year] / summary.tally["full_ytd", CHU, uf, year]

    assert share("severe_ytd", LAST_YEAR) < 0.58 < 0.62 < share("severe_ytd", THIS_YEAR)
    assert share("days_ytd", THIS_YEAR) > 1.08 * share("days_ytd", LAST_YEAR)
    assert share("valuation_ytd", THIS_YEAR) > 1.1 * share("valuation_ytd", LAST_YEAR)
    assert (
        summary.tally["full_ytd", CHU, uf, THIS_YEAR]
        < summary.tally["full_ytd", CHU, uf, LAST_YEAR]
    )


def test_the_cardiology_ward_explains_most_of_its_poles_fall(referential, summary):
    parent = {n["code"]: n.get("parent") for n in referential}
    kind = {n["code"]: n["kind"] for n in referential}

    def pole_of(code: str | None) -> str | None:
        while code is not None and kind[code] != "pole":
            code = parent[code]
        return code

    ward = demo_activity.CARDIOLOGY_UNIT_CODE
    pole = pole_of(ward)
    units = {n["code"]: n["uf"] for n in referential if n["kind"] == "unit"}
    ufs = [uf for code, uf in units.items() if code.startswith("CHU-") and pole_of(code) == pole]

    def change(chosen: list[str]) -> int:
        this, last = (THIS_YEAR, LAST_YEAR)
        return sum(
            summary.tally["full_ytd", CHU, uf, this] - summary.tally["full_ytd", CHU, uf, last]
            for uf in chosen
        )

    last_year = sum(summary.tally["full_ytd", CHU, uf, LAST_YEAR] for uf in ufs)
    assert -8 < 100 * change(ufs) / last_year < -2
    assert change([units[ward]]) / change(ufs) > 0.7


def test_one_unit_codes_fewer_acts_later_this_year(summary):
    uf = demo_activity.CODING_DROP_UNIT_CODE.removeprefix("CHU-UF")

    def completeness(year: int) -> float:
        return _pct(
            summary.tally["coded", CHU, uf, year, True], summary.tally["acts", CHU, uf, year, True]
        )

    def median_delay(year: int) -> float:
        delays = Counter({k[3]: v for k, v in summary.delays.items() if k[:3] == (CHU, uf, year)})
        return _histogram_median(delays)

    assert completeness(THIS_YEAR) < completeness(LAST_YEAR) - 5
    assert median_delay(THIS_YEAR) > 2 * median_delay(LAST_YEAR)


def test_the_chu_wards_stay_busy_this_year_after_the_bed_closure(summary, referential):
    beds = _installed_beds(referential, CHU, date(THIS_YEAR, 1, 1))
    days = (TODAY - date(THIS_YEAR, 1, 1)).days
    assert 80 <= _pct(summary.tally["days_ytd", CHU, THIS_YEAR], beds * days) <= 97


# --------------------------------------------------------------------------------------------
# Files and loader
# --------------------------------------------------------------------------------------------


def test_records_become_one_gzip_csv_file_per_year_that_reads_back_the_same():
    records = list(islice(demo_activity.generate_records(TODAY), 0, 120_000, 37))
    files = demo_activity.csv_files(records)
    assert set(files) == {demo_activity.record_year(r) for r in records}
    read_back: list[dict[str, str]] = []
    for payload, count in files.values():
        rows = list(csv.DictReader(io.StringIO(gzip.decompress(payload).decode())))
        assert len(rows) == count
        read_back += rows
    assert len(read_back) == len(records)
    by_id = {row["source_id"]: row for row in read_back}
    for record in records:
        row = by_id[record["source_id"]]
        assert {k: v for k, v in row.items() if v} == {
            k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in record.items()
        }


def test_the_loader_does_nothing_when_establishments_are_present():
    requests: list[str] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        requests.append(f"{request.method} {request.url.path}")
        if request.url.path == "/auth/token":
            return httpx.Response(200, json={"access_token": "t", "expires_in": 900})
        return httpx.Response(200, json={"items": [{"code": CHU}], "next_cursor": None})

    lines: list[str] = []
    demo_activity.load_activity_demo(
        "http://gateway", TODAY, log=lines.append, transport=httpx.MockTransport(gateway)
    )
    assert requests == ["POST /auth/token", "GET /api/activity/org-units"]
    assert lines == ["demo activity: data present, nothing loaded"]


def test_the_loader_fails_loudly_with_the_problem_detail():
    def gateway(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth/token":
            return httpx.Response(200, json={"access_token": "t", "expires_in": 900})
        if request.method == "GET":
            return httpx.Response(200, json={"items": [], "next_cursor": None})
        return httpx.Response(
            422,
            json={"title": "Invalid input", "detail": "A pole needs a parent.", "field": "parent"},
            headers={"Content-Type": "application/problem+json"},
        )

    with pytest.raises(demo_activity.DemoLoadError) as raised:
        demo_activity.load_activity_demo(
            "http://gateway", TODAY, log=lambda line: None, transport=httpx.MockTransport(gateway)
        )
    assert "PUT /api/activity/org-units/GHT-G4: 422" in str(raised.value)
    assert "A pole needs a parent." in str(raised.value)
