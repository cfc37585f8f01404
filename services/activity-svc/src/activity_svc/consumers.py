"""The durable consumers of activity-svc: targets from contracts, capacity from beds."""

from __future__ import annotations

from activity_svc.events import CAPACITY_CHANGED, CONTRACT_AMENDED, CONTRACT_SIGNED
from activity_svc.referential.capacity import on_capacity_changed
from activity_svc.steering.contracts import on_contract_signed
from ght_shared.consumer import ConsumerSpec

CONSUMERS: tuple[ConsumerSpec, ...] = (
    ConsumerSpec(
        service="activity", stream="BEDS", handlers={CAPACITY_CHANGED: on_capacity_changed}
    ),
    ConsumerSpec(
        service="activity",
        stream="CONTRACTS",
        handlers={CONTRACT_SIGNED: on_contract_signed, CONTRACT_AMENDED: on_contract_signed},
    ),
)
