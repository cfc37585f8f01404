"""What beds-svc publishes and consumes on NATS JetStream (EVENTS.md)."""

from __future__ import annotations

from ght_shared.consumer import ConsumerSpec

SOURCE = "beds-svc"
STREAM = "BEDS"

# Durable consumers of the other services' streams, started in the app's lifespan.
CONSUMERS: tuple[ConsumerSpec, ...] = ()
