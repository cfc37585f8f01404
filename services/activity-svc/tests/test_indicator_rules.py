"""How indicator figures are computed, without HTTP: roll-up, year to date, projection,
median, targets, and the two scopes after a unit moves."""

from __future__ import annotations

from datetime import date

import pytest
from activity_testing import put_unit_month

from activity_svc.catalogue import INDICATORS_BY_CODE, coding_delay_measure
from activity_svc.indicators.explain import contributions_of, target_contributions_of
from activity_svc.indicators.figures import Figures, variation_pct
from activity_svc.indicators.values import (
    Scope,
    TargetSpec,
    compute_figures,
    figures_of,
    median_from_histogram,
    project_part,
    roll_up,
    value_of,
    variation_of,
)
from activity_svc.models import OrgUnitKind
from activity_svc.months import add_months
from activity_svc.referential.tree import OrgUnitChange, set_capacity, upsert_org_unit
from ght_shared.db import Database

ALOS = INDICATORS_BY_CODE["average_length_of_stay"]
STAYS = INDICATORS_BY_CODE["stays_full"]
EXAMS = INDICATORS_BY_CODE["imaging_exams"]
OCCUPANCY = INDICATORS_BY_CODE["bed_occupancy_rate"]
DELAY = INDICATORS_BY_CODE["median_coding_delay"]
COMPLETENESS = INDICATORS_BY_CODE["coding_completeness_rate"]


def month(year: int, m: int) -> date:
    return date(year, m, 1)


# --- arithmetic, without the database -------------------------------------------------


def test_a_ratio_rolls_up_as_the_sum_of_numerators_over_the_sum_of_denominators() -> None:
    short_unit = (10.0, 2.0)  # 10 days over 2 stays: 5 days each
    long_unit = (90.0, 30.0)  # 90 days over 30 stays: 3 days each
    assert value_of(ALOS, roll_up([short_unit, long_unit])) == pytest.approx(100 / 32)
    assert value_of(ALOS, roll_up([short_unit, long_unit])) != (5 + 3) / 2


def test_a_ratio_without_denominator_has_no_value_and_a_volume_is_its_sum() -> None:
    assert value_of(COMPLETENESS, (0.0, 0.0)) is None
    assert value_of(COMPLETENESS, (45.0, 50.0)) == pytest.approx(90.0)
    assert value_of(STAYS, (12.0,)) == 12.0


def test_a_variation_is_relative_to_the_absolute_reference_and_needs_one() -> None:
    assert variation_pct(110.0, 100.0) == pytest.approx(10.0)
    assert variation_pct(-50.0, -100.0) == pytest.approx(50.0)
    assert variation_pct(5.0, 0.0) is None
    assert variation_pct(5.0, None) is None
    assert variation_pct(None, 5.0) is None


def test_a_rate_varies_in_points_and_a_volume_in_percent() -> None:
    completeness = INDICATORS_BY_CODE["coding_completeness_rate"]
    # 79.5 % against 96.96 %: 17.46 points down, not -18.01 % of itself.
    assert variation_of(completeness, 79.5, 96.96) == pytest.approx(-17.46)
    assert completeness.variation_unit == "points"
    acts = INDICATORS_BY_CODE["outpatient_acts"]
    assert variation_of(acts, 795.0, 969.6) == pytest.approx(-18.0074, abs=1e-4)
    assert acts.variation_unit == "%"
    assert ALOS.variation_unit == "%"  # days, not a rate
    assert variation_of(completeness, None, 96.96) is None


def test_the_year_to_date_sums_the_months_then_divides() -> None:
    sums = {
        month(2024, 1): {"stay_days": 10.0, "stays_full": 2.0},
        month(2024, 2): {"stay_days": 90.0, "stays_full": 30.0},
    }
    figures = figures_of(ALOS, "CHU-CAR", None, month(2024, 2), sums)
    assert figures.value == pytest.approx(3.0)
    assert figures.year_to_date == pytest.approx(100 / 32)


def _seasonal_last_year_then_this_year() -> dict[date, dict[str, float]]:
    # Last year: 10 stays a month in the first quarter, 10 more (30) in each later month
    # with its first quarter a tenth of the year (30 of 300).
    sums: dict[date, dict[str, float]] = {}
    for m in range(1, 13):
        sums[month(2023, m)] = {"stays_full": 10.0 if m <= 3 else 30.0, "stay_days": 50.0}
    for m in range(1, 4):
        sums[month(2024, m)] = {"stays_full": 12.0, "stay_days": 48.0}
    return sums


def test_the_year_end_projection_applies_last_years_seasonal_profile() -> None:
    figures = figures_of(
        STAYS, "CHU-CAR", None, month(2024, 3), _seasonal_last_year_then_this_year()
    )
    assert figures.year_to_date == 36.0
    assert figures.year_to_date_last_year == 30.0
    assert figures.year_to_date_variation == pytest.approx(20.0)
    # 36 so far; last year the first quarter made 30 of 300: 36 x 300 / 30.
    assert figures.projection == pytest.approx(360.0)
    assert project_part(36.0, 30.0, 300.0) == pytest.approx(360.0)


def test_a_ratio_is_projected_by_dividing_its_projected_parts() -> None:
    figures = figures_of(
        ALOS, "CHU-CAR", None, month(2024, 3), _seasonal_last_year_then_this_year()
    )
    days = 144.0 * 600.0 / 150.0  # this year's days x last year's full year / its first quarter
    stays = 36.0 * 300.0 / 30.0
    assert figures.projection == pytest.approx(days / stays)


def test_there_is_no_projection_without_last_year() -> None:
    sums = {month(2024, m): {"stays_full": 12.0} for m in range(1, 4)}
    figures = figures_of(STAYS, "CHU-CAR", None, month(2024, 3), sums)
    assert figures.year_to_date == 36.0
    assert figures.same_period_last_year == 0.0
    assert figures.variation is None
    assert figures.projection is None


def test_the_median_coding_delay_is_exact_in_the_single_day_buckets() -> None:
    counts = [0.0] * 16
    counts[3] = 10.0
    assert median_from_histogram(counts) == 3.0
    counts[1] = 4.0
    counts[5] = 4.0
    assert median_from_histogram(counts) == 3.0


def test_the_median_coding_delay_is_interpolated_inside_a_wide_bucket() -> None:
    counts = [0.0] * 16
    counts[9] = 10.0  # the bucket of 11 to 14 days
    assert median_from_histogram(counts) == pytest.approx(11 + 0.5 * 3)
    counts[0] = 10.0  # the lower half coded the same day: the middle rank ends bucket 0
    assert median_from_histogram(counts) == 0.0


def test_the_median_coding_delay_is_the_open_buckets_lower_bound_or_none_when_empty() -> None:
    counts = [0.0] * 16
    assert median_from_histogram(counts) is None
    counts[15] = 3.0
    assert median_from_histogram(counts) == 91.0


def test_the_median_of_a_year_to_date_merges_the_months_histograms() -> None:
    early, late = coding_delay_measure(1), coding_delay_measure(7)
    sums = {month(2024, 1): {early: 10.0}, month(2024, 2): {late: 30.0}}
    figures = figures_of(DELAY, "CHU-IMG", None, month(2024, 2), sums)
    assert figures.value == 7.0
    assert figures.year_to_date == 7.0  # 40 acts: the 20th is in the 7-day bucket
    assert figures.projection == figures.year_to_date


def test_a_volume_target_is_spread_by_its_monthly_profile() -> None:
    profile = [0.05] * 6 + [0.15] * 2 + [0.1] * 4
    figures = figures_of(STAYS, "CHU-CAR", None, month(2024, 7), {}, TargetSpec(1200.0, profile))
    assert figures.target == pytest.approx(180.0)
    assert figures.target_year_to_date == pytest.approx(1200 * (0.3 + 0.15))
    assert figures.target_year == 1200.0


def test_a_volume_target_without_profile_is_spread_evenly_and_a_rate_target_is_constant() -> None:
    volume = figures_of(STAYS, "CHU-CAR", None, month(2024, 3), {}, TargetSpec(1200.0))
    assert (volume.target, volume.target_year_to_date) == pytest.approx((100.0, 300.0))
    rate = figures_of(ALOS, "CHU-CAR", None, month(2024, 3), {}, TargetSpec(4.5))
    assert (rate.target, rate.target_year_to_date, rate.target_year) == (4.5, 4.5, 4.5)


def test_months_are_added_across_years() -> None:
    assert add_months(month(2024, 1), -12) == month(2023, 1)
    assert add_months(month(2024, 11), 3) == month(2025, 2)


# --- on the database --------------------------------------------------------------------


def _by_unit_and_month(figures: list[Figures]) -> dict[tuple[str, date], float | None]:
    return {(f.org_unit, f.period): f.value for f in figures}


@pytest.mark.usefixtures("territory")
async def test_a_department_sums_its_units_before_dividing(database: Database) -> None:
    async with database.transaction() as session:
        await put_unit_month(session, "CHU-2101", month(2024, 3), stay_days=10, stays_full=2)
        await put_unit_month(session, "CHU-2102", month(2024, 3), stay_days=90, stays_full=30)
        (figures,) = await compute_figures(session, [ALOS], [("CHU-CAR", month(2024, 3))], {})
    assert figures.value == pytest.approx(100 / 32)


@pytest.mark.usefixtures("territory")
async def test_a_unit_moving_to_another_pole_counts_where_it_was_or_where_it_is_now(
    database: Database,
) -> None:
    march, september = month(2024, 3), month(2024, 9)
    async with database.transaction() as session:
        await put_unit_month(session, "CHU-1101", march, imaging_exams=100)
        await put_unit_month(session, "CHU-1101", september, imaging_exams=120)
        await put_unit_month(session, "CHU-1102", march, imaging_exams=7)
        await put_unit_month(session, "CHU-1102", september, imaging_exams=8)
        # The scanner moves from the imaging pôle to medicine (cardiology) in July.
        await upsert_org_unit(
            session,
            OrgUnitChange(
                "CHU-1101", OrgUnitKind.UNIT, "Scanner", "CHU-CAR", date(2024, 7, 1), uf="1101"
            ),
            "test",
        )
    wanted = [(pole, m) for pole in ("CHU-IMG", "CHU-MED") for m in (march, september)]
    async with database.transaction() as session:
        as_was = await compute_figures(session, [EXAMS], wanted, {}, Scope.AS_WAS)
        constant = await compute_figures(session, [EXAMS], wanted, {}, Scope.CONSTANT)
    assert _by_unit_and_month(as_was) == {
        ("CHU-IMG", march): 107.0,
        ("CHU-IMG", september): 8.0,
        ("CHU-MED", march): 0.0,
        ("CHU-MED", september): 120.0,
    }
    assert _by_unit_and_month(constant) == {
        ("CHU-IMG", march): 7.0,
        ("CHU-IMG", september): 8.0,
        ("CHU-MED", march): 100.0,
        ("CHU-MED", september): 120.0,
    }
    # The establishment is the same either way.
    async with database.transaction() as session:
        (chu,) = await compute_figures(session, [EXAMS], [("420784878", march)], {})
    assert chu.value == 107.0


@pytest.mark.usefixtures("territory")
async def test_the_occupancy_rate_divides_days_by_the_beds_installed_on_the_first_day(
    database: Database,
) -> None:
    async with database.transaction() as session:
        # 30 beds since 2023; 40 from 15 February 2024, so from March on.
        await set_capacity(session, "CHU-2101", date(2024, 2, 15), 40, "referential")
        for m, days in ((1, 465), (2, 435), (3, 620)):
            await put_unit_month(session, "CHU-2101", month(2024, m), occupied_days=days)
        figures = await compute_figures(
            session, [OCCUPANCY], [("CHU-2101", month(2024, m)) for m in (1, 2, 3)], {}
        )
    # CHU-2102 (10 beds, no stays) is not below the unit: only its own beds count.
    assert [f.value for f in figures] == pytest.approx([50.0, 50.0, 50.0])
    async with database.transaction() as session:
        (department,) = await compute_figures(
            session, [OCCUPANCY], [("CHU-CAR", month(2024, 1))], {}
        )
    assert department.value == pytest.approx(100 * 465 / (40 * 31))


def test_the_childrens_contributions_to_a_gap_to_target_add_up_to_it() -> None:
    completeness = INDICATORS_BY_CODE["coding_completeness_rate"]
    # Parent: 80 / 100 = 80 % against a target of 90 %: -10 points; A (80 of the acts)
    # codes 87.5 %, B (20 of them) 50 %: B's weight times its gap explains most of it.
    found = target_contributions_of(
        completeness,
        90.0,
        ((80.0, 100.0), (0.0, 0.0)),
        [("A", "A", ((70.0, 80.0), (0.0, 0.0))), ("B", "B", ((10.0, 20.0), (0.0, 0.0)))],
    )
    assert [(c.org_unit, c.value, c.reference) for c in found] == [
        ("B", 50.0, 90.0),
        ("A", 87.5, 90.0),
    ]
    assert [c.contribution for c in found] == [pytest.approx(-8.0), pytest.approx(-2.0)]
    # A volume: 115 against 100, each child against its part of the target at last
    # year's weights (100 and 50 of 150).
    exams = INDICATORS_BY_CODE["imaging_exams"]
    found = target_contributions_of(
        exams,
        100.0,
        ((115.0,), (150.0,)),
        [("RAD", "RAD", ((60.0,), (100.0,))), ("NUC", "NUC", ((55.0,), (50.0,)))],
    )
    assert [(c.org_unit, c.reference) for c in found] == [
        ("NUC", pytest.approx(100 / 3)),
        ("RAD", pytest.approx(200 / 3)),
    ]
    assert sum(c.contribution for c in found) == pytest.approx(15.0)
    assert target_contributions_of(exams, None, ((1.0,), (1.0,)), []) == []


def test_the_childrens_contributions_to_a_rate_add_up_to_its_change_in_points() -> None:
    completeness = INDICATORS_BY_CODE["coding_completeness_rate"]
    # Parent: 90 / 150 = 60 % against 135 / 200 = 67.5 %: -7.5 points.
    found = contributions_of(
        completeness,
        ((90.0, 150.0), (135.0, 200.0)),
        [("A", "A", ((80.0, 100.0), (95.0, 100.0))), ("B", "B", ((10.0, 50.0), (40.0, 100.0)))],
    )
    assert [(c.org_unit, c.value, c.reference) for c in found] == [
        ("A", 80.0, 95.0),
        ("B", 20.0, 40.0),
    ]
    assert [c.contribution for c in found] == [pytest.approx(-65 / 12), pytest.approx(-25 / 12)]
    assert sum(c.contribution for c in found) == pytest.approx(-7.5)
    # A median does not decompose.
    delay = INDICATORS_BY_CODE["median_coding_delay"]
    assert contributions_of(delay, ((1.0,), (1.0,)), [("A", "A", ((1.0,), (1.0,)))]) == []
