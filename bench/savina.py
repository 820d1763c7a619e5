"""Savina ping-pong, counting, thread ring and fork-join throughput: our runtime vs Pykka.

Each benchmark runs on Pykka's ThreadingActor and on ``actors.ActorSystem`` with the same
sizes, in the same process and the same run, alternating sides per benchmark so a noisy
neighbour hurts both. Sizes are Savina's defaults except counting (1M scaled to 300k), chosen
so each Pykka run takes about 1-3 s on two cores. Each side's figure is the median of
``--repeats`` runs; the ratio is our throughput over Pykka's (above 1: we are faster).

    python -m bench.savina [--quick] [--repeats N] [--side both|pykka|ours]
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import ModuleType

import anyio

from bench import _savina_pykka
from bench._common import figure, format_value, median, median_of_runs, ratio
from bench._savina_messages import FULL, QUICK, SavinaParams

# Targets from the design brief (ratio of throughputs, ours/Pykka); None: no target, report.
TARGETS: dict[str, float | None] = {
    "ping-pong": 5.0,
    "counting": 8.0,
    "thread-ring": None,
    "fork-join": None,
}


@dataclass(frozen=True)
class Case:
    name: str
    sizes: str
    messages: int
    pykka: Callable[[], float]
    ours: Callable[[], Awaitable[float]] | None


def _cases(params: SavinaParams, with_ours: bool) -> list[Case]:
    # Imported only when asked for, so the Pykka half runs even where ours cannot import.
    ours: ModuleType | None = None
    if with_ours:
        ours = importlib.import_module("bench._savina_ours")
    p = params
    return [
        Case(
            "ping-pong",
            f"{p.pingpong_round_trips:,} round trips",
            2 * p.pingpong_round_trips,
            lambda: _savina_pykka.pingpong(p.pingpong_round_trips),
            (lambda: ours.pingpong(p.pingpong_round_trips)) if ours else None,
        ),
        Case(
            "counting",
            f"{p.counting_messages:,} increments + 1 ask",
            p.counting_messages + 1,
            lambda: _savina_pykka.counting(p.counting_messages),
            (lambda: ours.counting(p.counting_messages)) if ours else None,
        ),
        Case(
            "thread-ring",
            f"{p.ring_actors} actors, {p.ring_hops:,} hops",
            p.ring_hops + 1,
            lambda: _savina_pykka.thread_ring(p.ring_actors, p.ring_hops),
            (lambda: ours.thread_ring(p.ring_actors, p.ring_hops)) if ours else None,
        ),
        Case(
            "fork-join",
            f"{p.forkjoin_actors} actors x {p.forkjoin_messages:,} messages",
            p.forkjoin_actors * p.forkjoin_messages,
            lambda: _savina_pykka.forkjoin(p.forkjoin_actors, p.forkjoin_messages),
            (lambda: ours.forkjoin(p.forkjoin_actors, p.forkjoin_messages)) if ours else None,
        ),
    ]


def _run_ours(run: Callable[[], Awaitable[float]], repeats: int) -> float:
    # A fresh event loop per run: nothing carries over between repeats, as on the Pykka side.
    return median([anyio.run(run, backend="asyncio") for _ in range(repeats)])


def _report(name: str, side: str, seconds: float, messages: int) -> float:
    throughput = messages / seconds
    print(figure(f"{side} {name} time", seconds, "s (median)"))
    print(figure(f"{side} {name}", throughput, "msgs/s"))
    return throughput


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.savina", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--repeats", type=int, help="runs per side (default 5, quick 2)")
    parser.add_argument("--side", choices=("both", "pykka", "ours"), default="both")
    args = parser.parse_args(argv)
    params = QUICK if args.quick else FULL
    repeats = args.repeats or (2 if args.quick else 5)
    with_pykka = args.side in ("both", "pykka")
    with_ours = args.side in ("both", "ours")
    print(f"repeats per side: {repeats}; figures are medians")
    for case in _cases(params, with_ours):
        print(f"-- {case.name} ({case.sizes}; {format_value(case.messages)} messages)")
        pykka_rate = ours_rate = None
        if with_pykka:
            seconds = median_of_runs(case.pykka, repeats)
            pykka_rate = _report(case.name, "pykka", seconds, case.messages)
        if with_ours and case.ours is not None:
            seconds = _run_ours(case.ours, repeats)
            ours_rate = _report(case.name, "ours", seconds, case.messages)
        if pykka_rate is not None and ours_rate is not None:
            print(ratio(case.name, ours_rate, pykka_rate, "pykka", TARGETS[case.name]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
