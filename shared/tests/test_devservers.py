"""Smoke tests of the real local servers: they start, answer, survive a kill, and stop clean."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import nats
import pytest

from ght_shared.devservers import (
    NatsServer,
    PostgresServer,
    ServerError,
    free_port,
    port_in_use,
)


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[PostgresServer]:
    server = PostgresServer(tmp_path / "pg", free_port(), log_file=tmp_path / "pg.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(
        tmp_path / "nats", free_port(), monitor_port=free_port(), log_file=tmp_path / "nats.log"
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def listening_socket() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


async def _fetch_one(dsn: str, sql: str) -> object:
    connection = await asyncpg.connect(dsn)
    try:
        return await connection.fetchval(sql)
    finally:
        await connection.close()


async def _execute(dsn: str, sql: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


class TestPorts:
    def test_a_free_port_is_not_in_use(self) -> None:
        assert not port_in_use(free_port())

    def test_a_listening_port_is_in_use(self, listening_socket: int) -> None:
        assert port_in_use(listening_socket)


class TestPostgresServer:
    def test_it_answers_queries_over_tcp(self, postgres: PostgresServer) -> None:
        dsn = postgres.url(driver="postgresql")
        assert asyncio.run(_fetch_one(dsn, "SELECT current_setting('max_connections')")) == "200"
        assert asyncio.run(_fetch_one(dsn, "SELECT current_setting('fsync')")) == "on"
        assert asyncio.run(_fetch_one(dsn, "SHOW server_encoding")) == "UTF8"

    def test_its_url_names_the_driver_host_port_and_database(
        self, postgres: PostgresServer
    ) -> None:
        assert (
            postgres.url("beds") == f"postgresql+asyncpg://postgres@127.0.0.1:{postgres.port}/beds"
        )

    def test_create_database_creates_once_and_drop_removes_it(
        self, postgres: PostgresServer
    ) -> None:
        assert postgres.create_database("beds") is True
        assert postgres.create_database("beds") is False
        assert asyncio.run(_fetch_one(postgres.url("beds", "postgresql"), "SELECT 1")) == 1

        postgres.drop_database("beds")
        postgres.drop_database("beds")

        assert postgres.create_database("beds") is True

    def test_committed_rows_survive_a_kill_and_a_restart(self, postgres: PostgresServer) -> None:
        postgres.create_database("app")
        dsn = postgres.url("app", "postgresql")
        asyncio.run(_execute(dsn, "CREATE TABLE bed (id int); INSERT INTO bed VALUES (7)"))
        pid = postgres.pid
        assert pid is not None

        postgres.kill()
        assert not postgres.running
        assert not _pid_alive(pid)
        postgres.start()

        assert asyncio.run(_fetch_one(dsn, "SELECT id FROM bed")) == 7

    def test_a_second_start_keeps_the_data_of_a_stopped_server(self, tmp_path: Path) -> None:
        server = PostgresServer(tmp_path / "pg", free_port())
        with server:
            server.create_database("kept")
        with server:
            assert server.create_database("kept") is False

    def test_stop_leaves_no_process_behind(self, tmp_path: Path) -> None:
        server = PostgresServer(tmp_path / "pg", free_port())
        server.start()
        pid = server.pid
        assert pid is not None

        server.stop()
        server.stop()

        assert not server.running
        assert not _pid_alive(pid)
        assert not port_in_use(server.port)

    def test_a_port_in_use_is_refused_with_a_clear_error(
        self, tmp_path: Path, listening_socket: int
    ) -> None:
        server = PostgresServer(tmp_path / "pg", listening_socket)

        with pytest.raises(ServerError, match=f"PostgreSQL: port {listening_socket} is already"):
            server.start()

    def test_a_server_that_cannot_start_reports_its_log(self, tmp_path: Path) -> None:
        server = PostgresServer(tmp_path / "pg", free_port(), host="192.0.2.1")

        with pytest.raises(ServerError, match="exited with code") as raised:
            server.start()

        assert "192.0.2.1" in str(raised.value)
        assert not server.running


class TestNatsServer:
    def test_it_stores_jetstream_messages_across_a_kill_and_a_restart(
        self, nats_server: NatsServer
    ) -> None:
        async def publish() -> None:
            client = await nats.connect(nats_server.url)
            stream = client.jetstream()
            await stream.add_stream(name="BEDS", subjects=["ght.beds.>"])
            for _ in range(3):
                await stream.publish("ght.beds.bed.reserved", b"{}")
            await client.close()

        async def stored() -> int:
            client = await nats.connect(nats_server.url)
            info = await client.jetstream().stream_info("BEDS")
            await client.close()
            return info.state.messages

        asyncio.run(publish())
        pid = nats_server.pid
        assert pid is not None

        nats_server.kill()
        assert not _pid_alive(pid)
        nats_server.start()

        assert asyncio.run(stored()) == 3

    def test_its_config_syncs_every_write(self, nats_server: NatsServer) -> None:
        assert "sync_interval: always" in nats_server.config_file.read_text()
        assert nats_server.url == f"nats://127.0.0.1:{nats_server.port}"

    def test_stop_leaves_no_process_behind(self, nats_server: NatsServer) -> None:
        pid = nats_server.pid
        assert pid is not None

        nats_server.stop()
        nats_server.stop()

        assert not _pid_alive(pid)
        assert not port_in_use(nats_server.port)

    def test_a_port_in_use_is_refused_with_a_clear_error(
        self, tmp_path: Path, listening_socket: int
    ) -> None:
        server = NatsServer(tmp_path / "nats", listening_socket)

        with pytest.raises(ServerError, match=f"NATS: port {listening_socket} is already in use"):
            server.start()
        assert not server.running


@pytest.mark.skipif(os.geteuid() != 0, reason="only root needs an unprivileged PostgreSQL user")
def test_as_root_postgres_runs_as_an_unprivileged_user(postgres: PostgresServer) -> None:
    pid = postgres.pid
    assert pid is not None
    assert os.stat(f"/proc/{pid}").st_uid != 0
