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
The writers and the relay run in this process, as the producing service runs its relay;
the consumer runs in a child process ("spawn") with its own event loop, database pool
and NATS connection, as the consuming service runs it. Sharing one loop among all three
would measure that loop's queueing, not the pipeline. Each loop is uvloop, as under
``uvicorn[standard]`` in ``make run`` (``--loop asyncio`` for the standard one).

Run: ``.venv/bin/python bench/outbox_throughput.py [--events 50000] [--rate 200]``.
A missed target is reported, not an error: the exit code is 0 once the run completes.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Literal

import asyncpg
import nats
from _kit import LoopName, Servers, percentile, print_report, run_loop, servers, verdict
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from sqlalchemy.ext.asyncio import AsyncSession

from ght_shared.consumer import Consumer, ConsumerSpec
from ght_shared.context import traceparent_var
from ght_shared.db import Database
from ght_shared.events import Event, new_event
from ght_shared.messaging import NatsConnection
from ght_shared.metrics import ServiceMetrics
from ght_shared.settings import ServiceSettings
from ght_shared.testing.effects import EffectProbe, count_effects, create_effect_table
from ght_shared.testing.pipeline import Pipeline
from ght_shared.testing.plugin import create_infra_database

TARGET_THROUGHPUT = 2_000.0  # events/s, writer commit → consumer commit
TARGET_P99_MS = 50.0  # at a steady --rate
TARGET_RATIO = 0.5  # pipeline throughput / raw JetStream publish throughput

RAW_STREAM = "BENCHRAW"
STREAM = "BEDS"  # the pipeline's stream
ENVELOPE_BYTES = 600  # about the size of a real event envelope


class BenchSettings(ServiceSettings):
    # "beds-" so that dead letters, if any, go to the BEDS stream.
    service_name: str = "beds-bench"


# --------------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------------


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
        jwt_revocations_url=None,
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
# The consumer, in a process of its own
# --------------------------------------------------------------------------------------------

Signal = Literal["subscribed", "warm"]

SUBSCRIBE_TIMEOUT_S = 60.0  # spawning the child and importing its modules included
REPORT_GRACE_S = 15.0  # beyond the child's own timeout, for its report to arrive
STOP_TIMEOUT_S = 15.0  # for the child to drain and close once it has reported


def quiet_logging() -> None:
    logging.basicConfig(level=logging.WARNING)
    # The NATS client's "disconnected" warning on closing each connection is noise here.
    logging.getLogger("ght_shared.messaging").setLevel(logging.ERROR)


@dataclass(frozen=True)
class ConsumerJob:
    """What the consumer process is to do (pickled to the spawned child)."""

    database_url: str
    nats_url: str
    service_name: str
    probe_entity: str  # the EffectProbe whose events it applies
    target: int  # events handled, after which it reports
    warmup: int  # events handled, after which it signals "warm" (0: no such signal)
    timeout_s: float  # from its subscription: then it reports what it has
    loop: LoopName

    def settings(self) -> BenchSettings:
        return bench_settings(self.database_url, self.nats_url, self.service_name)

    def spec(self) -> ConsumerSpec:
        probe = EffectProbe(entity=self.probe_entity)
        return ConsumerSpec(
            service=self.service_name, stream=STREAM, handlers={probe.subject: probe.handle}
        )


@dataclass(frozen=True)
class ConsumerReport:
    """The consumer process's answer, once it has handled its target or timed out."""

    handled: int
    reached_at: float | None  # time.time() after the commit reaching the target; None: timed out
    committed: dict[str, float]  # event id → time.time() right after its batch's commit

    def __str__(self) -> str:  # in error messages, without the thousands of stamps
        return f"its report ({self.handled:,} events handled)"


class CommitClockDatabase(Database):
    """The consumer's database, noting the wall-clock time right after each commit."""

    committed_at = 0.0

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        async with super().transaction() as session:
            yield session
        self.committed_at = time.time()


class StampingConsumer(Consumer):
    """The service consumer, recording for each event id when its batch was committed."""

    def __init__(
        self,
        spec: ConsumerSpec,
        settings: ServiceSettings,
        database: CommitClockDatabase,
        nats_connection: NatsConnection,
        metrics: ServiceMetrics,
        *,
        target: int,
        warmup: int,
    ) -> None:
        super().__init__(spec, settings, database, nats_connection, metrics)
        self.clock = database
        self.target = target
        self.warmup = warmup
        self.committed: dict[str, float] = {}
        self.subscribed = asyncio.Event()
        self.warm = asyncio.Event()
        self.reached = asyncio.Event()
        self.reached_at: float | None = None

    async def _subscribe(self) -> JetStreamContext.PullSubscription:
        subscription = await super()._subscribe()
        self.subscribed.set()
        return subscription

    async def _handle_batch(self, messages: list[Msg]) -> None:
        await super()._handle_batch(messages)
        at = self.clock.committed_at
        for msg in messages:
            msg_id = (msg.headers or {}).get("Nats-Msg-Id")
            if msg_id is not None:
                self.committed.setdefault(msg_id, at)
        if self.warmup and self.handled >= self.warmup:
            self.warm.set()
        if not self.reached.is_set() and self.handled >= self.target:
            self.reached_at = at
            self.reached.set()


def consumer_process(job: ConsumerJob, sender: Connection) -> None:
    """The child process: runs the consumer on a loop of its own and reports via ``sender``."""
    quiet_logging()
    try:
        run_loop(job.loop, run_consumer(job, sender))
    finally:
        sender.close()


async def run_consumer(job: ConsumerJob, sender: Connection) -> None:
    settings = job.settings()
    database = CommitClockDatabase(settings)
    connection = NatsConnection(settings.nats_url, settings.service_name)
    metrics = ServiceMetrics(settings.service_name)  # counted as the service counts them
    consumer = StampingConsumer(
        job.spec(), settings, database, connection, metrics, target=job.target, warmup=job.warmup
    )
    connection.start()
    task = asyncio.create_task(consumer.run())
    try:
        await asyncio.wait_for(consumer.subscribed.wait(), SUBSCRIBE_TIMEOUT_S)
        # The signals are a few bytes: send() returns at once, the parent reads in a thread.
        sender.send("subscribed")
        with suppress(TimeoutError):  # then the report tells how far it got
            async with asyncio.timeout(job.timeout_s):
                if job.warmup:
                    await consumer.warm.wait()
                    sender.send("warm")
                await consumer.reached.wait()
        sender.send(ConsumerReport(consumer.handled, consumer.reached_at, consumer.committed))
    finally:
        consumer.stop()
        _, pending = await asyncio.wait({task}, timeout=10)
        for unfinished in pending:
            unfinished.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await unfinished
        await connection.close()
        await database.dispose()


class ConsumerProcess:
    """The parent's handle on the consumer's child process: its signals, its report."""

    def __init__(self, job: ConsumerJob) -> None:
        context = multiprocessing.get_context("spawn")
        self._receiver, self._sender = context.Pipe(duplex=False)
        self._process = context.Process(
            target=consumer_process,
            args=(job, self._sender),
            name="bench-consumer",
            daemon=True,  # ended with us, should we die before stopping it
        )
        self._reported = False

    def start(self) -> None:
        self._process.start()
        # Only the child writes; once our copy of its end is closed, its death reads as EOF.
        self._sender.close()

    async def expect(self, signal: Signal, timeout_s: float) -> None:
        message = await self._receive(timeout_s)
        if message != signal:
            raise RuntimeError(f"the consumer process sent {message}, not {signal!r}")

    async def report(self, timeout_s: float) -> ConsumerReport:
        message = await self._receive(timeout_s)
        if not isinstance(message, ConsumerReport):
            raise RuntimeError(f"the consumer process sent {message!r}, not its report")
        self._reported = True
        return message

    async def _receive(self, timeout_s: float) -> Signal | ConsumerReport:
        # Waiting in a thread leaves this loop to the writers and the relay.
        return await asyncio.to_thread(self._receive_blocking, timeout_s)

    def _receive_blocking(self, timeout_s: float) -> Signal | ConsumerReport:
        if not self._receiver.poll(timeout_s):
            raise TimeoutError(f"no word from the consumer process in {timeout_s:.0f} s")
        try:
            message: Signal | ConsumerReport = self._receiver.recv()
        except EOFError:
            self._process.join(5)
            raise RuntimeError(
                f"the consumer process ended (exit code {self._process.exitcode})"
            ) from None
        return message

    async def stop(self) -> None:
        """Let the child finish once it has reported; end it at once if it has not."""
        if self._reported:
            await asyncio.to_thread(self._process.join, STOP_TIMEOUT_S)
        if self._process.is_alive():
            self._process.terminate()
            await asyncio.to_thread(self._process.join, STOP_TIMEOUT_S)
        self._receiver.close()


@asynccontextmanager
async def split_pipeline(
    settings: BenchSettings,
    probe: EffectProbe,
    *,
    target: int,
    warmup: int,
    timeout_s: float,
    loop: LoopName,
) -> AsyncIterator[tuple[Pipeline, ConsumerProcess]]:
    """The relay in this process, the consumer of ``probe`` in a child process, subscribed.

    The pipeline's own consumer stays off: only the writers and the relay share this loop,
    as in the producing service. The stream's traces are removed afterwards.
    """
    job = ConsumerJob(
        settings.database_url,
        settings.nats_url,
        settings.service_name,
        probe.entity,
        target=target,
        warmup=warmup,
        timeout_s=timeout_s,
        loop=loop,
    )
    pipeline = Pipeline(settings, {}, stream=STREAM, consumer=False)
    consumer = ConsumerProcess(job)
    consumer.start()  # it spawns while the relay starts
    try:
        async with pipeline:
            await consumer.expect("subscribed", SUBSCRIBE_TIMEOUT_S)
            yield pipeline, consumer
    finally:
        await consumer.stop()
        await remove_from_stream(settings.nats_url, job.spec(), probe.subject)


async def remove_from_stream(nats_url: str, spec: ConsumerSpec, subject: str) -> None:
    """Delete the benchmark's durable consumer and purge its events (matters on external NATS)."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        with suppress(Exception):
            await js.delete_consumer(spec.stream, spec.durable)
        with suppress(Exception):
            await js.purge_stream(spec.stream, subject=subject)
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
    loop: LoopName,
) -> ThroughputResult:
    probe = EffectProbe()
    rng = random.Random(7)
    transactions = split_into_transactions(events, *tx_sizes, rng)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for size in transactions:
        queue.put_nowait(size)
    first_commit: list[float] = []
    last_commit = 0.0

    split = split_pipeline(settings, probe, target=events, warmup=0, timeout_s=timeout_s, loop=loop)
    async with split as (pipeline, consumer):

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
        report = await consumer.report(timeout_s + REPORT_GRACE_S)
    if report.reached_at is None:
        raise TimeoutError(
            f"the consumer handled {report.handled:,} of {events:,} events in {timeout_s:.0f} s"
        )
    counts = await count_effects(settings.database_url)
    return ThroughputResult(
        events=events,
        # Both clocks are this machine's wall clock: the child's stamp compares with ours.
        seconds=report.reached_at - first_commit[0],
        writers_seconds=last_commit - first_commit[0],
        effect_rows=counts.rows,
        distinct_events=counts.distinct_events,
        transactions=len(transactions),
    )


# --------------------------------------------------------------------------------------------
# Latency at a steady rate
# --------------------------------------------------------------------------------------------


WARMUP_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 30.0  # after the last write, for the consumer to catch up


@dataclass(frozen=True)
class LatencyResult:
    rate: float
    sent: int
    received: int
    achieved_rate: float  # commits per second the writer actually reached
    latencies_ms: list[float]

    def percentile(self, p: float) -> float:
        return percentile(self.latencies_ms, p)


async def measure_latency(
    settings: BenchSettings, rate: float, duration_s: float, aggregates: int, loop: LoopName
) -> LatencyResult:
    """One event per transaction on a fixed schedule (open loop: a late commit delays no other)."""
    probe = EffectProbe()
    count = round(rate * duration_s)
    committed: dict[str, float] = {}
    # What is still missing after this is reported as not received.
    timeout_s = WARMUP_TIMEOUT_S + duration_s + DRAIN_TIMEOUT_S

    split = split_pipeline(
        settings, probe, target=1 + count, warmup=1, timeout_s=timeout_s, loop=loop
    )
    async with split as (pipeline, consumer):
        # Warm up: connections open, one event through the whole pipeline.
        await pipeline.write([realistic_event(probe, "bed/warmup", -1)])
        await consumer.expect("warm", WARMUP_TIMEOUT_S)

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
        report = await consumer.report(timeout_s + REPORT_GRACE_S)
    # Both clocks are this machine's wall clock: the child's stamps compare with ours.
    latencies = [
        (report.committed[event_id] - at) * 1000
        for event_id, at in committed.items()
        if event_id in report.committed
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


def conditions(args: argparse.Namespace, servers: Servers, results: Results) -> list[str]:
    t, lat, s = results.throughput, results.latency, results.settings
    durability = (
        "own, PostgreSQL fsync=on synchronous_commit=on, NATS sync_interval: always"
        if servers.own
        else "external (durability as configured there)"
    )
    lines = [
        f"cores: os.cpu_count() = {os.cpu_count()}; the machine may be shared with other work",
        f"servers: {durability}",
        f"process: writers and 1 relay in one Python process (as the producing service),"
        f" 1 consumer in another (spawned, as the consuming service); {args.loop} loop in each",
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
    return lines


def report(args: argparse.Namespace, servers: Servers, results: Results) -> None:
    print_report(
        "Outbox relay + consumer, writer's commit → consumer's commit",
        figure_rows(results),
        conditions(args, servers, results),
    )


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
        loop=args.loop,
    )
    await drop_database(servers, "bench_outbox_throughput")

    print(f"latency: {args.rate:.0f} events/s for {args.duration:.0f} s...", flush=True)
    url = await fresh_database(servers, "bench_outbox_latency")
    latency = await measure_latency(
        bench_settings(url, servers.nats_url, "beds-bench-lat"),
        args.rate,
        args.duration,
        args.aggregates,
        args.loop,
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
        help="event loop of each process (uvicorn[standard] runs the services on uvloop)",
    )
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    parser.add_argument("--nats-url", default=os.environ.get("BENCH_NATS_URL"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_logging()
    with (
        tempfile.TemporaryDirectory(prefix="ght-bench-") as tmp,
        servers(Path(tmp), args.database_url, args.nats_url) as started,
    ):
        results = run_loop(args.loop, measure(args, started))
        report(args, started, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
