"""activity-svc ingestion: a 2 000 000-record CSV import end to end, beside a keyed COPY.

Figures (the issue's words):
- import of 2 000 000 records from CSV, from the first byte uploaded to the answer, which
  comes once the records are merged, the monthly measures updated and the import's events
  stored, all committed: target ≥ 100 000 records/s;
- the same, as a share of a ``COPY`` of the same file into a table keyed as
  ``activity_record`` is (typed columns, its primary key and drill-down index, nothing
  checked: what landing the same rows durably costs), measured in the same run on the
  same server: target ≥ 50 %; also printed, without a target, against a raw ``COPY``
  into a bare table (text columns, no index, no constraint), which no durable keyed
  import can approach;
- a second import of as many new records into the table the first one filled, sent as
  soon as the first is answered, while the service's relay publishes the first one's
  events in the same process: the same targets;
- aggregates up to date after a 10 000-record batch (``POST /records``; the answer comes
  after the commit of the records and of their monthly measures): target ≤ 1 s.

The service runs as a uvicorn process (uvloop, httptools) on its own database, with the
relay publishing to NATS (``sync_interval: always``); PostgreSQL has fsync and
synchronous_commit on. The territory: 4 establishments, 240 units; the records span 24
months over every kind (stays, outpatient acts, imaging exams, consultations, expenses,
revenue), as an establishment's monthly export would.

Run: ``.venv/bin/python bench/activity_ingest.py [--records 2000000]``. A missed target is
reported, not an error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import date, timedelta
from pathlib import Path

import asyncpg
import httpx
import jwt
from _kit import Component, Servers, StackError, print_report, servers, verdict
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from activity_svc.models import OrgUnitKind
from activity_svc.referential.org_units import SaveOrgUnit, save_org_unit
from activity_svc.settings import Settings
from ght_shared.auth import TERRITORY, Principal
from ght_shared.db import Database
from ght_shared.devservers import free_port
from ght_shared.migrations import upgrade

TODAY = date.today()
BENCH_ADMINISTRATOR = Principal(sub="bench", roles=("admin",), establishments=(TERRITORY,))
TARGET_RATE = 100_000.0  # records/s, upload → merged aggregates
TARGET_RATIO = 0.5  # end-to-end rate / rate of a COPY of the same file into a keyed table
TARGET_BATCH_S = 1.0  # 10 000-record batch → aggregates up to date

REPO_ROOT = Path(__file__).resolve().parents[1]
ALEMBIC_INI = REPO_ROOT / "services/activity-svc/alembic.ini"
DATABASE = "bench_activity_ingest"
ESTABLISHMENTS = ("420784878", "420000010", "420000028", "420000036")
SINCE = date(2023, 1, 1)
FIRST_MONTH = date(2024, 1, 1)
MONTHS = 24
CSV_FIELDS = (
    "kind", "source", "source_id", "finess", "unit", "admitted_at", "discharged_at", "drg",
    "severity", "mode", "date", "code", "code_system", "coded", "coded_on", "budget_title",
    "account", "amount",
)  # fmt: skip
READY_TIMEOUT_S = 60.0


# --------------------------------------------------------------------------------------------
# The territory and the file
# --------------------------------------------------------------------------------------------


Shape = tuple[int, int, int]
"""An establishment's tree: pôles, departments per pôle, units per department."""

SHAPES: tuple[Shape, ...] = ((5, 3, 4),) * 4


def _uf(shape: Shape, pole: int, department: int, unit: int) -> str:
    _, departments, units = shape
    return str(1000 + (pole * departments + department) * units + unit)


def territory(shapes: Sequence[Shape] = SHAPES, since: date = SINCE) -> list[SaveOrgUnit]:
    """One establishment of ``ESTABLISHMENTS`` per shape (by default 4 x 5 pôles x 3
    departments x 4 units, UF codes 1000-1059 each), every node valid from ``since``."""
    nodes = [SaveOrgUnit("GHT", OrgUnitKind.TERRITORY, "GHT", None, since)]
    for e, (finess, shape) in enumerate(zip(ESTABLISHMENTS, shapes, strict=False)):
        poles, departments, units = shape
        nodes.append(SaveOrgUnit(finess, OrgUnitKind.ESTABLISHMENT, f"E{e}", "GHT", since))
        for p in range(poles):
            pole = f"E{e}-P{p}"
            nodes.append(SaveOrgUnit(pole, OrgUnitKind.POLE, pole, finess, since))
            for d in range(departments):
                department = f"{pole}-D{d}"
                nodes.append(
                    SaveOrgUnit(department, OrgUnitKind.DEPARTMENT, department, pole, since)
                )
                for u in range(units):
                    uf = _uf(shape, p, d, u)
                    nodes.append(
                        SaveOrgUnit(
                            f"E{e}-UF{uf}",
                            OrgUnitKind.UNIT,
                            f"Unit {uf}",
                            department,
                            since,
                            uf=uf,
                            installed_beds=20 + u * 5,
                        )
                    )
    return nodes


def unit_keys(shapes: Sequence[Shape] = SHAPES) -> list[tuple[str, str]]:
    """(FINESS, UF code) of every unit of ``territory(shapes)``, as records name them."""
    return [
        (finess, _uf(shape, p, d, u))
        for finess, shape in zip(ESTABLISHMENTS, shapes, strict=False)
        for p in range(shape[0])
        for d in range(shape[1])
        for u in range(shape[2])
    ]


def record_line(
    rng: random.Random,
    index: int,
    prefix: str,
    day: date,
    units: Sequence[tuple[str, str]] | None = None,
) -> str:
    """One CSV line; its unit drawn from ``units`` (FINESS, UF), else from the default
    territory's, establishment by establishment in turn."""
    if units is None:
        finess = ESTABLISHMENTS[index % 4]
        uf = str(1000 + rng.randrange(60))
    else:
        finess, uf = units[rng.randrange(len(units))]
    roll = rng.random()
    source_id = f"{prefix}{index:09d}"
    if roll < 0.25:
        los = rng.choice((0, 0, 1, 2, 3, 4, 5, 6, 8, 12))
        admitted = day - timedelta(days=los)
        mode = "ambulatory" if los == 0 else "full"
        drg = f"{rng.randrange(1, 28):02d}{rng.choice('CKMM')}{rng.randrange(1, 20):02d}"
        drg += "J" if mode == "ambulatory" else str(rng.randrange(1, 5))
        severity = "" if mode == "ambulatory" else drg[-1]
        return (
            f"stay,pmsi,{source_id},{finess},{uf},{admitted}T09:00:00,{day}T15:00:00,{drg},"
            f"{severity},{mode},,,,,,,,{rng.randrange(500, 9000)}.00"
        )
    if roll < 0.70:
        coded = rng.random() < 0.93
        # Coded within 12 days, never after today (the service refuses a future date).
        coded_on = min(day + timedelta(days=rng.randrange(0, 12)), TODAY) if coded else ""
        return (
            f"outpatient_act,actes,{source_id},{finess},{uf},,,,,,{day},"
            f"YYYY{rng.randrange(100, 999)},CCAM,{'true' if coded else 'false'},{coded_on},,,"
            f"{rng.randrange(20, 200)}.00"
        )
    if roll < 0.85:
        return f"imaging_exam,ris,{source_id},{finess},{uf},,,,,,{day},ZBQK002,,,,,,69.00"
    if roll < 0.95:
        return f"consultation,rdv,{source_id},{finess},{uf},,,,,,{day},CS,,,,,,30.00"
    if roll < 0.98:
        title = rng.choice((1, 1, 1, 2, 3, 4))
        return (
            f"expense,gef,{source_id},{finess},{uf},,,,,,{day},,,,,{title},6{title}11,"
            f"{rng.randrange(100, 50_000)}.00"
        )
    amount = rng.randrange(100, 90_000)
    return f"revenue,gef,{source_id},{finess},{uf},,,,,,{day},,,,,1,7311,{amount}.00"


def write_csv(
    path: Path,
    count: int,
    seed: int = 4,
    *,
    start: int = 0,
    first_month: date = FIRST_MONTH,
    months: int = MONTHS,
    units: Sequence[tuple[str, str]] | None = None,
) -> None:
    """Records ``start`` to ``start + count`` (their source ids), spread evenly over the
    days of ``months`` months from ``first_month``."""
    rng = random.Random(seed)
    days = [first_month + timedelta(days=d) for d in range(months * 365 // 12)]
    with path.open("w", encoding="utf-8") as out:
        out.write(",".join(CSV_FIELDS) + "\n")
        lines = []
        for index in range(start, start + count):
            lines.append(record_line(rng, index, "R", days[index % len(days)], units))
            if len(lines) == 50_000:
                out.write("\n".join(lines) + "\n")
                lines = []
        if lines:
            out.write("\n".join(lines) + "\n")


def batch_records(count: int, batch: int) -> list[dict[str, object]]:
    """A 10 000-record batch as an IT system sends it: this month's outpatient acts."""
    day = date.today().replace(day=1)
    return [
        {
            "kind": "outpatient_act",
            "source": "actes-live",
            "source_id": f"B{batch}-{i}",
            "finess": ESTABLISHMENTS[i % 4],
            "unit": str(1000 + i % 60),
            "date": day.isoformat(),
            "code": "YYYY123",
            "code_system": "CCAM",
            "coded": i % 10 != 0,
            "coded_on": day.isoformat() if i % 10 != 0 else None,
            "amount": 40.0,
        }
        for i in range(count)
    ]


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


async def prepare_database(
    srv: Servers, name: str = DATABASE, nodes: Sequence[SaveOrgUnit] | None = None
) -> str:
    """A fresh, migrated database ``name`` holding the territory ``nodes`` (the default
    one when None); its URL."""
    admin = await asyncpg.connect(srv.database_url("postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = srv.database_url(name)
    await asyncio.to_thread(upgrade, ALEMBIC_INI, url)
    database = Database(Settings(database_url=url))
    try:
        async with database.transaction() as session:
            for node in territory() if nodes is None else nodes:
                await save_org_unit(session, BENCH_ADMINISTRATOR, node)
    finally:
        await database.dispose()
    return url


# The file's columns typed as activity_record stores them.
TYPED = {
    "admitted_at": "timestamptz", "discharged_at": "timestamptz", "severity": "smallint",
    "date": "date", "coded": "boolean", "coded_on": "date", "budget_title": "smallint",
    "amount": "numeric(14, 2)",
}  # fmt: skip


async def copy_seconds(url: str, path: Path, *, keyed: bool) -> float:
    """Seconds to COPY the file into a new table: a bare one (text columns, no index, no
    constraint), or, ``keyed``, one holding it as ``activity_record`` does (typed
    columns, its primary key and its drill-down index) but with nothing checked."""
    conn = await asyncpg.connect(url)
    try:
        if keyed:
            columns = ", ".join(f"{name} {TYPED.get(name, 'text')}" for name in CSV_FIELDS)
            ddl = (
                f"CREATE TABLE bench_copy ({columns}, PRIMARY KEY (source_id, finess, source));"
                " CREATE INDEX ON bench_copy (unit, date)"
            )
        else:
            ddl = f"CREATE TABLE bench_copy ({', '.join(f'{n} text' for n in CSV_FIELDS)})"
        await conn.execute(f"DROP TABLE IF EXISTS bench_copy; {ddl}")
        started = time.perf_counter()
        await conn.copy_to_table(
            "bench_copy", source=path, columns=list(CSV_FIELDS), format="csv", header=True
        )
        elapsed = time.perf_counter() - started
        await conn.execute("DROP TABLE bench_copy")
        return elapsed
    finally:
        await conn.close()


async def file_chunks(path: Path, size: int = 1 << 20) -> AsyncIterator[bytes]:
    with path.open("rb") as source:
        while chunk := source.read(size):
            yield chunk


def signing_material() -> tuple[bytes, str]:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public.decode()


def token(private: bytes) -> str:
    now = int(time.time())
    claims = {
        "iss": "ght-gateway", "aud": "ght-platform", "sub": "bench", "iat": now, "nbf": now,
        "exp": now + 3600, "jti": uuid.uuid4().hex, "roles": ["admin"], "establishments": ["*"],
        "scope": "activity:read activity:write",
    }  # fmt: skip
    return jwt.encode(claims, private, algorithm="EdDSA", headers={"kid": "bench"})


def service_env(url: str, nats_url: str, public_key: str) -> dict[str, str]:
    """activity-svc's environment: this one less any ``ACTIVITY_*``, plus the bench's."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("ACTIVITY_")},
        "ACTIVITY_DATABASE_URL": url,
        "ACTIVITY_NATS_URL": nats_url,
        "ACTIVITY_JWT_PUBLIC_KEY": public_key,
        # INFO: the service logs each import's phases ("import merged"), reported below.
        "ACTIVITY_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "INFO"),
    }


async def wait_ready(client: httpx.AsyncClient, service: Component) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        service.check_alive()
        try:
            if (await client.get("/health/ready")).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.2)
    raise service.failure("was not ready in time")


async def import_file(client: httpx.AsyncClient, path: Path, expected: int) -> float:
    """Seconds from the first byte of ``path`` sent to ``POST /imports`` to its 201."""
    started = time.perf_counter()
    response = await client.post(
        "/imports",
        content=file_chunks(path),
        headers={"content-type": "text/csv"},
        params={"filename": path.name},
    )
    elapsed = time.perf_counter() - started
    if response.status_code != 201:
        raise StackError(f"import answered {response.status_code}: {response.text[:500]}")
    if (accepted := response.json()["accepted"]) != expected:
        raise StackError(f"import accepted {accepted} of {expected} records")
    return elapsed


async def unpublished(url: str, up_to: int | None = None) -> tuple[int, int]:
    """Events stored and not yet published by the service's relay (those up to the id
    ``up_to`` if given), and the last id stored."""
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE published_at IS NULL AND id <= $1),"
            " coalesce(max(id), 0) FROM outbox",
            up_to if up_to is not None else 2**62,
        )
        assert row is not None
        return int(row[0]), int(row[1])
    finally:
        await conn.close()


async def measure(args: argparse.Namespace, srv: Servers, root: Path) -> None:
    print(f"generating 2 x {args.records:,} records as CSV ...", flush=True)
    path, second_path = root / "records.csv", root / "records-2.csv"
    started = time.perf_counter()
    write_csv(path, args.records)
    write_csv(second_path, args.records, seed=5, start=args.records)
    size_mb = path.stat().st_size / 1e6
    print(f"  {size_mb:.0f} MB each in {time.perf_counter() - started:.1f} s", flush=True)
    url = await prepare_database(srv)

    copy_s = await copy_seconds(url, path, keyed=False)
    keyed_s = await copy_seconds(url, path, keyed=True)
    print(f"raw COPY: {copy_s:.1f} s; into a keyed table: {keyed_s:.1f} s", flush=True)

    private, public = signing_material()
    service = Component("activity-svc", free_port(), root / "activity.log")
    service.start("activity_svc.main:create_app", service_env(url, srv.nats_url, public), REPO_ROOT)
    headers = {"Authorization": f"Bearer {token(private)}"}
    try:
        async with httpx.AsyncClient(
            base_url=service.url, headers=headers, timeout=httpx.Timeout(3600.0)
        ) as client:
            await wait_ready(client, service)
            print("importing through POST /imports ...", flush=True)
            import_s = await import_file(client, path, args.records)
            # At once, as the relay starts publishing the first import's events.
            backlog, last_id = await unpublished(url)
            print("importing the second file into the populated table ...", flush=True)
            second_s = await import_file(client, second_path, args.records)
            backlog_after, _ = await unpublished(url, up_to=last_id)

            batch_s = []
            for batch in range(args.batches):
                records = batch_records(args.batch_size, batch)
                started = time.perf_counter()
                response = await client.post("/records", json={"records": records})
                batch_s.append(time.perf_counter() - started)
                if response.status_code != 201:
                    raise StackError(
                        f"batch answered {response.status_code}: {response.text[:500]}"
                    )
            live = await client.get(
                "/indicators/outpatient_acts/values",
                params={"org_unit": "GHT", "from": date.today().strftime("%Y-%m"),
                        "to": date.today().strftime("%Y-%m")},
            )  # fmt: skip
            counted = live.json()["values"][-1]["value"] if live.status_code == 200 else None
    finally:
        service.stop()
    phases = import_phases(service.log_file)

    keyed_rate = args.records / keyed_s
    copy_rate = args.records / copy_s
    rate, second_rate = args.records / import_s, args.records / second_s
    batch_median = statistics.median(batch_s)
    batch_max = max(batch_s)
    rows = [
        ("COPY into a table keyed as activity_record (baseline)", f"{keyed_rate:,.0f} records/s",
         "reference", ""),
        ("raw COPY into a bare text table", f"{copy_rate:,.0f} records/s", "reference", ""),
    ]  # fmt: skip
    for name, measured in (
        (f"CSV import, {args.records:,} records, empty table", rate),
        ("CSV import, as many more, populated table, relay publishing", second_rate),
    ):
        rows += [
            (name, f"{measured:,.0f} records/s", f">= {TARGET_RATE:,.0f} records/s",
             verdict(measured >= TARGET_RATE)),
            ("  import / keyed COPY", f"{measured / keyed_rate:.2f}", f">= {TARGET_RATIO}",
             verdict(measured / keyed_rate >= TARGET_RATIO)),
            ("  import / raw COPY", f"{measured / copy_rate:.2f}", "", ""),
        ]  # fmt: skip
    rows += [
        (
            f"{args.batch_size:,}-record batch -> aggregates (median of {args.batches})",
            f"{batch_median:.2f} s",
            f"<= {TARGET_BATCH_S} s",
            verdict(batch_median <= TARGET_BATCH_S),
        ),
        ("same, slowest batch", f"{batch_max:.2f} s", "", ""),
    ]
    print_report(
        "activity-svc ingestion",
        rows,
        [
            f"files: 2 x {size_mb:.0f} MB CSV, {args.records:,} records each over {MONTHS}"
            " months, 6 kinds, 4 establishments, 240 units",
            f"first import: {import_s:.1f} s end to end ({phases[0]}); keyed COPY:"
            f" {keyed_s:.1f} s; raw COPY: {copy_s:.1f} s",
            f"second import: {second_s:.1f} s ({phases[1]}); the relay had {backlog:,}"
            f" events of the first import to publish when it started, {backlog_after:,}"
            " of them left when it was answered",
            f"outpatient acts of this month in the territory after the batches: {counted}",
            "service: 1 uvicorn process (uvloop, httptools); PostgreSQL fsync on,"
            " synchronous_commit on; NATS sync_interval always",
            f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}",
        ],
    )


def import_phases(log_file: Path) -> list[str]:
    """The phases of each import, from the service's "import merged" log lines."""
    phases = []
    for line in log_file.read_text(errors="replace").splitlines():
        if "import merged" not in line:
            continue
        try:
            entry = json.loads(line[line.index("{") :])
        except ValueError:
            phases.append("phases not logged")
            continue
        phases.append(
            f"staging {entry['stage_ms'] / 1000:.1f} s, merge {entry['merge_ms'] / 1000:.1f} s"
            f" in {entry['parts']} parts, events {entry['publish_ms'] / 1000:.1f} s"
        )
    return phases + ["phases not logged"] * (2 - len(phases))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2_000_000)
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    parser.add_argument("--nats-url", default=os.environ.get("BENCH_NATS_URL"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-activity-") as tmp:
        root = Path(tmp)
        with servers(root, args.database_url, args.nats_url) as srv:
            asyncio.run(measure(args, srv, root))


if __name__ == "__main__":
    main()
