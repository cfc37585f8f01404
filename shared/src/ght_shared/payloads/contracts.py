"""Contracts and their objectives, owned by contracts-svc (stream ``CONTRACTS``; planned).

activity-svc already reads ``contract.signed`` and ``contract.amended``: their objectives
become its targets.
"""

from __future__ import annotations

from datetime import date
from typing import ClassVar, Literal, Self

from pydantic import Field, model_validator

from ght_shared.payloads.base import Number, Payload, PayloadPart, Visibility
from ght_shared.payloads.referential import OrgUnitCode

SERVICE = "contracts-svc"
STREAM = "CONTRACTS"

CONTRACT_SIGNED = "ght.contracts.contract.signed.v1"
CONTRACT_AMENDED = "ght.contracts.contract.amended.v1"
CONTRACT_CLOSED = "ght.contracts.contract.closed.v1"
OBJECTIVE_STATUS_CHANGED = "ght.contracts.objective.status_changed.v1"

CONTRACT_ID_PATTERN = r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
"""No control character, and not blank."""

ContractKind = Literal["pole_contract", "service_contract", "cooperation_agreement"]
"""A pole contract (COM, contrat de pôle), a service contract (contrat de prestation
between pôles), a cooperation agreement (convention inter-établissements)."""

ObjectiveStatus = Literal["on_track", "at_risk", "met", "missed"]


class ContractPeriod(PayloadPart):
    """The days a contract is in force, both included."""

    start: date = Field(description="Its first day.")
    end: date = Field(description="Its last day, not before `start`.")

    @model_validator(mode="after")
    def _ends_after_it_starts(self) -> Self:
        if self.end < self.start:
            raise ValueError(f"the period ends ({self.end}) before it starts ({self.start})")
        return self


class ContractParty(PayloadPart):
    """A party named with its role."""

    org_unit: str = Field(description="A FINESS or an org unit code.")
    role: str | None = Field(None, description="Its role, e.g. `pole` or `direction`.")


class ContractObjective(PayloadPart):
    """An objective: a target for an activity indicator of an org unit."""

    objective: str | None = Field(None, description="The objective's id.")
    indicator: str = Field(
        min_length=1, max_length=100, description="An indicator code of activity's catalogue."
    )
    org_unit: OrgUnitCode = Field(description="The org unit's code.")
    target: float = Field(strict=True, allow_inf_nan=False, description="The year's target value.")
    floor: Number | None = Field(None, description="The value below which it is missed.")
    stretch: Number | None = Field(None, description="The value beyond the target.")
    direction: str | None = Field(None, description="Which way is better.")
    weight: Number | None = Field(None, description="Its weight in the contract's score.")
    monthly_profile: list[Number] | None = Field(
        None, description="For a volume: 12 weights, January to December."
    )


class _Contract(Payload):
    """A contract, named by its id."""

    SUBJECT: ClassVar[str] = "contract/{contract}"
    VISIBILITY: ClassVar[Visibility] = Visibility.ESTABLISHMENT

    contract: str = Field(
        max_length=100, pattern=CONTRACT_ID_PATTERN, description="The contract's id."
    )
    kind: ContractKind | None = Field(None, description="The kind of contract.")


class _ContractTerms(_Contract):
    parties: list[str | ContractParty] = Field(
        [], description="Its parties: FINESS or org unit codes (or a party with its role)."
    )
    period: ContractPeriod = Field(description="When it is in force.")
    objectives: list[ContractObjective] = Field([], description="Its objectives.")


class ContractSigned(_ContractTerms):
    """Published when a contract has been signed by all its required signers."""

    EVENT_TYPE: ClassVar[str] = CONTRACT_SIGNED
    CONSUMED_BY: ClassVar[tuple[str, ...]] = ("activity-svc",)


class ContractAmended(_ContractTerms):
    """Published when an amendment is signed: this event's period and objectives replace
    the previous ones."""

    EVENT_TYPE: ClassVar[str] = CONTRACT_AMENDED
    CONSUMED_BY: ClassVar[tuple[str, ...]] = ("activity-svc",)


class ContractClosed(_Contract):
    """Published when a contract is closed: its objectives are no longer followed."""

    EVENT_TYPE: ClassVar[str] = CONTRACT_CLOSED

    kind: ContractKind = Field(description="The kind of contract.")
    closed_on: date = Field(description="The day it was closed.")


class ObjectiveStatusChanged(Payload):
    """Published when an objective's status changes, following the indicator's year-end
    projection or its final figures."""

    EVENT_TYPE: ClassVar[str] = OBJECTIVE_STATUS_CHANGED
    SUBJECT: ClassVar[str] = "objective/{objective}"
    VISIBILITY: ClassVar[Visibility] = Visibility.ESTABLISHMENT

    objective: str = Field(description="The objective's id.")
    contract: str = Field(description="The contract's id.")
    indicator: str = Field(description="The indicator's code.")
    org_unit: OrgUnitCode = Field(description="The org unit's code.")
    year: int = Field(strict=True, description="The year the objective is for.")
    target: Number = Field(description="The target.")
    achieved: Number | None = Field(description="The value reached or projected, if known.")
    status: ObjectiveStatus = Field(description="The status now.")
    previous_status: ObjectiveStatus | None = Field(description="The status before.")


PAYLOADS: tuple[type[Payload], ...] = (
    ContractSigned,
    ContractAmended,
    ContractClosed,
    ObjectiveStatusChanged,
)
