"""The nats-server launcher against the real binary: start, stop, kill, restart, port
conflicts, missing binary, bad config, and a three-server cluster."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import anyio
import pytest

from actors.errors import NoResponders, RequestTimeout
from actors.nats import (
    Msg,
    NatsServer,
    NatsServerNotFound,
    NatsServerStartFailed,
    NatsTransport,
    PortInUse,
    find_nats_server,
    free_port,
)
from actors.nats.server import _read_line

pytestmark = pytest.mark.integration


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _info(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        return _read_line(s, 16_384)


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_finds_the_environments_binary() -> None:
    path = Path(find_nats_server())
    assert path.name == "nats-server"
    assert os.access(path, os.X_OK)


def test_missing_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(NatsServerNotFound, match="nats-server"):
        find_nats_server()
    with pytest.raises(NatsServerNotFound):
        NatsServer().start()


def test_start_stop(tmp_path: Path) -> None:
    server = NatsServer(store_dir=tmp_path / "js")
    server.start()
    try:
        assert server.running
        assert server.url == f"nats://127.0.0.1:{server.port}"
        info = _info(server.port)
        assert info.startswith(b"INFO ")
        assert f'"server_name":"{server.name}"'.encode() in info
        assert b'"jetstream":true' in info
        pid = server.pid
        assert pid is not None
    finally:
        server.stop()
    assert not server.running
    assert server.pid is None
    assert not _alive(pid)
    assert not _accepts(server.port)
    server.stop()  # idempotent


def test_jetstream_off() -> None:
    with NatsServer(jetstream=False) as server:
        assert b'"jetstream"' not in _info(server.port)


def test_kill_is_sigkill_and_restart_keeps_port_and_store(tmp_path: Path) -> None:
    server = NatsServer(store_dir=tmp_path / "js")
    with server:
        port, pid = server.port, server.pid
        assert pid is not None
        server.kill()
        assert not server.running
        assert not _alive(pid)
        assert not _accepts(port)
        server.start()
        assert server.port == port
        assert server.pid != pid
        assert _accepts(port)
    assert not server.running


def test_port_in_use_by_a_plain_socket() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        server = NatsServer(port=port, jetstream=False)
        with pytest.raises(PortInUse) as caught:
            server.start()
        assert caught.value.port == port
        assert "already in use" in str(caught.value)
        assert not server.running


def test_port_in_use_by_another_server() -> None:
    with NatsServer(jetstream=False) as first:
        second = NatsServer(port=first.port, jetstream=False)
        with pytest.raises(PortInUse):
            second.start()
        # The first one was not mistaken for the second, and still serves.
        assert first.running
        assert f'"server_name":"{first.name}"'.encode() in _info(first.port)


def test_bad_config_reports_the_log_tail(tmp_path: Path) -> None:
    config = tmp_path / "bad.conf"
    config.write_text("this is { not a valid config\n")
    server = NatsServer(config=config)
    with pytest.raises(NatsServerStartFailed, match=r"exited with status \d+"):
        server.start()
    assert not server.running


def test_config_file_is_used(tmp_path: Path) -> None:
    config = tmp_path / "server.conf"
    config.write_text("max_payload: 4096\n")
    with NatsServer(config=config, jetstream=False) as server:
        assert b'"max_payload":4096' in _info(server.port)


def test_monitor_port() -> None:
    with NatsServer(jetstream=False, monitor_port=0) as server:
        assert server.monitor_port
        assert server.monitor_url == f"http://127.0.0.1:{server.monitor_port}"
        assert _accepts(server.monitor_port)


@pytest.mark.anyio
async def test_async_context_manager_and_akill() -> None:
    async with NatsServer(jetstream=False) as server:
        assert server.running
        async with NatsTransport([server.url], name="probe") as transport:
            assert transport.is_connected
        pid = server.pid
        assert pid is not None
        await server.akill()
        assert not _alive(pid)
    assert not server.running


@pytest.mark.anyio
async def test_three_server_cluster(tmp_path: Path) -> None:
    cluster_ports = [free_port() for _ in range(3)]
    routes = [f"nats://127.0.0.1:{p}" for p in cluster_ports]
    servers = [
        NatsServer(
            name=f"n{i}",
            store_dir=tmp_path / f"js{i}",
            cluster_name="test",
            cluster_port=cluster_ports[i],
            routes=[r for j, r in enumerate(routes) if j != i],
        )
        for i in range(3)
    ]
    async with servers[0], servers[1], servers[2]:
        assert servers[0].cluster_url == routes[0]
        async with (
            NatsTransport([servers[2].url]) as responder,
            NatsTransport([servers[0].url]) as requester,
        ):

            async def echo(msg: Msg) -> None:
                await msg.respond(b"from n2:" + msg.data)

            await responder.subscribe("cluster.echo", echo)
            # Interest propagates over the routes; ask until it has arrived.
            reply = None
            with anyio.fail_after(10):
                while reply is None:
                    try:
                        reply, _ = await requester.request("cluster.echo", b"hi", timeout=0.5)
                    except (NoResponders, RequestTimeout):
                        await anyio.sleep(0.05)
            assert reply == b"from n2:hi"
