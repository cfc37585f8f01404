"""activity-svc exports: 1 000 000 drill-down records as CSV, a 12-month dashboard as XLSX.

Figures (the issue's words): CSV export of 1 000 000 drill-down records, ≥ 150 000
rows/s streamed, the service's memory flat (printed); XLSX of a 12-month dashboard
≤ 1 s. The records are 1 000 000 imaging exams of one establishment in one month, loaded
through ``POST /imports``; the export is ``GET /indicators/imaging_exams/records?
org_unit=<establishment>&period=<month>&format=csv``, timed from the request sent to
the last byte read, while the service's resident memory is sampled every 20 ms
(``/proc``). Baseline in the same run: the same records read through the JSON pages
(``limit=1000``, following ``next_cursor``, the first ``--pages``), the way a client
reads them without the export. The dashboard: ``GET /dashboards/<establishment>?
months=12&format=xlsx`` against the same dashboard in JSON.

Run: ``.venv/bin/python bench/activity_exports.py [--records 1000000]``. A missed target
is reported, not an error.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from _kit import Component, Servers, StackError, percentile, print_report, servers, verdict
from activity_dashboard import auth
from activity_ingest import (
    CSV_FIELDS,
    ESTABLISHMENTS,
    REPO_ROOT,
    file_chunks,
    prepare_database,
    service_env,
    signing_material,
    territory,
    unit_keys,
    wait_ready,
)

from activity_svc.months import add_months, first_of_month
from ght_shared.devservers import free_port

TARGET_ROWS_PER_S = 150_000.0
TARGET_XLSX_S = 1.0
DATABASE = "bench_activity_exports"
MEASURED = ESTABLISHMENTS[0]


def write_exams(path: Path, count: int, month: datetime) -> None:
    """``count`` imaging exams of the measured establishment, over its units and the
    month's first 28 days."""
    units = [uf for finess, uf in unit_keys() if finess == MEASURED]
    with path.open("w") as out:
        out.write(",".join(CSV_FIELDS) + "\n")
        for n in range(count):
            day = month.replace(day=1 + n % 28).date()
            out.write(
                f"imaging_exam,ris,E{n:09d},{MEASURED},{units[n % len(units)]},,,,,,{day},"
                f"ZBQK002,,,,,,69.50\n"
            )


def resident_mb(service: Component) -> float:
    if service.process is None:
        return float("nan")
    for line in Path(f"/proc/{service.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def sample_memory(service: Component, peaks: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peaks.append(resident_mb(service))
        await asyncio.sleep(0.02)


async def csv_export(
    client: httpx.AsyncClient, service: Component, params: dict[str, str]
) -> tuple[float, int, int, list[float]]:
    """(seconds, bytes, lines, memory samples) of one CSV export read to its end."""
    samples: list[float] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_memory(service, samples, stop))
    size = lines = 0
    started = time.perf_counter()
    async with client.stream("GET", "/indicators/imaging_exams/records", params=params) as r:
        if r.status_code != 200:
            raise StackError(f"export answered {r.status_code}: {(await r.aread())[:500]!r}")
        async for chunk in r.aiter_bytes():
            size += len(chunk)
            lines += chunk.count(b"\n")
    elapsed = time.perf_counter() - started
    stop.set()
    await sampler
    return elapsed, size, lines, samples


async def json_pages(
    client: httpx.AsyncClient, params: dict[str, str], pages: int
) -> tuple[float, int]:
    """(seconds, records) of reading the first ``pages`` JSON pages of the same drill-down."""
    query = {**params, "limit": "1000"}
    count = 0
    started = time.perf_counter()
    for _ in range(pages):
        response = await client.get("/indicators/imaging_exams/records", params=query)
        if response.status_code != 200:
            raise StackError(f"page answered {response.status_code}: {response.text[:500]}")
        body = response.json()
        count += len(body["items"])
        if body["next_cursor"] is None:
            break
        query["cursor"] = body["next_cursor"]
    return time.perf_counter() - started, count


async def timed(client: httpx.AsyncClient, path: str, params: dict[str, str]) -> float:
    started = time.perf_counter()
    response = await client.get(path, params=params)
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise StackError(f"{path} answered {response.status_code}: {response.text[:300]}")
    return elapsed


async def measure(args: argparse.Namespace, srv: Servers, root: Path) -> None:
    month = add_months(first_of_month(datetime.now(UTC).date()), -1)
    url = await prepare_database(srv, DATABASE, territory())
    private, public = signing_material()
    service = Component("activity-svc", free_port(), root / "activity.log")
    service.start("activity_svc.main:create_app", service_env(url, srv.nats_url, public), REPO_ROOT)
    try:
        async with httpx.AsyncClient(base_url=service.url, timeout=httpx.Timeout(3600.0)) as client:
            await wait_ready(client, service)
            path = root / "exams.csv"
            write_exams(path, args.records, datetime(month.year, month.month, 1, tzinfo=UTC))
            print(f"loading {args.records:,} imaging exams of {month:%Y-%m} ...", flush=True)
            response = await client.post(
                "/imports",
                content=file_chunks(path),
                headers={"content-type": "text/csv", **auth(private)},
                params={"filename": path.name, "complete_up_to": f"{month:%Y-%m}-28"},
            )
            if response.status_code != 201:
                raise StackError(f"import answered {response.status_code}: {response.text[:500]}")
            path.unlink()
            client.headers.update(auth(private))
            params = {"org_unit": MEASURED, "period": f"{month:%Y-%m}"}
            idle_mb = resident_mb(service)
            print("exporting as CSV ...", flush=True)
            runs = [await csv_export(client, service, {**params, "format": "csv"})]
            runs.append(await csv_export(client, service, {**params, "format": "csv"}))
            best = min(runs, key=lambda run: run[0])
            seconds, size, lines, samples = best
            rows = lines - 7  # 4 metadata lines + the indicator's, a blank line, the header
            after_mb = resident_mb(service)
            print("reading the same records through the JSON pages ...", flush=True)
            pages_s, paged = await json_pages(client, params, args.pages)
            print("timing the 12-month dashboard as XLSX ...", flush=True)
            dashboard = {"period": f"{month:%Y-%m}", "months": "12"}
            xlsx = [
                await timed(client, f"/dashboards/{MEASURED}", {**dashboard, "format": "xlsx"})
                for _ in range(args.requests)
            ]
            as_json = [
                await timed(client, f"/dashboards/{MEASURED}", dashboard)
                for _ in range(args.requests)
            ]
    finally:
        service.stop()
    if rows != args.records or paged != min(args.records, args.pages * 1000):
        raise StackError(f"{rows:,} rows exported and {paged:,} paged, not {args.records:,}")
    rate = rows / seconds
    xlsx_p95 = percentile(xlsx, 95)
    print_report(
        "activity-svc exports",
        [
            (
                f"CSV export of {rows:,} drill-down records, streamed (best of 2)",
                f"{rate:,.0f} rows/s ({seconds:.1f} s, {size / 1e6:.0f} MB);"
                f" runs {', '.join(f'{r[2] / r[0]:,.0f}' for r in runs)} rows/s",
                f">= {TARGET_ROWS_PER_S:,.0f} rows/s",
                verdict(rate >= TARGET_ROWS_PER_S),
            ),
            (
                "service resident memory during the export",
                f"idle {idle_mb:.0f} MB, peak {max(samples):.0f} MB,"
                f" after {after_mb:.0f} MB ({len(samples)} samples)",
                "flat",
                verdict(max(samples) - idle_mb < 100),
            ),
            (
                f"baseline: the same records through the JSON pages (limit 1000),"
                f" the first {args.pages}",
                f"{paged / pages_s:,.0f} rows/s ({pages_s:.1f} s)",
                "",
                "",
            ),
            (
                f"12-month dashboard as XLSX, {args.requests} requests",
                f"p50 {percentile(xlsx, 50):.2f} / p95 {xlsx_p95:.2f} s",
                f"p95 <= {TARGET_XLSX_S:.0f} s",
                verdict(xlsx_p95 <= TARGET_XLSX_S),
            ),
            (
                "baseline: the same dashboard as JSON",
                f"p50 {percentile(as_json, 50):.2f} / p95 {percentile(as_json, 95):.2f} s",
                "",
                "",
            ),
        ],
        [
            f"records: {args.records:,} imaging exams of {MEASURED} in {month:%Y-%m}"
            " (one import), drill-down of imaging_exams at the establishment",
            "client: httpx, reading the stream to its end; memory: VmRSS of the service"
            " process every 20 ms",
            "service: 1 uvicorn process (uvloop, httptools); PostgreSQL fsync on",
            f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]},"
            f" load average {os.getloadavg()[0]:.1f} at the end",
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="records exported")
    parser.add_argument("--requests", type=int, default=10, help="XLSX dashboards timed")
    parser.add_argument("--pages", type=int, default=20, help="JSON pages of the baseline")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    parser.add_argument("--nats-url", default=os.environ.get("BENCH_NATS_URL"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-activity-exports-") as tmp:
        root = Path(tmp)
        with servers(root, args.database_url, args.nats_url) as srv:
            asyncio.run(measure(args, srv, root))


if __name__ == "__main__":
    main()
