"""Durable, idempotent JetStream consumers.

Each message is handled inside a database transaction that also records the
event id in the ``inbox`` table, so a redelivered or duplicated event has no
second effect. A batch is applied in one transaction (one commit per batch,
not per message): its events are claimed in the inbox in one statement and
their handlers run in one savepoint, and the batch is acknowledged only after
the commit. A failing handler is rolled back alone (the savepoint is rolled
back and the others applied again) and nak-ed with backoff; after
``max_deliver`` attempts the message is dead-lettered (a row and an event) and
acknowledged so that the others keep flowing. A handler raising
:class:`~ght_shared.payloads.UnreadablePayload` (the event's data does not fit its
model, ``Payload.of``) has its message dead-lettered at once: it will never fit.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import ValidationError
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncSession

from ght_shared import tables
from ght_shared.context import child_traceparent, traceparent_var
from ght_shared.db import Database
from ght_shared.events import Event
from ght_shared.messaging import NatsConnection
from ght_shared.metrics import ServiceMetrics
from ght_shared.outbox import add_event
from ght_shared.payloads.base import UnreadablePayload
from ght_shared.payloads.common import DeadLetterRecorded
from ght_shared.settings import ServiceSettings
from ght_shared.streams import STREAMS, ensure_stream

_log = logging.getLogger(__name__)

LAG_INTERVAL_S = 5.0

Handler = Callable[[AsyncSession, Event], Awaitable[None]]
"""A message handler: applies ``event`` using ``session`` (flush only; the consumer commits).

It must have no effect outside the session: after a failure in its batch it may run again.
"""

# Records a batch's events in the inbox in one round trip; returns those not seen before.
_CLAIM = text(
    """
    INSERT INTO inbox (consumer, event_id, event_type, processed_at)
    SELECT :consumer, t.event_id, t.event_type, :processed_at
    FROM unnest(CAST(:event_ids AS uuid[]), CAST(:event_types AS text[])) AS t(event_id, event_type)
    ON CONFLICT DO NOTHING
    RETURNING event_id
    """
)


@dataclass(frozen=True)
class _Item:
    """A readable message of a batch with a handler for its type."""

    index: int  # its position in the batch
    msg: Msg
    event: Event
    handler: Handler


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
        # While messages flow, the next batch is fetched while this one is applied (one fetch
        # in flight at most); when idle, one fetch at a time, as stopping waits for it.
        next_batch: asyncio.Task[list[Msg]] | None = None
        lag_measured_at = 0.0
        while not self._stopping.is_set():
            try:
                if subscription is None:
                    subscription = await self._subscribe()
                if time.monotonic() - lag_measured_at > LAG_INTERVAL_S:
                    lag_measured_at = time.monotonic()
                    await self.pending()
                if next_batch is None:
                    next_batch = asyncio.create_task(self._fetch(subscription))
                messages = await next_batch
                next_batch = None
                if messages and not self._stopping.is_set():
                    next_batch = asyncio.create_task(self._fetch(subscription))
                if messages:
                    await self._handle_batch(messages)
            except asyncio.CancelledError:
                if next_batch is not None:
                    next_batch.cancel()
                raise
            except Exception as exc:
                _log.warning("consumer %s: %s; resubscribing", self.spec.durable, exc)
                if next_batch is not None:
                    await self._give_back(next_batch)
                    next_batch = None
                if subscription is not None:
                    with suppress(Exception):
                        await subscription.unsubscribe()
                subscription = None
                await self._sleep(1.0)
        if next_batch is not None:
            # Stopping: the batch fetched meanwhile is in hand too; apply it.
            with suppress(Exception):
                messages = await next_batch
                if messages:
                    await self._handle_batch(messages)

    async def _fetch(self, subscription: JetStreamContext.PullSubscription) -> list[Msg]:
        """The next batch; empty when none came within a second (not an error)."""
        try:
            return await subscription.fetch(self.settings.consumer_batch_size, 1.0)
        except NatsTimeoutError:
            return []

    async def _give_back(self, fetching: asyncio.Task[list[Msg]]) -> None:
        """Have a batch fetched ahead, not to be applied now, redelivered soon."""
        with suppress(Exception):
            for msg in await fetching:
                with suppress(Exception):
                    await msg.nak(delay=1.0)

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
        outcomes: list[float | None] = [None] * len(messages)
        try:
            async with self.database.transaction() as session:
                items = await self._readable(session, messages)
                await self._apply(session, items, outcomes)
        except Exception:
            # Nothing of the batch is committed (database gone?): have it all redelivered soon.
            for msg in messages:
                with suppress(Exception):
                    await msg.nak(delay=1.0)
            raise
        # Acknowledge only once the batch's transaction has committed.
        acked = 0
        for msg, outcome in zip(messages, outcomes, strict=True):
            if outcome is None:
                await msg.ack()
                acked += 1
        for msg, outcome in zip(messages, outcomes, strict=True):
            if outcome is not None:
                await msg.nak(delay=outcome)
        self.handled += acked

    async def _readable(self, session: AsyncSession, messages: list[Msg]) -> list[_Item]:
        """The batch's messages to apply; dead-letters the unreadable, skips unknown types."""
        items: list[_Item] = []
        for index, msg in enumerate(messages):
            try:
                event = Event.from_bytes(msg.data)
            except (ValidationError, ValueError) as exc:
                # A message that can never be parsed will not get better: dead-letter it now.
                deliveries = msg.metadata.num_delivered
                await self._dead_letter(session, msg, None, f"unreadable event: {exc}", deliveries)
                continue
            handler = self.spec.handlers.get(msg.subject)
            if handler is None:
                self._count("skipped")
                continue
            items.append(_Item(index, msg, event, handler))
        return items

    async def _apply(
        self, session: AsyncSession, items: list[_Item], outcomes: list[float | None]
    ) -> None:
        """Apply ``items`` in order, all in one savepoint; a failing one is isolated.

        On a failure the savepoint is rolled back: the items before the failing one are
        applied again, the failing one is nak-ed (``outcomes``) or dead-lettered, and the
        rest follow. A failing handler thus runs once per delivery; the handlers before
        it in the batch run again after the rollback (handlers only use the session).
        """
        while items:
            failure = await self._apply_together(session, items)
            if failure is None:
                return
            position, error = failure
            await self._apply(session, items[:position], outcomes)
            failed = items[position]
            outcomes[failed.index] = await self._failed(session, failed, error)
            items = items[position + 1 :]

    async def _apply_together(
        self, session: AsyncSession, items: list[_Item]
    ) -> tuple[int, Exception] | None:
        """Claim the items' events in the inbox and run their handlers, in one savepoint.

        Returns None when all are applied (or were already), else the position of the
        item that failed and its error, with nothing of ``items`` applied.
        """
        position = 0
        applied = duplicates = 0
        try:
            async with session.begin_nested():
                claimed = await self._claim(session, [item.event for item in items])
                for item in items:
                    if item.event.id in claimed:
                        claimed.discard(item.event.id)  # the same event twice in a batch: once
                        token = traceparent_var.set(child_traceparent(item.event.traceparent))
                        try:
                            await item.handler(session, item.event)
                            await session.flush()
                        finally:
                            traceparent_var.reset(token)
                        applied += 1
                    else:  # in the inbox already: no second effect
                        duplicates += 1
                    position += 1
        except Exception as exc:
            return min(position, len(items) - 1), exc
        self._count("applied", applied)
        self._count("duplicate", duplicates)
        return None

    async def _claim(self, session: AsyncSession, events: list[Event]) -> set[uuid.UUID]:
        """Record ``events`` in the inbox in one statement; return the ids not seen before."""
        result = await session.execute(
            _CLAIM,
            {
                "consumer": self.spec.durable,
                "processed_at": datetime.now(UTC),
                "event_ids": [event.id for event in events],
                "event_types": [event.type for event in events],
            },
        )
        return {row[0] for row in result}

    async def _failed(self, session: AsyncSession, item: _Item, exc: Exception) -> float | None:
        """After a handler failed: None to ack (dead-lettered at last), or the nak delay."""
        event, deliveries = item.event, item.msg.metadata.num_delivered
        error = f"{type(exc).__name__}: {exc}"
        # A payload that does not fit its model will not fit at the next delivery either.
        permanent = isinstance(exc, UnreadablePayload)
        if deliveries < self.settings.consumer_max_deliver and not permanent:
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
        _log.error(
            "consumer %s dead-letters event %s after %d deliveries: %s",
            self.spec.durable,
            event.id,
            deliveries,
            error,
        )
        token = traceparent_var.set(child_traceparent(event.traceparent))
        try:
            await self._dead_letter(session, item.msg, event, error, deliveries)
        finally:
            traceparent_var.reset(token)
        return None

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
        recorded = DeadLetterRecorded(
            consumer=self.spec.durable,
            event_id=str(event.id) if event else None,
            event_type=event.type if event else None,
            subject=msg.subject,
            error=error[:500],
            deliveries=deliveries,
        )
        await add_event(session, recorded.event(source=self.settings.service_name))
        self._count("dead_lettered")
        if self.metrics:
            self.metrics.dead_letters.labels(self.spec.durable).inc()

    def _count(self, outcome: str, n: int = 1) -> None:
        if self.metrics and n:
            self.metrics.consumed.labels(self.spec.durable, outcome).inc(n)

    async def pending(self) -> int:
        """Messages not yet acknowledged by this consumer (its lag)."""
        info = await self.nats.jetstream.consumer_info(self.spec.stream, self.spec.durable)
        lag = (info.num_pending or 0) + (info.num_ack_pending or 0)
        if self.metrics:
            self.metrics.consumer_lag.labels(self.spec.durable).set(lag)
        return lag
