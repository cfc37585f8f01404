"""The access log: every request through the gateway, appended to the ``access_log`` table.

Entries are queued by a request observer and written in batches by one background
task (one INSERT per batch), so logging costs a request no database round
trip. The queue is bounded: if the database stays unreachable long enough to
fill it, further entries are counted as dropped and logged as errors rather
than letting the gateway's memory grow. Shutdown writes what is queued.

A batch is retried while the database is away; a batch it refuses for its data (SQLSTATE
class 22 or 23, which no retry heals) is written entry by entry, and an entry refused
again is dropped and counted, so one odd request can never hold the log back. The path
is stored with its control characters percent-encoded (PostgreSQL text holds no NUL,
and a log line no forged newline).
"""

from __future__ import annotations

import asyncio
import logging
import re
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import Counter
from sqlalchemy import insert
from sqlalchemy.exc import DBAPIError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ght_gateway.models import AccessLogEntry
from ght_gateway.ratelimit import Decision
from ght_shared.auth import Principal
from ght_shared.context import client_request_id_var, request_id_var
from ght_shared.db import Database
from ght_shared.metrics import ServiceMetrics, route_label

_log = logging.getLogger(__name__)

# Probes, scrapes and the services' reading of the revocation list (every few seconds)
# would drown the log; they have their own metrics.
UNLOGGED_PATHS = ("/health/", "/metrics", "/auth/revocations")
MAX_LOGGED_PATH = 2000
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_RETRY_PAUSE_S = 1.0


def logged_path(path: str) -> str:
    """``path`` as the log keeps it: control characters percent-encoded, then bounded."""
    return _CONTROL.sub(lambda m: f"%{ord(m.group()):02X}", path)[:MAX_LOGGED_PATH]


def refused_for_its_data(exc: Exception) -> bool:
    """The database refused the statement's values (SQLSTATE class 22 or 23): a retry
    would fail the same way."""
    sqlstate = str(getattr(getattr(exc, "orig", None), "sqlstate", "") or "")
    return isinstance(exc, DBAPIError) and sqlstate[:2] in ("22", "23")


class AccessLogWriter:
    def __init__(
        self,
        database: Database,
        metrics: ServiceMetrics,
        *,
        max_queue: int = 50_000,
        batch_size: int = 500,
        flush_interval_s: float = 0.2,
    ) -> None:
        self.database = database
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=max_queue)
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.dropped = Counter(
            "ght_access_log_dropped",
            "Access-log entries dropped because the queue was full.",
            registry=metrics.registry,
        )
        self.refused = Counter(
            "ght_access_log_refused",
            "Access-log entries dropped because the database refused their values.",
            registry=metrics.registry,
        )
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def append(self, entry: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait(entry)
        except asyncio.QueueFull:
            self.dropped.inc()
            _log.error("access log queue full: entry dropped", extra={"entry": entry})

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="access-log-writer")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            with suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 10.0)

    async def flush(self) -> None:
        """Write everything queued so far (the audit route, tests, shutdown)."""
        while not self.queue.empty():
            unwritten = await self._write_batch(self._take())
            if unwritten:
                raise RuntimeError(f"access log: {len(unwritten)} entries not written")

    def _take(self) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        while len(batch) < self.batch_size and not self.queue.empty():
            batch.append(self.queue.get_nowait())
        return batch

    async def _run(self) -> None:
        while not self._stopping.is_set():
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.flush_interval_s)
            pending: list[dict[str, Any]] = []
            while not self.queue.empty() or pending:
                batch = pending or self._take()
                try:
                    pending = await self._write_batch(batch)
                except Exception as exc:
                    _log.warning("access log write failed, retrying: %s", exc)
                    pending = batch
                if pending:
                    if self._stopping.is_set():
                        _log.error("access log: %d entries not written", len(pending))
                        return
                    await asyncio.sleep(_RETRY_PAUSE_S)  # keeps their order; retried

    async def _write_batch(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Writes ``batch`` in one INSERT; refused for its data, entry by entry, dropping
        (and counting) the entries refused again. Returns the entries left unwritten
        because the database failed otherwise (to retry)."""
        try:
            await self._write(batch)
            return []
        except Exception as exc:
            if not refused_for_its_data(exc):
                raise
        for position, entry in enumerate(batch):
            try:
                await self._write([entry])
            except Exception as exc:
                if not refused_for_its_data(exc):
                    _log.warning("access log write failed, retrying: %s", exc)
                    return batch[position:]
                self.refused.inc()
                _log.error(
                    "access log entry refused by the database, dropped: %s",
                    getattr(exc, "orig", exc),
                    extra={"request_id": entry.get("request_id"), "route": entry.get("route")},
                )
        return []

    async def _write(self, batch: list[dict[str, Any]]) -> None:
        if batch:
            async with self.database.transaction() as session:
                await session.execute(insert(AccessLogEntry), batch)


def record_access(scope: Scope, status: int, duration_s: float) -> None:
    """The request observer that appends one access-log entry per answered request.

    Called by the shared request-context middleware with the status the client really
    got (a 413 sent while the body streamed in included).
    """
    if scope["type"] != "http" or scope["path"].startswith(UNLOGGED_PATHS):
        return
    writer: AccessLogWriter | None = getattr(scope["app"].state, "access_log", None)
    if writer is None:  # the lifespan has not run: nothing to write to
        return
    principal: Principal | None = scope.get("state", {}).get("principal")
    client = scope.get("client")
    writer.append(
        {
            "at": datetime.now(UTC) - timedelta(seconds=duration_s),
            "principal": principal.sub if principal else None,
            "method": scope["method"],
            "route": route_label(scope),
            "path": logged_path(scope["path"]),
            "status": status,
            "duration_ms": round(duration_s * 1000, 3),
            "request_id": request_id_var.get(),
            "client_request_id": client_request_id_var.get(),
            "client_ip": client[0] if client else None,
        }
    )


class RateLimitHeadersMiddleware:
    """Adds the caller's ``RateLimit-*`` headers (taken by ``security.gateway_principal``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                decision: Decision | None = state.get("rate_limit")
                if decision is not None and message["status"] != 429:
                    headers = message.setdefault("headers", [])
                    headers.extend(
                        (name.lower().encode(), value.encode())
                        for name, value in decision.headers().items()
                    )
            await send(message)

        await self.app(scope, receive, send_with_limits)
