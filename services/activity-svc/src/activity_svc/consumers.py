"""The durable consumers of activity-svc: installed beds from beds-svc, targets from
contracts-svc.

Each handler reads the event's payload with its model (``ght_shared.payloads``; data
that does not fit raises ``UnreadablePayload`` and is dead-lettered at once) and calls the
use case a route would, with the producing service as the actor.
"""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession

from activity_svc.events import CAPACITY_CHANGED, CONTRACT_AMENDED, CONTRACT_SIGNED
from activity_svc.referential.org_units import SetInstalledBeds, set_installed_beds
from activity_svc.referential.tree import local_date
from activity_svc.steering.contracts import apply_contract
from ght_shared.auth import service_principal
from ght_shared.consumer import ConsumerSpec
from ght_shared.events import Event
from ght_shared.identifiers import is_finess
from ght_shared.payloads.beds import CapacityChanged
from ght_shared.payloads.contracts import ContractAmended, ContractSigned

_log = logging.getLogger(__name__)


async def on_capacity_changed(session: AsyncSession, event: Event) -> None:
    """The unit's installed beds from the day of ``event.time`` (Europe/Paris).

    ``data.unit`` is the unit's org code, or its UF code within the event's
    establishment (the envelope's, else ``data.establishment``). An event naming no unit
    this service knows is logged and skipped: redelivering it would not make it better.
    """
    capacity = CapacityChanged.of(event)
    envelope = (
        event.establishment if event.establishment and is_finess(event.establishment) else None
    )
    establishment = envelope or capacity.establishment
    unit = await set_installed_beds(
        session,
        service_principal(event.source),
        SetInstalledBeds(
            unit=capacity.unit,
            establishment=establishment,
            effective_from=local_date(event.time),
            installed=capacity.installed,
            reference=str(event.id),
        ),
    )
    if unit is None:
        _log.warning(
            "capacity event %s skipped: no unit %r in establishment %s",
            event.id,
            capacity.unit,
            establishment,
        )


async def on_contract_signed(session: AsyncSession, event: Event) -> None:
    """Set the targets of a signed contract's objectives."""
    await apply_contract(session, service_principal(event.source), ContractSigned.of(event))


async def on_contract_amended(session: AsyncSession, event: Event) -> None:
    """Set the targets of an amended contract's objectives (they replace the previous)."""
    await apply_contract(session, service_principal(event.source), ContractAmended.of(event))


CONSUMERS: tuple[ConsumerSpec, ...] = (
    ConsumerSpec(
        service="activity", stream="BEDS", handlers={CAPACITY_CHANGED: on_capacity_changed}
    ),
    ConsumerSpec(
        service="activity",
        stream="CONTRACTS",
        handlers={CONTRACT_SIGNED: on_contract_signed, CONTRACT_AMENDED: on_contract_amended},
    ),
)
