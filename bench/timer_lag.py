"""Timer lag with 100k and 1M pending timers, idle and under load.

N timers are pending on the node's one timer service (due between 1 minute and 1 hour
from now, like the expiries of many windows), addressed to 1,000 actors. While they
wait, PROBES probe timers fall due over the next few seconds (about 1,000 a second);
each arrives in its actor's turn as a message and the actor records how late it is
(monotonic now - due). Measured on an idle node and while ping-pong pairs keep the
dispatcher saturated (load).

Baseline in the same run: the same pending and probe timers scheduled directly on the
event loop with ``loop.call_at`` (no actors, no mailbox) — the floor for timers in this
process. Targets (DESIGN.md): p99 <= 5 ms idle, <= 50 ms under load.

    python -m bench.timer_lag [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from typing import Any

import anyio

from actors import Actor, ActorSystem
from bench._common import figure

PROBES = 5_000  # probe timers, due over SPREAD seconds
SPREAD = 5.0
LEAD = 0.5  # first probe due this long after everything is armed
HORIZON = (60.0, 3600.0)  # the pending timers fall due in this range (seconds)


class Sink(Actor):
    __slots__ = ()
    lags: list[float] = []

    def receive(self, message: Any) -> Any:
        Sink.lags.append(time.monotonic() - message)
        return None


class Ping(Actor):
    __slots__ = ()

    def receive(self, message: Any) -> Any:
        peer, left = message
        if left:
            peer.tell((self.ref, left - 1))
        return None


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def ours(n: int, load: bool) -> list[float]:
    Sink.lags = []
    async with ActorSystem() as system:
        system.register("sink", Sink)
        system.register("ping", Ping)
        arm = system.timers.arm
        now = time.monotonic()
        lo, hi = HORIZON
        for i in range(n):
            arm("sink", f"s{i % 1000}", f"t{i}", now + lo + (hi - lo) * i / n, None)
        if load:
            for k in range(8):
                system.ref("ping", f"x{k}").tell((system.ref("ping", f"y{k}"), 10**9))
        first = time.monotonic() + LEAD
        for i in range(PROBES):
            due = first + SPREAD * i / PROBES
            arm("sink", f"s{i % 1000}", f"probe{i}", due, due)
        assert len(system.timers) >= n + PROBES
        deadline = first + SPREAD + 10
        while len(Sink.lags) < PROBES and time.monotonic() < deadline:
            await anyio.sleep(0.05)
        assert len(Sink.lags) == PROBES, f"only {len(Sink.lags)} of {PROBES} probes fired"
        for actor in list(system.kind("ping").active.values()):
            actor.stop()
        return Sink.lags


async def baseline(n: int) -> list[float]:
    loop = asyncio.get_running_loop()
    lags: list[float] = []

    def fire(due: float | None) -> None:
        if due is not None:
            lags.append(loop.time() - due)

    now = loop.time()
    lo, hi = HORIZON
    handles = [loop.call_at(now + lo + (hi - lo) * i / n, fire, None) for i in range(n)]
    first = loop.time() + LEAD
    for i in range(PROBES):
        due = first + SPREAD * i / PROBES
        loop.call_at(due, fire, due)
    while len(lags) < PROBES:
        await asyncio.sleep(0.05)
    for handle in handles:
        handle.cancel()
    return lags


def report(label: str, lags: list[float], target_ms: float | None) -> None:
    p50, p99, worst = pct(lags, 0.5) * 1e3, pct(lags, 0.99) * 1e3, max(lags) * 1e3
    line = f"{label}: p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {worst:.2f} ms"
    if target_ms is not None:
        line += f"  target p99 <= {target_ms:g} ms: {'met' if p99 <= target_ms else 'MISSED'}"
    print(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.timer_lag")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    sizes = [20_000] if args.quick else [100_000, 1_000_000]
    for n in sizes:
        print(f"-- {n:,} pending timers; {PROBES:,} probes due over {SPREAD:g} s")
        gc.collect()
        base = anyio.run(baseline, n)
        report(f"loop.call_at baseline idle ({n:,})", base, None)
        idle = anyio.run(ours, n, False)
        report(f"actors idle ({n:,})", idle, 5.0)
        loaded = anyio.run(ours, n, True)
        report(f"actors under load ({n:,})", loaded, 50.0)
        print(
            figure(
                f"p99 ratio ours-idle/baseline ({n:,})",
                pct(idle, 0.99) / max(pct(base, 0.99), 1e-6),
                "x",
            )
        )
        del base, idle, loaded
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
