"""activity-svc dashboard and analytics: an establishment's pôles, 12 months, on 10 M records.

Figure (the issue's words): dashboard of an establishment (all its pôles, 20 indicators,
12 months, with year-over-year) on 10 000 000 records: target p95 ≤ 200 ms. It is
``GET /dashboards/{establishment}?period=<last month>&months=12``: every main indicator
for the establishment and each of its pôles, month by month, each with the same month
last year, year to date, their variations and the year-end projection; timed over HTTP
from the request sent to the whole answer read.

The records are real records loaded through the service's own ``POST /imports`` (CSV, at
most 2 000 000 records per import), which also maintains the monthly measures the
dashboard reads: 36 months up to last month, every kind, on a territory of 4
establishments; the one measured has 10 pôles and 320 units, the others 5 pôles and 90
units each. The service runs as a uvicorn process (uvloop, httptools) with its relay
publishing to NATS; PostgreSQL has fsync and synchronous_commit on.

Then ``GET /analytics`` over the same establishment's last 12 months against last year's,
with 3 dimensions (pôle, month, severity: the cube; target p95 ≤ 300 ms), and by GHM
root (read from the records, its first page of 1 000 rows), on the same load.

Run: ``.venv/bin/python bench/activity_dashboard.py [--records 10000000]``. A missed
target is reported, not an error.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from _kit import (
    Component,
    Servers,
    StackError,
    percentile,
    print_report,
    servers,
    verdict,
)
from activity_ingest import (
    ESTABLISHMENTS,
    REPO_ROOT,
    Shape,
    file_chunks,
    prepare_database,
    service_env,
    signing_material,
    territory,
    token,
    unit_keys,
    wait_ready,
    write_csv,
)

from activity_svc.months import add_months, first_of_month
from ght_shared.devservers import free_port

TARGET_P95_MS = 200.0
TARGET_ANALYTICS_P95_MS = 300.0

DATABASE = "bench_activity_dashboard"
# Pôles, departments per pôle, units per department; the measured establishment first.
SHAPES: tuple[Shape, ...] = ((10, 4, 8), (5, 3, 6), (5, 3, 6), (5, 3, 6))
MEASURED = ESTABLISHMENTS[0]
MONTHS_OF_DATA = 36
DASHBOARD_MONTHS = 12
DRAIN_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class Load:
    imports: int
    seconds: list[float]  # per import, upload → answer (merged, measures updated, committed)
    generation_s: float  # writing the CSV files, not in the load time
    size_mb: float


@dataclass(frozen=True)
class Series:
    latencies_ms: list[float]
    elapsed_s: float
    service_cpu_s: float

    def summary(self) -> str:
        return (
            f"p50 {percentile(self.latencies_ms, 50):.0f} / "
            f"p95 {percentile(self.latencies_ms, 95):.0f} / "
            f"p99 {percentile(self.latencies_ms, 99):.0f} ms;"
            f" service CPU {self.service_cpu_s * 1000 / len(self.latencies_ms):.0f} ms/request"
        )

    @property
    def p95(self) -> float:
        return percentile(self.latencies_ms, 95)

    @property
    def rate(self) -> float:
        return len(self.latencies_ms) / self.elapsed_s


@dataclass(frozen=True)
class Answer:
    size_bytes: int
    figures: int
    org_units: int
    indicators: int
    with_year_over_year: int  # figures whose variation vs last year is computable


def auth(private: bytes) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(private)}"}


async def load(
    client: httpx.AsyncClient,
    private: bytes,
    root: Path,
    records: int,
    per_import: int,
    first_month: date,
) -> Load:
    """``records`` records in imports of at most ``per_import``, each file written just
    before its upload and removed after it."""
    units = unit_keys(SHAPES)
    count = math.ceil(records / per_import)
    seconds: list[float] = []
    generation_s = 0.0
    size_mb = 0.0
    for number in range(count):
        start = number * per_import
        size = min(per_import, records - start)
        path = root / f"records-{number + 1}.csv"
        started = time.perf_counter()
        write_csv(
            path,
            size,
            seed=number,
            start=start,
            first_month=first_month,
            months=MONTHS_OF_DATA,
            units=units,
        )
        generation_s += time.perf_counter() - started
        size_mb += path.stat().st_size / 1e6
        started = time.perf_counter()
        response = await client.post(
            "/imports",
            content=file_chunks(path),
            headers={"content-type": "text/csv", **auth(private)},
            params={"filename": path.name},
        )
        seconds.append(time.perf_counter() - started)
        path.unlink()
        if response.status_code != 201:
            raise StackError(f"import answered {response.status_code}: {response.text[:500]}")
        if (accepted := response.json()["accepted"]) != size:
            raise StackError(f"import {number + 1} accepted {accepted} of {size} records")
        print(
            f"  import {number + 1}/{count}: {size:,} records in {seconds[-1]:.1f} s"
            f" ({size / seconds[-1]:,.0f} records/s)",
            flush=True,
        )
    return Load(count, seconds, generation_s, size_mb)


async def drain(url: str, service: Component) -> float:
    """Wait until the relay has published the imports' events (one per indicator x org
    unit x month changed), so that it does not share the cores with the measures."""
    started = time.perf_counter()
    conn = await asyncpg.connect(url)
    try:
        while await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"):
            service.check_alive()
            if time.perf_counter() - started > DRAIN_TIMEOUT_S:
                raise service.failure("did not publish its events in time")
            await asyncio.sleep(1.0)
        return time.perf_counter() - started
    finally:
        await conn.close()


async def scalar(url: str, query: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval(query))
    finally:
        await conn.close()


async def settle(url: str) -> dict[str, Any]:
    """What autovacuum does after a load (the merges rewrote every unit_month row at
    each import), then the data's size."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("VACUUM (ANALYZE) unit_month")
        await conn.execute("ANALYZE")
        row = await conn.fetchrow(
            """SELECT (SELECT count(*) FROM activity_record) AS records,
                (SELECT count(*) FROM activity_record WHERE finess = $1) AS measured_records,
                (SELECT count(*) FROM unit_month) AS unit_month_rows,
                (SELECT count(*) FROM org_unit WHERE kind = 'unit') AS units,
                (SELECT count(*) FROM org_unit WHERE kind = 'unit' AND finess = $1)
                    AS measured_units,
                (SELECT count(*) FROM org_unit WHERE kind = 'pole' AND finess = $1)
                    AS measured_poles,
                pg_database_size(current_database()) AS database_bytes,
                current_setting('server_version') AS server_version""",
            MEASURED,
        )
        return dict(row) if row is not None else {}
    finally:
        await conn.close()


def dashboard_answer(response: httpx.Response) -> Answer:
    body = response.json()
    units = [body["org_unit"], *body["children"]]
    figures = [f for unit in units for f in unit["figures"]]
    return Answer(
        size_bytes=len(response.content),
        figures=len(figures),
        org_units=len(units),
        indicators=len(body["indicators"]),
        with_year_over_year=sum(f["variation"] is not None for f in figures),
    )


async def get_dashboard(
    client: httpx.AsyncClient, params: dict[str, str | int], path: str = f"/dashboards/{MEASURED}"
) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = await client.get(path, params=params)
    elapsed_ms = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise StackError(f"{path} answered {response.status_code}: {response.text[:500]}")
    return elapsed_ms, response


def cpu_seconds(service: Component) -> float:
    """User + system CPU time of the service's process so far (Linux ``/proc``)."""
    if service.process is None:
        return float("nan")
    try:
        stat = Path(f"/proc/{service.process.pid}/stat").read_text()
    except OSError:
        return float("nan")
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_times() -> tuple[int, int]:
    """(busy, total) clock ticks of every core since boot (Linux ``/proc/stat``)."""
    try:
        ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return sum(ticks) - idle, sum(ticks)


async def series(
    client: httpx.AsyncClient,
    service: Component,
    params: dict[str, str | int],
    requests: int,
    clients: int,
    path: str = f"/dashboards/{MEASURED}",
) -> Series:
    """``requests`` GETs shared among ``clients`` concurrent sequential clients."""
    latencies: list[float] = []

    async def one_client(count: int) -> None:
        for _ in range(count):
            elapsed_ms, _response = await get_dashboard(client, params, path)
            latencies.append(elapsed_ms)

    shares = [requests // clients + (1 if c < requests % clients else 0) for c in range(clients)]
    cpu_before = cpu_seconds(service)
    started = time.perf_counter()
    await asyncio.gather(*(one_client(share) for share in shares))
    elapsed_s = time.perf_counter() - started
    return Series(latencies, elapsed_s, cpu_seconds(service) - cpu_before)


async def measure(args: argparse.Namespace, srv: Servers, root: Path) -> None:
    last_month = add_months(first_of_month(datetime.now(UTC).date()), -1)
    first_month = add_months(last_month, -(MONTHS_OF_DATA - 1))
    print(f"territory: {len(unit_keys(SHAPES))} units in {len(SHAPES)} establishments", flush=True)
    url = await prepare_database(
        srv, DATABASE, territory(SHAPES, since=date(first_month.year - 1, 1, 1))
    )
    private, public = signing_material()
    service = Component("activity-svc", free_port(), root / "activity.log")
    service.start("activity_svc.main:create_app", service_env(url, srv.nats_url, public), REPO_ROOT)
    try:
        async with httpx.AsyncClient(base_url=service.url, timeout=httpx.Timeout(3600.0)) as client:
            await wait_ready(client, service)
            print(
                f"loading {args.records:,} records ({first_month:%Y-%m} to {last_month:%Y-%m})"
                f" through POST /imports ...",
                flush=True,
            )
            loaded = await load(
                client, private, root, args.records, args.import_records, first_month
            )
            events = await scalar(url, "SELECT count(*) FROM outbox")
            print(f"waiting for the relay to publish {events:,} events ...", flush=True)
            drain_s = await drain(url, service)
            facts = await settle(url)
            if facts["records"] != args.records:
                raise StackError(f"{facts['records']} records stored, not {args.records}")

            client.headers.update(auth(private))
            period = last_month.strftime("%Y-%m")
            year = {"period": period, "months": DASHBOARD_MONTHS}
            month = {"period": period, "months": 1}
            load_average = os.getloadavg()
            busy_before, total_before = machine_times()
            print("measuring GET /dashboards ...", flush=True)
            for _ in range(args.warmup):
                await get_dashboard(client, year)
                await get_dashboard(client, month)
            year_answer = dashboard_answer((await get_dashboard(client, year))[1])
            month_answer = dashboard_answer((await get_dashboard(client, month))[1])
            expected = (1 + facts["measured_poles"]) * DASHBOARD_MONTHS * year_answer.indicators
            if year_answer.figures != expected:
                raise StackError(
                    f"the dashboard holds {year_answer.figures} figures, not {expected}"
                )
            sequential = await series(client, service, year, args.requests, 1)
            print(f"  12-month dashboard, sequential: {sequential.summary()}", flush=True)
            concurrent = await series(client, service, year, args.requests, args.clients)
            print(f"  12-month dashboard, concurrent: {concurrent.summary()}", flush=True)
            single_month = await series(client, service, month, args.requests, 1)
            print(f"  1-month dashboard: {single_month.summary()}", flush=True)
            print("measuring GET /analytics ...", flush=True)
            year_span = f"{add_months(last_month, -11):%Y-%m}..{period}"
            cube = analytics_params(year_span, "org_unit,month,severity")
            records = analytics_params(year_span, "org_unit,month,drg_root")
            for _ in range(args.warmup):
                await get_dashboard(client, cube, "/analytics")
            cube_rows = len((await get_dashboard(client, cube, "/analytics"))[1].json()["rows"])
            by_cube = await series(client, service, cube, args.requests, 1, "/analytics")
            print(f"  analytics from the cube: {by_cube.summary()}", flush=True)
            for _ in range(args.warmup):
                await get_dashboard(client, records, "/analytics")
            record_rows = len(
                (await get_dashboard(client, records, "/analytics"))[1].json()["rows"]
            )
            by_records = await series(
                client, service, records, args.requests // 4 or 1, 1, "/analytics"
            )
            print(f"  analytics by GHM root: {by_records.summary()}", flush=True)
            busy_after, total_after = machine_times()
            busy = (busy_after - busy_before) / max(1, total_after - total_before)
    except StackError:
        print(f"activity-svc's log, last lines:\n{service.log_tail()}", file=sys.stderr)
        raise
    finally:
        service.stop()

    load_s = sum(loaded.seconds)
    print_report(
        "activity-svc dashboard",
        [
            (
                f"establishment dashboard, {DASHBOARD_MONTHS} months,"
                f" {args.requests} sequential requests",
                sequential.summary(),
                f"p95 <= {TARGET_P95_MS:.0f} ms",
                verdict(sequential.p95 <= TARGET_P95_MS),
            ),
            (
                f"same, {args.clients} concurrent clients",
                f"{concurrent.summary()}; {concurrent.rate:.1f} requests/s",
                f"(p95 <= {TARGET_P95_MS:.0f} ms)",
                f"({verdict(concurrent.p95 <= TARGET_P95_MS)})",
            ),
            (
                "establishment dashboard, 1 month, sequential",
                single_month.summary(),
                f"(p95 <= {TARGET_P95_MS:.0f} ms)",
                f"({verdict(single_month.p95 <= TARGET_P95_MS)})",
            ),
            (
                f"analytics, 3 dimensions (org_unit, month, severity) over {MEASURED}'s"
                f" 12 months vs last year, {cube_rows} rows, sequential",
                by_cube.summary(),
                f"p95 <= {TARGET_ANALYTICS_P95_MS:.0f} ms",
                verdict(by_cube.p95 <= TARGET_ANALYTICS_P95_MS),
            ),
            (
                f"analytics by GHM root (org_unit, month, drg_root; read from the records),"
                f" first page of {record_rows} rows",
                by_records.summary(),
                f"(p95 <= {TARGET_ANALYTICS_P95_MS:.0f} ms)",
                f"({verdict(by_records.p95 <= TARGET_ANALYTICS_P95_MS)})",
            ),
            (f"answer, {DASHBOARD_MONTHS} months", describe(year_answer), "", ""),
            ("answer, 1 month", describe(month_answer), "", ""),
        ],
        [
            f"records: {facts['records']:,} over {MONTHS_OF_DATA} months"
            f" ({first_month:%Y-%m} to {last_month:%Y-%m}), 6 kinds;"
            f" unit_month rows: {facts['unit_month_rows']:,};"
            f" database {facts['database_bytes'] / 1e9:.1f} GB",
            f"territory: {len(SHAPES)} establishments, {facts['units']} units; measured"
            f" {MEASURED}: {facts['measured_poles']} pôles, {facts['measured_units']} units,"
            f" {facts['measured_records']:,} records; period {period}, scope as_was",
            f"load: {loaded.imports} CSV imports of <= {args.import_records:,} records"
            f" ({loaded.size_mb:.0f} MB) through POST /imports in {load_s:.0f} s"
            f" ({args.records / load_s:,.0f} records/s; slowest import"
            f" {max(loaded.seconds):.0f} s; writing the files, {loaded.generation_s:.0f} s,"
            f" not included); the relay then took {drain_s:.0f} s more to publish the"
            f" imports' {events:,} events; then VACUUM ANALYZE of unit_month and ANALYZE, as"
            " autovacuum would",
            f"client: httpx, {args.warmup} warm-up requests of each kind, latency from the"
            f" request sent to the answer read (not parsed); one connection per client",
            "service: 1 uvicorn process (uvloop, httptools); PostgreSQL"
            f" {facts['server_version']} fsync on, synchronous_commit on",
            f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]};"
            f" load average {load_average[0]:.1f} when the measures began, cores"
            f" {busy:.0%} busy during them (this run's client, service and PostgreSQL"
            " included)",
        ],
    )


def analytics_params(period: str, dimensions: str) -> dict[str, str | int]:
    return {
        "org_unit": MEASURED,
        "indicators": "stays_full,average_length_of_stay,stay_valuation,severity_34_share",
        "dimensions": dimensions,
        "period": period,
        "limit": 1000,
    }


def describe(answer: Answer) -> str:
    months = answer.figures // (answer.org_units * answer.indicators)
    return (
        f"{answer.size_bytes / 1e3:,.0f} kB, {answer.figures:,} figures ({answer.org_units}"
        f" org units x {months} month{'s' if months > 1 else ''}"
        f" x {answer.indicators} indicators);"
        f" {answer.with_year_over_year:,} with a variation vs last year"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000_000, help="records loaded")
    parser.add_argument(
        "--import-records", type=int, default=2_000_000, help="most records per import"
    )
    parser.add_argument("--requests", type=int, default=200, help="requests per series")
    parser.add_argument("--clients", type=int, default=4, help="clients of the concurrent series")
    parser.add_argument("--warmup", type=int, default=10, help="warm-up requests of each kind")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    parser.add_argument("--nats-url", default=os.environ.get("BENCH_NATS_URL"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-activity-dashboard-") as tmp:
        root = Path(tmp)
        with servers(root, args.database_url, args.nats_url) as srv:
            asyncio.run(measure(args, srv, root))


if __name__ == "__main__":
    main()
