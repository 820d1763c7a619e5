"""SQLite journal throughput: group commit vs one commit per event, side by side.

The design rests on this ratio: a commit costs far more than an event, so the runtime
commits a whole group of actors' turns in one transaction. Both modes run in the same
process on fresh files in the same temporary directory, alternating rounds so a noisy
neighbour hurts both; each figure is the median of the rounds. Also reported: batch
recovery (actors/s, target >= 20k/s) and deadline paging (how fast a restart can re-arm
its deadlines). The group is measured twice: spread over 50 actors (each commit dirties a
page per actor) and all for one hot actor (the window actor's case: appends stay on a few
pages).

Beside them, the same two group commits on the JetStream journal (the cluster mode's), on
a private single nats-server with file storage: one record per actor per write, all
pipelined, against one SQLite transaction.

    python -m bench.journal_throughput [--quick] [--seconds S] [--synchronous NORMAL|FULL]
                                       [--no-jetstream]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal

import anyio

from actors.journal import Deadline, JetStreamJournal, Journal, SqliteJournal, WriteRequest
from actors.nats import NatsServer, NatsTransport
from bench._common import figure, median, ratio

Sync = Literal["NORMAL", "FULL"]

GROUP_EVENTS = 500
GROUP_ACTORS = 50
PAYLOAD = b"x" * 100


async def group_commit(path: Path, seconds: float, synchronous: Sync, actors: int) -> float:
    """Events/s committing ``GROUP_EVENTS`` events spread over ``actors`` actors per write."""
    return await group_commit_on(SqliteJournal(path, synchronous=synchronous), seconds, actors)


async def group_commit_on(journal: Journal, seconds: float, actors: int) -> float:
    """:func:`group_commit` on any journal (opened and closed here)."""
    per_actor = GROUP_EVENTS // actors
    await journal.open()
    try:
        heads = [0] * actors
        written = 0
        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            batch = [
                WriteRequest("bench", f"g{i}", heads[i], events=[PAYLOAD] * per_actor)
                for i in range(actors)
            ]
            results = await journal.write(batch)
            if any(r is not None for r in results):
                raise RuntimeError(f"unexpected conflict: {results}")
            for i in range(actors):
                heads[i] += per_actor
            written += per_actor * actors
        return written / elapsed
    finally:
        await journal.close()


async def single_commit(path: Path, seconds: float, synchronous: Sync) -> float:
    """Events/s committing every event in its own write (round robin over the actors)."""
    journal = SqliteJournal(path, synchronous=synchronous)
    await journal.open()
    try:
        heads = [0] * GROUP_ACTORS
        written = 0
        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            i = written % GROUP_ACTORS
            [result] = await journal.write(
                [WriteRequest("bench", f"s{i}", heads[i], events=[PAYLOAD])]
            )
            if result is not None:
                raise RuntimeError(f"unexpected conflict: {result}")
            heads[i] += 1
            written += 1
        return written / elapsed
    finally:
        await journal.close()


async def recovery(path: Path, actors: int, per_call: int) -> float:
    """Actors/s recovered (5 events, an idempotency record and a deadline each)."""
    journal = SqliteJournal(path)
    await journal.open()
    try:
        for start in range(0, actors, 1000):
            await journal.write(
                [
                    WriteRequest(
                        "bench",
                        f"r{i}",
                        0,
                        events=[PAYLOAD] * 5,
                        idempotency=[(f"req-{i}", b"ok")],
                        deadlines_set=[Deadline("bench", f"r{i}", "close", 1e9 + i, b"")],
                    )
                    for i in range(start, min(start + 1000, actors))
                ]
            )
        ids = [("bench", f"r{i}") for i in range(actors)]
        began = time.perf_counter()
        for start in range(0, actors, per_call):
            got = await journal.recover(ids[start : start + per_call])
            if got[0].seq != 5:
                raise RuntimeError("recovery lost events")
        recover_rate = actors / (time.perf_counter() - began)

        began = time.perf_counter()
        cursor: tuple[float, str, str, str] | None = None
        paged = 0
        while page := await journal.deadlines(after=cursor, limit=10_000):
            paged += len(page)
            last = page[-1]
            cursor = (last.due, last.kind, last.key, last.name)
        paging_rate = paged / (time.perf_counter() - began)
        if paged != actors:
            raise RuntimeError(f"paged {paged} deadlines, expected {actors}")
        print(figure("deadline paging (10k per page)", paging_rate, "deadlines/s"))
        return recover_rate
    finally:
        await journal.close()


async def jetstream_rounds(
    directory: Path, rounds: int, seconds: float
) -> tuple[list[float], list[float]]:
    """The two group commits on a fresh stream per round, on one private server."""
    spread: list[float] = []
    hot: list[float] = []
    async with (
        NatsServer(store_dir=directory / "jetstream") as server,
        NatsTransport([server.url]) as transport,
    ):
        for n in range(rounds):
            spread.append(
                await group_commit_on(
                    JetStreamJournal(transport, stream=f"G{n}", prefix=f"g{n}"),
                    seconds,
                    GROUP_ACTORS,
                )
            )
            hot.append(
                await group_commit_on(
                    JetStreamJournal(transport, stream=f"H{n}", prefix=f"h{n}"), seconds, 1
                )
            )
    return spread, hot


async def run(args: argparse.Namespace) -> None:
    rounds = 2 if args.quick else 3
    seconds = args.seconds or (0.4 if args.quick else 1.5)
    actors = 5_000 if args.quick else 50_000
    print(
        f"synchronous={args.synchronous}; {rounds} rounds x {seconds:g} s per mode; "
        f"{len(PAYLOAD)}-byte events; figures are medians"
    )
    spread: list[float] = []
    hot: list[float] = []
    single: list[float] = []
    with tempfile.TemporaryDirectory(prefix="journal-bench-") as tmp:
        directory = Path(tmp)
        for n in range(rounds):
            sync = args.synchronous
            spread.append(await group_commit(directory / f"g{n}.db", seconds, sync, GROUP_ACTORS))
            hot.append(await group_commit(directory / f"h{n}.db", seconds, sync, 1))
            single.append(await single_commit(directory / f"s{n}.db", seconds, sync))
        g, h, s = median(spread), median(hot), median(single)
        label = f"group commit ({GROUP_EVENTS} events / {GROUP_ACTORS} actors per commit)"
        print(figure(label, g, "events/s"))
        print(figure(f"group commit ({GROUP_EVENTS} events / 1 actor per commit)", h, "events/s"))
        print(figure("one commit per event", s, "events/s"))
        print(ratio("group commit", g, s, "one-commit-per-event"))
        print(ratio("group commit, one hot actor", h, s, "one-commit-per-event"))
        rate = await recovery(directory / "r.db", actors, 1000)
        print(figure(f"recover ({actors:,} actors, 1000 per call)", rate, "actors/s"))
        if args.jetstream:
            js_spread, js_hot = await jetstream_rounds(directory, rounds, seconds)
            jg, jh = median(js_spread), median(js_hot)
            print(figure(f"jetstream {label}", jg, "events/s"))
            print(
                figure(f"jetstream group commit ({GROUP_EVENTS} events / 1 actor)", jh, "events/s")
            )
            print(ratio("jetstream group commit", jg, g, "sqlite-group-commit"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.journal_throughput", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--seconds", type=float, help="seconds per mode per round (default 1.5)")
    parser.add_argument("--synchronous", choices=("NORMAL", "FULL"), default="NORMAL")
    parser.add_argument(
        "--no-jetstream",
        dest="jetstream",
        action="store_false",
        help="skip the JetStream journal's figures (they start a nats-server)",
    )
    args = parser.parse_args(argv)
    anyio.run(run, args, backend="asyncio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
