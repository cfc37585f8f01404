"""Staffing needs and assignments, owned by staffing-svc (stream ``STAFFING``; planned)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from ght_shared.payloads.base import FinessNumber, Flag, Payload, Visibility
from ght_shared.payloads.referential import OrgUnitCode

SERVICE = "staffing-svc"
STREAM = "STAFFING"

NEED_OPENED = "ght.staffing.need.opened.v1"
NEED_FILLED = "ght.staffing.need.filled.v1"
NEED_UNCOVERED = "ght.staffing.need.uncovered.v1"
ASSIGNMENT_CONFIRMED = "ght.staffing.assignment.confirmed.v1"
ASSIGNMENT_CANCELLED = "ght.staffing.assignment.cancelled.v1"

RPPS_PATTERN = r"^[0-9]{11}$"

Rpps = Annotated[str, Field(pattern=RPPS_PATTERN)]
"""A practitioner's RPPS number: exactly 11 digits (a professional identifier)."""

SlotKind = Literal["garde", "astreinte", "vacation", "consultation"]
"""On-site duty, on-call from home, a half-day of work, a consultation."""


class _Need(Payload):
    """A slot of a site to staff."""

    SUBJECT: ClassVar[str] = "need/{need}"
    VISIBILITY: ClassVar[Visibility] = Visibility.ESTABLISHMENT
    ESTABLISHMENT_FIELDS: ClassVar[tuple[str, ...]] = ("establishment",)

    need: str = Field(description="The need's id.")
    establishment: FinessNumber = Field(description="The FINESS of the site's establishment.")
    site: OrgUnitCode = Field(description="The site's org unit code.")
    specialty: str = Field(description="The specialty needed.")
    kind: SlotKind = Field(description="The kind of slot.")
    start: datetime = Field(description="When the slot starts.")
    end: datetime = Field(description="When the slot ends.")


class NeedOpened(_Need):
    """Published when a slot needs a practitioner (a rota gap, an absence to replace)."""

    EVENT_TYPE: ClassVar[str] = NEED_OPENED


class NeedFilled(_Need):
    """Published when a confirmed assignment covers the need."""

    EVENT_TYPE: ClassVar[str] = NEED_FILLED

    assignment: str = Field(description="The assignment that covers it.")


class NeedUncovered(_Need):
    """Published when a need is still open as its slot draws near (or after its
    assignment was cancelled)."""

    EVENT_TYPE: ClassVar[str] = NEED_UNCOVERED


class _Assignment(Payload):
    """A practitioner placed on a slot of a host site."""

    SUBJECT: ClassVar[str] = "assignment/{assignment}"
    # The practitioner's employer and the host both follow a cross-site assignment.
    VISIBILITY: ClassVar[Visibility] = Visibility.ESTABLISHMENT
    ESTABLISHMENT_FIELDS: ClassVar[tuple[str, ...]] = ("home_establishment", "host_establishment")

    assignment: str = Field(description="The assignment's id.")
    practitioner: Rpps = Field(description="The practitioner's RPPS number (11 digits).")
    home_establishment: FinessNumber = Field(description="The practitioner's employer.")
    host_establishment: FinessNumber = Field(description="The FINESS where the slot is.")
    host_site: OrgUnitCode = Field(description="The site's org unit code.")
    specialty: str = Field(description="The specialty.")
    kind: SlotKind = Field(description="The kind of slot.")
    start: datetime = Field(description="When the slot starts.")
    end: datetime = Field(description="When the slot ends.")
    cross_site: Flag = Field(description="True when the host site is not the home site.")


class AssignmentConfirmed(_Assignment):
    """Published when an assignment passes every rule (rest, weekly hours, authorisation
    for the host site) and is confirmed."""

    EVENT_TYPE: ClassVar[str] = ASSIGNMENT_CONFIRMED


class AssignmentCancelled(_Assignment):
    """Published when a confirmed assignment is cancelled."""

    EVENT_TYPE: ClassVar[str] = ASSIGNMENT_CANCELLED

    reason: str | None = Field(None, description="Why.")


PAYLOADS: tuple[type[Payload], ...] = (
    NeedOpened,
    NeedFilled,
    NeedUncovered,
    AssignmentConfirmed,
    AssignmentCancelled,
)
