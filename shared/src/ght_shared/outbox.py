"""Transactional outbox: events stored with the change, published by one relay per service.

``add_event`` writes into the caller's transaction, so a committed change
always has its events and a rolled-back one never does. ``OutboxRelay``
publishes them to JetStream in id order, waiting for each PubAck before
marking the row; it is the single active publisher of its service (a
PostgreSQL advisory lock), wakes on LISTEN/NOTIFY and polls on a timer.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from ght_shared import tables
from ght_shared.db import driver_connection
from ght_shared.events import Event
from ght_shared.messaging import NatsConnection
from ght_shared.metrics import ServiceMetrics
from ght_shared.settings import ServiceSettings
from ght_shared.urls import plain_url

_log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "ght_outbox"
PRUNE_INTERVAL_S = 3600.0

_NEXT_SEQUENCES = text(
    """
    INSERT INTO aggregate_sequence AS s (aggregate, last_sequence)
    SELECT aggregate, n FROM unnest(CAST(:aggregates AS text[]), CAST(:counts AS bigint[]))
        AS t(aggregate, n) ORDER BY aggregate
    ON CONFLICT (aggregate) DO UPDATE SET last_sequence = s.last_sequence + EXCLUDED.last_sequence
    RETURNING aggregate, last_sequence
    """
)


_OUTBOX_COLUMNS = ("event_id", "event_type", "subject", "aggregate", "payload", "created_at")


async def add_events(session: AsyncSession, events: Sequence[Event]) -> list[Event]:
    """Store ``events`` in the outbox within the session's transaction.

    Each event gets the next ``sequence`` of its aggregate (its ``subject``);
    the returned copies carry it. Several events of one aggregate keep their order.
    """
    if not events:
        return []
    counts = Counter(event.subject for event in events)
    result = await session.execute(
        _NEXT_SEQUENCES, {"aggregates": list(counts), "counts": list(counts.values())}
    )
    next_seq = {agg: last - counts[agg] + 1 for agg, last in result.all()}
    stored: list[Event] = []

    def rows() -> Iterator[tuple[object, ...]]:
        # Built as COPY streams them in chunks: the database stores the previous chunk meanwhile.
        for event in events:
            sequenced = event.model_copy(update={"sequence": next_seq[event.subject]})
            next_seq[event.subject] += 1
            stored.append(sequenced)
            yield (
                sequenced.id,
                sequenced.type,
                sequenced.nats_subject,
                sequenced.subject,
                sequenced.to_bytes(),
                sequenced.time,
            )

    # COPY rather than a many-row INSERT (several times faster), on the session's connection
    # and so in its transaction, begun by the statement above. COPY keeps the given order
    # (the relay publishes in id order) and fires the NOTIFY trigger once.
    connection = await driver_connection(session)
    await connection.copy_records_to_table(
        tables.outbox.name, columns=_OUTBOX_COLUMNS, records=rows()
    )
    return stored


async def add_event(session: AsyncSession, event: Event) -> Event:
    """Store one event in the outbox within the session's transaction."""
    (stored,) = await add_events(session, [event])
    return stored


def relay_lock_key(service_name: str) -> int:
    """The advisory-lock key that elects the single relay of a service."""
    digest = hashlib.blake2b(f"ght-outbox-relay:{service_name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@dataclass(frozen=True)
class _Row:
    id: int
    event_id: str
    subject: str
    aggregate: str
    payload: bytes


class OutboxRelay:
    """Publishes a service's outbox to JetStream; run it as a background task."""

    def __init__(
        self,
        settings: ServiceSettings,
        nats: NatsConnection,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.nats = nats
        self.metrics = metrics
        self._dsn = plain_url(settings.database_url)
        self._lock_key = relay_lock_key(settings.service_name)
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self.is_leader = False
        self.published_total = 0

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Lead (or wait to lead) and publish until stopped; survives both servers restarting."""
        while not self._stopping.is_set():
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self._dsn, timeout=self.settings.db_connect_timeout_s)
                if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", self._lock_key):
                    # Another relay of this service leads; stand by.
                    await self._sleep(2.0)
                    continue
                self.is_leader = True
                await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
                await self._publish_loop(conn)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                _log.warning("outbox relay lost its database, retrying: %s", exc)
                await self._sleep(1.0)
            except Exception:  # anything else must not end the relay for good, silently
                _log.exception("outbox relay failed, restarting it")
                await self._sleep(1.0)
            finally:
                self.is_leader = False
                if conn is not None:
                    with suppress(Exception):
                        await asyncio.wait_for(conn.close(), 2.0)

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _sleep(self, seconds: float) -> None:
        with suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _publish_loop(self, conn: asyncpg.Connection) -> None:
        backoff = 0.0
        last_stats = last_prune = float("-inf")  # both due at once on taking the lead
        while not self._stopping.is_set():
            if time.monotonic() - last_stats > 5.0:
                await self._record_backlog(conn)
                last_stats = time.monotonic()
            if time.monotonic() - last_prune > PRUNE_INTERVAL_S:
                await self._prune(conn)
                last_prune = time.monotonic()
            self._wake.clear()
            rows = [
                _Row(r["id"], str(r["event_id"]), r["subject"], r["aggregate"], r["payload"])
                for r in await conn.fetch(
                    "SELECT id, event_id, subject, aggregate, payload FROM outbox"
                    " WHERE published_at IS NULL ORDER BY id LIMIT $1",
                    self.settings.outbox_batch_size,
                )
            ]
            if not rows:
                # NOTIFY wakes us at once; the timer covers notifications lost while disconnected.
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.settings.outbox_poll_interval_s)
                continue
            published, failed = await self._publish(rows)
            if published:
                await self._mark_published(conn, published)
            if failed:
                ids, error = failed
                await conn.execute(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = $2"
                    " WHERE id = ANY($1::bigint[])",
                    ids,
                    error[:500],
                )
                if self.metrics:
                    self.metrics.outbox_publish_failures.inc(len(ids))
                backoff = min(max(backoff * 2, 0.1), self.settings.outbox_max_backoff_s)
                _log.warning(
                    "outbox publish failed, retrying in %.1fs: %s (%d pending in batch)",
                    backoff,
                    error,
                    len(ids),
                )
                await self._sleep(backoff * (0.5 + random.random() / 2))
            else:
                backoff = 0.0

    async def _mark_published(self, conn: asyncpg.Connection, ids: list[int]) -> None:
        # Dying before this line publishes these events again on restart: consumers'
        # inboxes absorb the duplicates (and JetStream's within its duplicate window).
        await conn.execute(
            "UPDATE outbox SET published_at = now(), attempts = attempts + 1"
            " WHERE id = ANY($1::bigint[])",
            ids,
        )
        self.published_total += len(ids)
        if self.metrics:
            self.metrics.outbox_published.inc(len(ids))

    async def _publish(self, rows: list[_Row]) -> tuple[list[int], tuple[list[int], str] | None]:
        """Publish a batch: concurrent across aggregates, in order within one aggregate."""
        if not self.nats.connected:
            return [], ([r.id for r in rows], "NATS is not connected")
        js = self.nats.jetstream
        in_flight = asyncio.Semaphore(self.settings.outbox_max_in_flight)
        timeout = self.settings.outbox_publish_timeout_s
        errors: list[str] = []

        async def publish(row: _Row, previous: asyncio.Task[bool] | None) -> bool:
            # An aggregate's next event waits for its previous PubAck, and is not sent
            # if that one failed, so consumers see each aggregate in order.
            if previous is not None and not await previous:
                return False
            async with in_flight:
                try:
                    await js.publish(
                        row.subject,
                        row.payload,
                        timeout=timeout,
                        headers={"Nats-Msg-Id": row.event_id},
                    )
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    return False
            return True

        last: dict[str, asyncio.Task[bool]] = {}
        tasks: list[asyncio.Task[bool]] = []
        for row in rows:
            task = asyncio.create_task(publish(row, last.get(row.aggregate)))
            last[row.aggregate] = task
            tasks.append(task)
        outcomes = await asyncio.gather(*tasks)
        published = [row.id for row, ok in zip(rows, outcomes, strict=True) if ok]
        failed_ids = [row.id for row, ok in zip(rows, outcomes, strict=True) if not ok]
        if not failed_ids:
            return published, None
        return published, (failed_ids, errors[0] if errors else "not sent: earlier event failed")

    async def _prune(self, conn: asyncpg.Connection) -> None:
        # Published rows are kept a while for operators (the stream has them too).
        status = await conn.execute(
            "DELETE FROM outbox WHERE published_at < now() - make_interval(days => $1)",
            self.settings.outbox_retention_days,
        )
        _log.debug("outbox pruned: %s", status)

    async def _record_backlog(self, conn: asyncpg.Connection) -> None:
        if self.metrics is None:
            return
        row = await conn.fetchrow(
            "SELECT count(*) AS n, extract(epoch FROM now() - min(created_at)) AS age"
            " FROM outbox WHERE published_at IS NULL"
        )
        assert row is not None
        self.metrics.outbox_backlog.set(row["n"])
        self.metrics.outbox_oldest_age.set(float(row["age"] or 0.0))
