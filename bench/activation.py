"""Virtual actor activation rate: fresh actors, and actors recovered from the journal.

* **cold**: the first message to each of N keys activates a plain actor (no stored
  state). Baseline in the same run: starting Pykka actors (a thread each), the model
  our API follows. Target (DESIGN.md): >= 200k activations/s.
* **recovering**: N persistent actors with stored events in a SQLite file are activated
  by one message each and answer after replaying their journal. Baseline in the same
  run: the same N actors loaded by the bare journal ``recover`` call in one batch (the
  floor for any runtime on this store). Target: >= 20k activations/s.

    python -m bench.activation [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pykka

from actors import Actor, ActorSystem, PersistentActor, WriteRequest
from actors.journal import SqliteJournal
from bench._common import figure, median, ratio


class Idle(Actor):
    __slots__ = ()

    def receive(self, message: Any) -> Any:
        return None


class Tick(msgspec.Struct, frozen=True, tag=True):
    n: int


class Stored(PersistentActor):
    __slots__ = ("total",)
    event_type = Tick

    def __init__(self) -> None:
        self.total = 0

    def apply(self, event: Any) -> None:
        self.total += event.n

    def receive(self, message: Any) -> Any:
        return self.total


class PykkaIdle(pykka.ThreadingActor):
    def on_receive(self, message: Any) -> Any:
        return None


async def cold(n: int) -> float:
    async with ActorSystem() as system:
        system.register("idle", Idle)
        done = anyio.Event()
        left = [n]

        def count(_: Any) -> None:
            left[0] -= 1
            if left[0] == 0:
                done.set()

        start = time.perf_counter()
        for i in range(n):
            system.ref("idle", f"k{i}").tell(None, reply_to=count)
        await done.wait()
        elapsed = time.perf_counter() - start
        assert system.active_count("idle") == n
        return n / elapsed


def pykka_starts(n: int) -> float:
    start = time.perf_counter()
    refs = [PykkaIdle.start() for _ in range(n)]
    elapsed = time.perf_counter() - start
    for ref in refs:
        ref.stop(block=False)
    pykka.ActorRegistry.stop_all()
    return n / elapsed


async def prepare(path: Path, n: int, events: int) -> None:
    journal = SqliteJournal(path)
    await journal.open()
    enc = msgspec.msgpack.Encoder()
    batch = [
        WriteRequest(
            kind="stored", key=f"k{i}", expected_seq=0, events=[enc.encode(Tick(1))] * events
        )
        for i in range(n)
    ]
    for j in range(0, n, 2000):
        await journal.write(batch[j : j + 2000])
    await journal.close()


async def recovering(path: Path, n: int, events: int) -> float:
    async with ActorSystem(journal=SqliteJournal(path)) as system:
        system.register("stored", Stored)
        done = anyio.Event()
        left = [n]
        wrong: list[Any] = []

        def count(value: Any) -> None:
            if value != events:
                wrong.append(value)
            left[0] -= 1
            if left[0] == 0:
                done.set()

        start = time.perf_counter()
        for i in range(n):
            system.ref("stored", f"k{i}").tell(None, reply_to=count)
        await done.wait()
        elapsed = time.perf_counter() - start
        assert not wrong, wrong[:3]
        return n / elapsed


async def bare_recover(path: Path, n: int) -> float:
    journal = SqliteJournal(path)
    await journal.open()
    ids = [("stored", f"k{i}") for i in range(n)]
    start = time.perf_counter()
    for j in range(0, n, 2000):
        await journal.recover(ids[j : j + 2000])
    elapsed = time.perf_counter() - start
    await journal.close()
    return n / elapsed


async def main_async(quick: bool, repeats: int) -> None:
    n_cold = 20_000 if quick else 200_000
    n_pykka = 500 if quick else 2_000
    n_rec = 5_000 if quick else 50_000
    events = 3
    print(
        f"cold: {n_cold} actors; pykka: {n_pykka} actors; "
        f"recovering: {n_rec} actors x {events} events"
    )
    await cold(n_cold // 10)  # warm up the interpreter's caches and allocator
    ours = median([await cold(n_cold) for _ in range(repeats)])
    theirs = median([pykka_starts(n_pykka) for _ in range(repeats)])
    print(figure("cold activations ours", ours, "actors/s"))
    print(figure("pykka actor starts", theirs, "actors/s"))
    print(ratio("activation cold vs pykka", ours, theirs, "pykka"))
    print(ratio("activation cold vs target 200k/s", ours, 200_000, "target", target=1.0))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "journal.db"
        await prepare(path, n_rec, events)
        rec = median([await recovering(path, n_rec, events) for _ in range(repeats)])
        floor = median([await bare_recover(path, n_rec) for _ in range(repeats)])
    print(figure("recovering activations ours", rec, "actors/s"))
    print(figure("bare journal recover (floor)", floor, "actors/s"))
    print(ratio("activation recovering vs bare recover", rec, floor, "bare"))
    print(ratio("activation recovering vs target 20k/s", rec, 20_000, "target", target=1.0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.activation")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    anyio.run(main_async, args.quick, args.repeats or (1 if args.quick else 3))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
