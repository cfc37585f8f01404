"""`make run` as a person runs it: real processes on real ports, stopped with Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import httpx
import nats
import pytest

from ght_shared.devservers import free_port, port_in_use

ROOT = Path(__file__).parents[2]
RUNNER = ROOT / "deploy/local/run.py"
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
COMPONENTS = ("GATEWAY", "CONTRACTS", "ACTIVITY", "BEDS", "STAFFING")
_STREAMS = ("CONTRACTS", "ACTIVITY", "BEDS", "STAFFING")

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]


def _environment(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GHT_")}
    env["GHT_DATA_DIR"] = str(data_dir)
    env["GHT_PG_PORT"] = str(free_port())
    env["GHT_NATS_PORT"] = str(free_port())
    for name in COMPONENTS:
        env[f"GHT_PORT_{name}"] = str(free_port())
    env["GATEWAY_METRICS_PORT"] = str(free_port())
    return env


def _ports(env: dict[str, str]) -> list[int]:
    return [int(v) for k, v in env.items() if k.startswith("GHT_") and k.endswith("PORT")] + [
        int(env[f"GHT_PORT_{name}"]) for name in COMPONENTS
    ]


def _wait_for_line(process: subprocess.Popen[str], text: str, timeout: float) -> str:
    seen = []
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            if process.poll() is not None:
                break
            continue
        seen.append(line)
        if text in line:
            return "".join(seen)
    raise AssertionError(f"{text!r} not printed; output so far:\n{''.join(seen)}")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    env = _environment(tmp_path / "data")
    process = subprocess.Popen(
        [sys.executable, str(RUNNER)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield process, env
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


async def _cadre_reads_a_pole_dashboard(client: httpx.AsyncClient) -> None:
    """The demo territory is loaded: a cadre de gestion reads its pôle's year over year."""
    issued = await client.post(
        "/auth/token",
        data={"grant_type": "password", "username": "cadre.chu", "password": "demo"},
    )
    assert issued.status_code == 200, issued.text
    cadre = {"Authorization": f"Bearer {issued.json()['access_token']}"}
    last_month = (date.today().replace(day=1) - timedelta(days=1)).strftime("%Y-%m")
    dashboard = await client.get(
        "/api/activity/dashboards/CHU-IMG", params={"period": last_month}, headers=cadre
    )
    assert dashboard.status_code == 200, dashboard.text
    figures = {f["indicator"]: f for f in dashboard.json()["org_unit"]["figures"]}
    exams = figures["imaging_exams"]
    assert exams["value"] > 0 and exams["same_period_last_year"] > 0
    assert exams["year_to_date_variation"] is not None
    assert dashboard.json()["children"], "the pôle's departments are listed"


async def _establishment_imports_a_file_and_sees_its_figures_change(
    client: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    """The CHU's system imports a CSV file of today's imaging exams, saying its data is
    complete up to today; this month's figure (partial) moves by as many."""
    month = date.today().strftime("%Y-%m")
    params = {"org_unit": "420784878", "from": month, "to": month}

    async def exams() -> float:
        values = await client.get(
            "/api/activity/indicators/imaging_exams/values", params=params, headers=bearer
        )
        assert values.status_code == 200, values.text
        return float(values.json()["values"][-1]["value"] or 0)

    before = await exams()  # the demo's records, up to yesterday
    today = date.today().isoformat()
    rows = [f"imaging_exam,ris-e2e,E2E-{i},420784878,1101,{today},ZBQK002,69.00" for i in range(7)]
    body = "kind,source,source_id,finess,unit,date,code,amount\n" + "\n".join(rows) + "\n"
    imported = await client.post(
        "/api/activity/imports",
        content=body.encode(),
        headers={**bearer, "content-type": "text/csv"},
        params={"filename": "e2e.csv", "complete_up_to": today},
    )
    assert imported.status_code == 201, imported.text
    assert imported.json()["accepted"] == 7
    assert await exams() == before + 7


FUZZ_CONFIG = Path(__file__).with_name("schemathesis.toml")
FUZZ_SEED = "20261202"
FUZZ_ROLES = {  # login: (grant, time budget in seconds): the platform's admin, an
    # establishment's system, a cadre de gestion of a pôle.
    "admin": ("password", 75),
    "si-chu": ("client_credentials", 60),
    "cadre.chu": ("password", 45),
}
# Logging out would end the run's own token; a key rotation is tested on its own.
FUZZ_EXCLUDED = ("/auth/logout", "/admin/keys/rotate")


async def _token(client: httpx.AsyncClient, login: str, grant: str) -> str:
    if grant == "password":
        form = {"grant_type": grant, "username": login, "password": "demo"}
    else:
        form = {"grant_type": grant, "client_id": login, "client_secret": "demo"}
    issued = await client.post("/auth/token", data=form)
    assert issued.status_code == 200, issued.text
    return str(issued.json()["access_token"])


async def _give_the_fuzzing_accounts_of_its_own(client: httpx.AsyncClient) -> None:
    """The accounts the admin's run changes (schemathesis.toml names them), so that it
    never disables its own token or another role's."""
    admin = {"Authorization": f"Bearer {await _token(client, 'admin', 'password')}"}
    user = await client.post(
        "/admin/users",
        headers=admin,
        json={
            "username": "fuzz.target",
            "display_name": "Compte de test du fuzzing",
            "password": "a-long-enough-password",
            "roles": ["pole_manager"],
            "establishments": ["420784878"],
            "pole": "IMG",
        },
    )
    assert user.status_code == 201, user.text
    machine = await client.post(
        "/admin/clients",
        headers=admin,
        json={"client_id": "fuzz-client", "name": "Fuzzing", "establishment": "420784878"},
    )
    assert machine.status_code == 201, machine.text


async def _fuzz_through_the_gateway(gateway: str, login: str, token: str, budget_s: int) -> None:
    """Schemathesis on the merged OpenAPI document, every phase (examples, coverage,
    fuzzing, stateful: what a POST creates is read, changed and deleted) and every check
    (no 5xx, answers conform to the documented statuses, types and schemas, invalid
    input refused, auth never ignored), with the client-like values of schemathesis.toml."""
    excluded = [arg for path in FUZZ_EXCLUDED for arg in ("--exclude-path", path)]
    fuzz = await asyncio.to_thread(
        subprocess.run,
        [
            str(SCHEMATHESIS),
            *("--config-file", str(FUZZ_CONFIG), "run", f"{gateway}/openapi.json"),
            *("--header", f"Authorization: Bearer {token}"),
            *("--max-time", str(budget_s), "--seed", FUZZ_SEED, *excluded),
        ],
        capture_output=True,
        text=True,
        timeout=budget_s + 180,
    )
    assert fuzz.returncode == 0, f"as {login}:\n{fuzz.stdout[-20000:]}\n{fuzz.stderr[-5000:]}"


# Start, the demo flows, three fuzzing runs of 45-75 s each (and their stateful phase, which
# the budget does not cover), stop and start again: beyond the suite's 300 s per test.
@pytest.mark.timeout(1200)
async def test_make_run_brings_every_component_to_ready_and_ctrl_c_stops_them_all(stack):
    process, env = stack
    summary = _wait_for_line(process, "Ctrl-C to stop", timeout=300)  # demo data: 1-3 min
    for name in ("gateway", "contracts-svc", "activity-svc", "beds-svc", "staffing-svc"):
        assert name in summary

    async with httpx.AsyncClient(timeout=5) as client:
        for name in COMPONENTS:
            base = f"http://127.0.0.1:{env[f'GHT_PORT_{name}']}"
            ready = await client.get(f"{base}/health/ready")
            assert ready.status_code == 200, (name, ready.text)
            assert ready.json()["checks"] == {"database": "ok", "nats": "ok"}
            metrics = f"{base}/metrics"
            if name == "GATEWAY":  # the public door: metrics on a port of their own
                assert (await client.get(metrics)).status_code == 404
                metrics = f"http://127.0.0.1:{env['GATEWAY_METRICS_PORT']}/metrics"
            assert (await client.get(metrics)).status_code == 200

    # The demo identities exist: a machine client gets a token and reaches every service
    # through the gateway.
    for login in ("admin", "si-chu", "lits.chu"):
        assert login in summary
    gateway = f"http://127.0.0.1:{env['GHT_PORT_GATEWAY']}"
    async with httpx.AsyncClient(base_url=gateway, timeout=10) as client:
        issued = await client.post(
            "/auth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": "si-chu",
                "client_secret": "demo",
            },
        )
        assert issued.status_code == 200, issued.text
        bearer = {"Authorization": f"Bearer {issued.json()['access_token']}"}
        for service in ("contracts", "activity", "beds", "staffing"):
            ready = await client.get(f"/api/{service}/health/ready", headers=bearer)
            assert ready.status_code == 200, (service, ready.text)
        overview = await client.get("/api/territory/overview", headers=bearer)
        assert overview.status_code == 200
        assert set(overview.json()["parts"]) == {"contracts", "activity", "beds", "staffing"}
        assert overview.json()["parts"]["activity"]["status"] == "ok"
        await _cadre_reads_a_pole_dashboard(client)
        await _establishment_imports_a_file_and_sees_its_figures_change(client, bearer)

    # Property-based fuzzing of the whole platform through its door, as each role.
    async with httpx.AsyncClient(base_url=gateway, timeout=10) as client:
        await _give_the_fuzzing_accounts_of_its_own(client)
        # Every token first: a run's wrong passwords would brake another role's login.
        tokens = {
            login: await _token(client, login, grant) for login, (grant, _) in FUZZ_ROLES.items()
        }
    for login, (_, budget_s) in FUZZ_ROLES.items():
        await _fuzz_through_the_gateway(gateway, login, tokens[login], budget_s)

    # Each service provisioned the JetStream stream it owns on the real NATS.
    nc = await nats.connect(f"nats://127.0.0.1:{env['GHT_NATS_PORT']}")
    try:
        js = nc.jetstream()
        streams = {(await js.stream_info(name)).config.name for name in _STREAMS}
    finally:
        await nc.close()
    assert streams == set(_STREAMS)

    process.send_signal(signal.SIGINT)
    assert process.wait(60) == 0
    for port in _ports(env):
        assert not port_in_use(port), f"port {port} still in use after Ctrl-C"

    # Running it again keeps the data: no database is created the second time.
    again = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(RUNNER), "--check"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "created databases" not in again.stdout
    assert "GHT platform is up" in again.stdout


def test_a_port_already_taken_is_named_in_a_clear_message_not_a_traceback(tmp_path):
    env = _environment(tmp_path / "data")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", int(env["GHT_PORT_BEDS"])))
        taken.listen()
        result = subprocess.run(
            [sys.executable, str(RUNNER), "--check"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "beds-svc" in output
    assert env["GHT_PORT_BEDS"] in output
    assert "Traceback" not in output
