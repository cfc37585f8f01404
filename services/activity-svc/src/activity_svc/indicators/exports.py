"""The indicator routes' tables as files (``ght_shared.exports``): a dashboard, an
indicator's months, analytics and drill-down records, with French headers and, above
them, the org unit, the period, the scope and the day the data is complete up to."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Sequence
from datetime import date
from typing import Any

from sqlalchemy import Select

from activity_svc.catalogue import RecordKind
from activity_svc.indicators.schemas import (
    Analytics,
    Dashboard,
    FiguresRead,
    IndicatorValues,
    OrgUnitRef,
)
from activity_svc.indicators.values import Scope
from activity_svc.ingestion.fields import FIELDS_BY_KIND
from activity_svc.models import ActivityRecord
from activity_svc.referential.tree import LOCAL_TIME
from ght_shared.exports import Cell, Column, ColumnKind, Table

SCOPE_FR = {Scope.AS_WAS: "tel qu'il était chaque mois", Scope.CONSTANT: "à périmètre constant"}
_TEXT, _NUMBER, _INTEGER = ColumnKind.TEXT, ColumnKind.NUMBER, ColumnKind.INTEGER

FIGURE_COLUMNS: tuple[Column, ...] = (
    Column("org_unit", "Code", _TEXT),
    Column("name", "Unité organisationnelle", _TEXT, width=30),
    Column("indicator", "Indicateur", _TEXT),
    Column("label", "Libellé", _TEXT, width=40),
    Column("unit", "Unité", _TEXT),
    Column("period", "Mois", _TEXT),
    Column("value", "Valeur", _NUMBER),
    Column("same_period_last_year", "Même mois N-1", _NUMBER),
    Column("variation", "Variation", _NUMBER),
    Column("variation_unit", "Variation en", _TEXT),
    Column("year_to_date", "Cumul de l'année", _NUMBER),
    Column("year_to_date_last_year", "Cumul N-1", _NUMBER),
    Column("year_to_date_variation", "Variation du cumul", _NUMBER),
    Column("projection", "Projection fin d'année", _NUMBER),
    Column("target", "Objectif du mois", _NUMBER),
    Column("target_year_to_date", "Objectif cumulé", _NUMBER),
    Column("target_year", "Objectif annuel", _NUMBER),
    Column("partial", "Mois incomplet", _INTEGER),
    Column("complete_days", "Jours comptés", _INTEGER),
    Column("comments", "Commentaires", _TEXT, width=60),
)


def _comments(figure: FiguresRead) -> str | None:
    """Each comment as ``Claire Martin, 04/12/2026 : text``, one after the other."""
    return (
        "\n".join(
            f"{c.author_name}, {c.written_at.astimezone(LOCAL_TIME):%d/%m/%Y} : {c.text}"
            for c in figure.comments
        )
        or None
    )


def _metadata(
    unit: OrgUnitRef, period: str, scope: Scope, complete_up_to: date | None
) -> list[tuple[str, Cell]]:
    return [
        ("Unité organisationnelle", f"{unit.name} ({unit.code})"),
        ("Période", period),
        ("Périmètre", SCOPE_FR[scope]),
        ("Données complètes jusqu'au", complete_up_to),
    ]


def _figure_row(
    unit: OrgUnitRef, figure: FiguresRead, labels: dict[str, tuple[str, str]]
) -> tuple[Cell, ...]:
    label, measure_unit = labels.get(figure.indicator, (figure.indicator, ""))
    return (
        unit.code,
        unit.name,
        figure.indicator,
        label,
        measure_unit,
        figure.period,
        figure.value,
        figure.same_period_last_year,
        figure.variation,
        figure.variation_unit,
        figure.year_to_date,
        figure.year_to_date_last_year,
        figure.year_to_date_variation,
        figure.projection,
        figure.target,
        figure.target_year_to_date,
        figure.target_year,
        figure.partial,
        figure.complete_days,
        _comments(figure),
    )


def dashboard_table(dashboard: Dashboard) -> Table:
    """One row per org unit (the one asked, then its children), indicator and month."""
    labels = {i.code: (i.label_fr, i.unit) for i in dashboard.indicators}
    units = [dashboard.org_unit, *dashboard.children]
    months = dashboard.months
    first = dashboard.org_unit.figures[0].period if dashboard.org_unit.figures else None
    period = dashboard.period if months == 1 or first is None else f"{first} à {dashboard.period}"
    return Table(
        title=f"Tableau de bord {dashboard.org_unit.code}",
        columns=FIGURE_COLUMNS,
        rows=[_figure_row(unit, f, labels) for unit in units for f in unit.figures],
        metadata=_metadata(
            dashboard.org_unit, period, dashboard.scope, dashboard.org_unit.complete_up_to
        ),
    )


def values_table(values: IndicatorValues) -> Table:
    """One row per month."""
    labels = {values.indicator.code: (values.indicator.label_fr, values.indicator.unit)}
    months = [v.period for v in values.values]
    period = f"{months[0]} à {months[-1]}" if months else ""
    return Table(
        title=values.indicator.label_fr,
        columns=FIGURE_COLUMNS,
        rows=[_figure_row(values.org_unit, f, labels) for f in values.values],
        metadata=_metadata(values.org_unit, period, values.scope, values.complete_up_to),
    )


_DIMENSION_HEADERS = {
    "org_unit": "Unité organisationnelle",
    "unit": "Unité",
    "specialty": "Spécialité",
    "month": "Mois",
    "quarter": "Trimestre",
    "kind": "Type",
    "mode": "Mode",
    "severity": "Niveau de sévérité",
    "cmd": "CMD",
    "drg_root": "Racine de GHM",
    "code": "Code d'acte",
}


def analytics_table(analytics: Analytics) -> Table:
    """The rows of one page, a column per dimension (and the org units' names), then for
    each indicator its value, last year's and the variation."""
    columns: list[Column] = []
    for dimension in analytics.dimensions:
        columns.append(Column(dimension, _DIMENSION_HEADERS[dimension], _TEXT))
        if dimension in ("org_unit", "unit"):
            columns.append(Column(f"{dimension}_name", "Nom", _TEXT, width=30))
    for indicator in analytics.indicators:
        unit = "points" if indicator.variation_unit == "points" else "%"
        columns += [
            Column(f"{indicator.code}", indicator.label_fr, _NUMBER, width=24),
            Column(f"{indicator.code}_last_year", f"{indicator.label_fr} N-1", _NUMBER),
            Column(f"{indicator.code}_variation", f"Variation ({unit})", _NUMBER),
        ]
    rows: list[tuple[Cell, ...]] = []
    for row in analytics.rows:
        cells: list[Cell] = []
        for dimension in analytics.dimensions:
            key = row.dimensions[dimension]
            cells.append(key)
            if dimension in ("org_unit", "unit"):
                cells.append(analytics.labels.get(str(key), ""))
        for indicator in analytics.indicators:
            cell = row.values[indicator.code]
            cells += [cell.value, cell.last_year, cell.variation]
        rows.append(tuple(cells))
    period = f"{analytics.first_month} à {analytics.last_month}"
    metadata = _metadata(analytics.org_unit, period, analytics.scope, analytics.complete_up_to)
    if analytics.next_cursor is not None:
        metadata.append(("Page suivante", analytics.next_cursor))
    return Table("Analyse", columns, rows, metadata)


RECORD_COLUMNS: tuple[Column, ...] = (
    Column("finess", "FINESS", _TEXT),
    Column("source", "Source", _TEXT),
    Column("source_id", "Identifiant source", _TEXT, width=20),
    Column("kind", "Type", _TEXT),
    Column("unit", "Unité", _TEXT),
    Column("uf", "UF", _TEXT),
    Column("occurred_on", "Date", ColumnKind.DATE),
    Column("admitted_at", "Entrée", ColumnKind.DATETIME),
    Column("discharged_at", "Sortie", ColumnKind.DATETIME),
    Column("drg", "GHM", _TEXT),
    Column("severity", "Sévérité", _INTEGER),
    Column("mode", "Mode", _TEXT),
    Column("stay_days", "Durée (jours)", _INTEGER),
    Column("code", "Code", _TEXT),
    Column("code_system", "Nomenclature", _TEXT),
    Column("coded", "Codé", _INTEGER),
    Column("coded_on", "Codé le", ColumnKind.DATE),
    Column("budget_title", "Titre budgétaire", _INTEGER),
    Column("account", "Compte", _TEXT),
    Column("amount", "Montant (€)", _NUMBER),
    Column("received_at", "Reçu le", ColumnKind.DATETIME),
)
_ALWAYS = frozenset({"finess", "source", "source_id", "kind", "unit", "uf", "occurred_on"})
_RECEIVED = "received_at"


def record_columns(kinds: Collection[RecordKind]) -> tuple[Column, ...]:
    """The columns of records of ``kinds``: their identity, unit and day, the fields their
    kinds use (a stay's days too), and when they were received."""
    used = {"occurred_on" if f == "date" else f for kind in kinds for f in FIELDS_BY_KIND[kind]}
    if RecordKind.STAY in kinds:
        used.add("stay_days")
    return tuple(
        c for c in RECORD_COLUMNS if c.key in _ALWAYS or c.key in used or c.key == _RECEIVED
    )


def record_query(query: Select[Any], columns: Sequence[Column]) -> Select[Any]:
    """The drill-down's query, reading the file's columns only."""
    return query.with_only_columns(*(getattr(ActivityRecord, c.key) for c in columns))


def records_table(
    unit: OrgUnitRef,
    indicator_label: str,
    period: str,
    scope: Scope,
    complete_up_to: date | None,
    columns: Sequence[Column],
    rows: AsyncIterator[Sequence[Cell]],
) -> Table:
    return Table(
        title=f"Enregistrements {unit.code}",
        columns=columns,
        rows=rows,
        metadata=[
            *_metadata(unit, period, scope, complete_up_to),
            ("Indicateur", indicator_label),
        ],
    )
