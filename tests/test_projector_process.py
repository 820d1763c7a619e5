"""The read model's projector as a process of its own (``readmodel_projector = "external"``).

A node in external mode does not project: window events reach the stream, no durable
consumer appears, and ``windows.list`` stays empty. Then ``iceshop projector`` runs on the
node's data directory (a real child process on a real nats-server) and the window shows
up in the node's ``windows.list``. Beside it, the file-level promise that makes this
safe: two connections on one read model file, a writer and a reader, never wipe each
other's data, whatever order they open in.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import nats.js.errors
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from actors.nats import Msg, NatsServer, NatsTransport
from iceshop.node import ShopNode
from iceshop.readmodel import DEFAULT_DURABLE, SCHEMA_VERSION, ReadModel, StreamPosition
from iceshop.settings import Settings
from iceshop.wire import EVENT_STREAM
from tests.nats_fixtures import nats_server_fixture, nats_url_fixture  # noqa: F401
from tests.shop_client import Client
from tests.test_readmodel import Sim, all_windows

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parent.parent


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICESHOP_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


@asynccontextmanager
async def projector_process(url: str, data: Path, log: Path) -> AsyncIterator[list[str]]:
    """``iceshop projector`` on ``data`` until left (SIGTERM); yields its stdout lines up
    to the ready line."""
    argv = [sys.executable, "-m", "iceshop.cli", "projector", "--nats", url, "--data", str(data)]
    with log.open("wb") as errors:
        process = await anyio.open_process(
            argv, stdin=subprocess.DEVNULL, stderr=errors, cwd=REPO, env=child_env()
        )
        try:
            assert process.stdout is not None
            out = BufferedByteReceiveStream(process.stdout)
            lines: list[str] = []
            with anyio.fail_after(15):
                while not lines or lines[-1] != "projector ready":
                    lines.append((await out.receive_until(b"\n", 4096)).decode())
            yield lines
            process.send_signal(signal.SIGTERM)
            with anyio.fail_after(15):
                code = await process.wait()
            assert code == 0, await anyio.Path(log).read_text()
        finally:
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    process.kill()
                await process.wait()
                await process.aclose()


async def propose_a_window(c: Client) -> None:
    """A listing and one intent: the campaign (every 0.2 s) proposes a window for it."""
    await c.ok("sellers.S1.register", {"name": "Seller"})
    listing = {
        "product_id": "P1",
        "title": "Item",
        "list_price_minor": 1000,
        "floor_price_minor": 800,
        "stock": 10,
        "currency": "TRY",
    }
    await c.ok("sellers.S1.listings.upsert", listing)
    await c.ok("buyers.B1.register", {"name": "Buyer", "phone": "+905550000001", "locale": "tr"})
    intent = {"intent_id": "I1", "product_id": "P1", "quantity": 2, "max_price_minor": 1000}
    await c.ok("buyers.B1.intents.submit", intent)


async def test_external_mode_projects_only_with_the_projector_process(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    data = tmp_path / "node"
    settings = Settings(
        nats_url=nats_server.url,
        data_dir=str(data),
        node_id="n1",
        auth="off",
        readmodel_projector="external",
        campaign_min_quantity=1,
        campaign_interval_s=0.2,
        window_min_participants=1,
    )
    created: list[str] = []
    seen = anyio.Event()

    async def on_window_created(msg: Msg) -> None:
        created.append(msg.subject.split(".")[3])
        seen.set()

    async with ShopNode(settings) as node, NatsTransport(nats_server.url) as t:
        assert node.projector is None
        c = Client(t)
        await t.subscribe("iceshop.events.window.*.created", on_window_created)
        await propose_a_window(c)
        with anyio.fail_after(10):
            await seen.wait()
        (window_id,) = created
        assert (await c.ok(f"windows.{window_id}.get"))["state"] == "scheduled"

        # The event is in the stream, yet nothing reads it: no consumer, an empty list.
        js = t.jetstream()
        with pytest.raises(nats.js.errors.NotFoundError):
            await js.consumer_info(EVENT_STREAM, DEFAULT_DURABLE)
        assert (await js.stream_info(EVENT_STREAM)).state.messages > 0
        assert (await c.ok("windows.list", {}))["windows"] == []

        async with projector_process(nats_server.url, data, tmp_path / "projector.err") as out:
            assert out[-1] == "projector ready"
            listed: list[dict[str, Any]] = []
            with anyio.fail_after(10):
                while not listed:
                    listed = (await c.ok("windows.list", {}))["windows"]
                    await anyio.sleep(0.05)
            assert [w["window_id"] for w in listed] == [window_id]
            assert listed[0]["product_id"] == "P1"
            info = await js.consumer_info(EVENT_STREAM, DEFAULT_DURABLE)
            assert info.config.filter_subject == "iceshop.events.window.>"


async def test_a_second_projector_on_the_same_data_dir_is_refused(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    data = tmp_path / "node"
    async with projector_process(nats_server.url, data, tmp_path / "first.err"):
        argv = ["projector", "--nats", nats_server.url, "--data", str(data)]
        second = await anyio.run_process(
            [sys.executable, "-m", "iceshop.cli", *argv], env=child_env(), check=False
        )
        assert second.returncode == 2
        assert b"is in use by another iceshop process" in second.stderr


# -- two connections on one file ----------------------------------------------------------


async def test_a_reader_opening_beside_a_writer_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "readmodel.db"
    async with ReadModel(path) as writer:
        await writer.apply(Sim("W1").events, StreamPosition(EVENT_STREAM, 1))
        async with ReadModel(path, writer=False) as reader:
            assert [w.window_id for w in await all_windows(reader)] == ["W1"]
            await writer.apply(Sim("W2").events, StreamPosition(EVENT_STREAM, 2))
            assert [w.window_id for w in await all_windows(reader)] == ["W1", "W2"]
            # The writer opening again (a restarted projector) keeps everything too.
            async with ReadModel(path) as again:
                assert await again.position(EVENT_STREAM) == 2
            assert await reader.position(EVENT_STREAM) == 2


async def test_a_reader_first_creates_the_schema_the_writer_then_uses(tmp_path: Path) -> None:
    path = tmp_path / "readmodel.db"
    async with ReadModel(path, writer=False) as reader:
        assert await all_windows(reader) == []
        async with ReadModel(path) as writer:
            await writer.apply(Sim("W1").events, StreamPosition(EVENT_STREAM, 1))
        assert [w.window_id for w in await all_windows(reader)] == ["W1"]


async def test_a_reader_never_empties_a_file_of_another_version(tmp_path: Path) -> None:
    path = tmp_path / "readmodel.db"
    async with ReadModel(path) as writer:
        await writer.apply(Sim("W1").events, StreamPosition(EVENT_STREAM, 1))
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    async with ReadModel(path, writer=False):
        pass
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
        assert db.execute("SELECT window_id FROM windows").fetchall() == [("W1",)]
