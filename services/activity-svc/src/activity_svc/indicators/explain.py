"""What explains a figure's change from last year: each child's contribution.

A child's contribution is its share of the parent's variation, in the variation's own
unit, so that the contributions of the children add up to it (the parent's figure is
its children's parts summed, then divided):

- a volume: ``(V_i - V_i_ref) / |V_ref| x 100`` (% of last year's total);
- a ratio ``R = N / D`` (rates in points, other ratios in %): the child's numerator
  less what last year's ratio would have given for its denominator, this year over
  last year, ``(N_i - R_ref D_i) / D - (N_i_ref - R_ref D_i_ref) / D_ref``, which
  sums to ``R - R_ref`` over the children and holds both a child's own change and the
  change of its weight (a unit taking more of the activity at a lower rate);
- a median does not decompose: no contribution.

The parts are a parent's children, or the groups of what its records carry (an act
code, a GHM root, a severity...), read like the analytics' rows: the parent is then the
groups' sum, so that they add up to its variation too.

Against the parent's target ``T`` instead of last year (:func:`target_contributions_of`),
the shares add up to its gap to the target:

- a volume: ``(V_i - T w_i) / |T| x 100``, the child's gap to its part of the target,
  ``w_i`` its weight last year (``V_i_ref / V_ref``): the target spread as the activity
  was;
- a ratio: ``(N_i - T D_i) / D``, the child's weight this year times its gap to the
  parent's target (rates in points, other ratios in % of the target): exact, whatever the
  children's own targets.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from activity_svc.catalogue import INDICATORS_BY_CODE, Aggregation, Indicator
from activity_svc.indicators.analytics import AnalyticsQuery, Dimension, summed_rows, total_of
from activity_svc.indicators.figures import Figures
from activity_svc.indicators.values import (
    Parts,
    Scope,
    Series,
    load_sums,
    parts_of,
    variation_of,
)
from activity_svc.months import add_months

MAX_CONTRIBUTIONS = 5
"""The children kept with an alert: those contributing most."""


@dataclass(frozen=True)
class Contribution:
    """One child's part in its parent's variation from last year: its figure (``value``),
    last year's (``reference``), and ``contribution``, its share of the parent's
    variation in the variation's unit (the children's add up to it)."""

    org_unit: str
    name: str
    value: float | None
    reference: float | None
    contribution: float


class By(StrEnum):
    """What a figure's change is broken into: the org unit's direct children, or what its
    records carry."""

    CHILDREN = "children"
    UNIT = "unit"
    SPECIALTY = "specialty"
    KIND = "kind"
    MODE = "mode"
    SEVERITY = "severity"
    CMD = "cmd"
    DRG_ROOT = "drg_root"
    CODE = "code"


class Basis(StrEnum):
    """What a figure's change is measured from."""

    LAST_YEAR = "last_year"
    TARGET = "target"


MAX_GROUPS = 50_000
"""The groups read at most (CCAM holds about 8 000 act codes, the GHM roots 700)."""


# The active direct children of each (org unit, day), as it was that day, with their names.
_CHILDREN = text(
    """
    SELECT w.parent, w.day, v.code, v.name
    FROM unnest(CAST(:parents AS text[]), CAST(:days AS date[])) AS w(parent, day)
    JOIN org_unit_version v ON v.parent = w.parent AND v.active
        AND v.valid_from <= w.day AND (v.valid_to IS NULL OR v.valid_to > w.day)
    ORDER BY w.parent, w.day, v.name, v.code
    """
)


def contributions_of(
    indicator: Indicator,
    parent: tuple[Parts, Parts],
    children: Sequence[tuple[str, str, tuple[Parts, Parts]]],
) -> list[Contribution]:
    """Each child's contribution (``children``: code, name and its parts this year and
    last), biggest first; none for a median or without last year."""
    if indicator.aggregation is Aggregation.MEDIAN:
        return []
    this, last = parent
    found = []
    for code, name, (child, child_last) in children:
        share = _share(indicator, this, last, child, child_last)
        if share is None:
            return []
        found.append(
            Contribution(
                org_unit=code,
                name=name,
                value=_value(indicator, child),
                reference=_value(indicator, child_last),
                contribution=share,
            )
        )
    return sorted(found, key=lambda c: (-abs(c.contribution), c.org_unit))


def _value(indicator: Indicator, parts: Parts) -> float | None:
    if len(parts) == 1:
        return parts[0] * indicator.scale
    return indicator.scale * parts[0] / parts[1] if parts[1] else None


def _share(
    indicator: Indicator, this: Parts, last: Parts, child: Parts, child_last: Parts
) -> float | None:
    if len(this) == 1:  # a volume
        if last[0] == 0:
            return None
        return (child[0] - child_last[0]) / abs(last[0]) * 100.0
    denominator = this[1]
    numerator_last, denominator_last = last
    if denominator == 0 or denominator_last == 0:
        return None
    reference = numerator_last / denominator_last
    points = indicator.scale * (
        (child[0] - reference * child[1]) / denominator
        - (child_last[0] - reference * child_last[1]) / denominator_last
    )
    if indicator.in_points:
        return points
    reference_value = indicator.scale * reference
    return points / abs(reference_value) * 100.0 if reference_value else None


def target_contributions_of(
    indicator: Indicator,
    target: float | None,
    parent: tuple[Parts, Parts],
    children: Sequence[tuple[str, str, tuple[Parts, Parts]]],
) -> list[Contribution]:
    """Each child's contribution to the parent's gap to ``target`` (the parent's target of
    the same period), biggest first; a child's ``reference`` is what it is set against
    (its part of a volume's target, the parent's target of a ratio). None for a median,
    without a target, or without what the shares divide by."""
    if indicator.aggregation is Aggregation.MEDIAN or not target:
        return []
    this, last = parent
    goal = target / indicator.scale
    found = []
    for code, name, (child, child_last) in children:
        if len(this) == 1:  # a volume, against its part of the target
            if last[0] == 0:
                return []
            reference = goal * child_last[0] / last[0]
            share = (child[0] - reference) / abs(goal) * 100.0
            reference *= indicator.scale
        else:
            if this[1] == 0:
                return []
            reference = target
            points = indicator.scale * (child[0] - goal * child[1]) / this[1]
            share = points if indicator.in_points else points / abs(target) * 100.0
        found.append(Contribution(code, name, _value(indicator, child), reference, share))
    return sorted(found, key=lambda c: (-abs(c.contribution), c.org_unit))


Decomposed = tuple[tuple[Parts, Parts], list[tuple[str, str, tuple[Parts, Parts]]]]
"""A parent's parts (this year, last year) and its children's or groups' (code, name,
parts): what the contributions divide."""


async def children_contributions(
    session: AsyncSession,
    indicator: Indicator,
    wanted: Collection[tuple[str, date]],
    year_to_date: bool,
    scope: Scope = Scope.AS_WAS,
    tree_day: date | None = None,
) -> dict[tuple[str, date], list[Contribution]]:
    """For each (org unit, complete month), its children's contributions to the change of
    ``indicator`` (of the month, or of its year to date) from last year, biggest first
    (:func:`children_parts`)."""
    found = await children_parts(session, indicator, wanted, year_to_date, scope, tree_day)
    return {key: contributions_of(indicator, *parts) for key, parts in found.items()}


async def children_parts(
    session: AsyncSession,
    indicator: Indicator,
    wanted: Collection[tuple[str, date]],
    year_to_date: bool,
    scope: Scope = Scope.AS_WAS,
    tree_day: date | None = None,
) -> dict[tuple[str, date], Decomposed]:
    """For each (org unit, complete month), its parts and its children's, this year and
    last (of the month, or of its year to date): the children of the month (as it was),
    or of ``tree_day`` (constant scope). Two statements whatever the number of org units:
    the children, and their sums."""
    if not wanted:
        return {}
    pairs = sorted(set(wanted))
    days = sorted({(parent, tree_day or month) for parent, month in pairs})
    rows = await session.execute(
        _CHILDREN, {"parents": [p for p, _ in days], "days": [d for _, d in days]}
    )
    on_day: dict[tuple[str, date], list[tuple[str, str]]] = defaultdict(list)
    for parent, day, code, name in rows:
        on_day[(parent, day)].append((code, name))
    children = {(parent, month): on_day[(parent, tree_day or month)] for parent, month in pairs}
    codes = {code for found in children.values() for code, _ in found}
    codes |= {parent for parent, _ in pairs}
    months = [month for _, month in pairs]
    first, last = date(min(months).year - 1, 1, 1), max(months)
    sums = await load_sums(session, codes, first, last, indicator.measures, scope)
    series = {
        code: Series(indicator, sums.get(code, {}), add_months(min(months), -12), last)
        for code in codes
    }
    return {
        (parent, month): (
            series[parent].parts(month, year_to_date),
            [(code, name, series[code].parts(month, year_to_date)) for code, name in found],
        )
        for (parent, month), found in children.items()
    }


async def group_parts(
    session: AsyncSession,
    indicator: Indicator,
    org_unit: str,
    by: By,
    months: tuple[date, date],
    scope: Scope = Scope.AS_WAS,
    tree_day: date | None = None,
) -> Decomposed:
    """The parts of the groups of what the records of the units below ``org_unit`` carry,
    over ``months`` (first and last) and the same months of last year, and of their
    total; a group's code and name are its value (``'05M09'``, ``'2'``). One statement,
    on the analytics' rows."""
    query = AnalyticsQuery(
        org_unit=org_unit,
        indicators=[indicator],
        dimensions=[Dimension(by.value)],
        first=months[0],
        last=months[1],
        scope=scope,
        tree_day=tree_day,
        limit=MAX_GROUPS,
    )
    rows, _ = await summed_rows(session, query)
    total = total_of(rows)
    groups = []
    for row in rows:
        parts = parts_of(indicator, row.this), parts_of(indicator, row.last)
        if any(parts[0]) or any(parts[1]):  # not the records of other kinds
            groups.append((str(row.keys[0]), str(row.keys[0]), parts))
    return (parts_of(indicator, total.this), parts_of(indicator, total.last)), groups


@dataclass(frozen=True)
class Explanation:
    """A figure (of the month or its year to date), what it is set against, the
    variation, and its parts' contributions to it, biggest first."""

    value: float | None
    reference: float | None
    variation: float | None
    contributions: list[Contribution]


async def explain(
    session: AsyncSession,
    figures: Figures,
    year_to_date: bool,
    by: By = By.CHILDREN,
    basis: Basis = Basis.LAST_YEAR,
    scope: Scope = Scope.AS_WAS,
    tree_day: date | None = None,
) -> Explanation:
    """What explains ``figures`` (a complete month's, not a median's): its change from
    last year or its gap to its target, broken into its children or into the groups of
    what its records carry."""
    indicator = INDICATORS_BY_CODE[figures.indicator]
    month = figures.period
    if by is By.CHILDREN:
        found = await children_parts(
            session, indicator, [(figures.org_unit, month)], year_to_date, scope, tree_day
        )
        parent, parts = found[(figures.org_unit, month)]
    else:
        first = date(month.year, 1, 1) if year_to_date else month
        parent, parts = await group_parts(
            session, indicator, figures.org_unit, by, (first, month), scope, tree_day
        )
    value = figures.year_to_date if year_to_date else figures.value
    if basis is Basis.TARGET:
        reference = figures.target_year_to_date if year_to_date else figures.target
        return Explanation(
            value,
            reference,
            variation_of(indicator, value, reference),
            target_contributions_of(indicator, reference, parent, parts),
        )
    return Explanation(
        value,
        figures.year_to_date_last_year if year_to_date else figures.same_period_last_year,
        figures.year_to_date_variation if year_to_date else figures.variation,
        contributions_of(indicator, parent, parts),
    )
