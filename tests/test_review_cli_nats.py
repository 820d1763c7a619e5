"""Edge cases of the command line's foundations: the nats-server process, settings
loading, a node against a server without JetStream, and a binding's bounded shutdown.

Each test pins a failure a user or operator would meet: the wrong flag blamed for a
taken port, a traceback instead of one line, a setting that cannot be a real duration,
a shutdown that never ends."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from pathlib import Path

import anyio
import pytest

from actors import ActorsError, ActorSystem
from actors.nats import NatsBinding, NatsServer, NatsServerError, NatsTransport, PortInUse
from iceshop.config import ConfigError, load_settings
from iceshop.node.app import ShopNode
from iceshop.settings import Settings

# -- nats-server process ----------------------------------------------------------------


@pytest.mark.integration
def test_a_taken_monitor_port_is_reported_as_the_monitor_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monitor = taken.getsockname()[1]
        server = NatsServer(monitor_port=monitor, jetstream=False)
        with pytest.raises(PortInUse) as caught:
            server.start()
    assert caught.value.port == monitor
    assert not server.running


def test_an_address_this_machine_does_not_have_is_a_server_error() -> None:
    # 192.0.2.0/24 is TEST-NET-1: never assigned to a local interface.
    server = NatsServer(host="192.0.2.1", jetstream=False)
    with pytest.raises(NatsServerError, match=r"192\.0\.2\.1"):
        server.start()
    assert not server.running


# -- settings ---------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('shards = "64"', "shards"),
        ("shards = 64.0", "shards"),
        ('window_lead_s = "60"', "window_lead_s"),
        ("window_duration_s = inf", "window_duration_s"),
    ],
)
def test_toml_values_must_have_the_settings_type(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{key}: "):
        load_settings(write(tmp_path, text), environ={})


def test_environment_values_are_converted_from_text() -> None:
    settings = load_settings(
        environ={"ICESHOP_SHARDS": "8", "ICESHOP_WINDOW_LEAD_S": "2.5", "ICESHOP_AUTH": "off"}
    )
    assert (settings.shards, settings.window_lead_s, settings.auth) == (8, 2.5, "off")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ICESHOP_WINDOW_LEAD_S", "inf"),
        ("ICESHOP_CAMPAIGN_INTERVAL_S", "-inf"),
        ("ICESHOP_SHARDS", ""),
        ("ICESHOP_SHARDS", "lots"),
    ],
)
def test_a_bad_environment_value_names_its_variable(name: str, value: str) -> None:
    key = name.removeprefix("ICESHOP_").lower()
    with pytest.raises(ConfigError, match=rf"^{key}: {name}="):
        load_settings(environ={name: value})


def test_the_environment_overrides_a_bad_file_value(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "shards = 8"), environ={"ICESHOP_SHARDS": "16"})
    assert settings.shards == 16


# -- a node on a server without JetStream ---------------------------------------------------


@pytest.mark.anyio
@pytest.mark.integration
async def test_a_node_without_jetstream_fails_with_a_runtime_error(tmp_path: Path) -> None:
    async with NatsServer(jetstream=False) as server:
        settings = Settings(
            nats_url=server.url, data_dir=str(tmp_path / "n"), node_id="n1", auth="off"
        )
        node = ShopNode(settings)
        node.stream_timeout = 0.3
        with anyio.fail_after(10):
            with pytest.raises(ActorsError, match="ICESHOP_EVENTS"):
                await node.__aenter__()


# -- binding shutdown ---------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.integration
async def test_leaving_a_binding_is_bounded_when_handlers_hang(tmp_path: Path) -> None:
    """Handlers that never finish, with more requests queued behind the concurrency
    limit: leaving the binding still ends within its shutdown timeout (plus a margin)."""
    never = anyio.Event()
    started = 0

    async def hang(tokens: list[str], headers: Mapping[str, str], payload: bytes) -> bytes:
        nonlocal started
        started += 1
        await never.wait()
        return b""

    async with NatsServer(jetstream=False) as server:
        system = ActorSystem()
        async with (
            system,
            NatsTransport([server.url], name="node") as transport,
            NatsTransport([server.url], name="client") as client,
        ):
            with anyio.fail_after(10):
                async with NatsBinding(system, transport, shutdown_timeout=0.5) as binding:
                    await binding.serve_handler("t.hang", hang, concurrency=1)
                    for _ in range(3):
                        await client.publish("t.hang", b"", reply=client.new_inbox())
                    await client.flush()
                    while started == 0:
                        await anyio.sleep(0.01)
    assert started == 1
    assert binding.stats.dropped_replies == 2


def test_an_unreadable_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read it"):
        load_settings(tmp_path, environ={})  # a directory
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b'node_id = "n\xe9"\n')
    with pytest.raises(ConfigError, match="cannot read it"):
        load_settings(latin, environ={})
