"""Gateway hop: one GET direct and through the gateway; an event's commit → SSE client.

Figures (the issue's words): "The same GET answered by a service, called directly and
through the gateway, same concurrency, in one run: throughput ratio gateway/direct target
≥ 0.6; added latency target ≤ 2 ms at p50 and ≤ 10 ms at p99. Also: time from an event's
commit in a service to its arrival at an SSE client, target p95 ≤ 100 ms."

The stack is the one ``make run`` starts, reduced to what the figures need: PostgreSQL
(fsync on, synchronous_commit on) and NATS (``sync_interval: always``) in a temporary
directory, or the external ones of ``--database-url`` / ``--nats-url`` (or
``BENCH_DATABASE_URL`` / ``BENCH_NATS_URL``, dedicated to benchmarks); a database each for
the gateway and beds-svc, migrated; then beds-svc and the gateway as real uvicorn
processes (uvloop, httptools), configured as ``deploy/local/run.py`` configures them.

- The GET is ``/health/ready`` of beds-svc (the services have no domain API yet): it pings
  the service's database and checks NATS, a realistic small GET. Direct:
  ``<beds>/health/ready``; through the gateway: ``<gateway>/api/beds/health/ready``, where
  the gateway verifies the bearer token (a machine token of the demo client ``si-chu``),
  applies the rate limit, writes the access log and proxies with its pooled aiohttp client.
  The token is sent on both sides. The load generator runs in a process of its own
  ("spawn", uvloop, a minimal HTTP/1.1 keep-alive client) so that neither the client nor
  its CPU share is what is measured; each side gets the same number of connections, in
  alternating rounds (direct, gateway, gateway, direct...) so that drift on a shared
  machine hits both sides alike. The same is then done with one connection: the hop's
  own cost, without queueing.
- The feed: an SSE client reads ``<gateway>/events/stream``; this process commits events
  into the beds database's outbox as a service does, at a steady rate (open loop); the
  running beds-svc's relay publishes them to JetStream and the gateway forwards them.
  From ``time.time()`` right after the commit to ``time.time()`` when the client has
  parsed the event (matched by id). A core NATS subscriber also stamps each event, which
  splits the time between the relay and the gateway's feed. Twice: at ``--event-rate``
  (50/s), and at ``--low-rate`` (2/s), closer to a territory's real pace of bed changes,
  where an event may wait in the gateway for the next one or for a heartbeat.

Run: ``.venv/bin/python bench/gateway_overhead.py [--concurrency 32] [--duration 10]``.
A missed target is reported, not an error: the exit code is 0 once the run completes,
1 when the stack cannot start (with the log tail of what failed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import multiprocessing
import os
import secrets
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from types import FrameType
from typing import Literal, NoReturn

import asyncpg
import nats
from _kit import (
    HOST,
    Component,
    LoopName,
    Servers,
    StackError,
    percentile,
    print_report,
    run_loop,
    servers,
    verdict,
)
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from ght_shared.db import Database
from ght_shared.devservers import ServerError, free_port
from ght_shared.events import Event, new_event
from ght_shared.migrations import upgrade
from ght_shared.outbox import add_event
from ght_shared.settings import ServiceSettings

TARGET_RATIO = 0.6  # throughput through the gateway / direct, same concurrency
TARGET_ADDED_P50_MS = 2.0
TARGET_ADDED_P99_MS = 10.0
TARGET_SSE_P95_MS = 100.0  # commit in the service → event parsed by an SSE client

REPO_ROOT = Path(__file__).resolve().parents[1]

GATEWAY_DB = "bench_gateway_overhead_gateway"
BEDS_DB = "bench_gateway_overhead_beds"
DEMO_CLIENT = "si-chu"  # the CHU's system: role it_system, establishment 420784878
ESTABLISHMENT = "420784878"
EVENT_TYPE = "ght.beds.bed.status_changed.v1"
STREAM = "BEDS"
# High enough never to refuse a request: the benchmark measures the hop, not the limit.
RATE_LIMIT = 1_000_000
DIRECT_PATH = "/health/ready"
GATEWAY_PATH = "/api/beds/health/ready"

READY_TIMEOUT_S = 60.0
SEGMENT_WARMUP_S = 0.5  # after the connections of a round open, before its clock starts
SSE_WARMUP_TIMEOUT_S = 30.0
FEED_WARMUP_S = 1.0  # of events at the measured rate, before the measured ones
SSE_DRAIN_TIMEOUT_S = 15.0  # after the last commit, for the last events to arrive

SideName = Literal["direct", "gateway"]


# --------------------------------------------------------------------------------------------
# Servers and databases
# --------------------------------------------------------------------------------------------


async def _admin(servers: Servers, statements: Sequence[str]) -> None:
    conn = await asyncpg.connect(f"{servers.postgres_base}/postgres", timeout=10)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@contextlib.contextmanager
def bench_databases(servers: Servers) -> Iterator[None]:
    """Fresh gateway and beds databases, migrated as `make run` migrates them; dropped after."""
    names = (GATEWAY_DB, BEDS_DB)
    drop = [f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' for name in names]
    try:
        asyncio.run(_admin(servers, [*drop, *(f'CREATE DATABASE "{name}"' for name in names)]))
    except (OSError, asyncpg.PostgresError) as exc:
        raise StackError(f"PostgreSQL at {servers.postgres_base}: {exc}") from exc
    try:
        for project, name in (("gateway", GATEWAY_DB), ("services/beds-svc", BEDS_DB)):
            try:
                upgrade(REPO_ROOT / project / "alembic.ini", servers.database_url(name))
            except Exception as exc:
                raise StackError(f"migrating {name} failed: {exc!r}") from exc
        yield
    finally:
        with contextlib.suppress(Exception):
            asyncio.run(_admin(servers, drop))


# --------------------------------------------------------------------------------------------
# beds-svc and the gateway, as uvicorn processes
# --------------------------------------------------------------------------------------------


def _clean_environment() -> dict[str, str]:
    """Ours, less any BEDS_*/GATEWAY_* setting of the caller's shell: the run is reproducible."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("BEDS_", "GATEWAY_", "GHT_DEMO_PASSWORD"))
    }


def _asyncpg(url: str) -> str:
    return url.replace("postgresql://", "postgresql+asyncpg://", 1)


@dataclass
class Stack:
    """beds-svc and the gateway, configured as ``deploy/local/run.py`` configures them."""

    servers: Servers
    logs: Path
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    beds: Component = field(init=False)
    gateway: Component = field(init=False)

    def __post_init__(self) -> None:
        self.beds = Component("beds-svc", free_port(), self.logs / "beds-svc.log")
        self.gateway = Component("gateway", free_port(), self.logs / "gateway.log")

    def beds_env(self) -> dict[str, str]:
        env = _clean_environment()
        env.update(
            BEDS_DATABASE_URL=_asyncpg(self.servers.database_url(BEDS_DB)),
            BEDS_NATS_URL=self.servers.nats_url,
            BEDS_ENVIRONMENT="local",
            # The services trust only the tokens the gateway signed: its public keys.
            BEDS_JWT_JWKS_URL=f"{self.gateway.url}/.well-known/jwks.json",
            BEDS_JWT_REVOCATIONS_URL=f"{self.gateway.url}/auth/revocations",
            PYTHONUNBUFFERED="1",
        )
        return env

    def gateway_env(self) -> dict[str, str]:
        env = _clean_environment()
        env.update(
            GATEWAY_DATABASE_URL=_asyncpg(self.servers.database_url(GATEWAY_DB)),
            GATEWAY_NATS_URL=self.servers.nats_url,
            GATEWAY_ENVIRONMENT="local",
            GATEWAY_UPSTREAMS__BEDS=self.beds.url,
            GATEWAY_PUBLIC_URL=self.gateway.url,
            GATEWAY_DEMO="true",  # the demo machine client si-chu gets us a token
            GHT_DEMO_PASSWORD=self.password,
            GATEWAY_RATE_LIMITS__IT_SYSTEM__RATE=str(RATE_LIMIT),
            GATEWAY_RATE_LIMITS__IT_SYSTEM__BURST=str(RATE_LIMIT),
            PYTHONUNBUFFERED="1",
        )
        return env

    def start(self) -> None:
        self.beds.start(
            "beds_svc.main:create_app", self.beds_env(), REPO_ROOT / "services/beds-svc"
        )
        self.gateway.start("ght_gateway.main:create_app", self.gateway_env(), REPO_ROOT / "gateway")
        self.wait_ready()

    def wait_ready(self) -> None:
        pending = [self.beds, self.gateway]
        deadline = time.monotonic() + READY_TIMEOUT_S
        answer = ""
        while pending:
            for component in list(pending):
                component.check_alive()
                status, answer = _http_get(f"{component.url}/health/ready")
                if status == 200:
                    pending.remove(component)
            if pending and time.monotonic() > deadline:
                said = answer or "no answer"
                raise pending[0].failure(
                    f"not ready after {READY_TIMEOUT_S:.0f} s (/health/ready: {said})"
                )
            time.sleep(0.1)

    def check_alive(self) -> None:
        self.beds.check_alive()
        self.gateway.check_alive()

    def pids(self) -> dict[str, int]:
        return {c.name: c.process.pid for c in (self.gateway, self.beds) if c.process is not None}

    def stop(self) -> None:
        # The gateway first, as `make run` stops them: it holds connections to beds-svc.
        self.gateway.stop()
        self.beds.stop()

    def token(self) -> str:
        """A machine token of the demo client (client_credentials), all its scopes."""
        form = urllib.parse.urlencode(
            {
                "grant_type": "client_credentials",
                "client_id": DEMO_CLIENT,
                "client_secret": self.password,
            }
        ).encode()
        request = urllib.request.Request(f"{self.gateway.url}/auth/token", data=form)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                document = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise self.gateway.failure(
                f"refused the token request: {exc.code} {exc.read()[:500]!r}"
            ) from exc
        token: str = document["access_token"]
        return token

    def check_routes(self, token: str) -> str:
        """Both GETs answer 200 before the load starts; returns the gateway's RateLimit-Limit."""
        headers = {"Authorization": f"Bearer {token}"}
        for component, url in (
            (self.beds, f"{self.beds.url}{DIRECT_PATH}"),
            (self.gateway, f"{self.gateway.url}{GATEWAY_PATH}"),
        ):
            request = urllib.request.Request(url, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    limit = str(response.headers.get("RateLimit-Limit", "none"))
            except urllib.error.HTTPError as exc:
                raise component.failure(
                    f"answered {exc.code} to GET {url}: {exc.read()!r}"
                ) from exc
        return limit


def _http_get(url: str) -> tuple[int | None, str]:
    """Status and (start of the) body of a GET; (None, "") when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status), response.read(500).decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(500).decode(errors="replace")
    except (urllib.error.URLError, OSError):
        return None, ""


# --------------------------------------------------------------------------------------------
# The load generator: a lean HTTP/1.1 keep-alive client, in a process of its own
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    """Where one side's GET goes."""

    name: SideName
    port: int
    path: str


@dataclass(frozen=True)
class Segment:
    """A stretch of load: ``concurrency`` connections on one side for ``seconds``."""

    side: Side
    concurrency: int
    seconds: float
    recorded: bool  # False: a warm-up, only its answers' statuses are kept
    rate: float | None = None
    """Requests per second over all the connections, on a fixed schedule; None: as fast as
    the answers come (closed loop)."""


@dataclass
class SegmentResult:
    side: SideName
    concurrency: int
    rate: float | None
    recorded: bool
    seconds: float  # the measured window
    latencies_ms: list[float]  # of the requests completed in the window
    statuses: Counter[int]  # every answer, warm-up included
    errors: Counter[str]  # exceptions: connection refused, reset, malformed answer...
    cpu_s: dict[str, float]  # CPU seconds used in the window by each watched process
    machine_busy: float  # share of all the machine's cores busy in the window (0..1)


# Where the CPU goes (Linux /proc): tells what saturates, and that the client does not.
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine so far."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    total = sum(values[:8])  # without guest time, already counted in user
    return total - idle, total


@dataclass(frozen=True)
class CpuSample:
    at: dict[str, float]
    machine: tuple[int, int]

    @classmethod
    def take(cls, pids: dict[str, int]) -> CpuSample:
        at = {name: process_cpu_s(pid) for name, pid in pids.items()}
        at["load generator"] = time.process_time()
        return cls(at, machine_ticks())

    def since(self, start: CpuSample) -> tuple[dict[str, float], float]:
        used = {name: self.at[name] - start.at[name] for name in self.at}
        busy = self.machine[0] - start.machine[0]
        total = self.machine[1] - start.machine[1]
        return used, busy / total if total else 0.0


class HttpError(Exception):
    """An answer the client cannot read as HTTP/1.1."""


class KeepAliveConnection:
    """One HTTP/1.1 connection sending the same GET again and again.

    httpx costs several times more CPU per request under concurrency (PITFALLS.md), which on
    a shared 2-core machine would be taken from the servers measured; this reads only what a
    response needs: the status, Content-Length or chunked encoding, Connection: close.
    """

    def __init__(self, port: int, request: bytes) -> None:
        self.port = port
        self.request = request
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(HOST, self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def get(self) -> int:
        """Send the GET, read the whole answer, return its status."""
        if self.reader is None or self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        reader = self.reader
        self.writer.write(self.request)
        status, length, chunked, close = parse_head(await reader.readuntil(b"\r\n\r\n"))
        if chunked:
            await read_chunked(reader, lambda _data: None)
        elif length > 0:
            await reader.readexactly(length)
        elif length < 0:  # neither length nor chunks: the body ends with the connection
            await reader.read()
            close = True
        if close:
            self.close()
        return status


def parse_head(head: bytes) -> tuple[int, int, bool, bool]:
    """Status, Content-Length (-1 if absent), chunked, Connection: close of a response head."""
    lines = head.split(b"\r\n")
    if not lines[0].startswith(b"HTTP/1."):
        raise HttpError(f"not an HTTP/1.x answer: {lines[0][:80]!r}")
    status = int(lines[0][9:12])
    length, chunked, close = -1, False, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            close = b"close" in value.lower()
    if status in (204, 304):
        length = 0
    return status, length, chunked, close


async def read_chunked(reader: asyncio.StreamReader, on_data: Callable[[bytes], None]) -> None:
    """Read a chunked body to its end, handing each chunk's bytes to ``on_data`` as it comes."""
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # no trailers are sent here
            return
        data = await reader.readexactly(size + 2)
        on_data(data[:-2])


def request_bytes(port: int, path: str, token: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAuthorization: Bearer {token}\r\n"
        "Accept: application/json\r\nUser-Agent: ght-bench\r\n\r\n"
    ).encode()


async def run_segment(segment: Segment, token: str, pids: dict[str, int]) -> SegmentResult:
    """Open the connections, warm them SEGMENT_WARMUP_S, then measure ``segment.seconds``.

    ``pids``: the processes whose CPU use in the window is reported, by name.
    """
    side = segment.side
    request = request_bytes(side.port, side.path, token)
    connections = [KeepAliveConnection(side.port, request) for _ in range(segment.concurrency)]
    await asyncio.gather(*(connection.open() for connection in connections))
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    clock = time.perf_counter
    window_start = clock() + SEGMENT_WARMUP_S
    window_end = window_start + segment.seconds
    recorded = segment.recorded

    async def worker(index: int, connection: KeepAliveConnection) -> None:
        slot = index
        while True:
            started = clock()
            if segment.rate is not None:
                # Open loop: connection ``index`` takes every ``concurrency``-th slot of the
                # schedule; a late answer delays nothing else, and its latency counts from
                # the slot (no coordinated omission).
                scheduled = window_start - SEGMENT_WARMUP_S + slot / segment.rate
                slot += segment.concurrency
                if scheduled > started:
                    await asyncio.sleep(scheduled - started)
                started = scheduled
            if started >= window_end:
                return
            try:
                status = await connection.get()
            except (OSError, EOFError, asyncio.IncompleteReadError, HttpError, ValueError) as exc:
                errors[f"{type(exc).__name__}: {str(exc)[:100]}"] += 1
                connection.close()
                await asyncio.sleep(0.01)  # a refused connection must not spin
                continue
            done = clock()
            statuses[status] += 1
            # Completions within the window: the unbiased rate, whatever was in flight at
            # its edges.
            if recorded and window_start <= done < window_end:
                latencies.append((done - started) * 1000)

    async def sample_cpu() -> tuple[dict[str, float], float]:
        await asyncio.sleep(window_start - clock())
        start = CpuSample.take(pids)
        await asyncio.sleep(window_end - clock())
        return CpuSample.take(pids).since(start)

    try:
        cpu = asyncio.create_task(sample_cpu())
        await asyncio.gather(*(worker(i, connection) for i, connection in enumerate(connections)))
        cpu_s, machine_busy = await cpu
    finally:
        for connection in connections:
            connection.close()
    return SegmentResult(
        side.name,
        segment.concurrency,
        segment.rate,
        recorded,
        segment.seconds,
        latencies,
        statuses,
        errors,
        cpu_s,
        machine_busy,
    )


@dataclass(frozen=True)
class LoadPlan:
    """What the load process does, in order (pickled to the spawned child)."""

    segments: tuple[Segment, ...]
    token: str
    loop: LoopName
    pids: dict[str, int]  # beds-svc and the gateway, whose CPU use is sampled

    @property
    def seconds(self) -> float:
        return sum(segment.seconds + SEGMENT_WARMUP_S for segment in self.segments)


def load_process(plan: LoadPlan, sender: Connection) -> None:
    """The child process: runs the plan on a loop of its own, sends back every segment."""

    async def main() -> list[SegmentResult]:
        return [await run_segment(segment, plan.token, plan.pids) for segment in plan.segments]

    try:
        sender.send(run_loop(plan.loop, main()))
    except (KeyboardInterrupt, BrokenPipeError):
        pass  # the run was interrupted: the parent stops everything and says so
    finally:
        sender.close()


def run_load(plan: LoadPlan, stack: Stack) -> list[SegmentResult]:
    """Run ``plan`` in a spawned process; this one only waits, its CPU left to the servers."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=load_process, args=(plan, sender), name="bench-load", daemon=True
    )
    process.start()
    sender.close()  # once the child's end is the only one, its death reads as EOF
    received = False
    try:
        deadline = time.monotonic() + plan.seconds + 60.0  # spawning and imports included
        while not receiver.poll(1.0):
            stack.check_alive()
            if time.monotonic() > deadline or not process.is_alive():
                break
        if not receiver.poll(0):
            raise StackError(f"the load process gave no result (exit code {process.exitcode})")
        try:
            results: list[SegmentResult] = receiver.recv()
        except EOFError:
            raise StackError(
                f"the load process ended without a result (exit code {process.exitcode})"
            ) from None
        received = True
        return results
    finally:
        process.join(5 if received else 0)  # after its result it ends by itself
        if process.is_alive():
            process.terminate()
            process.join(5)
        receiver.close()


def load_plan(args: argparse.Namespace, stack: Stack, token: str) -> LoadPlan:
    """Warm-ups, then alternating rounds (ABBA...) at --concurrency, then with one connection."""
    direct = Side("direct", stack.beds.port, DIRECT_PATH)
    gateway = Side("gateway", stack.gateway.port, GATEWAY_PATH)
    segments = [
        Segment(direct, args.concurrency, args.warmup, recorded=False),
        Segment(gateway, args.concurrency, args.warmup, recorded=False),
    ]
    for concurrency, total, rate in (
        (args.concurrency, args.duration, None),
        (args.concurrency, args.paced_duration, args.paced_rate),
        (1, args.unloaded_duration, None),
    ):
        if total <= 0:
            continue
        for n in range(args.rounds):
            order = (direct, gateway) if n % 2 == 0 else (gateway, direct)
            segments += [
                Segment(side, concurrency, total / args.rounds, True, rate) for side in order
            ]
    return LoadPlan(tuple(segments), token, args.loop, stack.pids())


@dataclass(frozen=True)
class SideFigures:
    """One side at one concurrency, its rounds put together."""

    side: SideName
    concurrency: int
    seconds: float
    latencies_ms: list[float]
    cpu_s: dict[str, float]  # CPU seconds of each process over the measured windows
    machine_busy: float  # mean share of the machine's cores busy

    @property
    def requests(self) -> int:
        return len(self.latencies_ms)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def p(self, q: float) -> float:
        return percentile(self.latencies_ms, q)

    def cpu_per_request(self) -> str:
        """CPU milliseconds per request of each process, e.g. ``gateway 1.20, beds-svc 0.80``."""
        return ", ".join(
            f"{name} {seconds * 1000 / max(1, self.requests):.2f}"
            for name, seconds in self.cpu_s.items()
        )


def side_figures(
    results: Sequence[SegmentResult],
    side: SideName,
    concurrency: int,
    rate: float | None = None,
) -> SideFigures:
    chosen = [
        r
        for r in results
        if r.recorded and r.side == side and r.concurrency == concurrency and r.rate == rate
    ]
    cpu: Counter[str] = Counter()
    for r in chosen:
        cpu.update(r.cpu_s)
    seconds = sum(r.seconds for r in chosen)
    return SideFigures(
        side,
        concurrency,
        seconds,
        [latency for r in chosen for latency in r.latencies_ms],
        dict(cpu),
        sum(r.machine_busy * r.seconds for r in chosen) / seconds if seconds else 0.0,
    )


@dataclass(frozen=True)
class Answers:
    """Every answer of one side, warm-ups included: all must be 200."""

    statuses: Counter[int]
    errors: Counter[str]

    @property
    def total(self) -> int:
        return sum(self.statuses.values()) + sum(self.errors.values())

    @property
    def all_ok(self) -> bool:
        return not self.errors and set(self.statuses) <= {200}

    def describe(self) -> str:
        if self.all_ok:
            return f"{self.total:,} answers, all 200"
        wrong = {status: n for status, n in self.statuses.items() if status != 200}
        parts = [f"{self.total:,} requests, {self.statuses.get(200, 0):,} answered 200"]
        if wrong:
            parts.append(f"other statuses {dict(sorted(wrong.items()))}")
        if self.errors:
            parts.append(f"errors {dict(self.errors.most_common(5))}")
        return "; ".join(parts)


def answers(results: Sequence[SegmentResult], side: SideName) -> Answers:
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    for result in results:
        if result.side == side:
            statuses.update(result.statuses)
            errors.update(result.errors)
    return Answers(statuses, errors)


# --------------------------------------------------------------------------------------------
# Commit → SSE client
# --------------------------------------------------------------------------------------------


class SseClient:
    """A client of ``GET /events/stream``: stamps ``time.time()`` on each event it parses."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.token = token
        self.arrived: dict[str, float] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._buffer = b""

    async def open(self) -> None:
        reader, writer = await asyncio.open_connection(HOST, self.port)
        self._writer = writer
        writer.write(
            (
                "GET /events/stream?types=ght.beds.* HTTP/1.1\r\n"
                f"Host: {HOST}:{self.port}\r\nAuthorization: Bearer {self.token}\r\n"
                "Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
            ).encode()
        )
        status, length, chunked, _ = parse_head(await reader.readuntil(b"\r\n\r\n"))
        if status != 200 or not chunked:
            body = await reader.readexactly(length) if length > 0 else b""
            raise StackError(f"GET /events/stream answered {status}: {body[:500]!r}")
        self._task = asyncio.create_task(read_chunked(reader, self._on_data), name="sse-client")

    def _on_data(self, data: bytes) -> None:
        at = time.time()  # before parsing: the frames of one write share their arrival
        self._buffer += data
        *frames, self._buffer = self._buffer.split(b"\n\n")
        for frame in frames:
            for line in frame.split(b"\n"):
                if line.startswith(b"id:"):
                    self.arrived[line[3:].strip().decode()] = at

    def has(self, event_id: str) -> Callable[[], bool]:
        """A test of whether ``event_id`` has arrived."""
        return lambda: event_id in self.arrived

    def check(self) -> None:
        """Raise if the stream has ended (the gateway closed it, or it broke)."""
        if self._task is not None and self._task.done():
            error = self._task.exception()
            raise StackError(f"the SSE stream ended: {error!r}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._writer is not None:
            self._writer.close()


class NatsStamps:
    """A core NATS subscriber on the beds subjects: when each event is on NATS (by its id)."""

    def __init__(self, nats_url: str) -> None:
        self.nats_url = nats_url
        self.seen: dict[str, float] = {}
        self._client: NatsClient | None = None

    async def open(self) -> None:
        self._client = await nats.connect(self.nats_url, name="bench-gateway-overhead")
        await self._client.subscribe("ght.beds.>", cb=self._on_message)

    async def _on_message(self, msg: Msg) -> None:
        msg_id = (msg.headers or {}).get("Nats-Msg-Id")
        if msg_id is not None:
            self.seen.setdefault(msg_id, time.time())

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


@dataclass(frozen=True)
class FeedResult:
    rate: float
    sent: int
    achieved_rate: float  # commits per second the committer actually reached
    latencies_ms: list[float]  # commit → SSE client, for the events that arrived
    relay_ms: list[float]  # commit → on NATS
    feed_ms: list[float]  # on NATS → SSE client
    warmup_events: int

    @property
    def received(self) -> int:
        return len(self.latencies_ms)


def bed_event(subject: str) -> Event:
    """A bed status change of the CHU, about the size of a real one."""
    return new_event(
        source="beds-svc",
        type=EVENT_TYPE,
        subject=subject,
        establishment=ESTABLISHMENT,
        data={
            "bed_id": subject,
            "unit": "cardiologie-soins-intensifs",
            "status": "occupied",
            "previous_status": "available",
            "reason": "admission from the emergency department",
        },
    )


async def measure_feed(
    servers: Servers, stack: Stack, token: str, count: int, rate: float
) -> tuple[FeedResult, list[str]]:
    """Commit ``count`` events at ``rate``/s (open loop) and time each to the SSE client.

    Returns the result and the ids of every event committed (warm-up included).
    """
    settings = ServiceSettings(
        service_name="beds-svc",  # the events are the service's own, in its own database
        database_url=servers.database_url(BEDS_DB),
        nats_url=servers.nats_url,
        jwt_jwks_url=None,
        jwt_revocations_url=None,
        log_level="WARNING",
    )
    database = Database(settings)
    client = SseClient(stack.gateway.port, token)
    stamps = NatsStamps(servers.nats_url)
    committed: dict[str, float] = {}
    ids: list[str] = []

    async def commit(event: Event, measured: bool) -> str:
        async with database.transaction() as session:
            await add_event(session, event)
        at = time.time()
        event_id = str(event.id)
        ids.append(event_id)
        if measured:
            committed[event_id] = at
        return event_id

    try:
        await client.open()
        await stamps.open()
        # The gateway follows the stream from the moment it subscribed: send events until
        # one arrives, so that the feed, the relay and the pools are all up...
        probes = 0
        deadline = time.monotonic() + SSE_WARMUP_TIMEOUT_S
        while True:
            probes += 1
            probe = await commit(bed_event(f"bed/warmup-{probes}"), measured=False)
            if await _wait_for(client.has(probe), 2.0, client):
                break
            if time.monotonic() > deadline:
                stack.check_alive()
                raise stack.gateway.failure(
                    f"forwarded none of {probes} warm-up events in {SSE_WARMUP_TIMEOUT_S:.0f} s"
                )
        # ...then a steady stream: FEED_WARMUP_S at the rate, not measured, then ``count``.
        warmup = round(rate * FEED_WARMUP_S)
        tasks: list[asyncio.Task[str]] = []
        start = measured_from = time.monotonic() + 0.05
        for n in range(-warmup, count):
            delay = start + (n + warmup) / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if n == 0:
                measured_from = time.monotonic()
            event = bed_event(f"bed/{n}" if n >= 0 else f"bed/warmup-{probes - n}")
            tasks.append(asyncio.create_task(commit(event, measured=n >= 0)))
        await asyncio.gather(*tasks)
        writing_s = time.monotonic() - measured_from
        await _wait_for(
            lambda: all(i in client.arrived for i in committed), SSE_DRAIN_TIMEOUT_S, client
        )
    finally:
        await client.close()
        await stamps.close()
        await database.dispose()
    latencies, relay, feed = [], [], []
    for event_id, at in committed.items():
        arrived = client.arrived.get(event_id)
        if arrived is None:
            continue
        latencies.append((arrived - at) * 1000)
        on_nats = stamps.seen.get(event_id)
        if on_nats is not None:
            relay.append((on_nats - at) * 1000)
            feed.append((arrived - on_nats) * 1000)
    result = FeedResult(rate, count, count / writing_s, latencies, relay, feed, probes + warmup)
    return result, ids


async def _wait_for(done: Callable[[], bool], timeout_s: float, client: SseClient) -> bool:
    deadline = time.monotonic() + timeout_s
    while not done():
        client.check()
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def remove_bench_events(nats_url: str, ids: Sequence[str], first_seq: int) -> None:
    """Delete our events from an external server's BEDS stream, and nothing else."""
    ours = set(ids)
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        last = (await js.stream_info(STREAM)).state.last_seq
        for seq in range(first_seq, last + 1):
            with contextlib.suppress(NotFoundError):
                msg = await js.get_msg(STREAM, seq)
                if (msg.headers or {}).get("Nats-Msg-Id") in ours:
                    await js.delete_msg(STREAM, seq)
    finally:
        await nc.close()


async def stream_last_seq(nats_url: str) -> int:
    nc = await nats.connect(nats_url)
    try:
        return (await nc.jetstream().stream_info(STREAM)).state.last_seq
    finally:
        await nc.close()


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Results:
    loaded: tuple[SideFigures, SideFigures]  # direct, gateway at --concurrency
    paced: tuple[SideFigures, SideFigures] | None  # at --concurrency, --paced-rate req/s
    unloaded: tuple[SideFigures, SideFigures] | None  # the same with one connection
    answers: tuple[Answers, Answers]
    feeds: tuple[FeedResult, ...]  # at --event-rate, then at --low-rate
    rate_limit_header: str
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]


def _latencies(figures: SideFigures) -> str:
    return f"{figures.p(50):.2f} / {figures.p(95):.2f} / {figures.p(99):.2f} ms"


def figure_rows(results: Results) -> list[tuple[str, str, str, str]]:
    direct, gateway = results.loaded
    answers_ok = all(a.all_ok for a in results.answers)
    ratio = gateway.rate / direct.rate
    added_p50 = gateway.p(50) - direct.p(50)
    added_p99 = gateway.p(99) - direct.p(99)
    c = f"{direct.concurrency} conn."
    rows = [
        (f"direct, {c}: throughput", f"{direct.rate:,.0f} req/s", "reference", ""),
        (f"direct, {c}: p50 / p95 / p99", _latencies(direct), "", ""),
        (f"via gateway, {c}: throughput", f"{gateway.rate:,.0f} req/s", "", ""),
        (f"via gateway, {c}: p50 / p95 / p99", _latencies(gateway), "", ""),
        (
            "throughput ratio gateway / direct",
            f"{ratio:.3f}",
            f"≥ {TARGET_RATIO}",
            verdict(ratio >= TARGET_RATIO and answers_ok),
        ),
        (
            f"added latency p50, {c}, saturated",
            f"{added_p50:.2f} ms",
            "",
            "",
        ),
        (
            f"added latency p99, {c}, saturated",
            f"{added_p99:.2f} ms",
            "",
            "",
        ),
    ]
    if results.paced is not None:
        paced_direct, paced_gateway = results.paced
        at = f"{c} at {paced_direct.requests / paced_direct.seconds:,.0f} req/s"
        paced_p50 = paced_gateway.p(50) - paced_direct.p(50)
        paced_p99 = paced_gateway.p(99) - paced_direct.p(99)
        rows += [
            (f"direct, {at}: p50 / p95 / p99", _latencies(paced_direct), "", ""),
            (f"via gateway, {at}: p50 / p95 / p99", _latencies(paced_gateway), "", ""),
            (
                f"added latency p50, {at}",
                f"{paced_p50:.2f} ms",
                f"≤ {TARGET_ADDED_P50_MS:.0f} ms",
                verdict(paced_p50 <= TARGET_ADDED_P50_MS and answers_ok),
            ),
            (
                f"added latency p99, {at}",
                f"{paced_p99:.2f} ms",
                f"≤ {TARGET_ADDED_P99_MS:.0f} ms",
                verdict(paced_p99 <= TARGET_ADDED_P99_MS and answers_ok),
            ),
        ]
    if results.unloaded is not None:
        one_direct, one_gateway = results.unloaded
        one_p50 = one_gateway.p(50) - one_direct.p(50)
        one_p99 = one_gateway.p(99) - one_direct.p(99)
        rows += [
            ("direct, 1 conn.: p50 / p95 / p99", _latencies(one_direct), "", ""),
            ("via gateway, 1 conn.: p50 / p95 / p99", _latencies(one_gateway), "", ""),
            (
                "added latency p50, 1 conn. (the hop alone)",
                f"{one_p50:.2f} ms",
                f"(≤ {TARGET_ADDED_P50_MS:.0f} ms)",
                f"({verdict(one_p50 <= TARGET_ADDED_P50_MS)})",
            ),
            (
                "added latency p99, 1 conn. (the hop alone)",
                f"{one_p99:.2f} ms",
                f"(≤ {TARGET_ADDED_P99_MS:.0f} ms)",
                f"({verdict(one_p99 <= TARGET_ADDED_P99_MS)})",
            ),
        ]
    for feed in results.feeds:
        rows += feed_rows(feed)
    return rows


def feed_rows(feed: FeedResult) -> list[tuple[str, str, str, str]]:
    at = f"commit → SSE at {feed.rate:g}/s"
    p95 = percentile(feed.latencies_ms, 95)
    return [
        (
            f"{at}, p50 / p99 / max",
            f"{percentile(feed.latencies_ms, 50):.1f} / {percentile(feed.latencies_ms, 99):.1f}"
            f" / {max(feed.latencies_ms, default=float('nan')):.1f} ms",
            "",
            "",
        ),
        (
            f"{at}, p95",
            f"{p95:.1f} ms",
            f"≤ {TARGET_SSE_P95_MS:.0f} ms",
            verdict(p95 <= TARGET_SSE_P95_MS and feed.received == feed.sent),
        ),
        (
            "  of which commit → NATS (relay), p50 / p95",
            f"{percentile(feed.relay_ms, 50):.1f} / {percentile(feed.relay_ms, 95):.1f} ms",
            "",
            "",
        ),
        (
            "  of which NATS → SSE (gateway feed), p50 / p95",
            f"{percentile(feed.feed_ms, 50):.1f} / {percentile(feed.feed_ms, 95):.1f} ms",
            "",
            "",
        ),
    ]


def conditions(args: argparse.Namespace, servers: Servers, results: Results) -> list[str]:
    direct, gateway = results.loaded
    durability = (
        "own, PostgreSQL fsync=on synchronous_commit=on, NATS sync_interval: always"
        if servers.own
        else "external (durability as configured there)"
    )
    load = ", ".join(f"{x:.2f}" for x in results.load_before)
    load_after = ", ".join(f"{x:.2f}" for x in results.load_after)
    rounds = args.rounds
    lines = [
        f"cores: os.cpu_count() = {os.cpu_count()}; load average {load} before,"
        f" {load_after} after (the machine may be shared with other work)",
        f"servers: {durability}",
        "processes: beds-svc and the gateway, one uvicorn process each (1 worker, uvloop,"
        " httptools, --no-access-log, LOG_LEVEL INFO: one JSON log line per request, as"
        " make run); the load generator in a process of its own (spawned, uvloop, minimal"
        " HTTP/1.1 keep-alive client); this process only waits during the load",
        "GET: beds-svc /health/ready (pings its database with SELECT 1, checks NATS): the"
        " services have no domain API yet; direct at <beds>/health/ready, through the gateway"
        " at <gateway>/api/beds/health/ready (token verified, rate limit, access log, aiohttp"
        " proxy); the bearer token of si-chu (it_system) is sent on both sides",
        f"rate limit: it_system raised to {RATE_LIMIT:,}/s, burst {RATE_LIMIT:,}"
        f" (GATEWAY_RATE_LIMITS__IT_SYSTEM__RATE/__BURST; the gateway's RateLimit-Limit:"
        f" {results.rate_limit_header}) so that the hop is measured, not the limit",
        f"load: {args.concurrency} connections per side; warm-up {args.warmup:g} s per side,"
        f" then {rounds} rounds per side alternating (direct, gateway, gateway, direct...)"
        f" of {args.duration / rounds:g} s each, each after {SEGMENT_WARMUP_S:g} s of warm-up"
        f" on fresh connections; closed loop (each connection sends its next GET on the"
        f" answer)",
        f"  requests measured: direct {direct.requests:,} in {direct.seconds:g} s, gateway"
        f" {gateway.requests:,} in {gateway.seconds:g} s; latency from sending the GET to"
        " reading the whole answer",
        f"  CPU ms per request (/proc): direct: {direct.cpu_per_request()};"
        f" gateway: {gateway.cpu_per_request()}",
        f"  machine busy (all cores, every process): direct {direct.machine_busy:.0%},"
        f" gateway {gateway.machine_busy:.0%}",
    ]
    if results.paced is not None:
        paced_direct, paced_gateway = results.paced
        lines.append(
            f"  then paced: the same {args.concurrency} connections per side at"
            f" {args.paced_rate:g} req/s in all, open loop (each GET sent on its schedule,"
            " its latency counted from its scheduled time), below both sides' capacity, so"
            " that the added latency is the hop's and not queueing for a saturated machine;"
            f" {rounds} rounds of {args.paced_duration / rounds:g} s: direct"
            f" {paced_direct.requests:,} requests, gateway {paced_gateway.requests:,}"
        )
    if results.unloaded is not None:
        one_direct, one_gateway = results.unloaded
        lines.append(
            f"  then 1 connection per side, {rounds} rounds of {args.unloaded_duration / rounds:g}"
            f" s: direct {one_direct.requests:,} requests, gateway {one_gateway.requests:,}"
        )
    lines += [
        f"  answers: direct {results.answers[0].describe()};"
        f" gateway {results.answers[1].describe()}",
        f"feed: {EVENT_TYPE} events of establishment {ESTABLISHMENT}, one per transaction"
        " into beds-svc's outbox from this process, on an open-loop schedule, before the HTTP"
        " load (no request in flight); each run after warm-up events, the last"
        f" {FEED_WARMUP_S:g} s of them at its rate:",
    ]
    lines += [
        f"  {feed.sent:,} events at {feed.rate:g}/s (reached {feed.achieved_rate:.1f}/s) after"
        f" {feed.warmup_events} warm-up events: {feed.received:,} of {feed.sent:,} arrived"
        for feed in results.feeds
    ]
    lines += [
        "  from time.time() after the commit to time.time() when the SSE client (this"
        " process, GET /events/stream?types=ght.beds.*) parsed the event, matched by id;"
        " relay and feed shares from a core NATS subscriber's stamps (same clock; the"
        " commit stamp is taken when this process resumes after COMMIT, which can lag by"
        " about a millisecond: shares near 0 may read slightly negative)",
    ]
    return lines


def report(args: argparse.Namespace, servers: Servers, results: Results) -> None:
    print_report(
        "Gateway overhead: the same GET direct and through the gateway; commit → SSE client",
        figure_rows(results),
        conditions(args, servers, results),
    )


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def measure(args: argparse.Namespace, servers: Servers, stack: Stack) -> Results:
    load_before = os.getloadavg()
    token = stack.token()
    rate_limit_header = stack.check_routes(token)

    # The feed first, on a gateway with no request in flight. At a low rate too: there an
    # event may wait in the gateway for the next one or for a heartbeat (bench/README.md).
    feeds: list[FeedResult] = []
    for count, rate in ((args.events, args.event_rate), (args.low_rate_events, args.low_rate)):
        if count <= 0:
            continue
        print(f"feed: {count:,} events at {rate:g}/s...", flush=True)
        first_seq = (
            0 if servers.own_nats else run_loop(args.loop, stream_last_seq(servers.nats_url))
        )
        feed, ids = run_loop(args.loop, measure_feed(servers, stack, token, count, rate))
        if not servers.own_nats:
            run_loop(args.loop, remove_bench_events(servers.nats_url, ids, first_seq + 1))
        stack.check_alive()
        feeds.append(feed)

    unloaded_note = (
        f" (+ {args.unloaded_duration:g} s with 1 connection)" if args.unloaded_duration > 0 else ""
    )
    print(
        f"HTTP: {args.concurrency} connections per side, {args.duration:g} s per side"
        f"{unloaded_note}...",
        flush=True,
    )
    segments = run_load(load_plan(args, stack, token), stack)
    stack.check_alive()
    loaded = (
        side_figures(segments, "direct", args.concurrency),
        side_figures(segments, "gateway", args.concurrency),
    )
    paced = None
    if args.paced_duration > 0:
        paced = (
            side_figures(segments, "direct", args.concurrency, args.paced_rate),
            side_figures(segments, "gateway", args.concurrency, args.paced_rate),
        )
    unloaded = None
    if args.unloaded_duration > 0:
        unloaded = (side_figures(segments, "direct", 1), side_figures(segments, "gateway", 1))
    if not loaded[0].requests or not loaded[1].requests:
        raise StackError(
            f"no request measured: direct {answers(segments, 'direct').describe()};"
            f" gateway {answers(segments, 'gateway').describe()}"
        )
    return Results(
        loaded,
        paced,
        unloaded,
        (answers(segments, "direct"), answers(segments, "gateway")),
        tuple(feeds),
        rate_limit_header,
        load_before,
        os.getloadavg(),
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=32, help="connections per side")
    parser.add_argument(
        "--duration", type=float, default=10.0, help="measured seconds per side (all rounds)"
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per side")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per side")
    parser.add_argument(
        "--paced-rate",
        type=float,
        default=400.0,
        help="req/s of the paced rounds: the same connections below saturation, where the "
        "added latency is the hop's, not queueing for a saturated machine",
    )
    parser.add_argument(
        "--paced-duration",
        type=float,
        default=6.0,
        help="measured seconds per side at --paced-rate (0: skip)",
    )
    parser.add_argument(
        "--unloaded-duration",
        type=float,
        default=4.0,
        help="measured seconds per side with 1 connection (0: skip)",
    )
    parser.add_argument("--events", type=int, default=500, help="events of the feed run")
    parser.add_argument("--event-rate", type=float, default=50.0, help="events/s of the feed run")
    parser.add_argument(
        "--low-rate-events", type=int, default=20, help="events of the low-rate feed run (0: skip)"
    )
    parser.add_argument(
        "--low-rate", type=float, default=2.0, help="events/s of the low-rate feed run"
    )
    parser.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="event loop of this process and the load generator",
    )
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    parser.add_argument("--nats-url", default=os.environ.get("BENCH_NATS_URL"))
    args = parser.parse_args(argv)
    if args.concurrency < 1 or args.rounds < 1 or args.duration <= 0 or args.events < 1:
        parser.error("--concurrency, --rounds, --duration and --events must be positive")
    if args.event_rate <= 0 or args.low_rate <= 0:
        parser.error("--event-rate and --low-rate must be positive")
    return args


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt  # unwinds through every cleanup, as Ctrl-C does


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    # The NATS client's "disconnected" warning on closing is noise here.
    logging.getLogger("ght_shared.messaging").setLevel(logging.ERROR)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        with contextlib.ExitStack() as cleanup:
            root = Path(
                cleanup.enter_context(tempfile.TemporaryDirectory(prefix="ght-bench-gateway-"))
            )
            print("starting PostgreSQL and NATS, migrating...", flush=True)
            started = cleanup.enter_context(servers(root, args.database_url, args.nats_url))
            cleanup.enter_context(bench_databases(started))
            print("starting beds-svc and the gateway (uvicorn)...", flush=True)
            stack = Stack(started, root)
            cleanup.callback(stack.stop)
            stack.start()
            results = measure(args, started, stack)
        report(args, started, results)
        return 0
    except (StackError, ServerError) as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("interrupted: stopped everything", file=sys.stderr, flush=True)
        return 130


if __name__ == "__main__":
    sys.exit(main())
