"""Analytics on several criteria: indicators broken down by org unit, month or quarter and
by what the records carry (kind, mode, severity, GHM root, act code), over a period,
against the same period of last year (DHIS2's ``analytics`` resource is the anchor).

The figures are read in one statement from ``activity_cube``, each unit-month's measures
by kind, mode and severity (kept by each merge like ``unit_month``): a year of an
establishment reads a few thousand cube rows, not its records. A GHM root or an act
code, of hundreds of values per unit-month, is read from the records themselves (by
unit and month, on their index).
Ratios are recomputed from the summed parts of each row, never averaged. The rows come
in the order of their dimensions, paged by keyset on them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from activity_svc.catalogue import BED_DAYS, CUBE_MEASURES, MEASURES_BY_NAME, Indicator
from activity_svc.indicators.values import Scope, parts_of, value_of, variation_of
from activity_svc.months import add_months

CUBE_MEASURE_NAMES = frozenset(m.name for m in CUBE_MEASURES)


class Dimension(StrEnum):
    ORG_UNIT = "org_unit"
    """The direct children of the org unit asked (as they were each month, or at the end
    of the period in constant scope)."""
    UNIT = "unit"
    """The care units below it."""
    SPECIALTY = "specialty"
    """The units' specialty, as the referential holds it (``obstétrique``): the same
    activity across establishments."""
    MONTH = "month"
    QUARTER = "quarter"
    KIND = "kind"
    MODE = "mode"
    SEVERITY = "severity"
    CMD = "cmd"
    """The GHM's major diagnostic category (its first two characters): the case-mix."""
    DRG_ROOT = "drg_root"
    CODE = "code"


# What each dimension reads (SQL over the row ``c``, of the cube or of the records, the
# child membership ``kid`` and the month moved into this year's period ``shifted``);
# catalogue SQL, never the request's. Last year's rows are moved forward a year, so that
# both years meet in one row. A record without the attribute reads '' (an act has no
# mode) or 0 (no severity).
_DIMENSION_SQL: dict[Dimension, str] = {
    Dimension.ORG_UNIT: "kid.ancestor",
    Dimension.UNIT: "c.unit",
    Dimension.SPECIALTY: "coalesce(spec.specialty, '')",
    Dimension.MONTH: "to_char(shifted.month, 'YYYY-MM')",
    Dimension.QUARTER: "to_char(shifted.month, 'YYYY-\"Q\"Q')",
    Dimension.KIND: "c.kind",
    Dimension.MODE: "c.mode",
    Dimension.SEVERITY: "c.severity",
}
_RECORD_SQL: dict[Dimension, str] = {
    **_DIMENSION_SQL,
    Dimension.MODE: "coalesce(c.mode, '')",
    Dimension.SEVERITY: "coalesce(c.severity, 0)",
    Dimension.CMD: "coalesce(left(c.drg, 2), '')",
    Dimension.DRG_ROOT: "coalesce(left(c.drg, 5), '')",
    Dimension.CODE: "coalesce(c.code, '')",
}
FROM_RECORDS = frozenset({Dimension.CMD, Dimension.DRG_ROOT, Dimension.CODE})
"""The dimensions read from the records: by the hundred per unit-month, a cube of them
would hold nearly as many rows as the records (ADR 0021)."""
FILTERABLE = (
    Dimension.UNIT,
    Dimension.SPECIALTY,
    Dimension.KIND,
    Dimension.MODE,
    Dimension.SEVERITY,
    Dimension.CMD,
    Dimension.DRG_ROOT,
    Dimension.CODE,
)
"""The dimensions a query can keep some values of (``filters``)."""


def analysable(indicator: Indicator) -> bool:
    """Whether the cube holds what the indicator reads: not the occupancy rate (bed days
    and days present are a unit's months', not its records' attributes)."""
    return BED_DAYS not in indicator.measures and all(
        m in CUBE_MEASURE_NAMES for m in indicator.measures
    )


@dataclass(frozen=True)
class AnalyticsQuery:
    """What to break down, by what, over which months, and which page."""

    org_unit: str
    indicators: Sequence[Indicator]
    dimensions: Sequence[Dimension]
    first: date
    last: date
    """The period's months (first days), within one span of at most 12 months."""
    compare: bool = True
    """Against the same months of last year."""
    scope: Scope = Scope.AS_WAS
    tree_day: date | None = None
    """The tree's day in constant scope."""
    filters: Mapping[Dimension, Sequence[str | int]] = field(default_factory=dict)
    limit: int = 100
    after: tuple[Any, ...] | None = None
    """The last row's dimension values of the page before."""


@dataclass(frozen=True)
class IndicatorCell:
    value: float | None
    last_year: float | None
    variation: float | None


@dataclass(frozen=True)
class AnalyticsRow:
    keys: tuple[str | int, ...]
    """The row's value of each dimension, in the query's order."""
    cells: dict[str, IndicatorCell]
    """Per indicator code."""


def _statement(query: AnalyticsQuery, measures: Sequence[str]) -> str:
    records = bool(FROM_RECORDS & {*query.dimensions, *query.filters})
    sql_of = _RECORD_SQL if records else _DIMENSION_SQL
    dims = [sql_of[d] for d in query.dimensions]
    positions = ", ".join(str(i + 1) for i in range(len(dims)))
    columns = [f"{sql} AS d{i}" for i, sql in enumerate(dims)]
    if records:
        this = [
            f'{MEASURES_BY_NAME[m].sum_sql("c", "CAST(c.month >= :first AS int)")} AS "t_{m}"'
            for m in measures
        ]
        last = [
            f'{MEASURES_BY_NAME[m].sum_sql("c", "CAST(c.month < :first AS int)")} AS "l_{m}"'
            for m in measures
        ]
    else:
        this = [f'sum(c."{m}") FILTER (WHERE c.month >= :first) AS "t_{m}"' for m in measures]
        last = [f'sum(c."{m}") FILTER (WHERE c.month < :first) AS "l_{m}"' for m in measures]
    valid = (
        "{m}.valid_from <= CAST(:at AS date)"
        " AND ({m}.valid_to IS NULL OR {m}.valid_to > CAST(:at AS date))"
        if query.scope is Scope.CONSTANT
        else "{m}.valid_from <= c.month AND ({m}.valid_to IS NULL OR {m}.valid_to > c.month)"
    )
    joins = ""
    if Dimension.ORG_UNIT in query.dimensions:
        joins = f"""
        JOIN org_unit_membership kid ON kid.unit = c.unit
            AND kid.ancestor IN (SELECT v.code FROM org_unit_version v WHERE v.parent = :root)
            AND {valid.format(m="kid")}"""
    if Dimension.SPECIALTY in {*query.dimensions, *query.filters}:
        joins += "\n        JOIN org_unit spec ON spec.code = c.unit"
    months = "c.month BETWEEN :first AND :last"
    if query.compare:
        months = f"({months} OR c.month BETWEEN :first_ly AND :last_ly)"
    filters = "".join(
        f" AND {sql_of[d]} = ANY(:f_{d.value})" for d in query.filters if query.filters[d]
    )
    # The kinds the measures count only (from the catalogue): a range of the records' index
    # (unit, month, kind, ...), not every record of the months; no row counts nothing.
    if measures:
        kinds = ", ".join(sorted({f"'{MEASURES_BY_NAME[m].kind.value}'" for m in measures}))
        filters += f" AND c.kind IN ({kinds})"
    page = ""
    if query.after is not None:
        key = ", ".join(f"g.d{i}" for i in range(len(dims)))
        given = ", ".join(f":a{i}" for i in range(len(dims)))
        page = f"WHERE ({key}) > ({given})"
    return f"""
    SELECT g.* FROM (
        SELECT {", ".join(columns + this + last)}
        FROM {"activity_record" if records else "activity_cube"} c
        CROSS JOIN LATERAL (SELECT CASE WHEN c.month >= :first THEN c.month
            ELSE CAST(c.month + interval '1 year' AS date) END AS month) shifted
        JOIN org_unit_membership memb ON memb.unit = c.unit AND memb.ancestor = :root
            AND {valid.format(m="memb")}{joins}
        WHERE {months}{filters}
        GROUP BY {positions}
    ) g {page}
    ORDER BY {positions}
    LIMIT :limit
    """


@dataclass(frozen=True)
class SummedRow:
    keys: tuple[str | int, ...]
    """The row's value of each dimension, in the query's order."""
    this: dict[str, float]
    """The row's summed measures over the period."""
    last: dict[str, float]
    """Over the same months of last year (zeros without ``compare``)."""


async def summed_rows(session: AsyncSession, query: AnalyticsQuery) -> tuple[list[SummedRow], bool]:
    """The query's page of rows as summed measures (those of its indicators), and whether
    more follow."""
    measures = sorted({m for i in query.indicators for m in i.measures})
    params: dict[str, Any] = {
        "root": query.org_unit,
        "first": query.first,
        "last": query.last,
        "first_ly": add_months(query.first, -12),
        "last_ly": add_months(query.last, -12),
        "at": query.tree_day or query.last,
        "limit": query.limit + 1,
    }
    for dimension, values in query.filters.items():
        params[f"f_{dimension.value}"] = list(values)
    if query.after is not None:
        params |= {f"a{i}": value for i, value in enumerate(query.after)}
    result = await session.execute(text(_statement(query, measures)), params)
    width, count = len(query.dimensions), len(measures)
    rows = []
    for row in result.all():
        this, last = row[width : width + count], row[width + count :]
        rows.append(
            SummedRow(
                keys=tuple(row[:width]),
                this={m: float(v or 0) for m, v in zip(measures, this, strict=True)},
                last={m: float(v or 0) for m, v in zip(measures, last, strict=True)},
            )
        )
    return rows[: query.limit], len(rows) > query.limit


def total_of(rows: Sequence[SummedRow]) -> SummedRow:
    """The rows' measures summed: their total row."""
    this: dict[str, float] = defaultdict(float)
    last: dict[str, float] = defaultdict(float)
    for row in rows:
        for measure, value in row.this.items():
            this[measure] += value
        for measure, value in row.last.items():
            last[measure] += value
    return SummedRow((), dict(this), dict(last))


async def analytics(
    session: AsyncSession, query: AnalyticsQuery
) -> tuple[list[AnalyticsRow], bool]:
    """The query's page of rows, and whether more follow."""
    summed, more = await summed_rows(session, query)
    rows = [
        AnalyticsRow(row.keys, cells_of(query.indicators, row.this, row.last, query.compare))
        for row in summed
    ]
    return rows, more


def cells_of(
    indicators: Sequence[Indicator],
    this: Mapping[str, float],
    last: Mapping[str, float],
    compare: bool = True,
) -> dict[str, IndicatorCell]:
    """Each indicator's value from summed measures, last year's and the variation."""
    cells = {}
    for indicator in indicators:
        value = value_of(indicator, parts_of(indicator, this))
        reference = value_of(indicator, parts_of(indicator, last)) if compare else None
        cells[indicator.code] = IndicatorCell(
            value, reference, variation_of(indicator, value, reference)
        )
    return cells
