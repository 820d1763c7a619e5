"""Resident memory of one million idle actors.

N plain actors are activated (each handles one message, so each has been fully
through the runtime: registry entry, mailbox created and dropped, turn run) and then
left idle. We report the growth of the process's resident set per actor.

Baseline in the same run, measured first in the same process: N bare slotted objects
holding the same key strings in a dict — the floor of any registry of N objects in
Python. Target (DESIGN.md): 1M idle actors <= 400 MiB.

    python -m bench.idle_memory [--quick]
"""

from __future__ import annotations

import argparse
import gc
from typing import Any

import anyio
import anyio.lowlevel

from actors import Actor, ActorSystem
from bench._common import figure, rss_mib


class Idle(Actor):
    __slots__ = ()

    def receive(self, message: Any) -> Any:
        return None


class Bare:
    __slots__ = ("a", "b", "c", "d")

    def __init__(self) -> None:
        self.a = self.b = self.c = self.d = None


async def actors(n: int) -> float:
    async with ActorSystem() as system:
        system.register("idle", Idle)
        gc.collect()
        before = rss_mib()
        done = anyio.Event()
        left = [n]

        def count(_: Any) -> None:
            left[0] -= 1
            if left[0] == 0:
                done.set()

        for i in range(n):
            system.ref("idle", f"actor-{i}").tell(None, reply_to=count)
            if i % 10_000 == 0:
                await anyio.lowlevel.checkpoint()  # let the dispatcher keep up, like real traffic
        await done.wait()
        gc.collect()
        grown = rss_mib() - before
        assert system.active_count("idle") == n
        assert system.dispatcher.busy is False
        return grown


def bare(n: int) -> tuple[float, dict[str, Bare]]:
    gc.collect()
    before = rss_mib()
    registry = {f"actor-{i}": Bare() for i in range(n)}
    gc.collect()
    return rss_mib() - before, registry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.idle_memory")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    n = 100_000 if args.quick else 1_000_000
    floor, registry = bare(n)
    del registry
    gc.collect()
    ours = anyio.run(actors, n)
    print(f"actors: {n:,}")
    print(figure("idle actors resident growth", ours, "MiB"))
    print(figure("idle actors per actor", ours * 1024 * 1024 / n, "bytes"))
    print(figure("bare slotted objects in a dict (floor)", floor, "MiB"))
    print(f"ratio idle memory floor/ours: {floor / ours:.2f} (baseline/ours; 1.0 = no overhead)")
    per_million = ours * 1_000_000 / n
    verdict = "met" if per_million <= 400 else "MISSED"
    print(f"per 1M actors: {per_million:,.0f} MiB  target <= 400 MiB: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
