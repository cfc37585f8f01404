"""What contracts-svc publishes and consumes on NATS JetStream (``docs/events.md``).

The payloads are the typed models of :mod:`ght_shared.payloads.contracts` (contracts-svc owns
them): a change builds its model and stores ``model.event(source=SOURCE,
establishment=...)`` with :func:`ght_shared.outbox.add_events` in its own transaction.
The consumers of the other services' streams are wired in :mod:`contracts_svc.consumers`.
"""

from __future__ import annotations

from ght_shared.payloads import contracts

SOURCE = contracts.SERVICE
STREAM = contracts.STREAM
