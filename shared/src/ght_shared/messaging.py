"""The process's NATS connection: connects in the background and reconnects for ever.

A service must start, answer and accept writes while NATS is down (its events
wait in the outbox), so the first connection is retried instead of failing
the start-up.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress

import nats
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

_log = logging.getLogger(__name__)


class NatsConnection:
    """One NATS client per process, shared by the relay and the consumers."""

    def __init__(self, url: str, name: str, connect_timeout_s: float = 2.0) -> None:
        self.url = url
        self.name = name
        self.connect_timeout_s = connect_timeout_s
        self._client: NatsClient | None = None
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.is_connected

    @property
    def client(self) -> NatsClient:
        if self._client is None:
            raise ConnectionError("NATS is not connected yet")
        return self._client

    @property
    def jetstream(self) -> JetStreamContext:
        return self.client.jetstream(timeout=5.0)

    async def wait_connected(self) -> NatsClient:
        await self._ready.wait()
        return self.client

    def start(self) -> None:
        self._task = asyncio.create_task(self._connect_forever(), name=f"nats-connect-{self.name}")

    async def _connect_forever(self) -> None:
        delay = 0.2
        while True:
            try:
                self._client = await nats.connect(
                    self.url,
                    name=self.name,
                    connect_timeout=self.connect_timeout_s,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    ping_interval=5,
                    max_outstanding_pings=2,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                )
            except Exception as exc:
                _log.warning(
                    "NATS unreachable, retrying", extra={"url": self.url, "error": str(exc)}
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            _log.info("NATS connected", extra={"url": self.url})
            self._ready.set()
            return

    async def _on_error(self, exc: Exception) -> None:
        _log.debug("NATS client error: %s", exc)

    async def _on_disconnected(self) -> None:
        _log.warning("NATS disconnected", extra={"url": self.url})

    async def _on_reconnected(self) -> None:
        _log.info("NATS reconnected", extra={"url": self.url})

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        # Consumers and the relay have stopped by now: nothing left to drain, and
        # draining an idle pull subscription would wait for its whole timeout.
        if self._client is not None and not self._client.is_closed:
            with suppress(Exception):
                await self._client.close()
