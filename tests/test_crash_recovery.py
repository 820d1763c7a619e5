"""SIGKILL a node while it takes a stream of acknowledged writes; after a restart every
acknowledged write is there, and deadlines that passed while it was down have fired.

Real parts only: a nats-server from the venv, a SQLite file, the node as a separate
process. The restarted node runs with its wall clock an hour ahead, so the deadlines
(due 30 s after each write) are overdue at start without the test waiting for them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import anyio
import msgspec
import pytest

from actors import ActorsError
from actors.nats import NatsServer, NatsTransport

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

NODE = Path(__file__).with_name("crash_node.py")
KEYS = [f"L{i}" for i in range(4)]


def start_node(url: str, journal: Path, offset: float) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen(
        [sys.executable, str(NODE), url, str(journal), str(offset)],
        stdout=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # log lines may come first
        if line.strip() == b"ready":
            # Keep draining its output so the node never blocks on a full pipe.
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc
    raise AssertionError(f"the node exited before it was ready ({proc.wait()})")


async def test_acknowledged_writes_and_deadlines_survive_sigkill(tmp_path: Path) -> None:
    journal = tmp_path / "node.db"
    with NatsServer(jetstream=False) as server:
        node = start_node(server.url, journal, 0.0)
        acked: dict[str, list[str]] = {key: [] for key in KEYS}
        with_deadline: set[str] = set()
        try:
            async with NatsTransport(server.url) as client:

                async def writer(key: str) -> None:
                    for n in range(100_000):
                        write_id = f"{key}-{n}"
                        body = {"id": write_id, "deadline_in": 30.0 if n % 3 == 0 else None}
                        try:
                            reply, _ = await client.request(
                                f"crash.ledger.{key}.add", msgspec.json.encode(body), timeout=2.0
                            )
                        except ActorsError:
                            return  # the node is gone
                        assert msgspec.json.decode(reply) == {"ok": True}
                        acked[key].append(write_id)
                        if body["deadline_in"] is not None:
                            with_deadline.add(write_id)

                async with anyio.create_task_group() as tg:
                    for key in KEYS:
                        tg.start_soon(writer, key)
                    # Kill as soon as a good stream of writes has been acknowledged.
                    while sum(len(v) for v in acked.values()) < 400:
                        await anyio.sleep(0.01)
                    os.kill(node.pid, signal.SIGKILL)
        finally:
            node.kill()
            node.wait()
        assert node.returncode == -signal.SIGKILL
        total = sum(len(v) for v in acked.values())
        assert total >= 400

        node = start_node(server.url, journal, 3600.0)
        try:
            async with NatsTransport(server.url) as client:
                for key in KEYS:
                    expected_fired = {i for i in acked[key] if i in with_deadline}
                    assert expected_fired
                    state: dict[str, list[str]] = {}
                    for _ in range(200):  # overdue deadlines fire right after start
                        reply, _ = await client.request(f"crash.ledger.{key}.get", b"{}", timeout=5)
                        state = msgspec.json.decode(reply)
                        if expected_fired <= set(state["fired"]):
                            break
                        await anyio.sleep(0.01)
                    stored = state["ids"]
                    assert set(acked[key]) <= set(stored), "an acknowledged write was lost"
                    # Writes land in order; anything stored beyond the acks was in flight.
                    assert stored[: len(acked[key])] == acked[key]
                    assert expected_fired <= set(state["fired"])
                    assert len(state["fired"]) == len(set(state["fired"])), "a deadline fired twice"
        finally:
            node.terminate()
            node.wait(timeout=10)
