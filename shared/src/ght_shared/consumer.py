"""Durable, idempotent JetStream consumers.

Each message is handled inside a database transaction that also records the
event id in the ``inbox`` table, so a redelivered or duplicated event has no
second effect. A batch is applied in one transaction with a savepoint per
message (one commit per batch, not per message) and acknowledged only after
that commit. A failing handler is rolled back alone and nak-ed with backoff;
after ``max_deliver`` attempts the message is dead-lettered (a row and an
event) and acknowledged so that the others keep flowing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import ValidationError
from sqlalchemy import insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from ght_shared import tables
from ght_shared.context import child_traceparent, traceparent_var
from ght_shared.db import Database
from ght_shared.events import Event, new_event
from ght_shared.messaging import NatsConnection
from ght_shared.metrics import ServiceMetrics
from ght_shared.outbox import add_event
from ght_shared.settings import ServiceSettings
from ght_shared.streams import STREAMS, ensure_stream

_log = logging.getLogger(__name__)

Handler = Callable[[AsyncSession, Event], Awaitable[None]]
"""A message handler: applies ``event`` using ``session`` (flush only; the consumer commits)."""


@dataclass(frozen=True)
class ConsumerSpec:
    """A durable consumer of one stream: which subjects it reads and who handles each type.

    ``handlers`` maps an event type without version (the NATS subject, e.g.
    ``ght.beds.capacity.changed``) to its handler; other subjects are acknowledged and skipped.
    """

    service: str
    stream: str
    handlers: Mapping[str, Handler]
    filter_subjects: tuple[str, ...] = field(default=())

    @property
    def durable(self) -> str:
        return f"{self.service}__{self.stream.lower()}"

    def subjects(self) -> list[str]:
        return list(self.filter_subjects or self.handlers)


class Consumer:
    """Runs one :class:`ConsumerSpec` as a background task until stopped."""

    def __init__(
        self,
        spec: ConsumerSpec,
        settings: ServiceSettings,
        database: Database,
        nats: NatsConnection,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.database = database
        self.nats = nats
        self.metrics = metrics
        self._stopping = asyncio.Event()
        self.handled = 0

    def stop(self) -> None:
        """Finish the batch in hand, then return (graceful drain)."""
        self._stopping.set()

    def consumer_config(self) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self.spec.durable,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.settings.consumer_ack_wait_s,
            # JetStream stops redelivering after this; we dead-letter on the last one.
            max_deliver=self.settings.consumer_max_deliver + 1,
            max_ack_pending=10_000,
            filter_subjects=self.spec.subjects(),
        )

    async def run(self) -> None:
        connected = asyncio.create_task(self.nats.wait_connected())
        stopping = asyncio.create_task(self._stopping.wait())
        await asyncio.wait({connected, stopping}, return_when=asyncio.FIRST_COMPLETED)
        connected.cancel()
        stopping.cancel()
        subscription: JetStreamContext.PullSubscription | None = None
        while not self._stopping.is_set():
            try:
                if subscription is None:
                    subscription = await self._subscribe()
                try:
                    messages = await subscription.fetch(self.settings.consumer_batch_size, 1.0)
                except NatsTimeoutError:
                    continue  # no message: not an error
                await self._handle_batch(messages)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _log.warning("consumer %s: %s; resubscribing", self.spec.durable, exc)
                if subscription is not None:
                    with suppress(Exception):
                        await subscription.unsubscribe()
                subscription = None
                await self._sleep(1.0)

    async def _sleep(self, seconds: float) -> None:
        with suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _subscribe(self) -> JetStreamContext.PullSubscription:
        js = self.nats.jetstream
        await ensure_stream(
            js,
            STREAMS[self.spec.stream],
            replicas=self.settings.stream_replicas,
            duplicate_window_s=self.settings.stream_duplicate_window_s,
        )
        config = self.consumer_config()
        await js.add_consumer(self.spec.stream, config)
        return await js.pull_subscribe_bind(durable=self.spec.durable, stream=self.spec.stream)

    async def _handle_batch(self, messages: list[Msg]) -> None:
        acks: list[Msg] = []
        naks: list[tuple[Msg, float]] = []
        try:
            async with self.database.transaction() as session:
                for msg in messages:
                    outcome = await self._handle_one(session, msg)
                    if outcome is None:
                        acks.append(msg)
                    else:
                        naks.append((msg, outcome))
        except Exception:
            # Nothing of the batch is committed (database gone?): have it all redelivered soon.
            for msg in messages:
                with suppress(Exception):
                    await msg.nak(delay=1.0)
            raise
        # Acknowledge only once the batch's transaction has committed.
        for msg in acks:
            await msg.ack()
        for msg, delay in naks:
            await msg.nak(delay=delay)
        self.handled += len(acks)

    async def _handle_one(self, session: AsyncSession, msg: Msg) -> float | None:
        """Apply one message in a savepoint; return None to ack, or the nak delay."""
        handler = self.spec.handlers.get(msg.subject)
        deliveries = msg.metadata.num_delivered
        try:
            event = Event.from_bytes(msg.data)
        except (ValidationError, ValueError) as exc:
            # A message that can never be parsed will not get better: dead-letter it now.
            await self._dead_letter(session, msg, None, f"unreadable event: {exc}", deliveries)
            return None
        if handler is None:
            self._count("skipped")
            return None
        token = traceparent_var.set(child_traceparent(event.traceparent))
        try:
            async with session.begin_nested():
                inserted = await session.execute(
                    pg_insert(tables.inbox)
                    .values(
                        consumer=self.spec.durable,
                        event_id=event.id,
                        event_type=event.type,
                        processed_at=datetime.now(UTC),
                    )
                    .on_conflict_do_nothing()
                    .returning(tables.inbox.c.event_id)
                )
                if inserted.first() is None:
                    self._count("duplicate")
                    return None
                await handler(session, event)
                await session.flush()
            self._count("applied")
            return None
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            if deliveries >= self.settings.consumer_max_deliver:
                _log.error(
                    "consumer %s dead-letters event %s after %d deliveries: %s",
                    self.spec.durable,
                    event.id,
                    deliveries,
                    error,
                )
                await self._dead_letter(session, msg, event, error, deliveries)
                return None
            _log.warning(
                "consumer %s failed on event %s (delivery %d): %s",
                self.spec.durable,
                event.id,
                deliveries,
                error,
            )
            self._count("failed")
            backoff = self.settings.consumer_backoff_s
            return backoff[min(deliveries - 1, len(backoff) - 1)]
        finally:
            traceparent_var.reset(token)

    async def _dead_letter(
        self, session: AsyncSession, msg: Msg, event: Event | None, error: str, deliveries: int
    ) -> None:
        await session.execute(
            insert(tables.dead_letter).values(
                consumer=self.spec.durable,
                event_id=event.id if event else None,
                event_type=event.type if event else None,
                subject=msg.subject,
                payload=msg.data,
                error=error[:2000],
                deliveries=deliveries,
                created_at=datetime.now(UTC),
            )
        )
        await add_event(
            session,
            new_event(
                source=self.settings.service_name,
                type=f"ght.{_owner(self.settings.service_name)}.dead_letter.recorded.v1",
                subject=f"dead_letter/{self.spec.durable}",
                data={
                    "consumer": self.spec.durable,
                    "event_id": str(event.id) if event else None,
                    "event_type": event.type if event else None,
                    "subject": msg.subject,
                    "error": error[:500],
                    "deliveries": deliveries,
                },
            ),
        )
        self._count("dead_lettered")
        if self.metrics:
            self.metrics.dead_letters.labels(self.spec.durable).inc()

    def _count(self, outcome: str) -> None:
        if self.metrics:
            self.metrics.consumed.labels(self.spec.durable, outcome).inc()

    async def pending(self) -> int:
        """Messages not yet acknowledged by this consumer (its lag)."""
        info = await self.nats.jetstream.consumer_info(self.spec.stream, self.spec.durable)
        lag = (info.num_pending or 0) + (info.num_ack_pending or 0)
        if self.metrics:
            self.metrics.consumer_lag.labels(self.spec.durable).set(lag)
        return lag


def _owner(service_name: str) -> str:
    """``beds-svc`` → ``beds``: dead-letter events go to the service's own stream."""
    return service_name.split("-", 1)[0]
