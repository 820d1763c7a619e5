"""The NATS transport and its error mapping, against a real nats-server."""

from __future__ import annotations

from pathlib import Path

import anyio
import anyio.lowlevel
import nats.errors
import nats.js.errors
import pytest

from actors.errors import (
    ActorsError,
    ConnectionClosed,
    NoResponders,
    Overloaded,
    RequestTimeout,
    TransportError,
)
from actors.nats import Msg, NatsServer, NatsTransport, free_port, map_error, mapped_errors
from tests.nats_fixtures import nats_server_fixture, nats_url_fixture  # noqa: F401

pytestmark = pytest.mark.integration


def test_public_surface() -> None:
    import actors.nats

    assert len(set(actors.nats.__all__)) == len(actors.nats.__all__)
    for name in actors.nats.__all__:
        assert getattr(actors.nats, name) is not None


# -- the mapping itself --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lower", "expected"),
    [
        (nats.errors.NoRespondersError(), NoResponders),
        (nats.js.errors.NoStreamResponseError(), NoResponders),
        (nats.errors.TimeoutError(), RequestTimeout),
        (nats.errors.FlushTimeoutError(), RequestTimeout),
        (TimeoutError(), RequestTimeout),
        (nats.errors.ConnectionClosedError(), ConnectionClosed),
        (nats.errors.ConnectionDrainingError(), ConnectionClosed),
        (nats.errors.OutboundBufferLimitError(), TransportError),
        (nats.errors.NoServersError(), TransportError),
        (nats.js.errors.APIError(code=500, description="boom"), TransportError),
        (ConnectionRefusedError(), TransportError),
    ],
)
def test_map_error(lower: Exception, expected: type[ActorsError]) -> None:
    mapped = map_error(lower, "request a.b")
    assert type(mapped) is expected
    assert str(mapped).startswith("request a.b: ")
    assert mapped.retryable
    with pytest.raises(expected) as caught, mapped_errors("op"):
        raise lower
    assert caught.value.__cause__ is lower


def test_mapped_errors_leaves_other_errors_alone() -> None:
    own = Overloaded("full")
    assert map_error(own) is own
    with pytest.raises(Overloaded) as caught, mapped_errors():
        raise own
    assert caught.value is own
    assert map_error(ValueError("bug")) is None
    with pytest.raises(ValueError, match="bug"), mapped_errors():
        raise ValueError("bug")


# -- against the server --------------------------------------------------------------------


@pytest.mark.anyio
async def test_request_reply_with_headers(nats_url: str) -> None:
    async with NatsTransport([nats_url], name="t") as transport:

        async def responder(msg: Msg) -> None:
            assert msg.headers is not None
            await transport.publish(
                msg.reply, msg.data.upper(), headers={"X-Seen": msg.headers["X-In"]}
            )

        await transport.subscribe("svc.upper", responder)
        payload, headers = await transport.request(
            "svc.upper", b"hello", headers={"X-In": "v1"}, timeout=2
        )
    assert payload == b"HELLO"
    assert headers == {"X-Seen": "v1"}


@pytest.mark.anyio
async def test_no_responders(nats_url: str) -> None:
    async with NatsTransport([nats_url]) as transport:
        with pytest.raises(NoResponders, match=r"request nobody\.home") as caught:
            await transport.request("nobody.home", b"", timeout=2)
    assert isinstance(caught.value.__cause__, nats.errors.NoRespondersError)


@pytest.mark.anyio
async def test_request_timeout(nats_url: str) -> None:
    async with NatsTransport([nats_url]) as transport:
        received: list[bytes] = []

        async def silent(msg: Msg) -> None:
            received.append(msg.data)

        await transport.subscribe("svc.silent", silent)
        with pytest.raises(RequestTimeout) as caught:
            await transport.request("svc.silent", b"x", timeout=0.05)
    assert isinstance(caught.value, TimeoutError)
    assert isinstance(caught.value.__cause__, nats.errors.TimeoutError)
    assert received == [b"x"]


@pytest.mark.anyio
async def test_publish_after_close_is_connection_closed(nats_url: str) -> None:
    transport = NatsTransport([nats_url])
    await transport.connect()
    await transport.close()
    await transport.close()  # idempotent
    with pytest.raises(ConnectionClosed):
        await transport.publish("a.b", b"x")
    with pytest.raises(ConnectionClosed):
        await transport.request("a.b", b"x")


@pytest.mark.anyio
async def test_initial_connect_is_bounded() -> None:
    port = free_port()  # nothing listens here
    transport = NatsTransport(
        [f"nats://127.0.0.1:{port}"], initial_connect_timeout=0.3, reconnect_time_wait=0.05
    )
    with pytest.raises(TransportError, match=rf"could not connect to nats://127.0.0.1:{port}"):
        await transport.connect()
    assert not transport.is_connected


@pytest.mark.anyio
async def test_close_drains_received_messages(nats_url: str) -> None:
    got: list[bytes] = []
    async with NatsTransport([nats_url]) as publisher:
        consumer = NatsTransport([nats_url])
        await consumer.connect()

        async def slow(msg: Msg) -> None:
            await anyio.lowlevel.checkpoint()
            got.append(msg.data)

        await consumer.subscribe("work.items", slow)
        await consumer.flush()
        for i in range(100):
            await publisher.publish("work.items", str(i).encode())
        await publisher.flush()
        # Wait until the consumer's client has them all (received, maybe not handled).
        with anyio.fail_after(5):
            while consumer.client.stats["in_msgs"] < 100:
                await anyio.sleep(0.01)
        await consumer.close()
    assert got == [str(i).encode() for i in range(100)]


@pytest.mark.anyio
async def test_reconnects_after_a_server_restart(tmp_path: Path) -> None:
    async with (
        NatsServer(jetstream=False) as server,
        NatsTransport([server.url], reconnect_time_wait=0.05) as transport,
    ):

        async def echo(msg: Msg) -> None:
            await msg.respond(msg.data)

        await transport.subscribe("svc.echo", echo)
        assert (await transport.request("svc.echo", b"1"))[0] == b"1"
        await server.akill()
        await server.astart()
        # The subscription is replayed on reconnect; ask until it is back.
        with anyio.fail_after(10):
            while True:
                try:
                    payload, _ = await transport.request("svc.echo", b"2", timeout=0.2)
                    break
                except TransportError:
                    await anyio.sleep(0.02)
        assert payload == b"2"
