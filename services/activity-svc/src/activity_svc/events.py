"""What activity-svc publishes and consumes on NATS JetStream (``docs/events.md``).

The payloads are the typed models of :mod:`ght_shared.payloads` (activity-svc owns those
of :mod:`~ght_shared.payloads.referential` and :mod:`~ght_shared.payloads.activity`): a
change builds its model and stores ``model.event(source=SOURCE, establishment=...)``
with :func:`ght_shared.outbox.add_events` in its own transaction. The consumers of the
other services' streams are wired in :mod:`activity_svc.consumers`.
"""

from __future__ import annotations

from ght_shared.events import nats_subject_of
from ght_shared.payloads import activity, beds, contracts, referential

SOURCE = activity.SERVICE
STREAM = activity.STREAM

# Published.
ORG_UNIT_UPSERTED = referential.ORG_UNIT_UPSERTED
BATCH_INGESTED = activity.BATCH_INGESTED
INDICATOR_UPDATED = activity.INDICATOR_UPDATED
ALERT_RAISED = activity.ALERT_RAISED
ALERT_CLOSED = activity.ALERT_CLOSED

# Consumed, by their NATS subject (the type without its version).
CONTRACT_SIGNED = nats_subject_of(contracts.CONTRACT_SIGNED)
CONTRACT_AMENDED = nats_subject_of(contracts.CONTRACT_AMENDED)
CAPACITY_CHANGED = nats_subject_of(beds.CAPACITY_CHANGED)
