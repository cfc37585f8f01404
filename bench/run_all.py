"""Run every benchmark script of ``bench/`` in turn (``make bench``).

Each ``bench/*.py`` other than this one runs as a subprocess with this Python, its
output shown as it comes. A missed target is not a failure (the scripts report it
and exit 0); a script that crashes is: the exit code is 1 if any script failed.

Run: ``.venv/bin/python bench/run_all.py [name ...]`` (names without ``.py`` select some).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent


def benchmark_scripts(selected: Sequence[str] = ()) -> list[Path]:
    scripts = sorted(
        path
        for path in BENCH_DIR.glob("*.py")
        if path.name != Path(__file__).name and not path.name.startswith("_")
    )
    if selected:
        scripts = [path for path in scripts if path.stem in selected]
    return scripts


def run_script(script: Path) -> tuple[int, float]:
    """Run one benchmark; return its exit code and how long it took."""
    started = time.monotonic()
    completed = subprocess.run([sys.executable, str(script)], cwd=BENCH_DIR.parent, check=False)
    return completed.returncode, time.monotonic() - started


def main(argv: Sequence[str] | None = None) -> int:
    selected = list(sys.argv[1:] if argv is None else argv)
    scripts = benchmark_scripts(selected)
    if not scripts:
        print(f"no benchmark script matches {selected}", file=sys.stderr)
        return 1
    outcomes: list[tuple[str, int, float]] = []
    for script in scripts:
        print(f"=== {script.name}", flush=True)
        code, seconds = run_script(script)
        outcomes.append((script.name, code, seconds))
        print(flush=True)
    print("=== summary")
    for name, code, seconds in outcomes:
        status = "ran" if code == 0 else f"FAILED (exit code {code})"
        print(f"  {name}: {status} in {seconds:.0f} s")
    return 1 if any(code != 0 for _, code, _ in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
