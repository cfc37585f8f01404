"""Beds, capacity, transfers and strain, owned by beds-svc (stream ``BEDS``; planned).

No event carries patient-identifying data: no patient or encounter reference.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from ght_shared.events import Event
from ght_shared.payloads.base import Audience, Count, FinessNumber, Number, Payload, Visibility
from ght_shared.payloads.referential import OrgUnitCode

SERVICE = "beds-svc"
STREAM = "BEDS"

BED_STATUS_CHANGED = "ght.beds.bed.status_changed.v1"
CAPACITY_CHANGED = "ght.beds.capacity.changed.v1"
TRANSFER_REQUESTED = "ght.beds.transfer.requested.v1"
TRANSFER_ACCEPTED = "ght.beds.transfer.accepted.v1"
TRANSFER_DECLINED = "ght.beds.transfer.declined.v1"
TRANSFER_CANCELLED = "ght.beds.transfer.cancelled.v1"
TRANSFER_COMPLETED = "ght.beds.transfer.completed.v1"
TRANSFER_EXPIRED = "ght.beds.transfer.expired.v1"
STRAIN_CHANGED = "ght.beds.strain.changed.v1"

BedStatus = Literal["U", "O", "H", "C", "I", "K"]
"""A bed's operational status, HL7 v2 table 0116: U unoccupied, O occupied, H housekeeping,
C closed, I isolated, K contaminated."""

LevelOfCare = Literal["standard", "continuous_monitoring", "intensive_care", "icu", "ambulatory"]
"""Standard care, continuous monitoring (USC), intensive care (USI), intensive care unit
(réanimation), ambulatory care."""

StrainLevel = Literal["normal", "tension", "crisis"]
"""``crisis`` is the plan blanc."""

TransferUrgency = Literal["immediate", "urgent", "scheduled"]


class BedStatusChanged(Payload):
    """Published when a bed's operational status changes, and when a bed is created."""

    EVENT_TYPE: ClassVar[str] = BED_STATUS_CHANGED
    SUBJECT: ClassVar[str] = "bed/{bed}"
    VISIBILITY: ClassVar[Visibility] = Visibility.ESTABLISHMENT
    ESTABLISHMENT_FIELDS: ClassVar[tuple[str, ...]] = ("establishment",)

    bed: str = Field(description="The bed's id.")
    unit: OrgUnitCode = Field(description="The org unit code of the bed's unit.")
    establishment: FinessNumber = Field(description="The FINESS of the bed's establishment.")
    specialty: str | None = Field(description="The unit's specialty.")
    from_: BedStatus | None = Field(
        alias="from", description="The status before (HL7 0116); null for a new bed."
    )
    to: BedStatus = Field(description="The status now (HL7 0116).")
    at: datetime = Field(description="When it changed.")
    reason: str | None = Field(None, description="Why, e.g. the reason of a closure.")
    reopens_at: datetime | None = Field(None, description="A closed bed's planned reopening.")


class CapacityChanged(Payload):
    """Published when a unit's bed counts change, coalesced: at most one per unit per
    second, with the counts of that moment."""

    EVENT_TYPE: ClassVar[str] = CAPACITY_CHANGED
    SUBJECT: ClassVar[str] = "unit/{unit}"
    CONSUMED_BY: ClassVar[tuple[str, ...]] = ("activity-svc",)
    VISIBILITY: ClassVar[Visibility] = Visibility.ESTABLISHMENT
    ESTABLISHMENT_FIELDS: ClassVar[tuple[str, ...]] = ("establishment",)

    unit: OrgUnitCode = Field(
        description="The unit's org code, or its UF code within the establishment."
    )
    establishment: FinessNumber | None = Field(
        None, description="The unit's FINESS (or in the envelope's `establishment`)."
    )
    specialty: str | None = Field(None, description="The unit's specialty.")
    installed: int = Field(strict=True, ge=0, le=100_000, description="Beds installed.")
    open: Count | None = Field(None, description="Beds open (installed and not closed).")
    occupied: Count | None = Field(None, description="Beds occupied.")
    available: Count | None = Field(
        None, description="Beds where a patient can be installed now, staff present."
    )
    reserved: Count | None = Field(None, description="Beds for a known patient within 24 h.")
    closed: Count | None = Field(None, description="Beds closed.")
    surge: Count | None = Field(None, description="Surge beds (supplémentaires) in use.")
    occupancy: Number | None = Field(
        None, ge=0, description="Occupied share of open beds; above 1 with surge beds."
    )
    level: LevelOfCare | None = Field(None, description="The unit's level of care.")


class _Transfer(Payload):
    """The state of an inter-site transfer request, as each of its events gives it.

    On the live feed, a request still open to the whole territory (``to`` null) is public:
    any establishment may take it; once it names its receiver, both ends see it.
    """

    SUBJECT: ClassVar[str] = "transfer/{request}"
    VISIBILITY: ClassVar[Visibility] = Visibility.ESTABLISHMENT
    ESTABLISHMENT_FIELDS: ClassVar[tuple[str, ...]] = ("from", "to")

    request: str = Field(description="The transfer request's id.")
    from_: FinessNumber = Field(alias="from", description="The requesting establishment's FINESS.")
    to: FinessNumber | None = Field(
        description="The receiving establishment's FINESS; null (anywhere) until accepted."
    )
    specialty: str = Field(description="The specialty asked for.")
    level_of_care: LevelOfCare | None = Field(None, description="The level of care asked for.")
    urgency: TransferUrgency = Field(description="How soon.")
    bed: str | None = Field(None, description="The bed reserved, once accepted.")
    at: datetime = Field(description="When it happened.")

    @classmethod
    def audience(cls, event: Event) -> Audience:
        if "to" in event.data and event.data["to"] is None:
            return Audience(Visibility.PUBLIC)
        return super().audience(event)


class TransferRequested(_Transfer):
    """Published when an establishment asks for a bed elsewhere in the territory."""

    EVENT_TYPE: ClassVar[str] = TRANSFER_REQUESTED


class TransferAccepted(_Transfer):
    """Published when a receiving establishment accepts a request: a bed is reserved for
    it until `expires_at`."""

    EVENT_TYPE: ClassVar[str] = TRANSFER_ACCEPTED

    expires_at: datetime = Field(description="When the reservation lapses.")


class TransferDeclined(_Transfer):
    """Published when an establishment declines a request."""

    EVENT_TYPE: ClassVar[str] = TRANSFER_DECLINED

    reason: str | None = Field(None, description="Why.")


class TransferCancelled(_Transfer):
    """Published when the requesting establishment withdraws its request."""

    EVENT_TYPE: ClassVar[str] = TRANSFER_CANCELLED

    reason: str | None = Field(None, description="Why.")


class TransferCompleted(_Transfer):
    """Published when the patient has arrived in the reserved bed."""

    EVENT_TYPE: ClassVar[str] = TRANSFER_COMPLETED


class TransferExpired(_Transfer):
    """Published when an accepted request's reservation lapsed without the patient."""

    EVENT_TYPE: ClassVar[str] = TRANSFER_EXPIRED


class StrainChanged(Payload):
    """Published when the strain level of a unit, an establishment, a specialty or the
    territory changes (thresholds with hysteresis, so it does not flap)."""

    EVENT_TYPE: ClassVar[str] = STRAIN_CHANGED
    SUBJECT: ClassVar[str] = "strain/{scope}/{key}"
    CONSUMED_BY: ClassVar[tuple[str, ...]] = ("gateway",)
    VISIBILITY: ClassVar[Visibility] = Visibility.ESTABLISHMENT
    ESTABLISHMENT_FIELDS: ClassVar[tuple[str, ...]] = ("establishment",)

    scope: Literal["unit", "establishment", "specialty", "territory"] = Field(
        description="What the level is of (the gateway's feed reads `territory`)."
    )
    key: str = Field(
        description="The unit's code, the FINESS, the specialty or the territory's code."
    )
    establishment: FinessNumber | None = Field(
        None, description="The FINESS, for the unit and establishment scopes."
    )
    specialty: str | None = Field(None, description="The specialty, if the scope has one.")
    level: StrainLevel = Field(description="The level now.")
    previous_level: StrainLevel | None = Field(description="The level before; null at first.")
    occupancy: Number | None = Field(ge=0, description="Occupied share of open beds.")
    available: Count | None = Field(description="Beds available.")

    @classmethod
    def audience(cls, event: Event) -> Audience:
        """The territory's and a specialty's level across the territory are public (every
        establishment acts on a plan blanc); a unit's or an establishment's is its own."""
        if event.data.get("scope") in ("territory", "specialty"):
            return Audience(Visibility.PUBLIC)
        return super().audience(event)


PAYLOADS: tuple[type[Payload], ...] = (
    BedStatusChanged,
    CapacityChanged,
    TransferRequested,
    TransferAccepted,
    TransferDeclined,
    TransferCancelled,
    TransferCompleted,
    TransferExpired,
    StrainChanged,
)
