"""Real JetStream from a test: publish an event as its owner's relay would, and read what a
service published, without writing a NATS client by hand.

``publish_event(nats_url, event)`` provisions the event's stream and publishes it with
``Nats-Msg-Id`` = its id; ``tap_stream(nats_url, subject)`` reads the events of a subject
through an ephemeral consumer (``relayed(database)`` first waits until the service's
relay has published what its outbox held); ``published(nats_url, subject, ids)`` waits
until the events of ``ids`` are all in the stream and returns them as delivered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from typing import Literal

import nats
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from sqlalchemy import func, select

from ght_shared import tables
from ght_shared.db import Database
from ght_shared.events import Event, nats_subject_of
from ght_shared.streams import STREAMS, StreamSpec, ensure_stream
from ght_shared.testing.plugin import wait_for


def stream_of(subject: str) -> StreamSpec:
    """The stream holding ``subject`` (``ght.beds.capacity.changed`` → ``BEDS``)."""
    owner = ".".join(nats_subject_of(subject).split(".")[:2])
    for spec in STREAMS.values():
        if any(pattern.removesuffix(".>") == owner for pattern in spec.subjects):
            return spec
    raise ValueError(f"no stream holds {subject!r}")


@asynccontextmanager
async def jetstream(nats_url: str) -> AsyncIterator[JetStreamContext]:
    connection = await nats.connect(nats_url)
    try:
        yield connection.jetstream()
    finally:
        await connection.close()


async def publish_event(
    nats_url: str, *events: Event, msg_id: str | None = None, dedupe: bool = True
) -> list[bool]:
    """Publish ``events`` as their owner's relay would, in order; for each, True when
    JetStream kept it as a duplicate. ``msg_id`` replaces the ``Nats-Msg-Id`` (the
    event's id); ``dedupe=False`` sends none (a copy past the duplicate window)."""
    duplicates: list[bool] = []
    async with jetstream(nats_url) as js:
        for spec in {
            stream_of(e.nats_subject).name: stream_of(e.nats_subject) for e in events
        }.values():
            await ensure_stream(js, spec)
        for event in events:
            headers = {"Nats-Msg-Id": msg_id or str(event.id)} if dedupe else None
            ack = await js.publish(event.nats_subject, event.to_bytes(), headers=headers)
            duplicates.append(bool(ack.duplicate))
    return duplicates


class StreamTap:
    """The events of a subject as an ephemeral consumer receives them."""

    def __init__(self, subscription: JetStreamContext.PullSubscription) -> None:
        self.subscription = subscription
        self.received: list[Event] = []

    async def fetch(self, batch: int = 1000, timeout_s: float = 0.5) -> list[Event]:
        """What arrived since the last fetch (possibly nothing)."""
        try:
            messages = await self.subscription.fetch(batch, timeout=timeout_s)
        except (TimeoutError, NatsTimeoutError):
            return []
        fresh = [Event.from_bytes(message.data) for message in messages]
        self.received += fresh
        return fresh

    async def until(
        self, condition: Callable[[list[Event]], bool], timeout_s: float = 15.0
    ) -> list[Event]:
        """Fetch until ``condition(received)`` holds; fail the test after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not condition(self.received):
            if time.monotonic() > deadline:
                raise AssertionError(f"the events awaited did not come within {timeout_s} s")
            if not await self.fetch():
                await asyncio.sleep(0.05)
        return self.received

    def with_ids(self, ids: Collection[str]) -> list[Event]:
        return [event for event in self.received if str(event.id) in ids]


@asynccontextmanager
async def tap_stream(
    nats_url: str, subject: str, *, since: Literal["now", "start"] = "now"
) -> AsyncIterator[StreamTap]:
    """Read the events of ``subject`` (wildcards allowed) published from now on, or all of
    those in its stream (``since="start"``)."""
    spec = stream_of(subject)
    async with jetstream(nats_url) as js:
        await ensure_stream(js, spec)
        subscription = await js.pull_subscribe(
            subject,
            stream=spec.name,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.NEW if since == "now" else DeliverPolicy.ALL,
                ack_policy=AckPolicy.NONE,
                inactive_threshold=30.0,
                mem_storage=True,
            ),
        )
        yield StreamTap(subscription)


async def relayed(database: Database, timeout_s: float = 15.0) -> None:
    """Wait until the service's relay has published every event of its outbox (so that a
    tap opened then sees only what comes next)."""

    async def drained() -> bool:
        async with database.transaction() as session:
            left = await session.scalar(
                select(func.count())
                .select_from(tables.outbox)
                .where(tables.outbox.c.published_at.is_(None))
            )
        return left == 0

    await wait_for(drained, timeout=timeout_s)


async def published(
    nats_url: str, subject: str, ids: Collection[str], timeout_s: float = 15.0
) -> list[Event]:
    """The events of ``ids`` as the stream holds them (each as often as it is stored),
    once every one of them is there."""
    wanted = set(ids)
    async with tap_stream(nats_url, subject, since="start") as tap:
        await tap.until(lambda got: {str(e.id) for e in got} >= wanted, timeout_s)
        return tap.with_ids(wanted)
