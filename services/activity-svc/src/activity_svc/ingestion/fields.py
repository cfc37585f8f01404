"""The fields of an activity record, the same in JSON batches and in CSV or NDJSON files."""

from __future__ import annotations

from activity_svc.catalogue import RecordKind

KINDS: tuple[str, ...] = tuple(kind.value for kind in RecordKind)

IDENTITY_FIELDS: tuple[str, ...] = ("kind", "source", "source_id", "finess", "unit")
"""Required in every record, hence in every file's header."""

FIELDS: tuple[str, ...] = (
    *IDENTITY_FIELDS,
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
    "budget_title",
    "account",
    "amount",
)
"""Every field a record may have; a file's header names a subset, in any order."""

FIELDS_BY_KIND: dict[str, tuple[str, ...]] = {
    "stay": ("admitted_at", "discharged_at", "drg", "severity", "mode", "amount"),
    "outpatient_act": ("date", "code", "code_system", "coded", "coded_on", "amount"),
    "imaging_exam": ("date", "code", "amount"),
    "consultation": ("date", "code", "amount"),
    "expense": ("date", "budget_title", "account", "amount"),
    "revenue": ("date", "budget_title", "account", "amount"),
}

MAX_TEXT = 64
"""Longest accepted ``source``, ``source_id``, ``code`` or ``account``."""
