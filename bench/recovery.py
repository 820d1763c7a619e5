"""Node restart: every durable deadline of 100k windows armed again.

A SQLite journal holds N actors, each with a few events and two durable deadlines
(activation and expiry, like a flash window). We time a node start — opening the
journal and re-arming every deadline on the timer service — until it is ready to
serve. Baseline in the same run: paging the same deadlines out of the journal with no
runtime at all (the floor). Target (DESIGN.md): 100k windows armed in <= 5 s.

    python -m bench.recovery [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import anyio
import msgspec

from actors import ActorSystem, Deadline, WriteRequest
from actors.journal import SqliteJournal
from bench._common import figure, median


async def prepare(path: Path, n: int) -> None:
    journal = SqliteJournal(path)
    await journal.open()
    enc = msgspec.msgpack.Encoder()
    far = time.time() + 86_400
    for start in range(0, n, 2000):
        await journal.write(
            [
                WriteRequest(
                    kind="window",
                    key=f"w{i}",
                    expected_seq=0,
                    events=[enc.encode({"n": k}) for k in range(3)],
                    deadlines_set=[
                        Deadline("window", f"w{i}", "activate", far + i % 3600, b""),
                        Deadline("window", f"w{i}", "expire", far + 3600 + i % 3600, b""),
                    ],
                )
                for i in range(start, min(n, start + 2000))
            ]
        )
    await journal.close()


async def node_start(path: Path, n: int) -> float:
    system = ActorSystem(journal=SqliteJournal(path))
    start = time.perf_counter()
    async with system:
        elapsed = time.perf_counter() - start
        assert len(system.timers) >= 2 * n, len(system.timers)
    return elapsed


async def bare_paging(path: Path, n: int) -> float:
    journal = SqliteJournal(path)
    await journal.open()
    start = time.perf_counter()
    seen = 0
    after = None
    while page := await journal.deadlines(after, 50_000):
        seen += len(page)
        last = page[-1]
        after = (last.due, last.kind, last.key, last.name)
    elapsed = time.perf_counter() - start
    await journal.close()
    assert seen == 2 * n
    return elapsed


async def main_async(n: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "journal.db"
        await prepare(path, n)
        ours = median([await node_start(path, n) for _ in range(repeats)])
        floor = median([await bare_paging(path, n) for _ in range(repeats)])
    print(f"windows: {n:,} ({2 * n:,} durable deadlines)")
    print(figure("node start, all deadlines armed", ours, "s"))
    print(figure("bare journal paging (floor)", floor, "s"))
    print(f"ratio recovery floor/ours: {floor / ours:.2f} (baseline/ours; 1.0 = no overhead)")
    scaled = ours * 100_000 / n
    print(f"per 100k windows: {scaled:.2f} s  target <= 5 s: {'met' if scaled <= 5 else 'MISSED'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.recovery")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    anyio.run(main_async, 10_000 if args.quick else 100_000, 1 if args.quick else 3)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
