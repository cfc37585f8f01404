"""Request and response models of ingestion: record batches and import reports."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from activity_svc.ingestion.fields import MAX_TEXT
from activity_svc.models import ImportFormat, ImportStatus, OnError
from activity_svc.settings import MAX_BATCH_RECORDS
from ght_shared.identifiers import Finess
from ght_shared.schemas import Flag, IsoDate, LocalMoment, Printable, ReadModel, StrictModel

Text = Annotated[Printable, StringConstraints(min_length=1, max_length=MAX_TEXT)]
Uf = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9]{1,12}$")]
Amount = Annotated[Decimal, Field(max_digits=14, decimal_places=2)]
CcamCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{4}[0-9]{3}$")]
NgapCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{1,4}[0-9]{0,2}$")]


class _Record(StrictModel):
    source: Text = Field(description="The sending system, e.g. `pmsi-chu`.")
    source_id: Text = Field(description="The record's id in that system: resending replaces.")
    finess: Finess = Field(description="The establishment's FINESS number.")
    unit: Uf = Field(description="The UF code of the unit, as the establishment knows it.")


class StayRecord(_Record):
    """A hospital stay (PMSI): counts in its discharge month."""

    kind: Literal["stay"]
    admitted_at: LocalMoment = Field(description="ISO 8601; without offset = Europe/Paris time.")
    discharged_at: LocalMoment
    drg: Annotated[str, StringConstraints(pattern=r"^[0-9]{2}[CKMZ][0-9]{2}[0-9A-Z]$")] = Field(
        description="GHM code, e.g. 05M092 (third character C: surgical)."
    )
    severity: Annotated[int, Field(ge=1, le=4)] | None = Field(
        default=None, description="Severity level 1-4; required for a full stay."
    )
    mode: Literal["full", "ambulatory"]
    amount: Amount | None = Field(default=None, description="Valuation in euros.")


class OutpatientActRecord(_Record):
    """An outpatient act (acte externe), coded or not yet."""

    kind: Literal["outpatient_act"]
    date: IsoDate
    code: Annotated[str, StringConstraints(pattern=r"^[A-Z]{1,4}[0-9]{0,3}$")] = Field(
        description="CCAM code (4 letters, 3 digits) or NGAP letter key (C, CS, APC...)."
    )
    code_system: Literal["CCAM", "NGAP"]
    coded: Flag
    coded_on: IsoDate | None = Field(default=None, description="Required when coded.")
    amount: Amount | None = None


class ImagingExamRecord(_Record):
    kind: Literal["imaging_exam"]
    date: IsoDate
    code: CcamCode | None = None
    amount: Amount | None = None


class ConsultationRecord(_Record):
    kind: Literal["consultation"]
    date: IsoDate
    code: NgapCode | None = None
    amount: Amount | None = None


class ExpenseRecord(_Record):
    kind: Literal["expense"]
    date: IsoDate
    budget_title: Annotated[int, Field(ge=1, le=4)] = Field(
        description="1 staff, 2 medical, 3 general and hotel, 4 depreciation and financial."
    )
    account: Annotated[str, StringConstraints(pattern=r"^6[0-9]{1,9}$")] = Field(
        description="M21 expense account."
    )
    amount: Amount


class RevenueRecord(_Record):
    kind: Literal["revenue"]
    date: IsoDate
    budget_title: Annotated[int, Field(ge=1, le=3)]
    account: Annotated[str, StringConstraints(pattern=r"^7[0-9]{1,9}$")] | None = None
    amount: Amount


ActivityRecordIn = Annotated[
    StayRecord
    | OutpatientActRecord
    | ImagingExamRecord
    | ConsultationRecord
    | ExpenseRecord
    | RevenueRecord,
    Field(discriminator="kind"),
]


COMPLETE_UP_TO = (
    "The day the data of the establishments sent is complete up to (included), from"
    " 2000 to today: every record of theirs up to that day has been sent. It stands until"
    " an import declares another; without any, the day is derived from the records"
    " (docs/activity.md, data complete up to)."
)


class RecordBatch(StrictModel):
    records: list[ActivityRecordIn] = Field(min_length=1, max_length=MAX_BATCH_RECORDS)
    complete_up_to: IsoDate | None = Field(None, description=COMPLETE_UP_TO)


class RejectionRead(ReadModel):
    line: int = Field(
        description="Line of the file (the header is line 1); for a JSON batch, the index"
        " of the record in `records`."
    )
    field: str
    reason: str
    source_id: str | None = None


class ImportRead(ReadModel):
    id: uuid.UUID
    format: ImportFormat
    on_error: OnError
    status: ImportStatus
    filename: str | None
    submitted_by: str
    establishments: list[str]
    received: int = Field(description="Rows read.")
    accepted: int = Field(description="Rows merged (new, replaced or unchanged).")
    rejected: int
    unchanged: int = Field(description="Records identical to what was already stored.")
    months: list[dt.date] = Field(description="Months whose figures changed.")
    created_at: dt.datetime
    finished_at: dt.datetime | None
    duration_ms: int | None
    detail: str | None


class ImportReport(ImportRead):
    """An import with its first rejected rows (all of them: `GET /imports/{id}/rejections`)."""

    rejections: list[RejectionRead] = Field(default_factory=list)


MAX_WITHDRAWN_RECORDS = 100_000
"""The most records one withdrawal names (a month's PMSI corrections of a CHU are a few
thousand)."""


class RecordKeyIn(StrictModel):
    finess: Finess = Field(description="The establishment's FINESS number.")
    source: Text = Field(description="The system that sent the record.")
    source_id: Text = Field(description="The record's id in that system.")


class WithdrawalBatch(StrictModel):
    records: list[RecordKeyIn] = Field(min_length=1, max_length=MAX_BATCH_RECORDS)


class WithdrawalRead(BaseModel):
    """What a withdrawal did: the records named, those deleted, those already absent."""

    requested: int = Field(description="Distinct records named.")
    withdrawn: int = Field(description="Records that were stored, now deleted.")
    absent: int = Field(description="Records named that were not (or no longer) stored.")
    months: list[dt.date] = Field(description="Months whose figures changed.")
    sources: list[str] = Field(description="The sources of the records deleted.")
