"""Outbox → relay → JetStream → consumer: sustained throughput and end-to-end latency.

Figures (the issue's words): events per second from the writer's commit to the
consumer's commit, 1 relay and 1 consumer, NATS with ``sync_interval: always``
(target ≥ 2 000 events/s over 50 000 events); end-to-end latency at a steady
200 events/s (target p99 ≤ 50 ms); and, as the baseline measured in the same
run against the same server, raw nats-py JetStream publish throughput with a
bounded number of publishes in flight awaiting their PubAcks (ratio target ≥ 0.5).

By default a throwaway PostgreSQL (fsync on, synchronous_commit on) and NATS
(``sync_interval: always``) are started in a temporary directory; ``--database-url``
and ``--nats-url`` (or ``BENCH_DATABASE_URL`` / ``BENCH_NATS_URL``) use external ones.
The writers, the relay and the consumer share one Python process and event loop,
as :class:`ght_shared.testing.pipeline.Pipeline` runs them and as a service runs its
relay and consumers; the loop is uvloop, as under ``uvicorn[standard]`` in ``make run``
(``--loop asyncio`` for the standard one).

Run: ``.venv/bin/python bench/outbox_throughput.py [--events 50000] [--rate 200]``.
A missed target is reported, not an error: the exit code is 0 once the run completes.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import nats
import uvloop
from nats.aio.msg import Msg
from nats.js.api import StorageType, StreamConfig
from sqlalchemy.ext.asyncio import AsyncSession

from ght_shared.consumer import Consumer, ConsumerSpec
from ght_shared.context import traceparent_var
from ght_shared.db import Database
from ght_shared.devservers import NatsServer, PostgresServer, free_port
from ght_shared.events import Event, new_event
from ght_shared.settings import ServiceSettings
from ght_shared.testing.effects import EffectProbe, count_effects, create_effect_table
from ght_shared.testing.pipeline import Pipeline
from ght_shared.testing.plugin import create_infra_database
from ght_shared.urls import plain_url

TARGET_THROUGHPUT = 2_000.0  # events/s, writer commit → consumer commit
TARGET_P99_MS = 50.0  # at a steady --rate
TARGET_RATIO = 0.5  # pipeline throughput / raw JetStream publish throughput

RAW_STREAM = "BENCHRAW"
ENVELOPE_BYTES = 600  # about the size of a real event envelope


class BenchSettings(ServiceSettings):
    # "beds-" so that dead letters, if any, go to the BEDS stream.
    service_name: str = "beds-bench"


# --------------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Servers:
    postgres_base: str  # postgresql://user@host:port, no database
    nats_url: str
    own: bool  # started by this run (with the durability settings of `make run`)


@contextmanager
def servers(database_url: str | None, nats_url: str | None) -> Iterator[Servers]:
    """External servers when given, else a throwaway PostgreSQL and NATS of our own."""
    with tempfile.TemporaryDirectory(prefix="ght-bench-") as tmp:
        root = Path(tmp)
        pg: PostgresServer | None = None
        ns: NatsServer | None = None
        try:
            if database_url:
                base = plain_url(database_url).rstrip("/").rsplit("/", 1)[0]
            else:
                pg = PostgresServer(root / "pg", free_port(), log_file=root / "pg.log")
                pg.start()
                base = plain_url(pg.url("")).rstrip("/")
            if not nats_url:
                ns = NatsServer(root / "nats", free_port(), log_file=root / "nats.log")
                ns.start()
                nats_url = ns.url
            yield Servers(base, nats_url, own=pg is not None and ns is not None)
        finally:
            if ns is not None:
                ns.stop()
            if pg is not None:
                pg.stop()


async def fresh_database(servers: Servers, name: str) -> str:
    """A new database with the infra tables and the effect table; returns its URL."""
    conn = await asyncpg.connect(f"{servers.postgres_base}/postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = f"{servers.postgres_base}/{name}"
    await create_infra_database(url)
    await create_effect_table(url)
    return url


async def drop_database(servers: Servers, name: str) -> None:
    conn = await asyncpg.connect(f"{servers.postgres_base}/postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def bench_settings(database_url: str, nats_url: str, service_name: str) -> BenchSettings:
    return BenchSettings(
        service_name=service_name,
        database_url=database_url,
        nats_url=nats_url,
        log_level="WARNING",
        jwt_jwks_url=None,
    )


# --------------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------------

_TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def realistic_event(probe: EffectProbe, aggregate: str, n: int) -> Event:
    """A probe event whose envelope is about the size of a real one (~600 bytes)."""
    token = traceparent_var.set(_TRACEPARENT)
    try:
        return new_event(
            source="beds-svc",
            type=probe.event_type,
            subject=aggregate,
            establishment="etab-0750001",
            data={
                "n": n,
                "probe": probe.entity,
                "bed_id": aggregate,
                "unit": "cardiologie-soins-intensifs",
                "status": "occupied",
                "previous_status": "available",
                "changed_by": "user/1f6c2a8e-4b7d-4c1e-9a55-3e0d2b8f7c11",
                "reason": "admission from emergency department, transfer requested",
                "capacity": {"total": 24, "occupied": 19, "reserved": 2, "closed": 1},
            },
        )
    finally:
        traceparent_var.reset(token)


# --------------------------------------------------------------------------------------------
# Baseline: raw JetStream publishes
# --------------------------------------------------------------------------------------------


async def raw_publish_rate(nats_url: str, messages: int, in_flight: int, size: int) -> float:
    """Messages/s of nats-py JetStream publishes awaiting their PubAcks, ``in_flight`` at a time."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream(timeout=10.0)
    subject = f"{RAW_STREAM.lower()}.events"
    with suppress(Exception):
        await js.delete_stream(RAW_STREAM)
    await js.add_stream(
        StreamConfig(
            name=RAW_STREAM, subjects=[f"{RAW_STREAM.lower()}.>"], storage=StorageType.FILE
        )
    )
    payload = os.urandom(size // 2).hex().encode()
    gate = asyncio.Semaphore(in_flight)

    async def publish() -> None:
        async with gate:
            # With a Nats-Msg-Id, as the relay publishes (the server checks duplicates).
            await js.publish(subject, payload, headers={"Nats-Msg-Id": str(uuid.uuid4())})

    try:
        started = time.perf_counter()
        await asyncio.gather(*(publish() for _ in range(messages)))
        elapsed = time.perf_counter() - started
    finally:
        with suppress(Exception):
            await js.delete_stream(RAW_STREAM)
        await nc.close()
    return messages / elapsed


# --------------------------------------------------------------------------------------------
# A consumer that stamps when each event's batch committed
# --------------------------------------------------------------------------------------------


class CommitClockDatabase(Database):
    """The pipeline's database, noting the wall-clock time right after each commit."""

    def __init__(self, inner: Database) -> None:  # shares the engine, no second pool
        self.engine = inner.engine
        self.sessionmaker = inner.sessionmaker
        self.committed_at = 0.0

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        async with super().transaction() as session:
            yield session
        self.committed_at = time.time()


class StampingConsumer(Consumer):
    """The service consumer, recording for each event id when its batch was committed."""

    def __init__(self, base: Consumer) -> None:
        self.clock = CommitClockDatabase(base.database)
        super().__init__(base.spec, base.settings, self.clock, base.nats, base.metrics)
        self.committed: dict[str, float] = {}
        self.target = 0
        self.reached = asyncio.Event()
        self.reached_at = 0.0

    async def _handle_batch(self, messages: list[Msg]) -> None:
        await super()._handle_batch(messages)
        at = self.clock.committed_at
        for msg in messages:
            msg_id = (msg.headers or {}).get("Nats-Msg-Id")
            if msg_id is not None:
                self.committed.setdefault(msg_id, at)
        if self.target and not self.reached.is_set() and self.handled >= self.target:
            self.reached_at = at
            self.reached.set()


@asynccontextmanager
async def stamping_pipeline(
    settings: BenchSettings, probe: EffectProbe
) -> AsyncIterator[tuple[Pipeline, StampingConsumer]]:
    """A pipeline whose consumer stamps commits; its stream traces are removed afterwards."""
    pipeline = Pipeline(settings, {probe.subject: probe.handle})
    consumer = StampingConsumer(pipeline.consumer)
    pipeline.consumer = consumer
    try:
        async with pipeline:
            yield pipeline, consumer
    finally:
        await remove_from_stream(settings.nats_url, pipeline.stream, consumer.spec, probe.subject)


async def remove_from_stream(nats_url: str, stream: str, spec: ConsumerSpec, subject: str) -> None:
    """Delete the benchmark's durable consumer and purge its events (matters on external NATS)."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        with suppress(Exception):
            await js.delete_consumer(stream, spec.durable)
        with suppress(Exception):
            await js.purge_stream(stream, subject=subject)
    finally:
        await nc.close()


# --------------------------------------------------------------------------------------------
# Throughput
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThroughputResult:
    events: int
    seconds: float  # first writer commit → consumer commit of the last event
    writers_seconds: float  # first writer commit → last writer commit
    effect_rows: int
    distinct_events: int
    transactions: int

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    @property
    def exactly_once(self) -> bool:
        return self.effect_rows == self.distinct_events == self.events


def split_into_transactions(total: int, low: int, high: int, rng: random.Random) -> list[int]:
    sizes: list[int] = []
    while total > 0:
        size = min(total, rng.randint(low, high))
        sizes.append(size)
        total -= size
    return sizes


async def measure_throughput(
    settings: BenchSettings,
    events: int,
    writers: int,
    tx_sizes: tuple[int, int],
    aggregates: int,
    timeout_s: float,
) -> ThroughputResult:
    probe = EffectProbe()
    rng = random.Random(7)
    transactions = split_into_transactions(events, *tx_sizes, rng)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for size in transactions:
        queue.put_nowait(size)
    first_commit: list[float] = []
    last_commit = 0.0

    async with stamping_pipeline(settings, probe) as (pipeline, consumer):
        consumer.target = events

        async def writer(worker: int) -> None:
            nonlocal last_commit
            local = random.Random(worker)
            n = 0
            while not queue.empty():
                size = queue.get_nowait()
                batch = [
                    realistic_event(probe, f"bed/{local.randrange(aggregates)}", n + i)
                    for i in range(size)
                ]
                n += size
                await pipeline.write(batch)
                now = time.time()
                if not first_commit:
                    first_commit.append(now)
                last_commit = max(last_commit, now)

        await asyncio.gather(*(writer(w) for w in range(writers)))
        await asyncio.wait_for(consumer.reached.wait(), timeout_s)
        end = consumer.reached_at
    counts = await count_effects(settings.database_url)
    return ThroughputResult(
        events=events,
        seconds=end - first_commit[0],
        writers_seconds=last_commit - first_commit[0],
        effect_rows=counts.rows,
        distinct_events=counts.distinct_events,
        transactions=len(transactions),
    )


# --------------------------------------------------------------------------------------------
# Latency at a steady rate
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LatencyResult:
    rate: float
    sent: int
    received: int
    achieved_rate: float  # commits per second the writer actually reached
    latencies_ms: list[float]

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies_ms)
        index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
        return ordered[index]


async def measure_latency(
    settings: BenchSettings, rate: float, duration_s: float, aggregates: int
) -> LatencyResult:
    """One event per transaction on a fixed schedule (open loop: a late commit delays no other)."""
    probe = EffectProbe()
    count = round(rate * duration_s)
    committed: dict[str, float] = {}

    async with stamping_pipeline(settings, probe) as (pipeline, consumer):
        # Warm up: connections open, consumer subscribed.
        await pipeline.write([realistic_event(probe, "bed/warmup", -1)])
        consumer.target = 1
        await asyncio.wait_for(consumer.reached.wait(), 30)
        consumer.reached.clear()
        consumer.target = 1 + count

        async def write_one(n: int) -> None:
            event = realistic_event(probe, f"bed/{n % aggregates}", n)
            await pipeline.write([event])
            committed[str(event.id)] = time.time()

        tasks: list[asyncio.Task[None]] = []
        start = time.monotonic() + 0.05
        for n in range(count):
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(write_one(n)))
        await asyncio.gather(*tasks)
        writing_s = time.monotonic() - start
        with suppress(TimeoutError):  # what is missing then is reported as not received
            await asyncio.wait_for(consumer.reached.wait(), 30)
    latencies = [
        (consumer.committed[event_id] - at) * 1000
        for event_id, at in committed.items()
        if event_id in consumer.committed
    ]
    return LatencyResult(rate, count, len(latencies), count / writing_s, latencies)


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Results:
    baseline: float  # raw JetStream publishes per second
    throughput: ThroughputResult
    latency: LatencyResult
    settings: BenchSettings  # the relay's and the consumer's (defaults of ServiceSettings)


def verdict(ok: bool) -> str:
    return "ok" if ok else "BELOW TARGET"


def print_table(rows: Sequence[tuple[str, str, str, str]]) -> None:
    header = ("figure", "measured", "target", "")
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(4)]
    for row in (header, tuple("-" * w for w in widths), *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


def figure_rows(results: Results) -> list[tuple[str, str, str, str]]:
    t, lat = results.throughput, results.latency
    ratio = t.rate / results.baseline
    p99 = lat.percentile(99)
    at = f"latency at {lat.rate:.0f} events/s"
    return [
        ("baseline: raw JetStream publish", f"{results.baseline:,.0f} msg/s", "reference", ""),
        (
            "outbox → consumer throughput",
            f"{t.rate:,.0f} events/s",
            f"≥ {TARGET_THROUGHPUT:,.0f} events/s",
            verdict(t.rate >= TARGET_THROUGHPUT and t.exactly_once),
        ),
        (
            "ratio to the baseline",
            f"{ratio:.3f}",
            f"≥ {TARGET_RATIO}",
            verdict(ratio >= TARGET_RATIO),
        ),
        (f"{at}, p50", f"{lat.percentile(50):.1f} ms", "", ""),
        (f"{at}, p95", f"{lat.percentile(95):.1f} ms", "", ""),
        (
            f"{at}, p99",
            f"{p99:.1f} ms",
            f"≤ {TARGET_P99_MS:.0f} ms",
            verdict(p99 <= TARGET_P99_MS and lat.received == lat.sent),
        ),
        (f"{at}, max", f"{max(lat.latencies_ms):.1f} ms", "", ""),
    ]


def print_conditions(args: argparse.Namespace, servers: Servers, results: Results) -> None:
    t, lat, s = results.throughput, results.latency, results.settings
    durability = (
        "own, PostgreSQL fsync=on synchronous_commit=on, NATS sync_interval: always"
        if servers.own
        else "external (durability as configured there)"
    )
    lines = [
        f"cores: os.cpu_count() = {os.cpu_count()}; the machine may be shared with other work",
        f"servers: {durability}",
        f"process: writers, 1 relay and 1 consumer in one Python process, {args.loop} loop",
        f"relay: outbox_batch_size {s.outbox_batch_size}, {s.outbox_max_in_flight} in flight;"
        f" consumer: consumer_batch_size {s.consumer_batch_size}",
        f"baseline: {args.baseline_messages:,} messages of {ENVELOPE_BYTES} bytes,"
        f" {args.in_flight} in flight, each with a Nats-Msg-Id",
        f"throughput: {t.events:,} events (~{ENVELOPE_BYTES}-byte envelopes) in"
        f" {t.transactions:,} transactions of {args.tx_min}-{args.tx_max} events,"
        f" {args.writers} concurrent writers, {args.aggregates:,} aggregates",
        f"  writers alone: {t.writers_seconds:.2f} s ({t.events / t.writers_seconds:,.0f}"
        f" events/s committed); first writer commit → last consumer commit: {t.seconds:.2f} s",
        f"  effects: {t.effect_rows:,} rows, {t.distinct_events:,} distinct events:"
        f" {'each applied exactly once' if t.exactly_once else 'NOT EXACTLY ONCE'}",
        f"latency: {lat.sent:,} events, one per transaction, scheduled at {lat.rate:.0f}/s"
        f" (writers reached {lat.achieved_rate:.0f}/s); {lat.received:,} received;",
        "  from time.time() after the writer's commit to time.time() after the consumer's"
        " batch commit",
    ]
    print("Conditions")
    for line in lines:
        print(f"  {line}")


def report(args: argparse.Namespace, servers: Servers, results: Results) -> None:
    print()
    print("Outbox relay + consumer, writer's commit → consumer's commit")
    print()
    print_table(figure_rows(results))
    print()
    print_conditions(args, servers, results)


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


async def measure(args: argparse.Namespace, servers: Servers) -> Results:
    print(f"baseline: {args.baseline_messages:,} raw JetStream publishes...", flush=True)
    baseline = await raw_publish_rate(
        servers.nats_url, args.baseline_messages, args.in_flight, ENVELOPE_BYTES
    )

    print(f"throughput: {args.events:,} events...", flush=True)
    url = await fresh_database(servers, "bench_outbox_throughput")
    settings = bench_settings(url, servers.nats_url, "beds-bench-tp")
    throughput = await measure_throughput(
        settings,
        args.events,
        args.writers,
        (args.tx_min, args.tx_max),
        args.aggregates,
        timeout_s=max(120.0, args.events / 100),
    )
    await drop_database(servers, "bench_outbox_throughput")

    print(f"latency: {args.rate:.0f} events/s for {args.duration:.0f} s...", flush=True)
    url = await fresh_database(servers, "bench_outbox_latency")
    latency = await measure_latency(
        bench_settings(url, servers.nats_url, "beds-bench-lat"),
        args.rate,
        args.duration,
        args.aggregates,
    )
    await drop_database(servers, "bench_outbox_latency")
    return Results(baseline, throughput, latency, settings)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000, help="events of the throughput run")
    parser.add_argument("--writers", type=int, default=4, help="concurrent writer tasks")
    parser.add_argument("--tx-min", type=int, default=10, help="fewest events per transaction")
    parser.add_argument("--tx-max", type=int, default=50, help="most events per transaction")
    parser.add_argument("--aggregates", type=int, default=1_000, help="distinct aggregates")
    parser.add_argument("--rate", type=float, default=200.0, help="events/s of the latency run")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of the latency run")
    parser.add_argument("--baseline-messages", type=int, default=20_000)
    parser.add_argument("--in-flight", type=int, default=256, help="baseline publishes in flight")
    parser.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="event loop (uvicorn[standard] runs the services on uvloop)",
    )
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    parser.add_argument("--nats-url", default=os.environ.get("BENCH_NATS_URL"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    # The NATS client's "disconnected" warning on closing each pipeline is noise here.
    logging.getLogger("ght_shared.messaging").setLevel(logging.ERROR)
    with servers(args.database_url, args.nats_url) as started:
        runner = uvloop.run if args.loop == "uvloop" else asyncio.run
        results = runner(measure(args, started))
        report(args, started, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
