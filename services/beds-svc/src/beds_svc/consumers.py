"""The durable consumers of beds-svc: one ``ConsumerSpec`` per stream it reads.

Each handler is ``async def on_<event>(session, event)``: it reads the payload with
``<Model>.of(event)`` (``ght_shared.payloads``; data that does not fit is dead-lettered)
and calls the same use case as the route that makes the change. None yet: they come with
beds-svc's domain issue (e.g. the referential replica from ``ght.referential.orgunit
.upserted`` on the ``ACTIVITY`` stream).
"""

from __future__ import annotations

from ght_shared.consumer import ConsumerSpec

CONSUMERS: tuple[ConsumerSpec, ...] = ()
