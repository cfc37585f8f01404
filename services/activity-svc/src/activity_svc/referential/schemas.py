"""Request and response models of the territory referential (``/org-units``)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from pydantic import BaseModel, Field

from activity_svc.models import OrgUnitKind
from ght_shared.payloads.referential import ORG_UNIT_CODE_PATTERN
from ght_shared.schemas import IsoDate, StrictModel

CODE_PATTERN = ORG_UNIT_CODE_PATTERN
"""An org unit's code: letters, digits, ``.``, ``_``, ``-``; 1 to 40 characters (the code
the referential's events carry)."""
UF_PATTERN = r"^[A-Za-z0-9]{1,12}$"
"""A UF code as the establishments' IT systems write it: 1 to 12 letters or digits."""

OrgUnitCode = Annotated[
    str,
    Field(
        pattern=CODE_PATTERN,
        description="Territory-unique code; an establishment's code is its FINESS number.",
        examples=["CHU-IMG"],
    ),
]
UfCode = Annotated[
    str, Field(pattern=UF_PATTERN, description="UF code, unique within its establishment.")
]
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]*$"
"""Printable text: PostgreSQL cannot store a NUL, and no name needs a control character."""

# Strict: "12" or true are not bed counts, and "yes" is not a boolean.
Beds = Annotated[int, Field(strict=True, ge=0, le=100_000)]
Flag = Annotated[bool, Field(strict=True)]


class OrgUnitWrite(StrictModel):
    """What an org unit is from ``valid_from`` on (the body of ``PUT /org-units/{code}``).

    Sending what the org unit already is changes nothing and publishes nothing.
    """

    code: OrgUnitCode | None = Field(
        default=None, description="Optional in PUT; when given it must equal the path's code."
    )
    kind: OrgUnitKind
    name: str = Field(
        min_length=1, max_length=200, pattern=TEXT_PATTERN, examples=["Pôle imagerie"]
    )
    parent: OrgUnitCode | None = Field(
        default=None,
        description="Code of the parent org unit (none only for the territory).",
    )
    uf: UfCode | None = Field(
        default=None,
        description="UF code of a unit (required for a unit, refused otherwise). Omitted on"
        " an existing unit: kept as it is (it cannot change).",
    )
    specialty: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        pattern=TEXT_PATTERN,
        description="Omitted on an existing org unit: kept as it is; null clears it.",
    )
    installed_beds: Beds | None = Field(
        default=None,
        description="Installed beds of a unit from valid_from; omitted: unchanged.",
    )
    active: Flag = True
    valid_from: IsoDate | None = Field(
        default=None,
        description="First day of this version (default: today). A move or a rename"
        " closes the current version the day before; history is never rewritten.",
    )


class OrgUnitCreate(OrgUnitWrite):
    """The body of ``POST /org-units``: a new org unit."""

    code: OrgUnitCode


class OrgUnitRead(BaseModel):
    """An org unit as it is (or was) on a day."""

    code: str
    kind: OrgUnitKind
    name: str
    parent: str | None
    finess: str | None = Field(description="The establishment it belongs to (FINESS).")
    uf: str | None
    specialty: str | None
    active: bool
    valid_from: date = Field(description="First day of the version shown.")
    valid_to: date | None = Field(description="Day the version shown ends (excluded); null: open.")
    installed_beds: int | None = Field(description="Installed beds on the day asked (units).")


class OrgUnitNode(OrgUnitRead):
    """An org unit and, nested, the org units below it on the day asked."""

    children: list[OrgUnitNode] = Field(default_factory=list)


class OrgUnitVersionRead(BaseModel):
    valid_from: date
    valid_to: date | None
    parent: str | None
    name: str
    active: bool
    changes: list[str] = Field(
        description="What this version changed from the previous one: created, moved,"
        " renamed, deactivated, reactivated."
    )
    recorded_at: datetime
    recorded_by: str


class CapacityRead(BaseModel):
    effective_from: date
    installed_beds: int
    source: str = Field(description="`referential` (set here) or `beds` (from beds-svc).")


class OrgUnitHistory(BaseModel):
    """Every version of an org unit (its moves, renames, closures) and its capacity over time."""

    code: str
    kind: OrgUnitKind
    finess: str | None
    uf: str | None
    specialty: str | None
    versions: list[OrgUnitVersionRead]
    capacity: list[CapacityRead]
