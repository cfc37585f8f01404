"""What the benchmark scripts share: servers, event loops, percentiles, the figures table.

Not a benchmark itself (``run_all.py`` skips ``_*.py``); each script imports it as
``_kit`` (its folder is on ``sys.path`` when it runs, also in spawned child processes).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import uvloop

from ght_shared.devservers import NatsServer, PostgresServer, free_port
from ght_shared.urls import plain_url

T = TypeVar("T")

VENV_BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
STOP_TIMEOUT_S = 10.0
LOG_TAIL_LINES = 20
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


class StackError(Exception):
    """The stack could not start or died: one message, with the log tail that explains it."""


# --------------------------------------------------------------------------------------------
# Services as uvicorn processes
# --------------------------------------------------------------------------------------------


def _die_with_parent() -> Callable[[], None]:
    """A pre-exec hook asking Linux to SIGTERM the child should this process be killed."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return lambda: None

    def hook() -> None:
        prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG

    return hook


@dataclass
class Component:
    """One uvicorn process: started in its own session, its output in a log file."""

    name: str
    port: int
    log_file: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, app: str, env: dict[str, str], cwd: Path) -> None:
        args = [
            str(VENV_BIN / "uvicorn"),
            app,
            "--factory",
            "--host",
            HOST,
            "--port",
            str(self.port),
            # What uvicorn[standard] picks by itself; named so that the conditions hold.
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                args,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us only: we stop it ourselves
                preexec_fn=_die_with_parent(),
            )

    @property
    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """Its last lines, less the per-request lines (our own probes would drown the cause)."""
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no log)"
        kept = [line for line in text.rstrip().splitlines() if '"msg":"request"' not in line]
        return "\n".join(kept[-lines:]) if kept else "(log is empty)"

    def failure(self, what: str) -> StackError:
        return StackError(f"{self.name} {what}; last lines of its log:\n{self.log_tail()}")

    def check_alive(self) -> None:
        if self.exit_code is not None:
            raise self.failure(f"stopped unexpectedly (exit code {self.exit_code})")

    def stop(self) -> None:
        """SIGTERM its process group, SIGKILL after STOP_TIMEOUT_S; idempotent."""
        process, self.process = self.process, None
        if process is None:
            return
        for signum in (signal.SIGTERM, signal.SIGKILL):
            if process.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signum)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(STOP_TIMEOUT_S)
        process.wait()


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
