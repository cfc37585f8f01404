"""How an indicator's figures are computed from the monthly measures.

The measures of ``unit_month`` are summed over the units of an org unit's subtree
(through ``org_unit_membership``) per month, in one SQL statement for every org unit
and month a request needs; everything else is arithmetic on those sums, in the pure
functions below:

- the value of a period is ``scale x sum(numerator) / sum(denominator)``: the parts are
  summed over units and months first, then divided (a ratio is never averaged);
- the year to date sums the parts from January to the month, then divides; the same
  period last year does the same twelve months earlier;
- the year-end projection applies last year's seasonal profile to each additive part:
  ``YTD_this x FullYear_last / YTD_last``, then divides the projected parts; it is None
  when last year has nothing to learn the profile from;
- the median coding delay is read from a histogram of delays (see
  :func:`median_from_histogram`); its projection is its year to date.

Scope "as it was" reads, for month M, the membership valid on M's first day; "constant
scope" reads, for every month, the membership valid at the end of the latest month asked
(today when that month is this one): today's tree, without a move planned for later.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from operator import add

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from activity_svc.catalogue import (
    BED_DAYS,
    CODING_DELAY_BUCKETS,
    MEASURE_NAMES,
    MEASURES_BY_NAME,
    Aggregation,
    Indicator,
)
from activity_svc.completeness import complete_up_to, is_complete
from activity_svc.indicators.figures import Figures, variation_pct
from activity_svc.months import add_months, first_of_month, last_day_of, months_between
from activity_svc.referential.tree import today


class Scope(StrEnum):
    AS_WAS = "as_was"
    """For each month, the tree as it was on the month's first day."""
    CONSTANT = "constant"
    """The tree at the end of the latest month asked (today at the latest), applied to
    every month: a move planned for later does not count yet."""


Parts = tuple[float, ...]
"""The additive quantities an indicator divides: (numerator,), (numerator, denominator),
or the counts of the coding-delay histogram."""

Sums = Mapping[date, Mapping[str, float]]
"""An org unit's summed measures per month (a month without data is absent)."""


@dataclass(frozen=True)
class TargetSpec:
    """A target row: the year's value and its optional monthly profile (12 weights)."""

    value: float
    monthly_profile: Sequence[float] | None = None


# --- arithmetic -----------------------------------------------------------------------


def ratio(numerator: float, denominator: float | None, scale: float = 1.0) -> float | None:
    """``scale x numerator / denominator``; a volume (no denominator) is its sum."""
    if denominator is None:
        return numerator * scale
    if denominator == 0:
        return None
    return scale * numerator / denominator


def roll_up(parts: Iterable[Parts]) -> Parts:
    """Sum parts component by component (units of a subtree, months of a period)."""
    total: list[float] = []
    for part in parts:
        if not total:
            total = list(part)
        else:
            for index, value in enumerate(part):
                total[index] += value
    return tuple(total)


def variation_of(
    indicator: Indicator, value: float | None, reference: float | None
) -> float | None:
    """The variation of ``value`` from ``reference``: in points for a rate, else in % of
    the reference; None without both (or, in %, without a non-zero reference)."""
    if not indicator.in_points:
        return variation_pct(value, reference)
    if value is None or reference is None:
        return None
    return value - reference


def project_part(
    year_to_date: float, year_to_date_last_year: float, full_year_last_year: float
) -> float | None:
    """Year-end projection of one additive part with last year's seasonal profile.

    ``YTD_this x FullYear_last / YTD_last``: if last year the same months made a third
    of the year, this year's year to date is a third of this year. None when last
    year's year to date is zero (no profile to apply).
    """
    if year_to_date_last_year == 0:
        return None
    return year_to_date * full_year_last_year / year_to_date_last_year


def median_from_histogram(
    counts: Sequence[float], bounds: Sequence[int] = CODING_DELAY_BUCKETS
) -> float | None:
    """The median delay (days) of a histogram whose buckets end at ``bounds``.

    Bucket ``i`` holds the whole-day delays from ``bounds[i-1] + 1`` (0 for the first)
    to ``bounds[i]``; the last bucket (``counts[len(bounds)]``) is open. The delays of a
    bucket are taken as spread evenly from its lower to its upper bound, so the median
    is interpolated linearly inside the bucket where the middle rank falls: exact for
    the single-day buckets of the first week, an approximation for the wider ones. A
    median in the open bucket is reported as its lower bound. None when empty.
    """
    total = sum(counts)
    if total <= 0:
        return None
    half = total / 2.0
    seen = 0.0
    lower = 0
    for index, count in enumerate(counts):
        upper = bounds[index] if index < len(bounds) else None
        if count > 0 and seen + count >= half:
            if upper is None:
                return float(lower)
            return lower + (half - seen) / count * (upper - lower)
        seen += count
        lower = (upper if upper is not None else lower) + 1
    return float(lower)  # unreachable with non-negative counts: the loop covers the total


def _total(sums: Mapping[str, float], names: tuple[str, ...]) -> float:
    if len(names) == 1:  # most parts: worth the shortcut on a dashboard's thousands
        return sums.get(names[0], 0.0)
    return sum([sums.get(m, 0.0) for m in names])


def parts_of(indicator: Indicator, sums: Mapping[str, float]) -> Parts:
    """The indicator's additive parts in one org unit-month's summed measures."""
    if indicator.aggregation is Aggregation.MEDIAN:
        return tuple([sums.get(m, 0.0) for m in indicator.numerator])
    if not indicator.denominator:
        return (_total(sums, indicator.numerator),)
    return (_total(sums, indicator.numerator), _total(sums, indicator.denominator))


def value_of(indicator: Indicator, parts: Parts) -> float | None:
    """The indicator's value from its (already summed) parts."""
    if indicator.aggregation is Aggregation.MEDIAN:
        return median_from_histogram(parts)
    return ratio(parts[0], parts[1] if len(parts) > 1 else None, indicator.scale)


def projection_of(
    indicator: Indicator, year_to_date: Parts, year_to_date_last: Parts, full_year_last: Parts
) -> float | None:
    """Year-end projection: each part projected with last year's profile, then divided."""
    if indicator.aggregation is Aggregation.MEDIAN:
        # A median does not add up over months: the year to date is the best estimate.
        return value_of(indicator, year_to_date)
    projected = []
    for this, last, full in zip(year_to_date, year_to_date_last, full_year_last, strict=True):
        part = project_part(this, last, full)
        if part is None:
            return None
        projected.append(part)
    return value_of(indicator, tuple(projected))


def target_figures(
    indicator: Indicator,
    target: TargetSpec | None,
    month: date,
    complete_up_to: date | None = None,
) -> tuple[float | None, float | None, float | None]:
    """(month, year to date, year) targets: a volume's year spread by its monthly profile
    (evenly without one); a rate or a median is the same target every month. In a
    partial month a volume's month and year to date count the complete days only."""
    if target is None:
        return None, None, None
    if not indicator.is_volume:
        return target.value, target.value, target.value
    profile = target.monthly_profile
    weights = list(profile) if profile is not None and len(profile) == 12 else [1 / 12] * 12
    if is_complete(month, complete_up_to):
        return (
            target.value * weights[month.month - 1],
            target.value * sum(weights[: month.month]),
            target.value,
        )
    assert complete_up_to is not None  # a month is complete when nothing is known
    cut = complete_up_to
    share_of_month = max(0, (cut - month).days + 1) / last_day_of(month).day
    year_share = 0.0
    if cut.year == month.year:
        year_share = sum(weights[: cut.month - 1]) + weights[cut.month - 1] * (
            cut.day / last_day_of(cut).day
        )
    return (
        target.value * weights[month.month - 1] * share_of_month,
        target.value * year_share,
        target.value,
    )


PartialSums = tuple[Mapping[str, float], Mapping[str, float]]
"""An org unit's measures over the days of its cut's month up to the cut (the day its
data is complete up to), and over the same days a year before."""


class Series:
    """An indicator's parts month by month for one org unit, with their running year to
    date, so that each month's figures are read, not recomputed."""

    def __init__(self, indicator: Indicator, sums: Sums, first: date, last: date) -> None:
        self.indicator = indicator
        self.start = date(first.year, 1, 1)
        self.monthly: list[Parts] = []
        self.year_to_date: list[Parts] = []
        running: Parts = ()
        empty: Mapping[str, float] = {}
        for month in months_between(self.start, last):
            parts = parts_of(indicator, sums.get(month, empty))
            running = parts if month.month == 1 else tuple(map(add, running, parts))
            self.monthly.append(parts)
            self.year_to_date.append(running)

    def _at(self, year: int, month: int) -> int:
        return (year - self.start.year) * 12 + month - 1

    def parts(self, month: date, year_to_date: bool) -> tuple[Parts, Parts]:
        """The parts of a complete ``month`` (or of its year to date), and last year's."""
        this, last = self._at(month.year, month.month), self._at(month.year - 1, month.month)
        summed = self.year_to_date if year_to_date else self.monthly
        return summed[this], summed[last]

    def _before(self, month: date) -> Parts:
        """The year to date at the end of the month before ``month`` (zeros in January)."""
        if month.month == 1:
            return tuple(0.0 for _ in self.monthly[0])
        return self.year_to_date[self._at(month.year, month.month) - 1]

    def _partial(
        self, month: date, cut: date, piece: PartialSums | None
    ) -> tuple[Parts, Parts, Parts, Parts]:
        """(month, same month last year, year to date, last year's) of a partial month:
        the days up to ``cut`` only, and the same days a year before."""
        zero = tuple(0.0 for _ in self.monthly[0])
        cut_month = first_of_month(cut)
        if piece is None or cut_month.year != month.year:
            return zero, zero, zero, zero  # nothing of the month's year is complete
        this = parts_of(self.indicator, piece[0])
        last = parts_of(self.indicator, piece[1])
        year_to_date = tuple(map(add, self._before(cut_month), this))
        year_to_date_last = tuple(map(add, self._before(add_months(cut_month, -12)), last))
        if cut_month != month:
            return zero, zero, year_to_date, year_to_date_last
        return this, last, year_to_date, year_to_date_last

    def figures(
        self,
        org_unit: str,
        finess: str | None,
        month: date,
        target: TargetSpec | None,
        complete_up_to: date | None = None,
        piece: PartialSums | None = None,
    ) -> Figures:
        """The figures of ``month``; the series must start in January of the year before.

        A month after ``complete_up_to`` (or holding it) is partial: its figures count the
        days up to it, read from ``piece``, and have no projection."""
        indicator = self.indicator
        this, last = self._at(month.year, month.month), self._at(month.year - 1, month.month)
        if last < 0:
            raise ValueError(f"the series starts after {month.year - 1}-{month.month:02d}")
        partial = not is_complete(month, complete_up_to)
        if partial:
            assert complete_up_to is not None
            monthly, monthly_last, this_ytd, last_ytd = self._partial(month, complete_up_to, piece)
            projection = None
        else:
            monthly, monthly_last = self.monthly[this], self.monthly[last]
            this_ytd, last_ytd = self.year_to_date[this], self.year_to_date[last]
            last_full = self.year_to_date[self._at(month.year - 1, 12)]
            projection = projection_of(indicator, this_ytd, last_ytd, last_full)
        value = value_of(indicator, monthly)
        reference = value_of(indicator, monthly_last)
        year_to_date = value_of(indicator, this_ytd)
        year_to_date_last = value_of(indicator, last_ytd)
        target_month, target_ytd, target_year = target_figures(
            indicator, target, month, complete_up_to
        )
        return Figures(
            indicator=indicator.code,
            org_unit=org_unit,
            finess=finess,
            period=month,
            value=value,
            same_period_last_year=reference,
            variation=variation_of(indicator, value, reference),
            year_to_date=year_to_date,
            year_to_date_last_year=year_to_date_last,
            year_to_date_variation=variation_of(indicator, year_to_date, year_to_date_last),
            projection=projection,
            variation_unit=indicator.variation_unit,
            target=target_month,
            target_year_to_date=target_ytd,
            target_year=target_year,
            complete_up_to=complete_up_to,
            partial=partial,
        )


def figures_of(
    indicator: Indicator,
    org_unit: str,
    finess: str | None,
    month: date,
    sums: Sums,
    target: TargetSpec | None = None,
) -> Figures:
    """Every figure of ``indicator`` for ``org_unit`` in ``month`` from its monthly sums
    (January of the previous year to ``month``; a month absent has no data)."""
    month = first_of_month(month)
    series = Series(indicator, sums, add_months(month, -12), month)
    return series.figures(org_unit, finess, month, target)


# --- reading the sums -----------------------------------------------------------------


def constant_tree_day(last: date) -> date:
    """The day of the tree constant scope applies to figures up to the month of ``last``:
    that month's last day, today at the latest (a move planned for later is not yet)."""
    return min(last_day_of(last), today())


def _sums_sql(measures: Sequence[str], scope: Scope, bed_days: bool) -> str:
    # Column names come from the catalogue (checked against MEASURE_NAMES), never from
    # the request.
    in_month = (
        "{m}.month >= memb.valid_from AND (memb.valid_to IS NULL OR {m}.month < memb.valid_to)"
    )
    membership_filter = (
        "AND valid_from <= CAST(:at AS date) AND (valid_to IS NULL OR valid_to > CAST(:at AS date))"
        if scope is Scope.CONSTANT
        else ""
    )
    as_was = scope is Scope.AS_WAS
    ctes = [
        f"""memb AS (
            SELECT unit, ancestor, valid_from, valid_to FROM org_unit_membership
            WHERE ancestor = ANY(CAST(:ancestors AS text[])) {membership_filter}
        )"""
    ]
    selects = []
    if measures:
        columns = ", ".join(f'sum(u."{m}") AS "{m}"' for m in measures)
        ctes.append(
            f"""um AS (
                SELECT memb.ancestor, u.month, {columns}
                FROM memb JOIN unit_month u ON u.unit = memb.unit
                WHERE u.month BETWEEN CAST(:first AS date) AND CAST(:last AS date)
                {"AND " + in_month.format(m="u") if as_was else ""}
                GROUP BY memb.ancestor, u.month
            )"""
        )
        selects.append("um")
    if bed_days:
        # Installed beds on the month's first day (latest capacity effective by then)
        # x the days of the month, summed over the units of the subtree.
        ctes.append(
            """cap AS (
                SELECT unit, effective_from, installed_beds,
                       lead(effective_from) OVER (PARTITION BY unit ORDER BY effective_from)
                           AS effective_to
                FROM unit_capacity WHERE unit IN (SELECT unit FROM memb)
            )"""
        )
        ctes.append(
            """months AS (
                SELECT d::date AS month, ((d + interval '1 month')::date - d::date) AS days
                FROM generate_series(CAST(:first AS date), CAST(:last AS date),
                                     interval '1 month') AS d
            )"""
        )
        ctes.append(
            f"""beds AS (
                SELECT memb.ancestor, months.month,
                       CAST(sum(cap.installed_beds * months.days) AS float8) AS bed_days
                FROM memb JOIN cap ON cap.unit = memb.unit
                JOIN months ON months.month >= cap.effective_from
                    AND (cap.effective_to IS NULL OR months.month < cap.effective_to)
                    {"AND " + in_month.format(m="months") if as_was else ""}
                GROUP BY memb.ancestor, months.month
            )"""
        )
        selects.append("beds")
    if len(selects) == 2:
        keys = "coalesce(um.ancestor, beds.ancestor) AS ancestor, coalesce(um.month, beds.month)"
        source = "um FULL JOIN beds ON beds.ancestor = um.ancestor AND beds.month = um.month"
        values = ", ".join([*(f'um."{m}"' for m in measures), "beds.bed_days"])
    else:
        keys = f"{selects[0]}.ancestor, {selects[0]}.month"
        source = selects[0]
        values = ", ".join(f'"{m}"' for m in measures) if measures else "bed_days"
    return f"WITH {', '.join(ctes)} SELECT {keys} AS month, {values} FROM {source}"


async def load_sums(
    session: AsyncSession,
    org_units: Collection[str],
    first: date,
    last: date,
    measures: Collection[str],
    scope: Scope = Scope.AS_WAS,
) -> dict[str, dict[date, dict[str, float]]]:
    """The measures summed over each org unit's subtree per month, ``first`` to ``last``
    (in constant scope, with the tree of :func:`constant_tree_day` of ``last``).

    One statement for every org unit; ``bed_days`` among ``measures`` is read from
    ``unit_capacity``. Months without data are absent.
    """
    wanted = sorted(set(measures))
    unknown = set(wanted) - MEASURE_NAMES - {BED_DAYS}
    if unknown:
        raise ValueError(f"unknown measures {sorted(unknown)}")
    columns = [m for m in wanted if m != BED_DAYS]
    with_beds = BED_DAYS in wanted
    result: dict[str, dict[date, dict[str, float]]] = defaultdict(dict)
    if not org_units or not wanted:
        return result
    rows = await session.execute(
        text(_sums_sql(columns, scope, with_beds)),
        {
            "ancestors": list(org_units),
            "first": first_of_month(first),
            "last": first_of_month(last),
            "at": constant_tree_day(last),
        },
    )
    names = [*columns, BED_DAYS] if with_beds else columns
    for ancestor, month, *values in rows:
        result[ancestor][month] = {
            name: float(value) for name, value in zip(names, values, strict=True) if value
        }
    return result


def _pieces_sql(measures: Sequence[str], scope: Scope) -> str:
    # Measures from the catalogue, never from the request.
    sums = ", ".join(f'sum(d."{m}") AS "{m}"' for m in measures)
    membership = (
        "AND memb.valid_from <= CAST(:at AS date)"
        " AND (memb.valid_to IS NULL OR memb.valid_to > CAST(:at AS date))"
        if scope is Scope.CONSTANT
        else (
            "AND w.month >= memb.valid_from AND (memb.valid_to IS NULL OR w.month < memb.valid_to)"
        )
    )
    return f"""
    SELECT w.ancestor, w.month, w.cut, {sums}
    FROM unnest(CAST(:ancestors AS text[]), CAST(:months AS date[]), CAST(:cuts AS date[]))
         AS w(ancestor, month, cut)
    JOIN org_unit_membership memb ON memb.ancestor = w.ancestor {membership}
    JOIN unit_day d ON d.unit = memb.unit AND d.day >= w.month AND d.day <= w.cut
    GROUP BY w.ancestor, w.month, w.cut
    """


async def load_partial_sums(
    session: AsyncSession,
    cuts: Mapping[tuple[str, date], Collection[str]],
    sums: Mapping[str, Sums],
    scope: Scope = Scope.AS_WAS,
    tree_day: date | None = None,
) -> dict[tuple[str, date], PartialSums]:
    """Each (org unit, cut) with the measures wanted there: those measures over the cut's
    month up to the cut, and over the same days a year before (``bed_days`` in
    proportion of the days, from ``sums`` as :func:`load_sums` returns them).

    Read from ``unit_day``, a few rows per unit and day whatever the number of records:
    one statement per set of measures. ``tree_day``: the day of the tree in constant
    scope (that of the sums).
    """
    by_measures: dict[tuple[str, ...], list[tuple[str, date]]] = defaultdict(list)
    for (code, cut), measures in sorted(cuts.items()):
        # A spread measure (days present) has no piece: stays still present at the cut lack.
        columns = tuple(
            sorted(m for m in measures if m != BED_DAYS and not MEASURES_BY_NAME[m].spread)
        )
        by_measures[columns].append((code, cut))
    read: dict[tuple[str, date, date], dict[str, float]] = defaultdict(dict)
    for columns, found in by_measures.items():
        if not columns:
            continue
        wanted = list(dict.fromkeys(piece for code, cut in found for piece in _pieces(code, cut)))
        rows = await session.execute(
            text(_pieces_sql(columns, scope)),
            {
                "ancestors": [code for code, _, _ in wanted],
                "months": [month for _, month, _ in wanted],
                "cuts": [cut for _, _, cut in wanted],
                "at": tree_day or today(),
            },
        )
        for ancestor, month, last, *values in rows:
            read[(ancestor, month, last)] |= dict(zip(columns, map(float, values), strict=True))
    result: dict[tuple[str, date], PartialSums] = {}
    for (code, cut), measures in cuts.items():
        pieces: list[dict[str, float]] = []
        for piece_of in _pieces(code, cut):
            _, month, _ = piece_of
            counted = read.get(piece_of, {})
            piece = {
                m: counted.get(m, 0.0)
                for m in measures
                if m != BED_DAYS and not MEASURES_BY_NAME[m].spread
            }
            if BED_DAYS in measures:
                days = last_day_of(month).day
                whole = sums.get(code, {}).get(month, {})
                piece[BED_DAYS] = whole.get(BED_DAYS, 0.0) * min(cut.day, days) / days
            pieces.append(piece)
        result[(code, cut)] = (pieces[0], pieces[1])
    return result


def _pieces(code: str, cut: date) -> tuple[tuple[str, date, date], tuple[str, date, date]]:
    """The (org unit, month, last day) a cut sums: its month up to it, and the same days a
    year before (to the month's end when the cut is a day it lacks: 29 February)."""
    before = date(cut.year - 1, cut.month, 1)
    same_day = before.replace(day=min(cut.day, last_day_of(before).day))
    return (code, first_of_month(cut), cut), (code, before, same_day)


async def load_targets(
    session: AsyncSession,
    indicators: Collection[str],
    org_units: Collection[str],
    years: Collection[int],
) -> dict[tuple[str, str, int], TargetSpec]:
    """The targets of ``indicators`` for ``org_units`` and ``years``, by (indicator, org unit,
    year)."""
    if not indicators or not org_units or not years:
        return {}
    rows = await session.execute(
        text(
            """SELECT indicator, org_unit, year, value, monthly_profile FROM target
            WHERE indicator = ANY(CAST(:indicators AS text[]))
              AND org_unit = ANY(CAST(:org_units AS text[]))
              AND year = ANY(CAST(:years AS integer[]))"""
        ),
        {"indicators": list(indicators), "org_units": list(org_units), "years": list(years)},
    )
    return {
        (indicator, org_unit, year): TargetSpec(value, profile)
        for indicator, org_unit, year, value, profile in rows
    }


async def compute_figures(
    session: AsyncSession,
    indicators: Sequence[Indicator],
    wanted: Iterable[tuple[str, date]],
    finess_of: Mapping[str, str | None],
    scope: Scope = Scope.AS_WAS,
) -> list[Figures]:
    """The figures of each indicator for each wanted (org unit, month).

    Two statements whatever the number of org units and months (the sums, from January
    of the year before the earliest month to the latest month, and the targets), and a
    third for the partial months (after the day the org unit's establishment, or the
    territory, has complete data up to; ``finess_of`` None: the territory). The result
    follows the order of ``wanted``, then of ``indicators``.
    """
    pairs = list(dict.fromkeys((code, first_of_month(month)) for code, month in wanted))
    if not pairs or not indicators:
        return []
    months = [month for _, month in pairs]
    org_units = {code for code, _ in pairs}
    measures = {m for indicator in indicators for m in indicator.measures}
    sums = await load_sums(
        session, org_units, date(min(months).year - 1, 1, 1), max(months), measures, scope
    )
    targets = await load_targets(
        session, [i.code for i in indicators], org_units, {m.year for m in months}
    )
    complete = await complete_up_to(session, {finess_of.get(code) for code in org_units})
    cut_of = {code: complete[finess_of.get(code)] for code in org_units}
    cuts: dict[tuple[str, date], set[str]] = defaultdict(set)
    for code, month in pairs:
        for indicator in indicators:
            cut = indicator.complete_up_to(cut_of[code])
            if (
                cut is not None
                and not is_complete(month, cut)
                and cut.year == month.year
                and not indicator.whole_months_only
            ):
                cuts[(code, cut)].update(indicator.measures)
    pieces = (
        await load_partial_sums(session, cuts, sums, scope, constant_tree_day(max(months)))
        if cuts
        else {}
    )
    first, last = add_months(min(months), -12), max(months)
    series: dict[tuple[str, str], Series] = {}
    result = []
    for code, month in pairs:
        for indicator in indicators:
            key = (indicator.code, code)
            if key not in series:
                series[key] = Series(indicator, sums.get(code, {}), first, last)
            target = targets.get((indicator.code, code, month.year))
            cut = indicator.complete_up_to(cut_of[code])
            piece = (
                pieces.get((code, cut))
                if cut is not None and not indicator.whole_months_only
                else None
            )
            result.append(series[key].figures(code, finess_of.get(code), month, target, cut, piece))
    return result
