"""An outbox relay and a consumer wired on real servers, for tests and benchmarks."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from contextlib import suppress
from types import TracebackType
from typing import Self

from ght_shared.consumer import Consumer, ConsumerSpec, Handler
from ght_shared.db import Database
from ght_shared.events import Event
from ght_shared.messaging import NatsConnection
from ght_shared.metrics import ServiceMetrics
from ght_shared.outbox import OutboxRelay, add_events
from ght_shared.settings import ServiceSettings
from ght_shared.streams import STREAMS, ensure_stream


class Pipeline:
    """Writer → outbox → relay → JetStream → consumer → handler, as in a service."""

    def __init__(
        self,
        settings: ServiceSettings,
        handlers: Mapping[str, Handler],
        *,
        stream: str = "BEDS",
        relay: bool = True,
        consumer: bool = True,
    ) -> None:
        self.settings = settings
        self.stream = stream
        self.metrics = ServiceMetrics(settings.service_name)
        self.database = Database(settings)
        self.nats = NatsConnection(settings.nats_url, settings.service_name)
        self.relay = OutboxRelay(settings, self.nats, self.metrics)
        spec = ConsumerSpec(service=settings.service_name, stream=stream, handlers=handlers)
        self.consumer = Consumer(spec, settings, self.database, self.nats, self.metrics)
        self._want_relay = relay
        self._want_consumer = consumer
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Self:
        self.nats.start()
        await asyncio.wait_for(self.nats.wait_connected(), 15)
        await ensure_stream(
            self.nats.jetstream,
            STREAMS[self.stream],
            replicas=1,
            duplicate_window_s=self.settings.stream_duplicate_window_s,
        )
        if self._want_relay:
            self.start_relay()
        if self._want_consumer:
            self._tasks.append(asyncio.create_task(self.consumer.run()))
        return self

    def start_relay(self) -> None:
        self._tasks.append(asyncio.create_task(self.relay.run()))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.consumer.stop()
        self.relay.stop()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=10)
            for task in pending:
                task.cancel()
                with suppress(asyncio.CancelledError, Exception):
                    await task
        await self.nats.close()
        await self.database.dispose()

    async def write(self, events: Sequence[Event]) -> list[Event]:
        """Commit ``events`` through the outbox in one transaction."""
        async with self.database.transaction() as session:
            return await add_events(session, events)
