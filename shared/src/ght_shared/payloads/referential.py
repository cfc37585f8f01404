"""The org-unit referential, owned by activity-svc (stream ``ACTIVITY``)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from ght_shared.payloads.base import Count, FinessNumber, Flag, Payload, Visibility

SERVICE = "activity-svc"
STREAM = "ACTIVITY"

ORG_UNIT_UPSERTED = "ght.referential.orgunit.upserted.v1"

ORG_UNIT_CODE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$"
"""An org unit's code: letters, digits, ``.``, ``_``, ``-``; 1 to 40 characters."""

OrgUnitCode = Annotated[str, Field(pattern=ORG_UNIT_CODE_PATTERN)]
"""An org unit's code (:data:`ORG_UNIT_CODE_PATTERN`)."""


class OrgUnitUpserted(Payload):
    """Published whenever an org unit is created or changes: a new or corrected version,
    its specialty, its installed beds."""

    EVENT_TYPE: ClassVar[str] = ORG_UNIT_UPSERTED
    SUBJECT: ClassVar[str] = "orgunit/{code}"
    PUBLISHED: ClassVar[bool] = True
    # Every holder of activity:read reads the whole referential (activity-svc's access.py).
    VISIBILITY: ClassVar[Visibility] = Visibility.PUBLIC

    code: OrgUnitCode = Field(description="Territory-unique; an establishment's is its FINESS.")
    kind: Literal["territory", "establishment", "site", "pole", "department", "unit"] = Field(
        description="Its level in the tree."
    )
    name: str = Field(description="Its name in the version valid from `valid_from`.")
    parent: str | None = Field(description="The parent's code; null for the territory.")
    finess: FinessNumber | None = Field(description="The establishment it belongs to.")
    uf: str | None = Field(description="Its UF code within its establishment, if any.")
    specialty: str | None = Field(description="Its specialty, if any.")
    active: Flag = Field(description="False once it is closed.")
    valid_from: date = Field(description="The first day of the version described.")
    installed_beds: Count | None = Field(description="Its installed beds today; null if none.")


PAYLOADS: tuple[type[Payload], ...] = (OrgUnitUpserted,)
