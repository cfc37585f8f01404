"""Crash tests on the stack as ``make run`` starts it: real processes, real ports, real kills.

:class:`LiveStack` starts PostgreSQL, NATS, activity-svc and the gateway with the very
functions of ``deploy/local/run.py`` (only those two components: the others play no part
in ingestion), and can SIGKILL any of them and start it again on the same port and data.

:class:`Load` is a client in a thread of its own (so that the test's main thread may block
while it kills and restarts processes; the runner's children must be started from that
main thread, their ``PR_SET_PDEATHSIG`` follows the thread that spawned them). It sends
``POST /api/activity/records`` batches through the gateway, each with a source of its own,
and records for each one whether it got a 2xx, another answer, or none; it sends large
``POST /api/activity/imports`` files on demand; and it runs an idempotent consumer on a
durable JetStream consumer of ``ght.activity.batch.ingested``.

:func:`count` then reads what activity-svc's database holds for those sources, and
:class:`Tally` compares: the figures each test prints and asserts on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib.util
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import asyncpg
import httpx
import nats
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from ght_gateway import demo
from ght_shared.devservers import free_port
from ght_shared.events import Event, nats_subject_of
from ght_shared.payloads import activity as activity_payloads

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
BATCH_INGESTED = nats_subject_of(activity_payloads.BATCH_INGESTED)
ACTIVITY_STREAM = activity_payloads.STREAM

TERRITORY = "GHT-REL"
BATCHES = demo.ESTABLISHMENTS[0]  # the CHU's system sends the stream of batches
IMPORTS = demo.ESTABLISHMENTS[1]  # another establishment's system sends the large files
UF = "9001"
UNIT_OF = {BATCHES.finess: "REL-CHU-UF9001", IMPORTS.finess: "REL-NORD-UF9001"}
IMPORT_ROWS = 60_000
"""Rows of a large import: over ACTIVITY_IMPORT_PARALLEL_MIN_ROWS (50 000), so that it is
merged in two parts prepared then committed (two-phase commit, ADR 0011)."""


def load_runner() -> ModuleType:
    """``deploy/local/run.py`` as a module (it is a script, not a package)."""
    name = "ght_local_run"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "deploy" / "local" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their module while it executes
    spec.loader.exec_module(module)
    return module


run = load_runner()


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, pause: float = 0.1
) -> None:
    """Return once ``condition()`` holds; fail the test, saying ``what``, after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(pause)


# --------------------------------------------------------------------------------------------
# The stack
# --------------------------------------------------------------------------------------------


class LiveStack:
    """PostgreSQL, NATS, activity-svc and the gateway, started as ``make run`` starts them."""

    COMPONENTS = (run.SERVICES[1], run.GATEWAY)  # activity-svc, gateway

    def __init__(self, data_dir: Path) -> None:
        self.config = run.RunConfig(
            data_dir=data_dir,
            pg_port=free_port(),
            nats_port=free_port(),
            ports={component.name: free_port() for component in run.COMPONENTS},
        )
        self.stack = run.Stack(self.config)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        run.check_ports(self.config)
        self.stack.start_postgres()
        self.stack.start_nats()
        self.stack.migrate(self.COMPONENTS)
        self.stack.start_components(self.COMPONENTS)
        self.stack.wait_ready()

    def stop(self) -> None:
        self.stack.stop()

    def kill(self, name: str) -> None:
        """SIGKILL ``postgres``, ``nats`` or a component (``activity-svc``, ``gateway``)."""
        if name == "postgres":
            assert self.stack.postgres is not None
            self.stack.postgres.kill()
        elif name == "nats":
            assert self.stack.nats is not None
            self.stack.nats.kill()
        else:
            child = self.child(name)
            child.run.signal(signal.SIGKILL)
            child.run.process.wait(10)

    def restart(self, name: str, timeout: float = 120.0) -> float:
        """Start what :meth:`kill` killed, on the same port and data; return the seconds it
        took to be ready (a component: ``/health/ready`` answers 200)."""
        started = time.monotonic()
        if name == "postgres":
            assert self.stack.postgres is not None
            self.stack.postgres.start(timeout)
        elif name == "nats":
            assert self.stack.nats is not None
            self.stack.nats.start(timeout)
        else:
            component = next(c for c in self.COMPONENTS if c.name == name)
            child = self.stack.start_component(component)
            try:
                wait_until(
                    lambda: child.run.exit_code is None and run._is_ready(child.url),
                    timeout,
                    f"{name} ready again",
                    pause=0.2,
                )
            except AssertionError as error:
                raise AssertionError(f"{error}; its log:\n{child.run.log_tail(60)}") from None
        return time.monotonic() - started

    def ensure_running(self) -> None:
        """Start again whatever an earlier (failed) test left killed, then wait for ready."""
        assert self.stack.postgres is not None and self.stack.nats is not None
        if not self.stack.postgres.running:
            self.restart("postgres")
        if not self.stack.nats.running:
            self.restart("nats")
        for component in self.COMPONENTS:
            if self.child(component.name).run.exit_code is not None:
                self.restart(component.name)
        wait_until(
            lambda: all(run._is_ready(self.url(c.name)) for c in self.COMPONENTS),
            60,
            "every component ready",
            pause=0.2,
        )

    # -- where things are ----------------------------------------------------------------------

    def child(self, name: str) -> Any:
        return next(c for c in self.stack.children if c.component.name == name)

    def url(self, name: str) -> str:
        return f"http://{run.HOST}:{self.config.ports[name]}"

    @property
    def gateway_url(self) -> str:
        return self.url("gateway")

    @property
    def nats_url(self) -> str:
        return str(self.stack.nats_url)

    @property
    def activity_dsn(self) -> str:
        return f"postgresql://postgres@{run.HOST}:{self.config.pg_port}/activity"

    def log_size(self, name: str) -> int:
        """Where the log of ``name`` ends now (see :meth:`server_errors`)."""
        path = self.config.log_file(name)
        return path.stat().st_size if path.exists() else 0

    def server_errors(self, name: str, since: int) -> list[str]:
        """The requests ``name`` answered with an unhandled error (a 500) since ``since``."""
        with self.config.log_file(name).open("rb") as log:
            log.seek(since)
            lines = log.read().decode(errors="replace").splitlines()
        return [line[:300] for line in lines if '"msg":"unhandled error"' in line]


def build_territory(gateway_url: str) -> None:
    """A territory, the two establishments of the test and one unit (UF 9001) each, written
    through the gateway by the demo ``admin`` (the stack starts empty: no demo data)."""
    since = "2020-01-01"
    with httpx.Client(base_url=gateway_url, timeout=30) as client:
        token = client.post(
            "/auth/token",
            data={"grant_type": "password", "username": "admin", "password": "demo"},
        )
        assert token.status_code == 200, token.text
        admin = {"Authorization": f"Bearer {token.json()['access_token']}"}
        nodes: list[tuple[str, dict[str, Any]]] = [
            (TERRITORY, {"kind": "territory", "name": "GHT fiabilité"}),
        ]
        for establishment, short in ((BATCHES, "CHU"), (IMPORTS, "NORD")):
            pole, department = f"REL-{short}-POLE", f"REL-{short}-DEPT"
            nodes += [
                (
                    establishment.finess,
                    {"kind": "establishment", "name": establishment.name, "parent": TERRITORY},
                ),
                (pole, {"kind": "pole", "name": "Pôle", "parent": establishment.finess}),
                (department, {"kind": "department", "name": "Service", "parent": pole}),
                (
                    UNIT_OF[establishment.finess],
                    {"kind": "unit", "name": "Imagerie", "parent": department, "uf": UF},
                ),
            ]
        for code, body in nodes:
            written = client.put(
                f"/api/activity/org-units/{code}",
                json={**body, "valid_from": since},
                headers=admin,
            )
            assert written.status_code in (200, 201), written.text
    # One record a day where the large imports write: their unit's monthly rows exist, so
    # that a Freeze can hold them.
    seeded = httpx.post(
        f"{gateway_url}/api/activity/imports",
        content=import_file("rel-seed", rows=40),
        headers={
            "Authorization": f"Bearer {machine_token(gateway_url, IMPORTS.client_id)}",
            "Content-Type": "text/csv",
        },
        timeout=60,
    )
    assert seeded.status_code == 201, seeded.text


def machine_token(gateway_url: str, client_id: str) -> str:
    with httpx.Client(base_url=gateway_url, timeout=30) as client:
        issued = client.post(
            "/auth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": "demo",
            },
        )
        assert issued.status_code == 200, issued.text
        token: str = issued.json()["access_token"]
        return token


# --------------------------------------------------------------------------------------------
# What is sent
# --------------------------------------------------------------------------------------------


def _record_day(n: int) -> str:
    # Within the last few weeks, never today (the service's "today" is Europe/Paris's).
    return (date.today() - timedelta(days=2 + n % 40)).isoformat()


def batch_body(source: str, size: int) -> dict[str, Any]:
    return {
        "records": [
            {
                "kind": "imaging_exam",
                "source": source,
                "source_id": f"E{i:05d}",
                "finess": BATCHES.finess,
                "unit": UF,
                "date": _record_day(i),
                "code": "ZBQK002",
                "amount": 21.28,
            }
            for i in range(size)
        ]
    }


def import_file(source: str, rows: int = IMPORT_ROWS) -> bytes:
    lines = ["kind,source,source_id,finess,unit,date,code,amount"]
    lines += [
        f"imaging_exam,{source},F{i:07d},{IMPORTS.finess},{UF},{_record_day(i)},ZBQK002,21.28"
        for i in range(rows)
    ]
    return ("\n".join(lines) + "\n").encode()


@dataclass
class Outcome:
    """What one request got: a status (any answer) or an error (no answer)."""

    source: str
    size: int
    started: float
    elapsed: float = 0.0
    status: int | None = None
    error: str | None = None
    body: Any = None

    @property
    def acknowledged(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def answered(self) -> bool:
        return self.status is not None

    def describe(self) -> str:
        got = f"{self.status}" if self.answered else f"no answer ({self.error})"
        return f"{self.source}: {got} after {self.elapsed:.2f} s"


# --------------------------------------------------------------------------------------------
# The load: batches, imports and an idempotent consumer, in a thread of their own
# --------------------------------------------------------------------------------------------


class Load:
    """Batches sent without pause by ``senders`` clients, each batch under a source of its
    own (``<prefix>-s<sender>-b<n>``); large imports on demand; an idempotent consumer of
    the batch events.

    Nothing is retried: a batch that got no answer stays unanswered, so that what the
    server did with it shows in the database.
    """

    def __init__(
        self,
        stack: LiveStack,
        prefix: str,
        *,
        batch_size: int = 40,
        senders: int = 2,
        timeout_s: float = 60.0,
    ) -> None:
        self.stack = stack
        self.prefix = prefix
        self.batch_size = batch_size
        self.senders = senders
        self.timeout = httpx.Timeout(timeout_s, connect=5.0)
        self.batches: list[Outcome] = []
        self.imports: list[Outcome] = []
        self.retries: list[Outcome] = []
        self.before_retry: dict[str, int] = {}
        self.logs_from: dict[str, int] = {}
        self.consumer = IdempotentConsumer(stack.nats_url, f"crash_{prefix.replace('-', '_')}")
        self._tokens = {
            finess: machine_token(stack.gateway_url, client)
            for finess, client in (
                (BATCHES.finess, BATCHES.client_id),
                (IMPORTS.finess, IMPORTS.client_id),
            )
        }
        self._sending = True
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._done: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name=f"load-{prefix}", daemon=True)
        self._failure: BaseException | None = None
        self._client: httpx.AsyncClient | None = None
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._senders: list[asyncio.Task[None]] = []

    # -- driving it from the test's thread ------------------------------------------------------

    def start(self) -> Load:
        self._thread.start()
        self._ready.wait(30)
        assert self._loop is not None, "the load's thread did not start"
        return self

    def call(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def send_import(
        self, source: str, body: bytes, chunk_pause_s: float = 0.0, *, retry: bool = False
    ) -> concurrent.futures.Future[Outcome]:
        """POST the file; with ``chunk_pause_s``, slowly (64 KiB at a time). A ``retry``
        (the same file sent again by a client that got no answer) is not tallied with the
        other requests: the test checks it on its own."""
        return self.call(self._import(source, body, chunk_pause_s, retry))

    def acknowledged_since(self, moment: float) -> int:
        return sum(1 for o in list(self.batches) if o.acknowledged and o.started >= moment)

    def stop_sending(self, timeout: float = 120.0) -> None:
        """Stop sending; return once every request sent has ended."""
        self._sending = False
        self.call(self._drain()).result(timeout)

    def close(self) -> None:
        if self._loop is not None and self._done is not None:
            self._sending = False
            self._loop.call_soon_threadsafe(self._done.set)
        self._thread.join(60)
        if self._failure is not None:
            raise self._failure

    # -- inside the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as error:  # reported by close()
            self._failure = error
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._done = asyncio.Event()
        await self.consumer.open()
        # A connection per request: each one meets the gateway as it is at that moment.
        limits = httpx.Limits(max_connections=16, max_keepalive_connections=0)
        async with httpx.AsyncClient(
            base_url=self.stack.gateway_url, timeout=self.timeout, limits=limits
        ) as client:
            self._client = client
            self._senders = [
                asyncio.create_task(self._send_batches(client, n)) for n in range(self.senders)
            ]
            consuming = asyncio.create_task(self.consumer.run(self._done))
            self._ready.set()
            await self._done.wait()
            for task in self._senders:
                task.cancel()
            await asyncio.gather(*self._senders, return_exceptions=True)
            await consuming
        await self.consumer.close()

    async def _drain(self) -> None:
        await asyncio.gather(*self._senders, return_exceptions=True)
        while self._in_flight:
            await asyncio.gather(*list(self._in_flight), return_exceptions=True)

    async def _send_batches(self, client: httpx.AsyncClient, sender: int) -> None:
        n = 0
        headers = self._headers(BATCHES.finess)
        while self._sending:
            source = f"{self.prefix}-s{sender}-b{n:05d}"
            n += 1
            outcome = Outcome(source, self.batch_size, time.monotonic())
            self.batches.append(outcome)
            await self._post(
                client,
                outcome,
                "/api/activity/records",
                json=batch_body(source, self.batch_size),
                headers=headers,
            )
            if not outcome.answered or not outcome.acknowledged:
                await asyncio.sleep(0.05)  # a client backs off a little on failure

    async def _import(self, source: str, body: bytes, chunk_pause_s: float, retry: bool) -> Outcome:
        outcome = Outcome(source, body.count(b"\n") - 1, time.monotonic())
        (self.retries if retry else self.imports).append(outcome)
        content: bytes | AsyncIterator[bytes] = body
        if chunk_pause_s:
            content = _slowly(body, chunk_pause_s)
        task = asyncio.current_task()
        assert task is not None and self._client is not None
        self._in_flight.add(task)
        try:
            await self._post(
                self._client,
                outcome,
                "/api/activity/imports",
                content=content,
                params={"filename": f"{source}.csv"},
                headers={**self._headers(IMPORTS.finess), "Content-Type": "text/csv"},
            )
        finally:
            self._in_flight.discard(task)
        return outcome

    async def _post(
        self, client: httpx.AsyncClient, outcome: Outcome, path: str, **kwargs: Any
    ) -> None:
        try:
            response = await client.post(path, **kwargs)
        except httpx.HTTPError as error:
            outcome.error = f"{type(error).__name__}: {error}"[:200]
        else:
            outcome.status = response.status_code
            try:
                outcome.body = response.json()
            except ValueError:
                outcome.body = response.text[:500]
        outcome.elapsed = time.monotonic() - outcome.started

    def _headers(self, finess: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._tokens[finess]}"}


async def _slowly(body: bytes, pause_s: float) -> AsyncIterator[bytes]:
    for start in range(0, len(body), 65536):
        yield body[start : start + 65536]
        await asyncio.sleep(pause_s)


class IdempotentConsumer:
    """A durable JetStream consumer of ``ght.activity.batch.ingested`` with an inbox.

    Each message is counted as delivered; its event is processed (its batch noted) only
    the first time its id is seen, then acknowledged. Redeliveries (an ack lost in a
    crash, a publish repeated past the duplicate window) are counted, not processed.
    """

    def __init__(self, nats_url: str, durable: str) -> None:
        self.nats_url = nats_url
        self.durable = durable
        self.deliveries: Counter[str] = Counter()
        self.processed: dict[str, Event] = {}
        self.errors = 0

    async def open(self) -> None:
        self.connection = await nats.connect(
            self.nats_url,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            name=self.durable,
        )
        js = self.connection.jetstream()
        self.subscription = await js.pull_subscribe(
            BATCH_INGESTED,
            durable=self.durable,
            stream=ACTIVITY_STREAM,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.NEW,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=3.0,
                max_ack_pending=10_000,
            ),
        )

    async def run(self, done: asyncio.Event) -> None:
        while not done.is_set():
            try:
                messages = await self.subscription.fetch(200, timeout=0.5)
            except (TimeoutError, NatsTimeoutError):
                continue
            except (NatsError, OSError):  # NATS killed: the client reconnects
                self.errors += 1
                await asyncio.sleep(0.2)
                continue
            for message in messages:
                event = Event.from_bytes(message.data)
                key = str(event.id)
                self.deliveries[key] += 1
                if key not in self.processed:
                    self.processed[key] = event  # the "transaction" of this consumer
                try:
                    await message.ack()
                except (NatsError, OSError):
                    self.errors += 1  # redelivered after ack_wait: absorbed by the inbox

    async def close(self) -> None:
        with contextlib.suppress(NatsError, OSError):
            await self.connection.jetstream().delete_consumer(ACTIVITY_STREAM, self.durable)
        await self.connection.close()

    def events_of(self, source: str, but: frozenset[str] = frozenset()) -> list[Event]:
        """The batch events naming ``source``, but those of the imports ``but``."""
        return [
            e
            for e in list(self.processed.values())
            if source in e.data.get("sources", []) and e.data.get("batch") not in but
        ]

    def batches(self) -> set[str]:
        """The imports (ids) whose events were processed."""
        return {str(e.data.get("batch")) for e in list(self.processed.values())}

    @property
    def redeliveries(self) -> int:
        return sum(n - 1 for n in self.deliveries.values())


# --------------------------------------------------------------------------------------------
# Counting
# --------------------------------------------------------------------------------------------


async def _query(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        rows: list[asyncpg.Record] = await connection.fetch(sql, *args)
        return rows
    finally:
        await connection.close()


def query(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    return asyncio.run(_query(dsn, sql, *args))


def prepared_parts(dsn: str) -> list[str]:
    rows = query(dsn, "SELECT gid FROM pg_prepared_xacts WHERE gid LIKE 'activity-import:%'")
    return [row["gid"] for row in rows]


def leftovers(dsn: str) -> dict[str, int]:
    """What an interrupted import may leave: prepared parts, staging tables, unpublished
    events."""
    row = query(
        dsn,
        """
        SELECT
          (SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE 'activity-import:%') AS prepared,
          (SELECT count(*) FROM pg_class WHERE relname LIKE 'import_staging_%'
              AND relkind IN ('r', 'p') AND NOT relispartition) AS staging,
          (SELECT count(*) FROM outbox WHERE published_at IS NULL) AS unpublished
        """,
    )[0]
    return dict(row)


def records_per_source(dsn: str, prefix: str) -> dict[str, tuple[int, int]]:
    """For each source under ``prefix``: (rows, distinct record keys)."""
    rows = query(
        dsn,
        "SELECT source, count(*) AS n, count(DISTINCT (finess, source_id)) AS d"
        " FROM activity_record WHERE starts_with(source, $1) GROUP BY source",
        prefix,
    )
    return {row["source"]: (row["n"], row["d"]) for row in rows}


def measure_mismatches(dsn: str) -> list[dict[str, Any]]:
    """Unit-months of the test's units whose ``imaging_exams`` measure is not the number of
    records counted there: a record merged without its contribution, or counted twice."""
    rows = query(
        dsn,
        """
        WITH counted AS (
            SELECT unit, month, count(*)::float8 AS records FROM activity_record
            WHERE kind = 'imaging_exam' AND unit = ANY($1::text[]) GROUP BY unit, month
        )
        SELECT coalesce(c.unit, m.unit) AS unit, coalesce(c.month, m.month) AS month,
               coalesce(c.records, 0) AS records, coalesce(m.imaging_exams, 0) AS measure
        FROM counted c FULL JOIN
             (SELECT * FROM unit_month WHERE unit = ANY($1::text[])) m
             ON (c.unit, c.month) = (m.unit, m.month)
        WHERE coalesce(c.records, 0) <> coalesce(m.imaging_exams, 0)
        """,
        list(UNIT_OF.values()),
    )
    return [dict(row) for row in rows]


def settle(stack: LiveStack, load: Load) -> None:
    """Wait until the service has settled every interrupted import and published its
    outbox, and the consumer has received the event of every acknowledged request."""
    dsn = stack.activity_dsn
    last: dict[str, int] = {}

    def settled() -> bool:
        nonlocal last
        last = leftovers(dsn)
        return last == {"prepared": 0, "staging": 0, "unpublished": 0}

    try:
        wait_until(settled, 90, "imports settled and outbox published", pause=0.5)
    except AssertionError as error:
        raise AssertionError(
            f"{error}: {last}; activity-svc's log:\n{stack.child('activity-svc').run.log_tail(40)}"
        ) from None

    expected = {
        str(o.body["id"])
        for o in [*load.batches, *load.imports, *load.retries]
        if o.acknowledged and isinstance(o.body, dict)
    }

    def received() -> bool:
        return expected <= load.consumer.batches()

    wait_until(received, 60, "events received by the consumer", pause=0.2)
    time.sleep(4.0)  # past the consumer's ack_wait: a redelivery would show now


@dataclass
class Tally:
    """The figures of one crash test, from what the client saw and the database holds."""

    name: str
    sent: int = 0
    acknowledged: int = 0
    refused: Counter[int] = field(default_factory=Counter)
    unanswered: int = 0
    found: int = 0
    absent: int = 0
    partial: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    duplicates: int = 0
    events_missing: list[str] = field(default_factory=list)
    events_extra: list[str] = field(default_factory=list)
    redeliveries: int = 0
    hung: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, name: str, stack: LiveStack, load: Load) -> Tally:
        found = records_per_source(stack.activity_dsn, load.prefix)
        tally = cls(name)
        retried = frozenset(
            str(o.body["id"]) for o in load.retries if isinstance(o.body, dict) and "id" in o.body
        )
        for outcome in [*load.batches, *load.imports]:
            tally.sent += 1
            if outcome.acknowledged:
                tally.acknowledged += 1
            elif outcome.answered:
                assert outcome.status is not None
                tally.refused[outcome.status] += 1
            else:
                tally.unanswered += 1
                if outcome.elapsed > 10.0:  # not a connection refused or reset: a hang
                    tally.hung.append(outcome.describe())
            rows, distinct = found.get(outcome.source, (0, 0))
            tally.duplicates += rows - distinct
            if outcome.source in load.before_retry:
                # Sent again after the crash: what the first attempt left is what counts.
                distinct = load.before_retry[outcome.source]
            if distinct == outcome.size:
                tally.found += 1
            elif distinct == 0:
                tally.absent += 1
                if outcome.acknowledged:
                    tally.lost.append(outcome.describe())
            else:
                tally.partial.append(f"{outcome.describe()}: {distinct} of {outcome.size}")
            events = load.consumer.events_of(outcome.source, retried)
            batches = {e.data.get("batch") for e in events}
            tally.duplicates += max(0, len(batches) - 1)  # the same records ingested twice
            if distinct and not events:
                tally.events_missing.append(outcome.describe())
            if not distinct and events:
                tally.events_extra.append(outcome.describe())
            if outcome.acknowledged and isinstance(outcome.body, dict):
                if outcome.body.get("accepted") != outcome.size:
                    tally.partial.append(f"{outcome.describe()}: report {outcome.body}")
                if batches and batches != {outcome.body.get("id")}:
                    tally.events_extra.append(f"{outcome.describe()}: events of {batches}")
        for retry in load.retries:
            rows, distinct = found.get(retry.source, (0, 0))
            tally.duplicates += rows - distinct
            if not retry.acknowledged or distinct != retry.size:
                tally.partial.append(f"retried {retry.describe()}: {distinct} of {retry.size}")
            elif retry.body.get("id") not in load.consumer.batches():
                tally.events_missing.append(f"retried {retry.describe()}")
        tally.redeliveries = load.consumer.redeliveries
        return tally

    def line(self) -> str:
        refused = ",".join(f"{status}x{n}" for status, n in sorted(self.refused.items()))
        figures = [
            f"sent={self.sent}",
            f"acknowledged={self.acknowledged}",
            f"refused={refused or 0}",
            f"unanswered={self.unanswered}",
            f"found={self.found}",
            f"absent={self.absent}",
            f"partial={len(self.partial)}",
            f"lost={len(self.lost)}",
            f"duplicates={self.duplicates}",
            f"events_missing={len(self.events_missing)}",
            f"events_extra={len(self.events_extra)}",
            f"redeliveries={self.redeliveries}",
            f"hung={len(self.hung)}",
            *(f"{key}={value}" for key, value in self.extra.items()),
        ]
        return f"[{self.name}] " + " ".join(figures)

    def check(self) -> None:
        """Fail on any loss or double effect, with every figure in the message."""
        problems = {
            "acknowledged but not found": self.lost,
            "partly written": self.partial,
            "records or events duplicated": ["x"] * self.duplicates,
            "written without its event": self.events_missing,
            "event without its records": self.events_extra,
            "no answer within the client's timeout": self.hung,
        }
        found = {what: items[:5] for what, items in problems.items() if items}
        assert not found, f"{self.line()}\n{found}"
        assert self.found + self.absent == self.sent, self.line()
        assert self.acknowledged <= self.found, self.line()


def report(tally: Tally, record_property: Callable[[str, object], None]) -> None:
    """Print the figures (seen with ``-s``, and in the JUnit XML as properties)."""
    print(tally.line(), flush=True)
    record_property("crash_figures", tally.line())


def unique_prefix(name: str) -> str:
    return f"rel-{name}-{uuid.uuid4().hex[:6]}"


class Freeze:
    """Stops the imports of the import establishment's unit at a chosen point, as a slow
    database would: a transaction of the test holds rows (or a lock) that the import needs
    next. Runs on the load's event loop; every call blocks the test's thread until done.

    - :meth:`hold_rows`: the unit's monthly rows, ``FOR UPDATE``. An import merges and
      prepares its parts, then its own transaction waits to add their contributions to
      those rows: it has decided nothing yet.
    - :meth:`hold_import`: the import's advisory lock, queued behind its transaction. Once
      the rows are released the import commits its report (the decision), then waits for
      that lock before it commits its prepared parts.
    """

    def __init__(self, stack: LiveStack, load: Load) -> None:
        self.stack = stack
        self.load = load
        self._rows: asyncpg.Connection | None = None
        self._import: asyncpg.Connection | None = None

    def hold_rows(self) -> None:
        async def hold() -> None:
            self._rows = await asyncpg.connect(self.stack.activity_dsn, timeout=10)
            await self._rows.execute("BEGIN")
            held = await self._rows.fetch(
                "SELECT 1 FROM unit_month WHERE unit = $1 FOR UPDATE", UNIT_OF[IMPORTS.finess]
            )
            assert held, "the seed records made no monthly rows to hold"

        self.load.call(hold()).result(30)

    def release_rows(self) -> None:
        self.load.call(self._close("_rows")).result(30)

    def hold_import(self, import_id: str) -> None:
        async def hold() -> None:
            self._import = await asyncpg.connect(self.stack.activity_dsn, timeout=10)
            pid = self._import.get_server_pid()
            self._waiting = asyncio.ensure_future(
                self._import.execute(
                    f"SELECT pg_advisory_lock(hashtextextended('activity-import:{import_id}', 0))"
                )
            )
            # Cut short when the server is killed under it: nothing to report then.
            self._waiting.add_done_callback(lambda f: f.cancelled() or f.exception())
            async with _connected(self.stack.activity_dsn) as probe:
                for _ in range(500):
                    if await probe.fetchval(
                        "SELECT count(*) FROM pg_locks WHERE pid = $1 AND locktype = 'advisory'"
                        " AND NOT granted",
                        pid,
                    ):
                        return
                    await asyncio.sleep(0.02)
            raise AssertionError("the test's request for the import's lock is not queued")

        self.load.call(hold()).result(30)

    def import_held(self) -> bool:
        return bool(getattr(self, "_waiting", None)) and self._waiting.done()

    def release_import(self) -> None:
        self.load.call(self._close("_import")).result(30)

    async def _close(self, which: str) -> None:
        connection = getattr(self, which)
        setattr(self, which, None)
        if connection is None:
            return
        try:
            await connection.close(timeout=5)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            connection.terminate()  # the server died under it


@contextlib.asynccontextmanager
async def _connected(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        yield connection
    finally:
        await connection.close()


def parts_prepared(dsn: str) -> Counter[str]:
    """The prepared parts of each import (by import id)."""
    return Counter(gid.split(":")[1] for gid in prepared_parts(dsn))


def import_status(dsn: str, import_id: str) -> str | None:
    rows = query(dsn, "SELECT status FROM record_import WHERE id = $1::uuid", import_id)
    return str(rows[0]["status"]) if rows else None


PARTS = 2
"""ACTIVITY_IMPORT_PARTS, as make run leaves it."""


def frozen_import(
    stack: LiveStack, load: Load, freeze: Freeze, source: str
) -> tuple[concurrent.futures.Future[Outcome], str]:
    """Send a large import while :meth:`Freeze.hold_rows` holds: return it once its parts
    are all prepared and its own transaction waits (with its import id)."""
    freeze.hold_rows()
    sent = load.send_import(source, import_file(source))
    found: list[str] = []

    def prepared() -> bool:
        assert not sent.done(), f"the import ended while frozen: {sent.result().describe()}"
        found[:] = [i for i, n in parts_prepared(stack.activity_dsn).items() if n == PARTS]
        return bool(found)

    try:
        wait_until(prepared, 120, "the import's parts prepared", pause=0.05)
    except BaseException:
        freeze.release_rows()
        raise
    return sent, found[0]


def kill_before_decision(stack: LiveStack, load: Load, target: str, source: str) -> Outcome:
    """SIGKILL ``target`` once a large import's parts are prepared and its transaction has
    decided nothing yet: the parts must be rolled back, the import wholly absent."""
    freeze = Freeze(stack, load)
    sent, _ = frozen_import(stack, load, freeze, source)
    try:
        stack.kill(target)
    finally:
        freeze.release_rows()
    return sent.result(120)


def kill_after_decision(stack: LiveStack, load: Load, target: str, source: str) -> Outcome:
    """SIGKILL ``target`` once a large import's report is committed but its prepared parts
    are not yet: the parts must be committed by recovery, the import wholly there."""
    freeze = Freeze(stack, load)
    sent, import_id = frozen_import(stack, load, freeze, source)
    try:
        try:
            freeze.hold_import(import_id)
        finally:
            freeze.release_rows()  # the import commits its report, then waits for its lock
        wait_until(
            lambda: freeze.import_held() and bool(import_status(stack.activity_dsn, import_id)),
            60,
            "the import's report committed",
        )
        assert parts_prepared(stack.activity_dsn)[import_id] == PARTS
        stack.kill(target)
    finally:
        freeze.release_import()
    return sent.result(120)
