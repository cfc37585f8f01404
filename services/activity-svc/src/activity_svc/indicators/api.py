"""Routes of the indicators: catalogue, values, dashboards, drill-down, overview.

Every route needs ``activity:read``; figures of an org unit need the right to read its
establishment, and the territory root's figures a territorial principal.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import asdict, replace
from datetime import date, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from sqlalchemy import Select, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from activity_svc.access import AUTH_RESPONSES, NOT_FOUND, Reader, Steerer, ensure_may_read
from activity_svc.catalogue import INDICATORS, INDICATORS_BY_CODE, Aggregation, Indicator, Side
from activity_svc.completeness import complete_up_to, is_complete, last_complete_month
from activity_svc.errors import InvalidInput, OrgUnitNotFound
from activity_svc.indicators.analytics import (
    FILTERABLE,
    AnalyticsQuery,
    Dimension,
    analysable,
    analytics,
)
from activity_svc.indicators.coding import backlog_by_unit, uncoded_acts
from activity_svc.indicators.comments import add_comment, comments_on, remove_comment
from activity_svc.indicators.explain import Basis, By, explain
from activity_svc.indicators.exports import (
    analytics_table,
    dashboard_table,
    record_columns,
    record_query,
    records_table,
    values_table,
)
from activity_svc.indicators.overview import activity_overview
from activity_svc.indicators.records import (
    CURSOR_TYPES,
    RecordFilters,
    cursor_key,
    member_units,
    records_query,
)
from activity_svc.indicators.schemas import (
    ActivityOverview,
    Analytics,
    AnalyticsIndicator,
    AnalyticsRowRead,
    CodingWorklist,
    CommentCreate,
    CommentRead,
    ContributionRead,
    Contributions,
    Dashboard,
    FiguresRead,
    IndicatorRead,
    IndicatorSummary,
    IndicatorValues,
    OrgUnitFigures,
    OrgUnitRef,
    OtherContributions,
    RecordPage,
    RecordRead,
    UncodedAct,
    UnitBacklog,
)
from activity_svc.indicators.values import Scope, compute_figures, constant_tree_day
from activity_svc.ingestion.fields import MAX_TEXT
from activity_svc.lookups import indicator_of
from activity_svc.models import FigureComment, OrgUnit, OrgUnitVersion
from activity_svc.months import add_months, first_of_month, months_between
from activity_svc.referential.schemas import CODE_PATTERN
from activity_svc.referential.tree import today
from ght_shared.db import SessionDep, database_of, stream_records
from ght_shared.exports import EXPORT_RESPONSES, ExportFormat, ExportFormatDep, export_response
from ght_shared.identifiers import Finess
from ght_shared.pagination import Cursor, Limit, Page, decode_cursor, encode_cursor
from ght_shared.schemas import Printable

router = APIRouter(tags=["indicators"], responses=AUTH_RESPONSES)

_UnitRows = Select[str, str, str | None, str]

MAX_MONTHS = 60
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
MAIN_INDICATORS: tuple[Indicator, ...] = tuple(i for i in INDICATORS if i.main)

OrgUnitCode = Annotated[str, Query(pattern=CODE_PATTERN, description="Org unit code.")]
OrgUnitPath = Annotated[str, Path(pattern=CODE_PATTERN, description="Org unit code.")]
Period = Annotated[
    str | None, Query(max_length=7, description="A month, YYYY-MM.", examples=["2025-03"])
]
ScopeQuery = Annotated[
    Scope,
    Query(
        description="as_was: the tree as it was each month; constant: the tree at the end of"
        " the (last) month asked, today at the latest, applied to every month."
    ),
]


def parse_month(value: str, field: str) -> date:
    """``YYYY-MM`` → the month's first day; 422 naming ``field`` otherwise, or when the
    month is still to come (rule ``future_month``)."""
    match = _MONTH.match(value.strip())
    if match is None or not 1 <= int(match[2]) <= 12 or not 1900 <= int(match[1]) <= 2999:
        raise InvalidInput(
            f"{field} must be a month written YYYY-MM (month 01 to 12), not {value!r}.",
            field=field,
            rule="period",
        )
    month = date(int(match[1]), int(match[2]), 1)
    if month > _this_month():
        raise InvalidInput(
            f"{field} {value.strip()} is a month to come: no figure exists for it yet.",
            field=field,
            rule="future_month",
        )
    return month


def _this_month() -> date:
    return first_of_month(today())  # the establishments' calendar, not UTC


def _valid_on(query: _UnitRows, at: date | None) -> _UnitRows:
    """The versions valid on ``at``; the latest ones when None."""
    if at is None:
        return query.where(OrgUnitVersion.valid_to.is_(None))
    return query.where(
        OrgUnitVersion.valid_from <= at,
        or_(OrgUnitVersion.valid_to.is_(None), OrgUnitVersion.valid_to > at),
    )


def _org_unit_query() -> _UnitRows:
    return select(OrgUnit.code, OrgUnit.kind, OrgUnit.finess, OrgUnitVersion.name).join(
        OrgUnitVersion, OrgUnitVersion.code == OrgUnit.code
    )


async def readable_org_unit(session: AsyncSession, principal: Reader, code: str) -> OrgUnitRef:
    """The org unit (named as it is today, or as it will be when it is still to open),
    after checking the caller may read its figures."""
    query = _org_unit_query().where(OrgUnit.code == code)
    row = (await session.execute(_valid_on(query, today()))).first()
    if row is None:
        row = (await session.execute(_valid_on(query, None))).first()
    if row is None:
        raise OrgUnitNotFound(f"No org unit {code!r}.", org_unit=code)
    unit = OrgUnitRef(code=row.code, kind=row.kind, name=row.name, finess=row.finess)
    ensure_may_read(principal, unit.finess)
    return unit


async def children_of(session: AsyncSession, code: str, at: date) -> list[OrgUnitRef]:
    """The active direct children of ``code`` on ``at``."""
    query = _valid_on(
        _org_unit_query().where(OrgUnitVersion.parent == code, OrgUnitVersion.active), at
    ).order_by(OrgUnitVersion.name, OrgUnit.code)
    return [
        OrgUnitRef(code=r.code, kind=r.kind, name=r.name, finess=r.finess)
        for r in await session.execute(query)
    ]


async def complete_up_to_of(session: AsyncSession, unit: OrgUnitRef) -> date | None:
    """The day ``unit``'s data is complete up to: its establishment's, or the territory's."""
    return (await complete_up_to(session, [unit.finess]))[unit.finess]


@router.get("/indicators", summary="The indicator catalogue", response_model=list[IndicatorRead])
async def list_indicators(principal: Reader) -> list[IndicatorRead]:
    return [IndicatorRead.of(indicator) for indicator in INDICATORS]


@router.get(
    "/indicators/{code}/values",
    responses={**NOT_FOUND, **EXPORT_RESPONSES},
    summary="An indicator's figures month by month, with year-over-year, projection, target",
    response_model=IndicatorValues,
)
async def indicator_values(
    principal: Reader,
    session: SessionDep,
    fmt: ExportFormatDep,
    code: Annotated[str, Path(max_length=64)],
    org_unit: OrgUnitCode,
    from_: Annotated[
        str | None,
        Query(
            alias="from",
            max_length=7,
            description="First month, YYYY-MM (January of `to`'s year).",
        ),
    ] = None,
    to: Annotated[
        str | None,
        Query(
            max_length=7,
            description="Last month, YYYY-MM (the last month whose data is complete).",
        ),
    ] = None,
    scope: ScopeQuery = Scope.AS_WAS,
) -> IndicatorValues | Response:
    indicator = indicator_of(code)
    unit = await readable_org_unit(session, principal, org_unit)
    complete = await complete_up_to_of(session, unit)
    last = parse_month(to, "to") if to is not None else last_complete_month(complete)
    first = parse_month(from_, "from") if from_ is not None else date(last.year, 1, 1)
    if first > last:
        raise InvalidInput(
            f"from ({first:%Y-%m}) is after to ({last:%Y-%m}).", field="from", rule="before_to"
        )
    months = months_between(first, last)
    if len(months) > MAX_MONTHS:
        raise InvalidInput(
            f"At most {MAX_MONTHS} months per request ({len(months)} asked).",
            field="from",
            rule="max_months",
        )
    figures = await compute_figures(
        session, [indicator], [(unit.code, m) for m in months], {unit.code: unit.finess}, scope
    )
    comments = await comments_on(session, [unit.code], [indicator.code], months)
    answer = IndicatorValues(
        indicator=IndicatorSummary.of(indicator),
        org_unit=unit,
        scope=scope,
        complete_up_to=complete,
        values=[FiguresRead.of(f, comments.get((unit.code, code, f.period))) for f in figures],
    )
    if fmt is not ExportFormat.JSON:
        return await export_response(
            values_table(answer), fmt, f"{indicator.code} {unit.code} {first:%Y-%m} {last:%Y-%m}"
        )
    return answer


@router.get(
    "/dashboards/{org_unit}",
    responses={**NOT_FOUND, **EXPORT_RESPONSES},
    summary="Every main indicator for an org unit and its direct children, one month",
    response_model=Dashboard,
)
async def dashboard(
    principal: Reader,
    session: SessionDep,
    fmt: ExportFormatDep,
    org_unit: OrgUnitPath,
    period: Period = None,
    scope: ScopeQuery = Scope.AS_WAS,
    months: Annotated[
        int,
        Query(ge=1, le=12, description="How many months, ending at `period` (trend charts)."),
    ] = 1,
) -> Dashboard | Response:
    """``period`` defaults to the last month whose data is complete for the org unit (its
    establishment's, or every establishment's for the territory). The children are those
    of the period (as it was) or those at its end (constant scope). With ``months`` > 1 each org
    unit's figures run month by month (oldest first), every main indicator in each
    month."""
    month = parse_month(period, "period") if period is not None else None
    unit = await readable_org_unit(session, principal, org_unit)
    if month is None:
        month = last_complete_month(await complete_up_to_of(session, unit))
    tree_day = month if scope is Scope.AS_WAS else constant_tree_day(month)
    children = await children_of(session, unit.code, tree_day)
    units = [unit, *children]
    complete = await complete_up_to(session, {u.finess for u in units})
    figures = await compute_figures(
        session,
        MAIN_INDICATORS,
        [(u.code, add_months(month, -back)) for u in units for back in range(months - 1, -1, -1)],
        {u.code: u.finess for u in units},
        scope,
    )
    comments = await comments_on(
        session,
        [u.code for u in units],
        [i.code for i in MAIN_INDICATORS],
        [add_months(month, -back) for back in range(months)],
    )
    by_unit: dict[str, list[FiguresRead]] = {u.code: [] for u in units}
    for f in figures:
        by_unit[f.org_unit].append(
            FiguresRead.of(f, comments.get((f.org_unit, f.indicator, f.period)))
        )
    answer = Dashboard(
        period=month.strftime("%Y-%m"),
        months=months,
        scope=scope,
        indicators=[IndicatorSummary.of(i) for i in MAIN_INDICATORS],
        org_unit=OrgUnitFigures(
            **unit.model_dump(), complete_up_to=complete[unit.finess], figures=by_unit[unit.code]
        ),
        children=[
            OrgUnitFigures(
                **c.model_dump(), complete_up_to=complete[c.finess], figures=by_unit[c.code]
            )
            for c in children
        ],
    )
    if fmt is not ExportFormat.JSON:
        return await export_response(
            dashboard_table(answer), fmt, f"Tableau de bord {unit.code} {answer.period}"
        )
    return answer


@router.get(
    "/indicators/{code}/contributions",
    responses=NOT_FOUND,
    summary="What explains a figure's change from last year: each child's or group's share",
    response_model=Contributions,
)
async def indicator_contributions(
    principal: Reader,
    session: SessionDep,
    code: Annotated[str, Path(max_length=64)],
    org_unit: OrgUnitCode,
    period: Period = None,
    scope: ScopeQuery = Scope.AS_WAS,
    year_to_date: Annotated[
        bool, Query(description="The year to date's change (default), or the month's.")
    ] = True,
    by: Annotated[
        By, Query(description="The direct children (default), or what the records carry.")
    ] = By.CHILDREN,
    basis: Annotated[
        Basis, Query(description="The change from last year (default), or the gap to target.")
    ] = Basis.LAST_YEAR,
    limit: Annotated[int, Query(ge=1, le=1000, description="The parts listed.")] = 20,
) -> Contributions:
    """Each direct child's (or each act code's, GHM root's...) contribution to the org
    unit's variation from last year, in the variation's unit (points for a rate), biggest
    first: they add up to it. ``period`` defaults to the last complete month; a partial
    month is a 422 (``partial_month``), and a median, which does not decompose, too
    (``median``)."""
    indicator = indicator_of(code)
    if indicator.aggregation is Aggregation.MEDIAN:
        raise InvalidInput(
            f"{indicator.code} is a median: it does not decompose into its children's parts.",
            field="code",
            rule="median",
        )
    if by is not By.CHILDREN and not analysable(indicator):
        raise InvalidInput(
            f"{indicator.code} divides by bed days, which no record carries: break it down"
            " by children.",
            field="by",
            rule="not_analysable",
        )
    unit = await readable_org_unit(session, principal, org_unit)
    complete = await complete_up_to_of(session, unit)
    cut = indicator.complete_up_to(complete)
    month = parse_month(period, "period") if period is not None else last_complete_month(cut)
    if not is_complete(month, cut):
        raise InvalidInput(
            f"{month:%Y-%m} is not complete for {indicator.code} (complete up to {cut}):"
            " its children's shares would compare days that are not all in.",
            field="period",
            rule="partial_month",
        )
    (figures,) = await compute_figures(
        session, [indicator], [(unit.code, month)], {unit.code: unit.finess}, scope
    )
    tree_day = constant_tree_day(month) if scope is Scope.CONSTANT else None
    explained = await explain(session, figures, year_to_date, by, basis, scope, tree_day)
    found = explained.contributions
    names = await _names(session, {c.org_unit for c in found[:limit]}) if by is By.UNIT else {}
    listed = [
        ContributionRead.of(replace(c, name=names.get(c.org_unit, c.name)), named=by in _NAMED)
        for c in found[:limit]
    ]
    rest = found[limit:]
    return Contributions(
        indicator=IndicatorSummary.of(indicator),
        org_unit=unit,
        period=month.strftime("%Y-%m"),
        scope=scope,
        year_to_date=year_to_date,
        value=explained.value,
        reference=explained.reference,
        variation=explained.variation,
        variation_unit=figures.variation_unit,
        complete_up_to=complete,
        basis=basis,
        by=by,
        contributions=listed,
        others=(
            OtherContributions(count=len(rest), contribution=sum(c.contribution for c in rest))
            if rest
            else None
        ),
    )


_NAMED = frozenset({By.CHILDREN, By.UNIT})


@router.post(
    "/indicators/{code}/comments",
    status_code=201,
    responses={
        **NOT_FOUND,
        409: {"description": "The figure holds too many comments (`too_many_comments`)."},
    },
    summary="Write a comment on a figure (an indicator of an org unit in a month)",
    response_model=CommentRead,
)
async def write_comment(
    principal: Steerer,
    session: SessionDep,
    response: Response,
    code: Annotated[str, Path(max_length=64)],
    body: CommentCreate,
) -> CommentRead:
    """Shown with the figure on the dashboards and the values, to whoever reads it. Who may
    steer the org unit may write (a pôle manager on their pôle and below); a month to come
    is a 422 (``future_month``)."""
    month = parse_month(body.period, "period")
    comment = await add_comment(session, principal, code, body.org_unit, month, body.text)
    response.headers["Location"] = f"comments?org_unit={comment.org_unit}"  # relative
    return CommentRead.of(comment)


@router.get(
    "/indicators/{code}/comments",
    responses=NOT_FOUND,
    summary="The comments on an indicator of an org unit, month by month",
    response_model=Page[CommentRead],
)
async def list_comments(
    principal: Reader,
    session: SessionDep,
    code: Annotated[str, Path(max_length=64)],
    org_unit: OrgUnitCode,
    from_: Annotated[str | None, Query(alias="from", max_length=7, description="YYYY-MM.")] = None,
    to: Annotated[str | None, Query(max_length=7, description="YYYY-MM.")] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[CommentRead]:
    """Oldest month first, and in a month in the order they were written."""
    indicator = indicator_of(code)
    unit = await readable_org_unit(session, principal, org_unit)
    query = select(FigureComment).where(
        FigureComment.org_unit == unit.code, FigureComment.indicator == indicator.code
    )
    if from_ is not None:
        query = query.where(FigureComment.month >= parse_month(from_, "from"))
    if to is not None:
        query = query.where(FigureComment.month <= parse_month(to, "to"))
    order = (FigureComment.month, FigureComment.written_at, FigureComment.id)
    if cursor is not None:
        after = decode_cursor(cursor, date, datetime, uuid.UUID)
        query = query.where(tuple_(*order) > tuple_(*after))
    rows = (await session.scalars(query.order_by(*order).limit(limit + 1))).all()
    return Page.of(rows, limit, key=lambda c: (c.month, c.written_at, c.id), read=CommentRead.of)


@router.delete(
    "/comments/{comment_id}",
    status_code=204,
    responses={404: {"description": "No such comment (`comment_not_found`)."}},
    summary="Remove a comment (its author's)",
)
async def delete_comment(
    principal: Steerer, session: SessionDep, comment_id: uuid.UUID
) -> Response:
    await remove_comment(session, principal, comment_id)
    return Response(status_code=204)


@router.get(
    "/indicators/{code}/records",
    responses={**NOT_FOUND, **EXPORT_RESPONSES},
    summary="The records behind an indicator's value (drill-down), paged",
    response_model=RecordPage,
)
async def indicator_records(
    request: Request,
    principal: Reader,
    session: SessionDep,
    fmt: ExportFormatDep,
    code: Annotated[str, Path(max_length=64)],
    org_unit: OrgUnitCode,
    period: Annotated[str, Query(max_length=7, description="The month, YYYY-MM.")],
    scope: ScopeQuery = Scope.AS_WAS,
    side: Annotated[
        Side | None,
        Query(
            description="One side of a ratio: the records its numerator counts (the acts"
            " coded), or its denominator's (every act). Absent: the records behind the value."
        ),
    ] = None,
    coded: Annotated[bool | None, Query(description="Outpatient acts coded or not.")] = None,
    act_code: Annotated[
        str | None,
        Query(alias="code", pattern=r"^[A-Z0-9]{1,7}$", description="The CCAM or NGAP code."),
    ] = None,
    drg: Annotated[
        str | None,
        Query(
            pattern=r"^[0-9]{2}[CKMZ][0-9]{2}[0-9A-Z]?$",
            description="A GHM (05M092), or its root without the level (05M09).",
        ),
    ] = None,
    severity: Annotated[int | None, Query(ge=1, le=4, description="Severity level.")] = None,
    mode: Annotated[
        Literal["full", "ambulatory"] | None, Query(description="A stay's mode.")
    ] = None,
    source: Annotated[
        Printable | None, Query(min_length=1, max_length=MAX_TEXT, description="Sending system.")
    ] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> RecordPage | Response:
    """The records of the indicator's kind and filter (or of one side of its ratio), of
    the units below the org unit that month (as it was, or in today's tree), with only
    those matching every filter given, unit by unit, day by day, then by their key
    (finess, source, source_id). The columns of a file are those of the records' kinds.
    Times are in the establishments' local time, with their offset. A partial month
    lists every record it holds, its days after ``complete_up_to`` too."""
    indicator = indicator_of(code)
    month = parse_month(period, "period")
    after = decode_cursor(cursor, *CURSOR_TYPES) if cursor is not None else None
    records = indicator.records_sql(side)
    if records is None:
        raise InvalidInput(
            f"The {side} of {indicator.code} counts no record"
            f" ({', '.join(indicator.denominator) or 'a volume has none'}).",
            field="side",
            rule="records_side",
        )
    unit = await readable_org_unit(session, principal, org_unit)
    units = await member_units(session, unit.code, month, scope)
    filters = RecordFilters(coded, act_code, drg, severity, mode, source)
    query = records_query(indicator, records, units, month, filters, after)
    complete = await complete_up_to_of(session, unit)
    if fmt is not ExportFormat.JSON:
        # The file holds every record (from the cursor on): it is streamed, not paged.
        columns = record_columns(indicator.record_kinds(side))
        table = records_table(
            unit,
            indicator.label_fr,
            f"{month:%Y-%m}",
            scope,
            complete,
            columns,
            stream_records(database_of(request), record_query(query, columns)),
        )
        return await export_response(table, fmt, f"{indicator.code} {unit.code} {month:%Y-%m}")
    page = Page.of(
        (await session.scalars(query.limit(limit + 1))).all(),
        limit,
        key=cursor_key,
        read=RecordRead.model_validate,
    )
    return RecordPage(
        items=page.items,
        next_cursor=page.next_cursor,
        complete_up_to=complete,
        partial=not is_complete(month, complete),
    )


MAX_ANALYTICS_INDICATORS = 10
MAX_ANALYTICS_DIMENSIONS = 4
MAX_FILTER_VALUES = 100
_QUARTER = re.compile(r"^(\d{4})-Q([1-4])$")
_YEAR = re.compile(r"^(\d{4})$")
_FILTER_RULES: dict[Dimension, tuple[re.Pattern[str], str]] = {
    Dimension.UNIT: (re.compile(CODE_PATTERN), "an org unit code"),
    Dimension.SPECIALTY: (
        re.compile(r"^[^\x00-\x1f\x7f,]{1,100}$"),
        "a specialty as the referential holds it (obstétrique)",
    ),
    Dimension.KIND: (
        re.compile(r"^(stay|outpatient_act|imaging_exam|consultation|expense|revenue)$"),
        "a record kind",
    ),
    Dimension.MODE: (re.compile(r"^(full|ambulatory)$"), "full or ambulatory"),
    Dimension.SEVERITY: (re.compile(r"^[1-4]$"), "a severity level, 1 to 4"),
    Dimension.CMD: (re.compile(r"^[0-9]{2}$"), "a major diagnostic category (05)"),
    Dimension.DRG_ROOT: (re.compile(r"^[0-9]{2}[CKMZ][0-9]{2}$"), "a GHM root (05M09)"),
    Dimension.CODE: (re.compile(r"^[A-Z0-9]{1,7}$"), "a CCAM or NGAP code"),
}
ListQuery = Annotated[str | None, Query(max_length=2000)]


def _items(value: str | None, field: str, most: int) -> list[str]:
    """A comma-separated list (blanks dropped, duplicates refused), at most ``most``."""
    items = [item.strip() for item in (value or "").split(",") if item.strip()]
    if len(items) > most:
        raise InvalidInput(
            f"At most {most} values in {field} ({len(items)} given).", field=field, rule="max_items"
        )
    if len(set(items)) != len(items):
        raise InvalidInput(f"{field} names a value twice.", field=field, rule="duplicate")
    return items


def parse_period(value: str | None, last_complete: date) -> tuple[date, date]:
    """A year (``2026``), a quarter (``2026-Q3``), a month (``2026-10``) or a span of
    months (``2025-11..2026-10``), as (first month, last month); by default the year to
    date of the last complete month."""
    if value is None:
        return date(last_complete.year, 1, 1), last_complete
    given = value.strip()
    if (year := _YEAR.match(given)) is not None:
        first = parse_month(f"{year[1]}-01", "period")
        return first, date(first.year, 12, 1)
    if (quarter := _QUARTER.match(given)) is not None:
        first = parse_month(f"{quarter[1]}-{3 * int(quarter[2]) - 2:02d}", "period")
        return first, add_months(first, 2)
    first_text, _, last_text = given.partition("..")
    first = parse_month(first_text, "period")
    last = parse_month(last_text, "period") if last_text else first
    if first > last:
        raise InvalidInput(
            f"period {given} ends before it starts.", field="period", rule="before_to"
        )
    return first, last


@router.get(
    "/analytics",
    responses={**NOT_FOUND, **EXPORT_RESPONSES},
    summary="Indicators broken down by several dimensions over a period, against last year",
    response_model=Analytics,
)
async def indicator_analytics(
    principal: Reader,
    session: SessionDep,
    fmt: ExportFormatDep,
    org_unit: OrgUnitCode,
    indicators: Annotated[
        str,
        Query(
            max_length=1000,
            description="Indicator codes, comma-separated (at most 10; not the occupancy"
            " rate, whose bed days are no record's).",
        ),
    ],
    dimensions: Annotated[
        str | None,
        Query(
            max_length=200,
            description="Comma-separated, at most 4, in the rows' order: org_unit (the"
            " direct children), unit, specialty, month, quarter, kind, mode, severity, cmd,"
            " drg_root, code."
            " None: one row, the total.",
        ),
    ] = None,
    period: Annotated[
        str | None,
        Query(
            max_length=16,
            description="2026, 2026-Q3, 2026-10 or 2025-11..2026-10 (12 months at most),"
            " cut at the last complete month; the year to date by default.",
        ),
    ] = None,
    compare: Annotated[
        Literal["last_year", "none"], Query(description="Against the same months of last year.")
    ] = "last_year",
    scope: ScopeQuery = Scope.AS_WAS,
    unit: Annotated[ListQuery, Query(description="Keep these units (codes).")] = None,
    specialty: Annotated[
        ListQuery, Query(description="Keep the units of these specialties.")
    ] = None,
    kind: Annotated[ListQuery, Query(description="Keep these record kinds.")] = None,
    mode: Annotated[ListQuery, Query(description="Keep these stay modes.")] = None,
    severity: Annotated[ListQuery, Query(description="Keep these severity levels.")] = None,
    cmd: Annotated[ListQuery, Query(description="Keep these CMDs (05).")] = None,
    drg_root: Annotated[ListQuery, Query(description="Keep these GHM roots (05M09).")] = None,
    code: Annotated[ListQuery, Query(description="Keep these act codes.")] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Analytics | Response:
    """Each row: the values of its dimensions, each indicator's value over the period
    (recomputed from its summed parts), last year's over the same months and the
    variation (points for a rate). Rows in the order of their dimensions, paged."""
    chosen = [
        _analysable(code_) for code_ in _items(indicators, "indicators", MAX_ANALYTICS_INDICATORS)
    ]
    if not chosen:
        raise InvalidInput("Name at least one indicator.", field="indicators", rule="required")
    by = [_dimension(name) for name in _items(dimensions, "dimensions", MAX_ANALYTICS_DIMENSIONS)]
    if Dimension.MONTH in by and Dimension.QUARTER in by:
        raise InvalidInput(
            "month and quarter cannot both be dimensions.",
            field="dimensions",
            rule="month_or_quarter",
        )
    given = {
        Dimension.UNIT: unit,
        Dimension.SPECIALTY: specialty,
        Dimension.KIND: kind,
        Dimension.MODE: mode,
        Dimension.SEVERITY: severity,
        Dimension.CMD: cmd,
        Dimension.DRG_ROOT: drg_root,
        Dimension.CODE: code,
    }
    filters = {d: _filter_values(d, given[d]) for d in FILTERABLE if given[d] is not None}
    root = await readable_org_unit(session, principal, org_unit)
    complete = await complete_up_to_of(session, root)
    last_complete = min(
        last_complete_month(indicator.complete_up_to(complete)) for indicator in chosen
    )
    first, last = parse_period(period, last_complete)
    last = min(last, last_complete)
    if first > last:
        raise InvalidInput(
            f"The data of {first:%Y-%m} is not complete yet (complete up to {complete}).",
            field="period",
            rule="not_complete",
        )
    if len(months_between(first, last)) > 12:
        raise InvalidInput("At most 12 months per period.", field="period", rule="max_months")
    types = [int if d is Dimension.SEVERITY else str for d in by]
    after = decode_cursor(cursor, *types) if cursor is not None and by else None
    query = AnalyticsQuery(
        org_unit=root.code,
        indicators=chosen,
        dimensions=by,
        first=first,
        last=last,
        compare=compare == "last_year",
        scope=scope,
        tree_day=constant_tree_day(last) if scope is Scope.CONSTANT else None,
        filters=filters,
        limit=limit,
        after=after,
    )
    rows, more = await analytics(session, query)
    codes = {
        str(key)
        for row in rows
        for d, key in zip(by, row.keys, strict=True)
        if d in (Dimension.ORG_UNIT, Dimension.UNIT)
    }
    answer = Analytics(
        org_unit=root,
        scope=scope,
        first_month=f"{first:%Y-%m}",
        last_month=f"{last:%Y-%m}",
        compare=compare,
        complete_up_to=complete,
        dimensions=by,
        indicators=[AnalyticsIndicator.of(i) for i in chosen],
        labels=await _names(session, codes),
        rows=[AnalyticsRowRead.of(row, by) for row in rows],
        next_cursor=encode_cursor(*rows[-1].keys) if more and rows and by else None,
    )
    if fmt is not ExportFormat.JSON:
        return await export_response(
            analytics_table(answer), fmt, f"Analyse {root.code} {answer.first_month}"
        )
    return answer


def _analysable(code: str) -> Indicator:
    indicator = INDICATORS_BY_CODE.get(code)
    if indicator is None:
        raise InvalidInput(
            f"No indicator {code!r} in the catalogue.", field="indicators", rule="unknown_indicator"
        )
    if not analysable(indicator):
        raise InvalidInput(
            f"{code} divides by bed days, which no record carries: read it by month at"
            f" /indicators/{code}/values.",
            field="indicators",
            rule="not_analysable",
        )
    return indicator


def _dimension(name: str) -> Dimension:
    try:
        return Dimension(name)
    except ValueError:
        known = ", ".join(d.value for d in Dimension)
        raise InvalidInput(
            f"No dimension {name[:40]!r}: one of {known}.", field="dimensions", rule="one_of"
        ) from None


def _filter_values(dimension: Dimension, value: str | None) -> list[str | int]:
    pattern, what = _FILTER_RULES[dimension]
    items = _items(value, dimension.value, MAX_FILTER_VALUES)
    for item in items:
        if pattern.match(item) is None:
            raise InvalidInput(
                f"{dimension.value} must list values each {what}, not {item[:40]!r}.",
                field=dimension.value,
                rule="pattern",
            )
    if not items:
        raise InvalidInput(
            f"{dimension.value} keeps no value.", field=dimension.value, rule="required"
        )
    return [int(i) for i in items] if dimension is Dimension.SEVERITY else list(items)


async def _names(session: AsyncSession, codes: set[str]) -> dict[str, str]:
    """Each org unit's name as it is today (its latest version)."""
    if not codes:
        return {}
    day = today()
    rows = await session.execute(
        select(OrgUnitVersion.code, OrgUnitVersion.name).where(
            OrgUnitVersion.code.in_(codes),
            OrgUnitVersion.valid_from <= day,
            or_(OrgUnitVersion.valid_to.is_(None), OrgUnitVersion.valid_to > day),
        )
    )
    return {code: name for code, name in rows}


@router.get(
    "/coding/worklist",
    responses=NOT_FOUND,
    summary="Outpatient acts not coded yet, oldest first, with each unit's backlog",
    response_model=CodingWorklist,
)
async def coding_worklist(
    principal: Reader,
    session: SessionDep,
    org_unit: OrgUnitCode,
    min_age_days: Annotated[
        int, Query(ge=0, le=3650, description="Only acts at least this many days old.")
    ] = 0,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> CodingWorklist:
    """The acts of the units below the org unit (today's tree) not coded yet, done at
    least ``min_age_days`` ago, oldest first: who to chase, for how much. The coding at
    equal lag of the same units is ``coding_completeness_at_lag`` on the dashboards."""
    unit = await readable_org_unit(session, principal, org_unit)
    day = today()
    before = day - timedelta(days=min_age_days)
    after = decode_cursor(cursor, date, str, str, str) if cursor is not None else None
    backlog = await backlog_by_unit(session, unit.code, day, before)
    rows = (await session.scalars(uncoded_acts(unit.code, day, before, after, limit))).all()
    page = Page.of(
        rows,
        limit,
        key=lambda r: (r.occurred_on, r.finess, r.source, r.source_id),
        read=lambda r: UncodedAct(
            source=r.source,
            source_id=r.source_id,
            finess=r.finess,
            unit=r.unit,
            uf=r.uf,
            occurred_on=r.occurred_on,
            age_days=(day - r.occurred_on).days,
            code=r.code,
            code_system=r.code_system,
            amount=float(r.amount) if r.amount is not None else None,
        ),
    )
    return CodingWorklist(
        items=page.items,
        next_cursor=page.next_cursor,
        org_unit=unit,
        uncoded=sum(b.uncoded for b in backlog),
        amount=sum(b.amount for b in backlog),
        units=[UnitBacklog(**asdict(b)) for b in backlog],
    )


@router.get(
    "/overview",
    summary="Headline activity per establishment, for the gateway's territorial overview",
    response_model=ActivityOverview,
    response_model_exclude_unset=True,
)
async def overview(
    principal: Reader,
    session: SessionDep,
    establishment: Annotated[
        list[Finess] | None,
        Query(
            max_length=100,
            description="FINESS (repeatable); absent: every establishment the caller sees.",
        ),
    ] = None,
) -> ActivityOverview:
    """docs/overview.md: ``headline`` per establishment at its latest month with data;
    the territory's too for a territorial caller."""
    if establishment:
        for finess in establishment:
            ensure_may_read(principal, finess)
        wanted: set[str] | None = set(establishment)
    elif principal.is_territorial:
        wanted = None
    else:
        wanted = set(principal.establishments)
    return await activity_overview(session, wanted, principal.is_territorial)
