"""Outbox sinks against a real nats-server: JetStream storage de-duplicated by
``Nats-Msg-Id``, failures as TransportError, the core publisher, and the whole path from
a persistent actor's commit to the stream."""

from __future__ import annotations

import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from nats.js.api import StreamInfo

from actors import ActorSystem, OutboxEntry, PersistentActor
from actors.errors import ConnectionClosed, NoResponders, RequestTimeout, TransportError
from actors.journal.memory import MemoryJournal
from actors.nats import (
    CorePublisher,
    JetStreamOutbox,
    Msg,
    NatsServer,
    NatsTransport,
    free_port,
)
from tests.nats_fixtures import nats_server_fixture, nats_url_fixture  # noqa: F401

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

STREAM = "TEST_EVENTS"


def entries(n: int, start: int = 0) -> list[OutboxEntry]:
    return [
        OutboxEntry(
            id=f"ev-{i}",
            subject=f"test.events.thing.t{i % 3}.happened",
            payload=f'{{"n": {i}}}'.encode(),
            headers={"X-Kind": "thing"} if i % 2 else {},
        )
        for i in range(start, start + n)
    ]


async def info(transport: NatsTransport, name: str = STREAM) -> StreamInfo:
    return await transport.jetstream().stream_info(name)


async def stored(transport: NatsTransport, count: int) -> list[tuple[str, bytes, dict[str, str]]]:
    js = transport.jetstream()
    out: list[tuple[str, bytes, dict[str, str]]] = []
    for seq in range(1, count + 1):
        msg = await js.get_msg(STREAM, seq)
        out.append((msg.subject or "", msg.data or b"", dict(msg.headers or {})))
    return out


async def stopped(pid: int) -> None:
    """Wait until every thread of ``pid`` has stopped: SIGSTOP is not synchronous, and a
    busy machine may let the server run on for a moment."""

    def all_stopped() -> bool:
        for task in Path(f"/proc/{pid}/task").iterdir():
            state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if state not in ("T", "t"):
                return False
        return True

    with anyio.fail_after(5):
        while not all_stopped():
            await anyio.sleep(0.001)


async def test_ensure_stream_creates_once_and_leaves_an_existing_one(nats_url: str) -> None:
    async with NatsTransport([nats_url]) as transport:
        outbox = JetStreamOutbox(transport)
        assert await outbox.ensure_stream(STREAM, ["test.events.>"]) is True
        assert await outbox.ensure_stream(STREAM, ["other.>"]) is False
        config = (await info(transport)).config
        assert config.subjects == ["test.events.>"]
        assert config.duplicate_window == 120.0


async def test_publish_stores_each_entry_once(nats_url: str) -> None:
    batch = entries(200)
    async with NatsTransport([nats_url]) as transport:
        outbox = JetStreamOutbox(transport, stream=STREAM)
        await outbox.ensure_stream(STREAM, ["test.events.>"])
        await outbox.publish(batch)
        assert (await info(transport)).state.messages == 200
        assert outbox.duplicates == 0
        # The relay retries a whole batch after a failure: nothing is stored twice.
        await outbox.publish(batch)
        await outbox.publish(batch[50:60] + entries(5, start=200))
        assert (await info(transport)).state.messages == 205
        assert outbox.duplicates == 210
        assert outbox.published == 200 + 200 + 15
        messages = await stored(transport, 205)
    for (subject, payload, headers), entry in zip(messages, batch + entries(5, 200), strict=True):
        assert subject == entry.subject
        assert payload == entry.payload
        assert headers["Nats-Msg-Id"] == entry.id
        assert headers.get("X-Kind") == entry.headers.get("X-Kind")


async def test_large_batches_go_out_in_windows(nats_url: str) -> None:
    async with NatsTransport([nats_url]) as transport:
        outbox = JetStreamOutbox(transport, max_in_flight=7)
        await outbox.ensure_stream(STREAM, ["test.events.>"])
        await outbox.publish(entries(50))
        await outbox.publish(entries(60))
        assert (await info(transport)).state.messages == 60
        assert outbox.duplicates == 50
        assert [h["Nats-Msg-Id"] for _, _, h in await stored(transport, 60)] == [
            e.id for e in entries(60)
        ]


async def test_publish_nothing_is_a_no_op(nats_url: str) -> None:
    async with NatsTransport([nats_url]) as transport:
        await JetStreamOutbox(transport).publish([])


async def test_a_subject_no_stream_captures_is_no_responders(nats_url: str) -> None:
    async with NatsTransport([nats_url]) as transport:
        outbox = JetStreamOutbox(transport)
        await outbox.ensure_stream(STREAM, ["test.events.>"])
        stray = OutboxEntry(id="x", subject="elsewhere.thing", payload=b"{}")
        with pytest.raises(NoResponders):
            await outbox.publish([*entries(3), stray])
        assert outbox.published == 0


async def test_the_expected_stream_is_enforced(nats_url: str) -> None:
    async with NatsTransport([nats_url]) as transport:
        await JetStreamOutbox(transport).ensure_stream(STREAM, ["test.events.>"])
        wrong = JetStreamOutbox(transport, stream="SOME_OTHER_STREAM")
        with pytest.raises(TransportError, match="expected stream does not match"):
            await wrong.publish(entries(1))
        assert (await info(transport)).state.messages == 0


async def test_publish_on_a_closed_connection(nats_url: str) -> None:
    transport = NatsTransport([nats_url])
    await transport.connect()
    await transport.close()
    with pytest.raises(ConnectionClosed):
        await JetStreamOutbox(transport).publish(entries(1))


async def test_unacknowledged_publish_times_out(nats_server: NatsServer) -> None:
    async with NatsTransport([nats_server.url]) as transport:
        outbox = JetStreamOutbox(transport, timeout=0.2)
        await outbox.ensure_stream(STREAM, ["test.events.>"])
        pid = nats_server.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # the server takes the bytes but never answers
        try:
            await stopped(pid)
            with pytest.raises(RequestTimeout, match="not acknowledged"):
                await outbox.publish(entries(10))
        finally:
            os.kill(pid, signal.SIGCONT)
        # The stalled publishes were stored once the server resumed; the relay's retry
        # of the same batch adds nothing.
        outbox.timeout = 5.0
        await outbox.publish(entries(10))
        assert (await info(transport)).state.messages == 10
        assert outbox.duplicates == 10


async def test_stream_survives_a_server_crash(tmp_path: Path) -> None:
    async with NatsServer(store_dir=tmp_path / "js") as server:
        async with NatsTransport([server.url], reconnect_time_wait=0.05) as transport:
            outbox = JetStreamOutbox(transport)
            await outbox.ensure_stream(STREAM, ["test.events.>"])
            await outbox.publish(entries(20))
        await server.akill()
        await server.astart()
        async with NatsTransport([server.url]) as transport:
            outbox = JetStreamOutbox(transport)
            assert await outbox.ensure_stream(STREAM, ["test.events.>"]) is False
            await outbox.publish(entries(30))  # 20 known ids, 10 new
            assert (await info(transport)).state.messages == 30
            assert outbox.duplicates == 20


async def test_core_publisher(nats_url: str) -> None:
    got: list[tuple[str, bytes, str | None]] = []
    async with NatsTransport([nats_url]) as transport:

        async def collect(msg: Msg) -> None:
            got.append((msg.subject, msg.data, (msg.headers or {}).get("Nats-Msg-Id")))

        await transport.subscribe("test.events.>", collect)
        sink = CorePublisher(transport)
        await sink.publish(entries(5))
        with anyio.fail_after(5):
            while len(got) < 5:
                await anyio.sleep(0.001)
    assert got == [(e.subject, e.payload, e.id) for e in entries(5)]
    assert sink.published == 5


class Noted(msgspec.Struct, frozen=True):
    text: str


class Note(msgspec.Struct, frozen=True):
    text: str


class Notebook(PersistentActor):
    event_type = Noted

    def __init__(self) -> None:
        self.count = 0

    def apply(self, event: Any) -> None:
        self.count += 1

    def receive(self, message: Any) -> Any:
        self.persist(Noted(message.text))
        self.emit(
            f"test.events.notebook.{self.key}.noted",
            message.text.encode(),
            id=f"{self.key}-{self.count}",
        )
        return self.count


async def test_committed_outbox_entries_reach_the_stream(nats_url: str) -> None:
    journal = MemoryJournal()
    async with NatsTransport([nats_url]) as transport:
        outbox = JetStreamOutbox(transport, stream=STREAM)
        await outbox.ensure_stream(STREAM, ["test.events.>"])
        async with ActorSystem(journal=journal, outbox_sink=outbox) as system:
            system.register("notebook", Notebook)
            ref = system.ref("notebook", "n1")
            for i in range(5):
                assert await ref.ask(Note(f"line {i}")) == i + 1
            with anyio.fail_after(5):
                while (await info(transport)).state.messages < 5 or await journal.outbox():
                    await anyio.sleep(0.01)
        messages = await stored(transport, 5)
        assert [(s, p, h["Nats-Msg-Id"]) for s, p, h in messages] == [
            ("test.events.notebook.n1.noted", f"line {i}".encode(), f"n1-{i + 1}") for i in range(5)
        ]


async def test_replicated_stream_on_a_three_server_cluster(tmp_path: Path) -> None:
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
    async with (
        servers[0],
        servers[1],
        servers[2],
        NatsTransport([s.url for s in servers], reconnect_time_wait=0.05) as transport,
    ):
        outbox = JetStreamOutbox(transport, timeout=0.5)

        async def retrying(step: Callable[[], Awaitable[object]]) -> None:
            # A cluster answers "no responders" or not at all while it elects leaders
            # (for JetStream as a whole, then for each stream); the relay retries too.
            with anyio.fail_after(20):
                while True:
                    try:
                        await step()
                        return
                    except TransportError:
                        await anyio.sleep(0.05)

        await retrying(lambda: outbox.ensure_stream(STREAM, ["test.events.>"], replicas=3))
        await retrying(lambda: outbox.publish(entries(20)))
        stream = await info(transport)
        assert stream.config.num_replicas == 3
        assert stream.state.messages == 20
        # Losing one of three servers loses nothing acknowledged, and storing goes on.
        connected = transport.client.connected_url
        assert connected is not None
        victim = next(s for s in servers if s.port == connected.port)
        await victim.akill()
        await retrying(lambda: outbox.publish(entries(30)))
        assert (await info(transport)).state.messages == 30
