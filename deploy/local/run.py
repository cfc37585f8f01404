"""Run the whole platform on this machine: what ``make run`` does.

Starts a real PostgreSQL and a real NATS server with JetStream (their data kept under
``.data/``, so a second run finds it again), creates and migrates one database per
service, starts the four services and the gateway with uvicorn, waits until every one
answers ``/health/ready``, prints where everything is, then supervises until Ctrl-C.

Usage::

    .venv/bin/python deploy/local/run.py           # run until Ctrl-C or SIGTERM
    .venv/bin/python deploy/local/run.py --check   # start, check ready, stop, exit 0

Environment (all optional):

    GHT_DATABASE_URL   an external PostgreSQL server, e.g. postgresql://user:pw@host:5432;
                       no local PostgreSQL is started, the databases are created there
    GHT_NATS_URL       an external NATS server with JetStream; no local NATS is started
    GHT_PG_PORT        port of the local PostgreSQL (5433)
    GHT_NATS_PORT      port of the local NATS (4222)
    GHT_PORT_<NAME>    port of one component, <NAME> being CONTRACTS, ACTIVITY, BEDS,
                       STAFFING or GATEWAY (8001, 8002, 8003, 8004, 8000)
    GHT_DATA_DIR       where data and logs are kept (<repo>/.data)

Only ``ght_shared`` is imported from the platform: the services run as separate processes,
exactly as they are deployed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import io
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import NoReturn

from ght_gateway import demo
from ght_shared.devservers import NatsServer, PostgresServer, ServerError, port_in_use

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.prefix) / "bin"
HOST = "127.0.0.1"

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
LOG_TAIL_LINES = 20
MIGRATION_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Component:
    """One process of the platform: where its code lives and how it is configured."""

    name: str
    module: str
    env_prefix: str
    default_port: int
    project_dir: str

    @property
    def short_name(self) -> str:
        """``BEDS`` for beds-svc: names its port variable and its upstream at the gateway."""
        return self.env_prefix.rstrip("_")

    @property
    def database(self) -> str:
        """Its database, named after it: ``beds``, ``gateway``..."""
        return self.short_name.lower()

    @property
    def port_variable(self) -> str:
        """The variable overriding its port, e.g. ``GHT_PORT_BEDS``."""
        return f"GHT_PORT_{self.short_name}"


SERVICES = (
    Component("contracts-svc", "contracts_svc", "CONTRACTS_", 8001, "services/contracts-svc"),
    Component("activity-svc", "activity_svc", "ACTIVITY_", 8002, "services/activity-svc"),
    Component("beds-svc", "beds_svc", "BEDS_", 8003, "services/beds-svc"),
    Component("staffing-svc", "staffing_svc", "STAFFING_", 8004, "services/staffing-svc"),
)
GATEWAY = Component("gateway", "ght_gateway", "GATEWAY_", 8000, "gateway")
COMPONENTS = (*SERVICES, GATEWAY)


class RunError(Exception):
    """A failure to report in one message, without a traceback."""


class StopRequested(BaseException):
    """Raised by the SIGINT/SIGTERM handler to unwind into the shutdown sequence."""


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunConfig:
    """Everything the run depends on, read once from the environment."""

    data_dir: Path
    pg_port: int
    nats_port: int
    ports: Mapping[str, int]
    external_database_url: str | None = None
    external_nats_url: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RunConfig:
        """Read the configuration from ``env``; raise RunError on a malformed value."""
        return cls(
            data_dir=Path(env.get("GHT_DATA_DIR") or REPO_ROOT / ".data").absolute(),
            pg_port=_port(env, "GHT_PG_PORT", 5433),
            nats_port=_port(env, "GHT_NATS_PORT", 4222),
            ports={c.name: _port(env, c.port_variable, c.default_port) for c in COMPONENTS},
            external_database_url=env.get("GHT_DATABASE_URL") or None,
            external_nats_url=env.get("GHT_NATS_URL") or None,
        )

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    def log_file(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    def wanted_ports(self) -> list[tuple[str, int]]:
        """The (owner, port) pairs this run will listen on."""
        wanted = []
        if self.external_database_url is None:
            wanted.append(("PostgreSQL", self.pg_port))
        if self.external_nats_url is None:
            wanted.append(("NATS", self.nats_port))
        return wanted + [(component.name, self.ports[component.name]) for component in COMPONENTS]


def _port(env: Mapping[str, str], variable: str, default: int) -> int:
    raw = env.get(variable)
    if not raw:
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise RunError(f"{variable}={raw!r} is not a TCP port number")
    return int(raw)


def check_ports(config: RunConfig) -> None:
    """Raise RunError naming the first component whose port is taken or shared."""
    owners: dict[int, str] = {}
    for owner, port in config.wanted_ports():
        if port in owners:
            raise RunError(f"{owner} and {owners[port]} are both configured on port {port}")
        owners[port] = owner
    for owner, port in config.wanted_ports():
        if not port_in_use(port, HOST):
            continue
        leftover = _leftover_server_pid(config, owner)
        if leftover is not None:
            raise RunError(
                f"port {port} needed by {owner} is taken by the {owner} an earlier run left "
                f"running on {config.data_dir} (pid {leftover}): stop it with kill -INT {leftover}"
            )
        raise RunError(
            f"port {port} needed by {owner} is already in use "
            f"(a previous run still going? set {_port_variable(owner)} to use another port)"
        )


def _leftover_server_pid(config: RunConfig, owner: str) -> int | None:
    """The pid of a server still running on our data after its runner was killed, if any."""
    pid_files = {
        "PostgreSQL": config.data_dir / "postgres" / "postmaster.pid",
        "NATS": config.data_dir / "nats" / "nats-server.pid",
    }
    if owner not in pid_files:
        return None
    try:
        pid = int(pid_files[owner].read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


def _port_variable(owner: str) -> str:
    by_owner = {"PostgreSQL": "GHT_PG_PORT", "NATS": "GHT_NATS_PORT"}
    by_owner.update({component.name: component.port_variable for component in COMPONENTS})
    return by_owner[owner]


# --------------------------------------------------------------------------------------------
# Databases
# --------------------------------------------------------------------------------------------


def _with_database(server_url: str, database: str, scheme: str) -> str:
    """Return ``server_url`` pointing at ``database``, with ``scheme`` as its driver."""
    parts = urllib.parse.urlsplit(server_url)
    return urllib.parse.urlunsplit((scheme, parts.netloc, f"/{database}", parts.query, ""))


def _without_password(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def create_external_databases(server_url: str, names: Iterable[str]) -> list[str]:
    """Create the missing databases on an external server with asyncpg; return those created."""
    import asyncpg  # only needed for an external server

    maintenance_db = urllib.parse.urlsplit(server_url).path.strip("/") or "postgres"
    dsn = _with_database(server_url, maintenance_db, "postgresql")

    async def create() -> list[str]:
        connection = await asyncpg.connect(dsn, timeout=10)
        created = []
        try:
            for name in names:
                exists = await connection.fetchval(
                    "SELECT 1 FROM pg_database WHERE datname = $1", name
                )
                if not exists:
                    await connection.execute(f'CREATE DATABASE "{name}"')
                    created.append(name)
        finally:
            await connection.close()
        return created

    try:
        return asyncio.run(create())
    except (OSError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        raise RunError(f"PostgreSQL at {_without_password(dsn)}: {error}") from error


# --------------------------------------------------------------------------------------------
# Child processes
# --------------------------------------------------------------------------------------------


def _die_with_runner() -> Callable[[], None]:
    """Return a pre-exec hook asking Linux to SIGTERM the child if the runner dies (SIGKILL)."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return lambda: None
    pr_set_pdeathsig = 1

    def hook() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM))

    return hook


@dataclass
class LoggedProcess:
    """A child process of the runner, in its own session, writing to a log file."""

    process: subprocess.Popen[bytes]
    log_file: Path
    log_offset: int

    @classmethod
    def start(
        cls, args: Sequence[str], env: Mapping[str, str], cwd: Path, log_file: Path, title: str
    ) -> LoggedProcess:
        """Start ``args``, appending its output to ``log_file`` after a ``title`` header."""
        log_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {title}\n".encode())
            offset = os.lseek(fd, 0, os.SEEK_END)
            process = subprocess.Popen(
                list(args),
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the runner only: it stops them in order
                preexec_fn=_die_with_runner(),
            )
        finally:
            os.close(fd)
        return cls(process, log_file, offset)

    @property
    def exit_code(self) -> int | None:
        """None while it runs, its exit code (negative: killed by a signal) once it exited."""
        return self.process.poll()

    def signal(self, signum: signal.Signals) -> None:
        """Signal the process's whole group (it leads its own session)."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signum)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines it logged (this run only, not the earlier runs in the same file)."""
        try:
            with self.log_file.open("rb") as log:
                log.seek(self.log_offset)
                text = log.read().decode(errors="replace")
        except OSError:
            return "(no log)"
        kept = text.rstrip().splitlines()[-lines:]
        return "\n".join(kept) if kept else "(log is empty)"

    def describe_failure(self, name: str, what: str) -> str:
        return f"{name} {what}; last lines of {self.log_file}:\n{self.log_tail()}"


@dataclass
class Child:
    """A running component: what it is, its port, its process."""

    component: Component
    port: int
    run: LoggedProcess

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


def _stop_all(processes: Sequence[tuple[str, LoggedProcess]]) -> None:
    """SIGTERM ``processes`` together, wait up to STOP_TIMEOUT_S, then SIGKILL stragglers."""
    for _name, process in processes:
        process.signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for name, process in processes:
        try:
            process.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"  {name} did not stop in {STOP_TIMEOUT_S:.0f} s: killing it")
            process.signal(signal.SIGKILL)
            process.process.wait()


def _is_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health/ready", timeout=2) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


# --------------------------------------------------------------------------------------------
# The stack
# --------------------------------------------------------------------------------------------


@dataclass
class Stack:
    """The servers and processes of one run, started and stopped in dependency order."""

    config: RunConfig
    postgres: PostgresServer | None = None
    nats: NatsServer | None = None
    children: list[Child] = field(default_factory=list)

    # -- infrastructure ------------------------------------------------------------------------

    def start_postgres(self) -> None:
        """Start the local PostgreSQL (unless external) and create the service databases."""
        databases = [component.database for component in COMPONENTS]
        if self.config.external_database_url is not None:
            created = create_external_databases(self.config.external_database_url, databases)
        else:
            self.postgres = PostgresServer(
                self.config.data_dir / "postgres",
                self.config.pg_port,
                HOST,
                log_file=self.config.log_file("postgres"),
            )
            print(f"starting PostgreSQL on {HOST}:{self.config.pg_port} ...")
            self.postgres.start()
            created = [name for name in databases if self.postgres.create_database(name)]
        if created:
            print(f"created databases: {', '.join(created)}")

    def start_nats(self) -> None:
        """Start the local NATS server with JetStream, unless an external one is configured."""
        if self.config.external_nats_url is not None:
            return
        self.nats = NatsServer(
            self.config.data_dir / "nats",
            self.config.nats_port,
            HOST,
            log_file=self.config.log_file("nats"),
        )
        print(f"starting NATS on {HOST}:{self.config.nats_port} ...")
        self.nats.start()

    @property
    def database_server_url(self) -> str:
        if self.config.external_database_url is not None:
            return self.config.external_database_url
        return f"postgresql://postgres@{HOST}:{self.config.pg_port}"

    @property
    def nats_url(self) -> str:
        return self.config.external_nats_url or f"nats://{HOST}:{self.config.nats_port}"

    # -- components ----------------------------------------------------------------------------

    def component_env(self, component: Component) -> dict[str, str]:
        """The environment of one component: its database, NATS, and for the gateway, upstreams."""
        prefix = component.env_prefix
        database_url = _with_database(
            self.database_server_url, component.database, "postgresql+asyncpg"
        )
        env = dict(os.environ)
        env.update(
            {
                f"{prefix}DATABASE_URL": database_url,
                f"{prefix}NATS_URL": self.nats_url,
                f"{prefix}ENVIRONMENT": "local",
                "PYTHONUNBUFFERED": "1",
            }
        )
        gateway_url = f"http://{HOST}:{self.config.ports[GATEWAY.name]}"
        if component is GATEWAY:
            for service in SERVICES:
                env[f"{prefix}UPSTREAMS__{service.short_name}"] = (
                    f"http://{HOST}:{self.config.ports[service.name]}"
                )
            env[f"{prefix}PUBLIC_URL"] = gateway_url
            # make run is the demo: its identities exist (never in production settings).
            env.setdefault(f"{prefix}DEMO", "true")
        else:
            # The services trust only the tokens the gateway signed: its public keys.
            env[f"{prefix}JWT_JWKS_URL"] = f"{gateway_url}/.well-known/jwks.json"
            env[f"{prefix}JWT_REVOCATIONS_URL"] = f"{gateway_url}/auth/revocations"
        return env

    def migrate(self, components: Sequence[Component] = COMPONENTS) -> None:
        """Run ``alembic upgrade head`` for every component, in parallel; RunError on failure."""
        print("migrating databases ...")
        running = [(component.name, self._start_migration(component)) for component in components]
        try:
            for name, migration in running:
                try:
                    migration.process.wait(MIGRATION_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    raise RunError(
                        migration.describe_failure(
                            f"migrating {name}", f"took over {MIGRATION_TIMEOUT_S:.0f} s"
                        )
                    ) from None
                if migration.exit_code != 0:
                    raise RunError(
                        migration.describe_failure(
                            f"migrating {name}", f"failed (exit code {migration.exit_code})"
                        )
                    )
        finally:
            _stop_all(running)  # only those still running, after a failure or a Ctrl-C

    def _start_migration(self, component: Component) -> LoggedProcess:
        project_dir = REPO_ROOT / component.project_dir
        args = [str(VENV_BIN / "alembic"), "-c", str(project_dir / "alembic.ini")]
        return LoggedProcess.start(
            [*args, "upgrade", "head"],
            self.component_env(component),
            project_dir,
            self.config.log_file(component.name),
            "alembic upgrade head",
        )

    def start_components(self, components: Sequence[Component] = COMPONENTS) -> None:
        """Start the services, then the gateway, each with uvicorn on its port."""
        for component in components:
            self.start_component(component)

    def start_component(self, component: Component) -> Child:
        """Start one component with uvicorn on its port (again, after it died: the
        reliability tests kill and restart them); it joins the supervised children."""
        for earlier in self.children:
            if earlier.component is component and earlier.run.exit_code is None:
                pid = earlier.run.process.pid
                raise RunError(f"{component.name} is running already (pid {pid})")
        self.children = [child for child in self.children if child.component is not component]
        port = self.config.ports[component.name]
        args = [
            str(VENV_BIN / "uvicorn"),
            f"{component.module}.main:create_app",
            "--factory",
            "--host",
            HOST,
            "--port",
            str(port),
            "--no-access-log",
        ]
        process = LoggedProcess.start(
            args,
            self.component_env(component),
            REPO_ROOT / component.project_dir,
            self.config.log_file(component.name),
            "uvicorn",
        )
        child = Child(component, port, process)
        self.children.append(child)
        return child

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Wait until every component answers ``/health/ready`` with 200; RunError otherwise."""
        print("waiting for every component to be ready ...")
        pending = list(self.children)
        deadline = time.monotonic() + timeout
        while pending:
            for child in list(pending):
                if child.run.exit_code is not None:
                    raise self._failure(child, f"exited with code {child.run.exit_code}")
                if _is_ready(child.url):
                    pending.remove(child)
            if pending and time.monotonic() > deadline:
                raise self._failure(pending[0], f"not ready after {timeout:.0f} s")
            time.sleep(0.2)

    def supervise(self) -> None:
        """Return when a child or a local server dies unexpectedly, raising RunError."""
        while True:
            for child in self.children:
                if child.run.exit_code is not None:
                    raise self._failure(
                        child, f"stopped unexpectedly (exit code {child.run.exit_code})"
                    )
            for server in (self.postgres, self.nats):
                if server is not None and not server.running:
                    raise RunError(
                        f"{server.name} stopped unexpectedly; last lines of {server.log_file}:\n"
                        f"{server.log_tail(LOG_TAIL_LINES)}"
                    )
            time.sleep(0.5)

    def stop(self) -> None:
        """Stop the gateway, then the services, then NATS, then PostgreSQL; idempotent."""
        gateway = [child for child in self.children if child.component is GATEWAY]
        services = [child for child in self.children if child.component is not GATEWAY]
        if self.children:
            print("stopping ...")
        _stop_all([(child.component.name, child.run) for child in gateway])
        _stop_all([(child.component.name, child.run) for child in services])
        self.children.clear()
        if self.nats is not None:
            self.nats.stop(STOP_TIMEOUT_S)
        if self.postgres is not None:
            self.postgres.stop()

    @staticmethod
    def _failure(child: Child, what: str) -> RunError:
        return RunError(child.run.describe_failure(child.component.name, what))

    # -- reporting -----------------------------------------------------------------------------

    def endpoints(self) -> dict[str, str]:
        """The base URL of every component, by name."""
        return {child.component.name: child.url for child in self.children}

    def summary(self, check: bool) -> str:
        """The table printed once everything is ready."""
        rows = [("component", "URL", "state")]
        ordered = sorted(self.children, key=lambda child: child.component is not GATEWAY)
        rows += [(child.component.name, child.url, "ready") for child in ordered]
        pg_state = "external" if self.postgres is None else "embedded"
        nats_state = "external" if self.nats is None else "embedded, JetStream"
        rows.append(("PostgreSQL", _without_password(self.database_server_url), pg_state))
        rows.append(("NATS", self.nats_url, nats_state))
        widths = [max(len(row[i]) for row in rows) for i in range(2)]
        lines = ["", "GHT platform is up", ""]
        lines += [f"  {a:<{widths[0]}}  {b:<{widths[1]}}  {c}" for a, b, c in rows]
        lines += [
            "",
            f"  data dir   {self.config.data_dir}",
            f"  logs dir   {self.config.logs_dir}",
        ]
        if self.demo:
            lines += demo_logins(self.endpoints()[GATEWAY.name])
        lines += ["", "--check: stopping now" if check else "Ctrl-C to stop"]
        return "\n".join(lines)

    @property
    def demo(self) -> bool:
        return self.component_env(GATEWAY)[f"{GATEWAY.env_prefix}DEMO"].lower() in ("1", "true")


def demo_logins(gateway_url: str) -> list[str]:
    """The demo identities, as the summary lists them (README: "Demo logins")."""
    # A password chosen by the operator is not echoed on the terminal.
    shown = "$GHT_DEMO_PASSWORD" if os.environ.get("GHT_DEMO_PASSWORD") else "demo"
    width = max(len(user.username) for user in demo.USERS)
    lines = ["", f"  demo logins (password: {shown})"]
    lines += [f"    {user.username:<{width}}  {user.display_name}" for user in demo.USERS]
    lines += ["", "  demo machine clients (client_credentials, secret: the same)"]
    lines += [
        f"    {e.client_id:<{width}}  {e.name} (FINESS {e.finess})" for e in demo.ESTABLISHMENTS
    ]
    lines += [
        "",
        "  a token for an establishment system:",
        f"    curl -s {gateway_url}/auth/token -d grant_type=client_credentials \\",
        f"      -d client_id={demo.ESTABLISHMENTS[0].client_id} -d client_secret={shown}",
    ]
    return lines


def load_demo_data_if_empty(gateway_url: str, endpoints: Mapping[str, str]) -> None:
    """Extension point: load the demo territory through the public APIs when it is empty.

    Called once every component is ready, with the gateway's base URL and every
    component's base URL by name. Each service's demo goes through the gateway as any
    client would (never writing to a service's database directly) and does nothing when
    data is present; only when the gateway runs with its demo identities.
    """
    from datetime import date

    from demo_activity import DemoLoadError, load_activity_demo  # beside this script

    if os.environ.get(f"{GATEWAY.env_prefix}DEMO", "true").lower() not in ("1", "true"):
        return
    try:
        load_activity_demo(gateway_url, date.today())
    except DemoLoadError as error:
        raise RunError(f"loading the demo activity: {error}") from error


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def _request_stop(signum: int, frame: FrameType | None) -> NoReturn:
    raise StopRequested(signal.Signals(signum).name)


def _ignore_signals_while_stopping() -> None:
    # A second Ctrl-C must not cut the shutdown short and leave processes behind; it is
    # bounded anyway (STOP_TIMEOUT_S per tier).
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


def run(config: RunConfig, check: bool) -> int:
    """Start the stack, report, then supervise (or stop at once with ``check``)."""
    check_ports(config)
    stack = Stack(config)
    try:
        stack.start_postgres()
        stack.start_nats()
        stack.migrate()
        stack.start_components()
        stack.wait_ready()
        load_demo_data_if_empty(stack.endpoints()[GATEWAY.name], stack.endpoints())
        print(stack.summary(check), flush=True)
        if not check:
            stack.supervise()
        return 0
    except StopRequested:
        print()
        return 0
    except (RunError, ServerError) as error:
        _report(error)
        return 1
    finally:
        _ignore_signals_while_stopping()
        stack.stop()
        print("stopped.", flush=True)


def _report(error: Exception) -> None:
    print(f"error: {error}", file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Run the GHT platform locally (PostgreSQL, NATS, services, gateway).",
        epilog="Environment: see the module docstring of deploy/local/run.py.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="start everything, wait until ready, print the summary, stop, exit 0",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the platform; return the process exit code."""
    args = parse_args(argv)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # progress shows up live when piped too
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _request_stop)
    try:
        return run(RunConfig.from_env(os.environ), check=args.check)
    except StopRequested:
        return 0
    except (RunError, ServerError) as error:
        _report(error)
        return 1


if __name__ == "__main__":
    sys.exit(main())
