"""Response models of the indicator routes (catalogue, values, dashboards, records, overview)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field

from activity_svc.catalogue import (
    BED_DAYS,
    MEASURES,
    Aggregation,
    Direction,
    Indicator,
    RecordKind,
    VariationUnit,
)
from activity_svc.indicators.analytics import AnalyticsRow, Dimension
from activity_svc.indicators.explain import Basis, By, Contribution
from activity_svc.indicators.figures import Figures
from activity_svc.indicators.values import Scope
from activity_svc.models import FigureComment
from activity_svc.referential.tree import LOCAL_TIME
from ght_shared.pagination import Page
from ght_shared.schemas import MAX_KEY, PrintableLines, ReadModel, StrictModel

_DESCRIPTIONS = {m.name: m.description for m in MEASURES} | {
    BED_DAYS: "Installed beds on the month's first day x days of the month (bed capacity)."
}


class MeasureRead(BaseModel):
    name: str
    description: str


class IndicatorRead(BaseModel):
    """An indicator of the catalogue: what it divides, how it reads."""

    code: str
    name: str
    label_fr: str
    unit: str
    direction: Direction
    aggregation: Aggregation
    scale: float
    numerator: list[MeasureRead]
    denominator: list[MeasureRead] = Field(description="Empty for a volume (a plain sum).")
    record_kind: RecordKind = Field(description="The kind of the records behind a value.")
    tags: list[str]
    main: bool = Field(description="Shown on the dashboards.")
    description: str

    @classmethod
    def of(cls, indicator: Indicator) -> IndicatorRead:
        def measures(names: tuple[str, ...]) -> list[MeasureRead]:
            return [MeasureRead(name=n, description=_DESCRIPTIONS.get(n, "")) for n in names]

        return cls(
            code=indicator.code,
            name=indicator.name,
            label_fr=indicator.label_fr,
            unit=indicator.unit,
            direction=indicator.direction,
            aggregation=indicator.aggregation,
            scale=indicator.scale,
            numerator=measures(indicator.numerator),
            denominator=measures(indicator.denominator),
            record_kind=indicator.record_kind,
            tags=list(indicator.tags),
            main=indicator.main,
            description=indicator.description,
        )


class IndicatorSummary(BaseModel):
    """How to show an indicator's figures (a dashboard's column headers)."""

    code: str
    name: str
    label_fr: str
    unit: str
    direction: Direction

    @classmethod
    def of(cls, indicator: Indicator) -> IndicatorSummary:
        return cls(
            code=indicator.code,
            name=indicator.name,
            label_fr=indicator.label_fr,
            unit=indicator.unit,
            direction=indicator.direction,
        )


MAX_COMMENT = 2000
"""The characters of a comment, at most."""


class CommentCreate(StrictModel):
    """What a person writes of a figure: an indicator of an org unit in a month."""

    org_unit: str = Field(min_length=1, max_length=MAX_KEY)
    period: str = Field(max_length=7, description="The month, YYYY-MM.", examples=["2026-10"])
    text: PrintableLines = Field(
        min_length=1,
        max_length=MAX_COMMENT,
        description="The explanation, on several lines if need be.",
        examples=[
            "Fermeture de 6 lits du 3 au 21 octobre (travaux) : 180 séjours de moins attendus."
        ],
    )


class CommentRead(BaseModel):
    """A comment on a figure: who wrote it, when, and what."""

    id: uuid.UUID
    indicator: str
    org_unit: str
    period: str = Field(description="The month, YYYY-MM.")
    text: str
    author: str = Field(description="The account that wrote it.")
    author_name: str = Field(description="Its name as the token gave it.")
    written_at: datetime

    @classmethod
    def of(cls, comment: FigureComment) -> CommentRead:
        return cls(
            id=comment.id,
            indicator=comment.indicator,
            org_unit=comment.org_unit,
            period=comment.month.strftime("%Y-%m"),
            text=comment.text,
            author=comment.author,
            author_name=comment.author_name,
            written_at=comment.written_at,
        )


class FiguresRead(BaseModel):
    """One indicator's figures for one month; None where not computable."""

    indicator: str
    period: str = Field(description="The month, YYYY-MM.")
    value: float | None
    same_period_last_year: float | None
    variation: float | None = Field(
        description="From last year: (value - last year) / |last year| x 100 in %, or for a"
        " rate value - last year in points (`variation_unit`)."
    )
    year_to_date: float | None
    year_to_date_last_year: float | None
    year_to_date_variation: float | None
    variation_unit: VariationUnit = Field(
        description="`%` of last year's figure, or `points` for a rate (in %)."
    )
    projection: float | None = Field(
        description="Year-end projection: last year's seasonal profile applied to this "
        "year's year to date."
    )
    target: float | None = Field(description="The month's target (profiled for a volume).")
    target_year_to_date: float | None
    target_year: float | None
    partial: bool = Field(
        description="The month is not complete: its figures (the year to date too) count"
        " its days up to the org unit's `complete_up_to`, against the same days last year;"
        " no projection, and the target of a volume in proportion of the days."
    )
    complete_days: int = Field(
        description="The days of the month the figures count (all of them when complete)."
    )
    comments: list[CommentRead] = Field(
        default_factory=list,
        description="What was written of this figure (the indicator of the org unit that"
        " month), oldest first.",
    )

    @classmethod
    def of(cls, figures: Figures, comments: list[CommentRead] | None = None) -> FiguresRead:
        return cls(
            comments=comments or [],
            indicator=figures.indicator,
            period=figures.period.strftime("%Y-%m"),
            value=figures.value,
            same_period_last_year=figures.same_period_last_year,
            variation=figures.variation,
            year_to_date=figures.year_to_date,
            year_to_date_last_year=figures.year_to_date_last_year,
            year_to_date_variation=figures.year_to_date_variation,
            variation_unit=figures.variation_unit,
            projection=figures.projection,
            target=figures.target,
            target_year_to_date=figures.target_year_to_date,
            target_year=figures.target_year,
            partial=figures.partial,
            complete_days=figures.complete_days,
        )


class OrgUnitRef(BaseModel):
    code: str
    kind: str
    name: str
    finess: str | None


CompleteUpTo = Annotated[
    date | None,
    Field(
        description="The day the org unit's data is complete up to: its establishment's"
        " (the earliest of the establishments' for the territory); null when no data came."
    ),
]


class IndicatorValues(BaseModel):
    """An indicator's figures month by month for one org unit."""

    indicator: IndicatorSummary
    org_unit: OrgUnitRef
    scope: Scope
    complete_up_to: CompleteUpTo
    values: list[FiguresRead]


class OrgUnitFigures(OrgUnitRef):
    complete_up_to: CompleteUpTo
    figures: list[FiguresRead] = Field(
        description="Per month (oldest first), one per main indicator in catalogue order."
    )


class Dashboard(BaseModel):
    """Every main indicator for an org unit and each of its direct children, one month."""

    period: str = Field(description="The (last) month, YYYY-MM.")
    months: int
    scope: Scope
    indicators: list[IndicatorSummary]
    org_unit: OrgUnitFigures
    children: list[OrgUnitFigures]


class AnalyticsIndicator(IndicatorSummary):
    variation_unit: VariationUnit

    @classmethod
    def of(cls, indicator: Indicator) -> AnalyticsIndicator:
        return cls(
            **IndicatorSummary.of(indicator).model_dump(), variation_unit=indicator.variation_unit
        )


class AnalyticsCell(BaseModel):
    value: float | None
    last_year: float | None = Field(description="The same months of last year's.")
    variation: float | None = Field(description="In the indicator's `variation_unit`.")


class AnalyticsRowRead(BaseModel):
    dimensions: dict[str, str | int] = Field(
        description="The row's value of each dimension ('' or 0: records without it)."
    )
    values: dict[str, AnalyticsCell] = Field(description="Per indicator code.")

    @classmethod
    def of(cls, row: AnalyticsRow, dimensions: list[Dimension]) -> AnalyticsRowRead:
        return cls(
            dimensions=dict(zip(dimensions, row.keys, strict=True)),
            values={
                code: AnalyticsCell(
                    value=cell.value, last_year=cell.last_year, variation=cell.variation
                )
                for code, cell in row.cells.items()
            },
        )


class Analytics(BaseModel):
    """Indicators broken down by several dimensions over a period, against last year."""

    org_unit: OrgUnitRef
    scope: Scope
    first_month: str = Field(description="The period's first month, YYYY-MM.")
    last_month: str = Field(
        description="Its last month, YYYY-MM: the last complete one when the period asked"
        " goes further."
    )
    compare: str = Field(description="`last_year`, or `none`.")
    complete_up_to: CompleteUpTo
    dimensions: list[Dimension]
    indicators: list[AnalyticsIndicator]
    labels: dict[str, str] = Field(description="The name of each org unit in the rows.")
    rows: list[AnalyticsRowRead] = Field(description="In the order of their dimensions.")
    next_cursor: str | None = Field(
        description="Pass it as `cursor` to read the next page; null on the last page."
    )


def _local(moment: datetime | None) -> datetime | None:
    return moment.astimezone(LOCAL_TIME) if moment is not None else None


LocalTime = Annotated[
    datetime | None,
    AfterValidator(_local),
    Field(description="In the establishments' local time, with its offset."),
]


class RecordRead(ReadModel):
    """An activity record behind an indicator's value (the columns its kind uses); its
    times in the establishments' local time (``2026-03-02T09:15:00+01:00``)."""

    source: str
    source_id: str
    kind: RecordKind
    finess: str
    unit: str
    uf: str
    month: date
    occurred_on: date
    admitted_at: LocalTime
    discharged_at: LocalTime
    drg: str | None
    severity: int | None
    mode: str | None
    stay_days: int | None
    code: str | None
    code_system: str | None
    coded: bool | None
    coded_on: date | None
    budget_title: int | None
    account: str | None
    amount: float | None
    import_id: uuid.UUID
    received_at: Annotated[datetime, AfterValidator(_local)]


class ContributionRead(BaseModel):
    """One part's share in a figure's variation from last year."""

    key: str = Field(description="The child's code, or the group's value (`05M09`, `2`).")
    name: str | None = Field(description="The child's (or the unit's) name; null for a group.")
    value: float | None
    reference: float | None = Field(
        description="Last year's figure; against a target, the child's part of a volume's"
        " target or the parent's target of a ratio."
    )
    contribution: float = Field(
        description="Its share of the variation, in the variation's unit: they add up to it."
    )

    @classmethod
    def of(cls, found: Contribution, named: bool) -> ContributionRead:
        return cls(
            key=found.org_unit,
            name=found.name if named else None,
            value=found.value,
            reference=found.reference,
            contribution=found.contribution,
        )


class OtherContributions(BaseModel):
    """The parts past ``limit``, together."""

    count: int
    contribution: float


class Contributions(BaseModel):
    """What explains an org unit's figure against last year: each part's share of the
    variation (a child's, or a group's of what the records carry), biggest first (they
    add up to it)."""

    indicator: IndicatorSummary
    org_unit: OrgUnitRef
    period: str = Field(description="The month, YYYY-MM.")
    scope: Scope
    year_to_date: bool = Field(description="The year to date's change, or the month's.")
    value: float | None
    reference: float | None = Field(description="Last year's figure, or the target.")
    variation: float | None = Field(description="The change, or the gap to the target.")
    variation_unit: VariationUnit
    complete_up_to: CompleteUpTo
    basis: Basis
    by: By
    contributions: list[ContributionRead]
    others: OtherContributions | None = Field(
        description="The parts past `limit`, summed; null when every part is listed."
    )


class UnitBacklog(BaseModel):
    """A unit's outpatient acts not coded yet."""

    unit: str
    name: str
    uncoded: int
    amount: float = Field(description="What they would bill (EUR), as sent.")
    oldest: date = Field(description="The day of the oldest.")


class UncodedAct(ReadModel):
    """An outpatient act not coded yet."""

    source: str
    source_id: str
    finess: str
    unit: str
    uf: str
    occurred_on: date
    age_days: int = Field(description="Days since the act.")
    code: str | None
    code_system: str | None
    amount: float | None


class CodingWorklist(Page[UncodedAct]):
    """The outpatient acts not coded yet below an org unit, oldest first, with the backlog
    of each unit."""

    org_unit: OrgUnitRef
    uncoded: int = Field(description="Every act not coded yet below the org unit.")
    amount: float = Field(description="What they would bill (EUR), as sent.")
    units: list[UnitBacklog] = Field(description="Per unit, its oldest act first.")


class RecordPage(Page[RecordRead]):
    """A page of the records behind a value, with how complete their month is."""

    complete_up_to: CompleteUpTo
    partial: bool = Field(description="The month is not complete (see FiguresRead).")


class HeadlineFigure(BaseModel):
    """A headline indicator's year to date against the same period last year."""

    indicator: str
    label_fr: str
    unit: str
    period: str = Field(description="The last month whose data is complete, YYYY-MM.")
    year_to_date: float | None
    same_period_last_year: float | None = Field(description="Last year's year to date.")
    change: float | None = Field(description="Variation in % of last year's year to date.")


class ActivityHeadline(BaseModel):
    complete_up_to: CompleteUpTo
    headline: list[HeadlineFigure]


class ComparedFigure(BaseModel):
    """An indicator's year to date in the units of a comparison, against last year's."""

    value: float | None
    last_year: float | None
    variation: float | None = Field(description="In `variation_unit`.")


class ComparedEstablishment(ComparedFigure):
    finess: str
    name: str


class ComparedIndicator(BaseModel):
    indicator: str
    label_fr: str
    unit: str
    variation_unit: VariationUnit
    territory: ComparedFigure = Field(description="Every establishment's units together.")
    establishments: list[ComparedEstablishment] = Field(
        description="Each establishment's; null figures for one without such units."
    )


class SpecialtyComparison(BaseModel):
    """The same indicators across the establishments, in their units of some specialties
    (the maternities, the imaging, the emergencies), over the year to date."""

    key: str = Field(examples=["maternities"])
    label_fr: str = Field(examples=["Maternités"])
    specialties: list[str] = Field(description="The units' specialties it reads.")
    first_month: str
    last_month: str = Field(description="The territory's last complete month.")
    indicators: list[ComparedIndicator]


class TerritoryHeadline(ActivityHeadline):
    comparisons: list[SpecialtyComparison] = Field(
        default_factory=list, description="The commission's standing comparisons."
    )


class ActivityOverview(BaseModel):
    """The activity part of the gateway's territorial overview (docs/overview.md)."""

    establishments: dict[str, ActivityHeadline]
    territory: TerritoryHeadline | None = Field(
        default=None, description="Territorial callers only (absent otherwise)."
    )
