"""kill -9 of each process of the stack, under load, on the stack as ``make run`` starts it.

Real processes on real ports (``deploy/local/run.py``'s own functions start them):
PostgreSQL, NATS, activity-svc and the gateway. A client sends ``POST
/api/activity/records`` batches through the gateway without pause, each under a source of
its own, and a large ``POST /api/activity/imports`` (60 000 rows: merged in two parts
prepared, then committed) is in flight when a process is killed. Nothing is retried by
the client except where a test says so.

To kill at a precise point of the two-phase merge (milliseconds wide on its own), a
transaction of the test holds what the import needs next, as a slow database would
(``crashkit.Freeze``): either the unit's monthly rows (the parts are prepared, the
import's transaction has decided nothing) or the import's lock (its report is committed,
its parts are still prepared).

After the restart, each test counts, from the client's side and from activity-svc's
database (direct SQL, by source):

- every request that got a 2xx is there exactly once (all its records, each once, and
  its report's ``accepted``);
- every request that got no 2xx (no answer, or an error) is wholly there or wholly absent;
- the monthly measures of the test's units equal the records counted there (nothing merged
  without its contribution, nothing counted twice);
- no import part is left prepared (``pg_prepared_xacts``), no staging table, no event
  unpublished in the outbox;
- neither activity-svc nor the gateway logged an unhandled error (a 500);
- events: "delivered once" means that an idempotent consumer (a durable JetStream
  consumer of ``ght.activity.batch.ingested``, with an inbox of the event ids it
  processed) processes exactly one event for each request whose records are there, and
  none for a request whose records are absent. A message delivered again with an event id
  already processed (an ack lost in the crash, a publish repeated) is a *redelivery*:
  counted and printed, absorbed by the inbox, not a failure. Two different events for the
  same request would be a double effect: a failure (counted in ``duplicates``).

Each test prints its figures (``sent=… acknowledged=… found=… duplicates=…``), records
them as a JUnit property, and puts them in every assertion message.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from crashkit import (
    IMPORT_ROWS,
    Freeze,
    LiveStack,
    Load,
    Outcome,
    Tally,
    build_territory,
    frozen_import,
    import_file,
    kill_after_decision,
    kill_before_decision,
    leftovers,
    measure_mismatches,
    parts_prepared,
    records_per_source,
    report,
    settle,
    unique_prefix,
    wait_until,
)

FAST_S = 5.0
"""An answer during an outage comes within this, or it is a hang."""


@pytest.fixture(scope="module")
def live(request: pytest.FixtureRequest) -> Iterator[LiveStack]:
    # Not under pytest's basetemp: a pytest session starting meanwhile (another worktree's,
    # on a shared machine) takes back the o+x on /tmp/pytest-of-<user> that PostgreSQL,
    # run as its own user, needs to start again on its data after the kill.
    root = Path(tempfile.mkdtemp(prefix="ght-crash-"))
    stack = LiveStack(root / "data")
    failed = request.session.testsfailed
    try:
        stack.start()
        build_territory(stack.gateway_url)
        yield stack
    finally:
        stack.stop()
        if request.session.testsfailed == failed:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"crash tests failed: their servers' logs are kept in {root}/data/logs")


@pytest.fixture
def load(live: LiveStack, request: pytest.FixtureRequest) -> Iterator[Load]:
    live.ensure_running()
    started = Load(live, unique_prefix(request.node.name.split("_")[1])).start()
    started.logs_from = {name: live.log_size(name) for name in ("activity-svc", "gateway")}
    try:
        wait_until(lambda: started.acknowledged_since(0) >= 10, 60, "the load under way")
        yield started
    finally:
        started.close()


def _acknowledged_again(load: Load, since: float, count: int = 15) -> None:
    wait_until(lambda: load.acknowledged_since(since) >= count, 60, "batches acknowledged again")


def _settled_then_retried(live: LiveStack, load: Load, source: str) -> Outcome:
    """Once recovery has settled the parts the crash left, what the interrupted import left
    is noted, and the client sends its file again (as it would, having had no answer)."""
    wait_until(
        lambda: leftovers(live.activity_dsn)["prepared"] == 0, 90, "parts settled", pause=0.5
    )
    load.before_retry[source] = records_per_source(live.activity_dsn, source).get(source, (0, 0))[1]
    retried = load.send_import(source, import_file(source), retry=True).result(120)
    assert retried.status == 201, retried.describe()
    return retried


def _finish(name: str, live: LiveStack, load: Load, record_property, **extra: object) -> Tally:
    load.stop_sending()
    settle(live, load)
    tally = Tally.of(name, live, load)
    tally.extra.update(extra)
    report(tally, record_property)
    mismatches = measure_mismatches(live.activity_dsn)
    assert not mismatches, f"{tally.line()}\nmeasures that are not their records: {mismatches}"
    tally.check()
    for component, since in load.logs_from.items():
        errors = live.server_errors(component, since)
        assert not errors, f"{tally.line()}\n{component} answered with a 500: {errors[:3]}"
    return tally


def _between(outcomes: list[Outcome], start: float, end: float) -> list[Outcome]:
    return [o for o in outcomes if start <= o.started < end]


def test_activity_svc_killed_mid_import_and_batches(live, load, record_property):
    """activity-svc SIGKILLed twice with batches in flight: once with an import's parts
    prepared and nothing decided (they are rolled back: the import is absent), once with
    its report committed and its parts still prepared (recovery commits them: the import
    is wholly there, with its one event). Each time the client then sends its file again:
    the records are there once, the monthly figures count them once."""
    figures: dict[str, object] = {}
    for when, kill in (("undecided", kill_before_decision), ("decided", kill_after_decision)):
        source = f"{load.prefix}-{when}"
        killed = kill(live, load, "activity-svc", source)
        figures[f"{when}_answer"] = killed.status or "none"
        figures[f"{when}_prepared_after_kill"] = sum(parts_prepared(live.activity_dsn).values())
        time.sleep(1.0)  # the gateway answers for the dead service meanwhile
        figures[f"{when}_restart_s"] = round(live.restart("activity-svc"), 1)
        _acknowledged_again(load, time.monotonic())
        _settled_then_retried(live, load, source)
        figures[f"{when}_before_retry"] = load.before_retry[source]

    tally = _finish("activity-svc kill -9", live, load, record_property, **figures)
    assert figures["undecided_before_retry"] == 0, tally.line()
    assert figures["decided_before_retry"] == IMPORT_ROWS, tally.line()
    assert figures["undecided_prepared_after_kill"] == 2, tally.line()
    assert figures["decided_prepared_after_kill"] == 2, tally.line()
    # The dead service's requests: the gateway's 502/503/504, never a 4xx or a 500.
    assert set(tally.refused) <= {502, 503, 504}, tally.line()


def test_postgres_killed_mid_import_and_batches(live, load, record_property):
    """PostgreSQL SIGKILLed with an import's parts prepared (they survive the crash: the
    service settles them once the server is back) and batches in flight."""
    source = f"{load.prefix}-imp"
    killed = kill_before_decision(live, load, "postgres", source)
    down = time.monotonic()
    time.sleep(3.0)  # the outage, under load
    restarting = time.monotonic()
    restart_s = live.restart("postgres")
    # The parts prepared before the crash survive it (unless the service, quicker than
    # this look, has already rolled them back).
    prepared = sum(parts_prepared(live.activity_dsn).values())
    _acknowledged_again(load, time.monotonic())
    _settled_then_retried(live, load, source)

    # Sent while the server was down (the first half second aside: requests already in
    # flight when it died): each must have had a fast 503, none a hang or another error.
    during = _between(load.batches, down + 0.5, restarting)
    answers = Counter(o.status for o in during if o.status is not None)
    hung = [o.describe() for o in during if o.status is None or o.elapsed > FAST_S]
    tally = _finish(
        "PostgreSQL kill -9",
        live,
        load,
        record_property,
        import_answer=killed.status or "none",
        prepared_after_restart=prepared,
        import_before_retry=load.before_retry[source],
        outage_requests=len(during),
        outage_answers=dict(answers),
        outage_slowest_s=round(max((o.elapsed for o in during), default=0), 2),
        restart_s=round(restart_s, 1),
    )
    assert during, tally.line()
    assert set(answers) == {503}, f"{tally.line()}: during the outage {dict(answers)}"
    assert not hung, f"{tally.line()}: slow or unanswered during the outage {hung[:5]}"
    assert killed.status == 503, tally.line()
    assert load.before_retry[source] == 0, tally.line()
    assert set(tally.refused) <= {503}, tally.line()


def test_nats_killed_mid_import_and_batches(live, load, record_property):
    """NATS SIGKILLed with an import's parts prepared and batches in flight: every write
    still gets its 2xx (the outbox holds the events, the import commits during the outage),
    and every event is delivered once after the restart."""
    freeze = Freeze(live, load)
    imported, _ = frozen_import(live, load, freeze, f"{load.prefix}-imp")
    try:
        live.kill("nats")
    finally:
        freeze.release_rows()  # the import commits during the outage
    down = time.monotonic()
    time.sleep(3.0)  # the outage, under load
    held = leftovers(live.activity_dsn)["unpublished"]
    restarting = time.monotonic()
    restart_s = live.restart("nats")
    _acknowledged_again(load, time.monotonic())

    during = _between(load.batches, down, restarting)
    tally = _finish(
        "NATS kill -9",
        live,
        load,
        record_property,
        import_answer=imported.result(1).status or "none",
        outage_requests=len(during),
        outbox_held=held,
        restart_s=round(restart_s, 1),
    )
    assert imported.result(1).acknowledged, tally.line()
    assert during and held > 0, tally.line()
    assert not tally.refused and not tally.unanswered, f"{tally.line()}: a write failed"


def test_gateway_killed_mid_upload_and_batches(live, load, record_property):
    """The gateway SIGKILLed while a file is being uploaded through it and batches are in
    flight: clients get connection errors, never an answer that is wrong; once it is back
    they go on with the same token. The truncated upload is not imported."""
    source = f"{load.prefix}-imp"
    uploading = load.send_import(source, import_file(source), chunk_pause_s=0.05)
    time.sleep(1.0)  # a third of the file sent
    live.kill("gateway")
    down = time.monotonic()
    time.sleep(1.0)
    restarting = time.monotonic()
    restart_s = live.restart("gateway")
    _acknowledged_again(load, time.monotonic())

    during = _between(load.batches, down, restarting)
    upload = uploading.result(1)
    tally = _finish(
        "gateway kill -9",
        live,
        load,
        record_property,
        outage_requests=len(during),
        upload=upload.status or upload.error,
        restart_s=round(restart_s, 1),
    )
    assert not upload.answered, tally.line()
    assert records_per_source(live.activity_dsn, source) == {}, tally.line()
    assert during and all(not o.answered for o in during), tally.line()
    assert not tally.refused, f"{tally.line()}: an answer other than a 2xx"
