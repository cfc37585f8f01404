"""The durable consumers of activity-svc: targets from contracts, capacity from beds."""

from __future__ import annotations

from ght_shared.consumer import ConsumerSpec

CONSUMERS: tuple[ConsumerSpec, ...] = ()
