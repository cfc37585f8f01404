"""What the benchmark scripts share: servers, event loops, percentiles, the figures table.

Not a benchmark itself (``run_all.py`` skips ``_*.py``); each script imports it as
``_kit`` (its folder is on ``sys.path`` when it runs, also in spawned child processes).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import uvloop

from ght_shared.devservers import NatsServer, PostgresServer, free_port
from ght_shared.urls import plain_url

T = TypeVar("T")
LoopName = Literal["uvloop", "asyncio"]


def run_loop(loop: LoopName, main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on a new event loop of the kind asked for (uvicorn[standard]: uvloop)."""
    if loop == "uvloop":
        return uvloop.run(main)
    return asyncio.run(main)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


@dataclass(frozen=True)
class Servers:
    postgres_base: str  # postgresql://user@host:port, no database
    nats_url: str
    own: bool  # both started by this run, with the durability settings of `make run`
    own_nats: bool

    def database_url(self, name: str) -> str:
        return f"{self.postgres_base}/{name}"


@contextlib.contextmanager
def servers(root: Path, database_url: str | None, nats_url: str | None) -> Iterator[Servers]:
    """External servers when given, else a throwaway PostgreSQL and NATS under ``root``."""
    pg: PostgresServer | None = None
    ns: NatsServer | None = None
    try:
        if database_url:
            base = plain_url(database_url).rstrip("/").rsplit("/", 1)[0]
        else:
            # fsync and synchronous_commit on, as PostgreSQL's defaults.
            pg = PostgresServer(root / "pg", free_port(), log_file=root / "pg.log")
            pg.start()
            base = plain_url(pg.url("")).rstrip("/")
        if not nats_url:
            # NatsServer writes `jetstream { sync_interval: always }`, as `make run` does.
            ns = NatsServer(root / "nats", free_port(), log_file=root / "nats.log")
            ns.start()
            nats_url = ns.url
        yield Servers(
            base, nats_url, own=pg is not None and ns is not None, own_nats=ns is not None
        )
    finally:
        if ns is not None:
            ns.stop()
        if pg is not None:
            pg.stop()


def verdict(ok: bool) -> str:
    return "ok" if ok else "BELOW TARGET"


def print_table(rows: Sequence[tuple[str, str, str, str]]) -> None:
    """The figures: measured beside target, and whether the target is met."""
    header = ("figure", "measured", "target", "")
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(4)]
    for row in (header, tuple("-" * w for w in widths), *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


def print_report(
    title: str, rows: Sequence[tuple[str, str, str, str]], conditions: Sequence[str]
) -> None:
    """The whole report: title, figures beside their targets, then the conditions."""
    print()
    print(title)
    print()
    print_table(rows)
    print()
    print("Conditions")
    for line in conditions:
        print(f"  {line}")
