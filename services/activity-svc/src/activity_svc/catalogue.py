"""The declarative catalogue: measures kept per unit and month, indicators computed from them.

A **measure** is an additive quantity over records (a count or a sum under a filter);
``unit_month`` holds one column per measure, maintained incrementally by each merge.
An **indicator** is a numerator over a denominator, each a sum of measures, over a
subtree and a period: ratios are recomputed from the summed parts, never averaged
(DHIS2's aggregate model). The median coding delay is the one indicator that is not a
ratio: it is read from a histogram of delays, itself a set of additive measures.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import date, timedelta
from enum import StrEnum
from typing import Literal

VariationUnit = Literal["%", "points"]
"""What a variation or a gap is in: % of the reference, or points for a rate."""


class RecordKind(StrEnum):
    STAY = "stay"
    OUTPATIENT_ACT = "outpatient_act"
    IMAGING_EXAM = "imaging_exam"
    CONSULTATION = "consultation"
    EXPENSE = "expense"
    REVENUE = "revenue"


@dataclass(frozen=True)
class Measure:
    """``sum(value)`` over the records of ``kind`` matching ``condition`` (SQL over a record)."""

    name: str
    kind: RecordKind
    condition: str = "TRUE"
    value: str = "1"
    description: str = ""
    spread: bool = False
    """Counted in each month a stay was present in, by its days there (:data:`DAYS_PRESENT`,
    ``value`` reading the month ``{month}``), not all in its discharge month."""

    def sum_sql(self, alias: str = "r", weight: str = "1", month: str = "p.month") -> str:
        """This measure over the records ``alias`` (each counted ``weight`` times), as a SQL
        aggregate; a spread measure reads the month ``month`` (a row of
        :data:`PRESENT_MONTHS`). A ``FILTER``, not a ``CASE``: a record of another kind
        costs one test, not an addition of zero (most records count in a few of the
        measures only)."""
        condition = self.condition.replace("{r}", alias)
        value = self.value.replace("{r}", alias).replace("{month}", month)
        return (
            f"coalesce(sum({weight} * ({value}))"
            f" FILTER (WHERE {alias}.kind = '{self.kind}' AND ({condition})), 0)"
        )


PRESENT_MONTHS = (
    "generate_series(date_trunc('month', CAST({r}.occurred_on - {r}.stay_days AS timestamp)),"
    " date_trunc('month', CAST({r}.occurred_on - 1 AS timestamp)), interval '1 month')"
)
"""SQL set of the months a stay ``{r}`` was present in (its nights: from its admission day
to the day before its discharge), as timestamps; empty for a stay of no night."""

DAYS_PRESENT = (
    "(least({r}.occurred_on, CAST({month} + interval '1 month' AS date))"
    " - greatest({r}.occurred_on - {r}.stay_days, CAST({month} AS date)))"
)
"""SQL: the days (nights) of a stay ``{r}`` in the month ``{month}``, one of its
:data:`PRESENT_MONTHS` (its discharge day is ``occurred_on``, its admission day
``occurred_on - stay_days``)."""


# Upper bounds (days, inclusive) of the coding-delay histogram buckets; the last is open.
# Exact day by day over the first week, where the median of a well-run unit lies.
CODING_DELAY_BUCKETS: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7, 10, 14, 21, 30, 45, 60, 90)


def coding_delay_measure(index: int) -> str:
    return f"coding_delay_b{index:02d}"


def _coding_lag_days() -> int:
    """``ACTIVITY_CODING_LAG_DAYS`` (14 by default): the lag at which coding completeness is
    compared across years, one of the histogram's bounds, read once per process as the
    catalogue is."""
    raw = os.environ.get("ACTIVITY_CODING_LAG_DAYS", "14")
    lag = int(raw) if raw.strip().isdigit() else -1
    if lag not in CODING_DELAY_BUCKETS or lag == 0:
        bounds = ", ".join(str(b) for b in CODING_DELAY_BUCKETS[1:])
        raise ValueError(f"ACTIVITY_CODING_LAG_DAYS must be one of {bounds}, not {raw!r}")
    return lag


CODING_LAG_DAYS = _coding_lag_days()
"""Coding completeness "at J+n" counts the acts coded within this many days of the act."""


def _coding_delay_measures() -> list[Measure]:
    measures = []
    lower = 0
    delay = "({r}.coded_on - {r}.occurred_on)"
    for index, upper in enumerate((*CODING_DELAY_BUCKETS, None)):
        bound = f"{delay} >= {lower}" + (f" AND {delay} <= {upper}" if upper is not None else "")
        label = f"{lower}-{upper} days" if upper is not None else f"{lower} days or more"
        measures.append(
            Measure(
                coding_delay_measure(index),
                RecordKind.OUTPATIENT_ACT,
                f"{{r}}.coded AND {bound}",
                description=f"Coded outpatient acts coded {label} after they were performed.",
            )
        )
        lower = (upper or 0) + 1
    return measures


_SURGICAL = "substr({r}.drg, 3, 1) = 'C'"  # the GHM's third character: C = surgical

MEASURES: tuple[Measure, ...] = (
    Measure("stays_full", RecordKind.STAY, "{r}.mode = 'full'", description="Full stays."),
    Measure(
        "stays_ambulatory",
        RecordKind.STAY,
        "{r}.mode = 'ambulatory'",
        description="Ambulatory (same-day) stays.",
    ),
    Measure(
        "stay_days",
        RecordKind.STAY,
        "{r}.mode = 'full'",
        "{r}.stay_days",
        "Days of full stays (discharge date minus admission date), in their discharge month.",
    ),
    Measure(
        "occupied_days",
        RecordKind.STAY,
        "{r}.mode = 'full'",
        DAYS_PRESENT,
        "Days full stays were present in the month (their nights there): a stay of 20"
        " January to 5 March counts 12 days in January, 28 in February, 4 in March.",
        spread=True,
    ),
    Measure(
        "stays_severity_34",
        RecordKind.STAY,
        "{r}.mode = 'full' AND {r}.severity >= 3",
        description="Full stays of severity level 3 or 4.",
    ),
    Measure("surgical_stays", RecordKind.STAY, _SURGICAL, description="Surgical stays (GHM C)."),
    Measure(
        "surgical_stays_ambulatory",
        RecordKind.STAY,
        f"{_SURGICAL} AND {{r}}.mode = 'ambulatory'",
        description="Ambulatory surgical stays.",
    ),
    Measure(
        "stay_valuation",
        RecordKind.STAY,
        value="coalesce({r}.amount, 0)",
        description="Valuation of the stays (EUR).",
    ),
    Measure("outpatient_acts", RecordKind.OUTPATIENT_ACT, description="Outpatient acts."),
    Measure(
        "outpatient_acts_coded",
        RecordKind.OUTPATIENT_ACT,
        "{r}.coded",
        description="Outpatient acts coded.",
    ),
    *_coding_delay_measures(),
    Measure("imaging_exams", RecordKind.IMAGING_EXAM, description="Imaging exams."),
    Measure("consultations", RecordKind.CONSULTATION, description="Consultations."),
    Measure("revenue", RecordKind.REVENUE, value="{r}.amount", description="Revenue (EUR)."),
    *(
        Measure(
            f"expenses_title_{title}",
            RecordKind.EXPENSE,
            f"{{r}}.budget_title = {title}",
            "{r}.amount",
            f"Expenses of budget title {title} (EUR).",
        )
        for title in (1, 2, 3, 4)
    ),
)
MEASURE_NAMES = frozenset(m.name for m in MEASURES)
CUBE_MEASURES: tuple[Measure, ...] = tuple(m for m in MEASURES if not m.spread)
"""The measures ``activity_cube`` keeps by record attributes: a spread one (days present)
follows a stay's months, not its attributes."""
MEASURES_BY_NAME: dict[str, Measure] = {m.name: m for m in MEASURES}

BED_DAYS = "bed_days"
"""Not a record measure: installed beds x days of the month, from ``unit_capacity``."""


class Direction(StrEnum):
    HIGHER_IS_BETTER = "higher_is_better"
    LOWER_IS_BETTER = "lower_is_better"


class Side(StrEnum):
    """One side of an indicator's ratio, for listing the records behind it."""

    NUMERATOR = "numerator"
    DENOMINATOR = "denominator"


class Aggregation(StrEnum):
    RATIO = "ratio"
    """``scale x sum(numerator) / sum(denominator)`` (denominator 1 for a volume)."""
    MEDIAN = "median"
    """The median of a histogram of measures (the coding delay)."""


@dataclass(frozen=True)
class Indicator:
    code: str
    name: str
    label_fr: str
    unit: str
    direction: Direction
    numerator: tuple[str, ...]
    denominator: tuple[str, ...] = ()
    """Empty for a volume (a plain sum)."""
    scale: float = 1.0
    aggregation: Aggregation = Aggregation.RATIO
    record_kind: RecordKind = RecordKind.STAY
    record_filter: str = "TRUE"
    """SQL over a record ``{r}``: the records behind the value (drill-down)."""
    main: bool = True
    """Shown on the pôle dashboard."""
    lag_days: int = 0
    """How long a day's records take to be all counted (coding at J+n): the indicator's
    data is complete up to ``lag_days`` before its establishment's, so that both years
    compare acts that all had as long to be coded."""

    def complete_up_to(self, day: date | None) -> date | None:
        """The day the indicator's figures are complete up to, its establishment's data
        being complete up to ``day``."""
        if day is None or not self.lag_days:
            return day
        return day - timedelta(days=self.lag_days)

    description: str = ""
    tags: tuple[str, ...] = field(default=())

    @property
    def whole_months_only(self) -> bool:
        """Computed for complete months only: it reads a spread measure (the days stays
        were present), which the stays still present at a partial month's cut lack."""
        return any(m in MEASURES_BY_NAME and MEASURES_BY_NAME[m].spread for m in self.measures)

    @property
    def is_volume(self) -> bool:
        return not self.denominator and self.aggregation is Aggregation.RATIO

    @property
    def in_points(self) -> bool:
        """A rate (in %): its variations and gaps are differences in points (79.5 % against
        96.96 % is -17.46 points), not in % of itself."""
        return self.unit == "%"

    @property
    def variation_unit(self) -> VariationUnit:
        """What its variations are in: ``points`` for a rate, ``%`` of the reference else."""
        return "points" if self.in_points else "%"

    @property
    def measures(self) -> tuple[str, ...]:
        """Every measure (and ``bed_days``) the indicator reads."""
        return self.numerator + self.denominator

    def record_kinds(self, side: Side | None = None) -> frozenset[RecordKind]:
        """The kinds of the records behind the value, or behind one side of its ratio."""
        if side is None:
            return frozenset({self.record_kind})
        names = self.numerator if side is Side.NUMERATOR else self.denominator
        return frozenset(MEASURES_BY_NAME[n].kind for n in names if n in MEASURES_BY_NAME)

    def records_sql(self, side: Side | None = None) -> str | None:
        """SQL over a record ``{r}``: the records behind the value (``side`` None), or
        those counted in one side of its ratio (both sides of a coding completeness: the
        acts coded, every act). None when that side holds no record: a volume's
        denominator, the bed days of an occupancy rate."""
        if side is None:
            return f"{{r}}.kind = '{self.record_kind}' AND ({self.record_filter})"
        names = self.numerator if side is Side.NUMERATOR else self.denominator
        if not names or BED_DAYS in names:
            return None
        return " OR ".join(
            f"({{r}}.kind = '{m.kind}' AND ({m.condition}))"
            for m in (MEASURES_BY_NAME[name] for name in names)
        )


_EXPENSES = tuple(f"expenses_title_{title}" for title in (1, 2, 3, 4))
_HIGHER = Direction.HIGHER_IS_BETTER
_LOWER = Direction.LOWER_IS_BETTER

INDICATORS: tuple[Indicator, ...] = (
    Indicator(
        "stays_full",
        "Full stays",
        "Séjours en hospitalisation complète",
        "stays",
        _HIGHER,
        ("stays_full",),
        record_filter="{r}.mode = 'full'",
        tags=("stays",),
    ),
    Indicator(
        "stays_ambulatory",
        "Ambulatory stays",
        "Séjours ambulatoires",
        "stays",
        _HIGHER,
        ("stays_ambulatory",),
        record_filter="{r}.mode = 'ambulatory'",
        tags=("stays",),
    ),
    Indicator(
        "hospital_days",
        "Hospital days",
        "Journées d'hospitalisation",
        "days",
        _HIGHER,
        ("stay_days",),
        record_filter="{r}.mode = 'full'",
        tags=("stays",),
    ),
    Indicator(
        "average_length_of_stay",
        "Average length of stay",
        "Durée moyenne de séjour (DMS)",
        "days",
        _LOWER,
        ("stay_days",),
        ("stays_full",),
        record_filter="{r}.mode = 'full'",
        tags=("stays",),
    ),
    Indicator(
        "bed_occupancy_rate",
        "Bed occupancy rate",
        "Taux d'occupation des lits",
        "%",
        _HIGHER,
        ("occupied_days",),
        (BED_DAYS,),
        scale=100.0,
        record_filter="{r}.mode = 'full'",
        tags=("stays", "beds"),
        description=(
            "Days full stays were present in the month over installed beds x days of the"
            " month. Read from discharged stays: a month's figure grows as the stays still"
            " present at its end are discharged, and a partial month has none."
        ),
    ),
    Indicator(
        "outpatient_surgery_rate",
        "Outpatient surgery rate",
        "Taux de chirurgie ambulatoire",
        "%",
        _HIGHER,
        ("surgical_stays_ambulatory",),
        ("surgical_stays",),
        scale=100.0,
        record_filter=_SURGICAL,
        tags=("stays",),
    ),
    Indicator(
        "severity_34_share",
        "Share of severity levels 3-4",
        "Part des séjours de niveau de sévérité 3-4",
        "%",
        _HIGHER,
        ("stays_severity_34",),
        ("stays_full",),
        scale=100.0,
        record_filter="{r}.mode = 'full'",
        tags=("stays", "coding"),
    ),
    Indicator(
        "stay_valuation",
        "Valuation of stays",
        "Valorisation des séjours",
        "EUR",
        _HIGHER,
        ("stay_valuation",),
        tags=("stays", "finance"),
    ),
    Indicator(
        "outpatient_acts",
        "Outpatient acts",
        "Actes externes",
        "acts",
        _HIGHER,
        ("outpatient_acts",),
        record_kind=RecordKind.OUTPATIENT_ACT,
        tags=("outpatient",),
    ),
    Indicator(
        "coding_completeness_rate",
        "Coding completeness",
        "Exhaustivité du codage des actes externes",
        "%",
        _HIGHER,
        ("outpatient_acts_coded",),
        ("outpatient_acts",),
        scale=100.0,
        record_kind=RecordKind.OUTPATIENT_ACT,
        tags=("outpatient", "coding"),
    ),
    Indicator(
        "coding_completeness_at_lag",
        f"Coding completeness at J+{CODING_LAG_DAYS}",
        f"Exhaustivité du codage à J+{CODING_LAG_DAYS}",
        "%",
        _HIGHER,
        tuple(
            coding_delay_measure(index)
            for index, upper in enumerate(CODING_DELAY_BUCKETS)
            if upper <= CODING_LAG_DAYS
        ),
        ("outpatient_acts",),
        scale=100.0,
        record_kind=RecordKind.OUTPATIENT_ACT,
        lag_days=CODING_LAG_DAYS,
        tags=("outpatient", "coding"),
        description=f"Outpatient acts coded within {CODING_LAG_DAYS} days of the act, over"
        " every act: this year and last at the same lag, where the coding completeness"
        " gives last year's acts a year to be coded. A month counts the acts up to"
        f" {CODING_LAG_DAYS} days before the day its data is complete up to.",
    ),
    Indicator(
        "median_coding_delay",
        "Median coding delay",
        "Délai médian de codage",
        "days",
        _LOWER,
        tuple(coding_delay_measure(i) for i in range(len(CODING_DELAY_BUCKETS) + 1)),
        aggregation=Aggregation.MEDIAN,
        record_kind=RecordKind.OUTPATIENT_ACT,
        record_filter="{r}.coded",
        tags=("outpatient", "coding"),
        description="Median of the days between an act and its coding, over coded acts.",
    ),
    Indicator(
        "imaging_exams",
        "Imaging exams",
        "Examens d'imagerie",
        "exams",
        _HIGHER,
        ("imaging_exams",),
        record_kind=RecordKind.IMAGING_EXAM,
        tags=("imaging",),
    ),
    Indicator(
        "consultations",
        "Consultations",
        "Consultations",
        "consultations",
        _HIGHER,
        ("consultations",),
        record_kind=RecordKind.CONSULTATION,
        tags=("outpatient",),
    ),
    Indicator(
        "revenue",
        "Revenue",
        "Recettes",
        "EUR",
        _HIGHER,
        ("revenue",),
        record_kind=RecordKind.REVENUE,
        tags=("finance",),
    ),
    Indicator(
        "expenses",
        "Expenses",
        "Dépenses",
        "EUR",
        _LOWER,
        _EXPENSES,
        record_kind=RecordKind.EXPENSE,
        tags=("finance",),
    ),
    *(
        Indicator(
            f"expenses_title_{title}",
            f"Expenses, budget title {title}",
            f"Dépenses du titre {title}",
            "EUR",
            _LOWER,
            (f"expenses_title_{title}",),
            record_kind=RecordKind.EXPENSE,
            record_filter=f"{{r}}.budget_title = {title}",
            tags=("finance",),
            description=label,
        )
        for title, label in (
            (1, "Staff expenses."),
            (2, "Medical expenses."),
            (3, "General and hotel expenses."),
            (4, "Depreciation, financial and exceptional expenses."),
        )
    ),
    Indicator(
        "revenue_expense_ratio",
        "Revenue / expenses",
        "Taux de couverture des dépenses par les recettes",
        "%",
        _HIGHER,
        ("revenue",),
        _EXPENSES,
        scale=100.0,
        record_kind=RecordKind.REVENUE,
        tags=("finance",),
    ),
)

INDICATORS_BY_CODE: dict[str, Indicator] = {i.code: i for i in INDICATORS}


@dataclass(frozen=True)
class Comparison:
    """A standing comparison of the commission's dashboard: the same indicators across
    the establishments, in their units of some specialties (as the referential names
    them, ADR 0023)."""

    key: str
    label_fr: str
    specialties: tuple[str, ...]
    indicators: tuple[Indicator, ...]


COMPARISONS: tuple[Comparison, ...] = (
    Comparison(
        "maternities",
        "Maternités",
        ("obstétrique",),
        (INDICATORS_BY_CODE["stays_full"], INDICATORS_BY_CODE["average_length_of_stay"]),
    ),
    Comparison(
        "imaging",
        "Imagerie",
        (
            "imagerie médicale",
            "radiologie conventionnelle et échographie",
            "scanographie",
            "imagerie par résonance magnétique",
            "médecine nucléaire",
        ),
        (INDICATORS_BY_CODE["imaging_exams"],),
    ),
    Comparison(
        "emergencies",
        "Urgences",
        ("urgences", "unité d'hospitalisation de courte durée"),
        (INDICATORS_BY_CODE["stays_full"], INDICATORS_BY_CODE["average_length_of_stay"]),
    ),
)


def indicators_reading(measures: set[str]) -> list[Indicator]:
    """The indicators whose value depends on one of ``measures``."""
    return [i for i in INDICATORS if measures.intersection(i.measures)]
