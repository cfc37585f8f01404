"""Real servers for the routing tests: the four services and the echo upstream as uvicorn
processes, and the gateway served by uvicorn inside the test's event loop.

The gateway runs in-process (so a test can read its breakers and metrics) but behind a real
socket: httpx's ASGI transport would buffer whole responses and hide what streaming does.
The services get a NATS server of their own: their durable consumers must not take the
messages of other tests running on the session's NATS.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from ght_gateway.main import create_app
from ght_gateway.settings import Settings
from ght_shared.devservers import NatsServer, free_port
from ght_shared.migrations import upgrade
from ght_shared.testing.plugin import PostgresHandle

REPO = Path(__file__).resolve().parents[2]
TESTS_DIR = Path(__file__).resolve().parent

SERVICE_APPS = {
    "contracts": ("CONTRACTS_", "contracts_svc.main:create_app"),
    "activity": ("ACTIVITY_", "activity_svc.main:create_app"),
    "beds": ("BEDS_", "beds_svc.main:create_app"),
    "staffing": ("STAFFING_", "staffing_svc.main:create_app"),
}


def dead_url() -> str:
    """The URL of a port nothing listens on (connections are refused at once)."""
    return f"http://127.0.0.1:{free_port()}"


class UvicornProcess:
    """One ASGI app served by uvicorn in a child process, on a port that stays its own."""

    def __init__(
        self,
        app: str,
        log_file: Path,
        *,
        env: dict[str, str] | None = None,
        factory: bool = False,
        app_dir: Path | None = None,
        port: int | None = None,
    ) -> None:
        self.app = app
        self.log_file = log_file
        self.env = {**os.environ, **(env or {})}
        self.factory = factory
        self.app_dir = app_dir
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self) -> None:
        args = [sys.executable, "-m", "uvicorn", self.app, "--host", "127.0.0.1"]
        args += ["--port", str(self.port), "--log-level", "warning"]
        if self.factory:
            args.append("--factory")
        if self.app_dir is not None:
            args += ["--app-dir", str(self.app_dir)]
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=REPO,
                start_new_session=True,
            )

    async def wait_live(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=1.0, trust_env=False) as client:
            while True:
                if self.process is None or self.process.poll() is not None:
                    raise RuntimeError(f"{self.app} exited; log:\n{self._log_tail()}")
                try:
                    if (await client.get(f"{self.url}/health/live")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.app} not live in {timeout} s:\n{self._log_tail()}")
                await asyncio.sleep(0.05)

    async def start(self) -> None:
        self.spawn()
        await self.wait_live()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s; the port is free when this returns."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _log_tail(self) -> str:
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-30:])


@dataclass
class ServiceStack:
    """The four services, each on a fresh migrated database, and their own NATS."""

    nats: NatsServer
    processes: dict[str, UvicornProcess] = field(default_factory=dict)

    def url(self, service: str) -> str:
        return self.processes[service].url

    def stop(self) -> None:
        for process in self.processes.values():
            process.stop()
        self.nats.stop()


async def start_service_stack(postgres: PostgresHandle, root: Path) -> ServiceStack:
    nats = NatsServer(root / "nats", free_port(), log_file=root / "nats.log")
    nats.start()
    stack = ServiceStack(nats)
    try:
        for service, (prefix, app) in SERVICE_APPS.items():
            url = await postgres.create_database(f"routing_{service}_{uuid.uuid4().hex[:8]}")
            # One at a time: Alembic's context is a process-wide global.
            await asyncio.to_thread(
                upgrade, REPO / "services" / f"{service}-svc" / "alembic.ini", url
            )
            env = {
                f"{prefix}DATABASE_URL": url,
                f"{prefix}NATS_URL": nats.url,
                f"{prefix}ENVIRONMENT": "test",
                f"{prefix}LOG_LEVEL": "WARNING",
            }
            stack.processes[service] = UvicornProcess(
                app, root / f"{service}.log", env=env, factory=True
            )
        for process in stack.processes.values():
            process.spawn()  # all start together, then are waited for
        for process in stack.processes.values():
            await process.wait_live()
    except BaseException:
        stack.stop()
        raise
    return stack


def echo_process(root: Path, port: int | None = None) -> UvicornProcess:
    """The echo upstream (``echo_upstream.py``), not started yet."""
    return UvicornProcess(
        "echo_upstream:app", root / f"echo-{uuid.uuid4().hex[:6]}.log", app_dir=TESTS_DIR, port=port
    )


class GatewayServer:
    """The gateway app served by uvicorn on a free port, in the running event loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app: FastAPI = create_app(settings)
        # Bound here and handed to uvicorn: a port merely found free could be taken by
        # another test worker before uvicorn binds it.
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
            )
        )
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> GatewayServer:
        self._task = asyncio.create_task(self.server.serve(sockets=[self.socket]))
        deadline = time.monotonic() + 30
        while not self.server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("the gateway stopped while starting")
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start in 30 s")
            await asyncio.sleep(0.02)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.server.should_exit = True
        if self._task is not None:
            await self._task
        self.socket.close()

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, trust_env=False, timeout=30.0, **kwargs)
