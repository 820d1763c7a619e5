"""What metrics cost the runtime: turn timing on and off, and the price of one scrape.

The runtime's counters (messages, failures, activations) are plain int adds and always
on; the one piece with a per-turn price is the turn timing (a ``perf_counter`` pair and a
histogram observe per turn), which ``system.dispatcher.timed`` switches. This measures it
where it weighs most, on turns of one tiny message:

* **ping-pong**: two actors trade a message, one message per turn (the worst case);
* **counting**: one actor takes a flood of messages, up to ``throughput`` per turn;
* **scrape**: ``NodeMetrics.exposition()`` with many active actors (it walks every
  mailbox), which a Prometheus scrape pays once per interval, not per message.

Both sides run in the same process and the same run, alternating per repeat; figures are
medians. The ratio is throughput with timing over throughput without (1.0: free).

    python -m bench.metrics_overhead [--quick] [--repeats N]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Awaitable, Callable

import anyio

from actors import Actor, ActorRef, ActorSystem, RealClock
from bench._common import figure, median, ratio
from iceshop.observability import ShopCounters
from iceshop.observability.metrics import NodeMetrics

WAIT_S = 120.0


class _Ball:
    __slots__ = ("done", "left", "other")

    def __init__(self, left: int, other: ActorRef, done: Callable[[], None]) -> None:
        self.left = left
        self.other = other
        self.done = done


class _Player(Actor):
    mailbox_capacity = 16

    def receive(self, message: object) -> object:
        if isinstance(message, _Ball):
            if message.left == 0:
                message.done()
            else:
                me = message.other
                message.other = self.ref
                message.left -= 1
                me.tell(message)
        return None


class _Counter(Actor):
    mailbox_capacity = 1_000_000
    count = 0

    def receive(self, message: object) -> object:
        if message == "get":
            return self.count
        self.count += 1
        return None


class _Idle(Actor):
    def receive(self, message: object) -> object:
        return None


def _system(timed: bool) -> ActorSystem:
    system = ActorSystem(clock=RealClock(), node_id="bench")
    system.dispatcher.timed = timed
    return system


async def pingpong(round_trips: int, timed: bool) -> float:
    async with _system(timed) as system:
        system.register("player", _Player)
        a, b = system.ref("player", "a"), system.ref("player", "b")
        await a.ask("warm")
        await b.ask("warm")
        done = anyio.Event()
        start = time.perf_counter()
        a.tell(_Ball(2 * round_trips, b, done.set))
        with anyio.fail_after(WAIT_S):
            await done.wait()
        return time.perf_counter() - start


async def counting(messages: int, timed: bool) -> float:
    async with _system(timed) as system:
        system.register("counter", _Counter)
        counter = system.ref("counter", "c")
        await counter.ask("warm")
        start = time.perf_counter()
        for _ in range(messages):
            counter.tell(1)
        count = await counter.ask("get", timeout=WAIT_S)
        elapsed = time.perf_counter() - start
        if count != messages + 1:  # the warm-up counted too
            raise AssertionError(f"counted {count}, expected {messages + 1}")
        return elapsed


async def scrape(actors: int, repeats: int) -> tuple[float, int]:
    """Median seconds of one exposition with ``actors`` active actors, and its size."""
    async with _system(True) as system:
        system.register("idle", _Idle)
        for i in range(actors):
            system.ref("idle", str(i)).tell("wake")
        await system.drain()
        metrics = NodeMetrics("bench", ShopCounters(), version="0.0.0")
        metrics.system = system
        samples = []
        size = 0
        for _ in range(repeats):
            start = time.perf_counter()
            size = len(metrics.exposition())
            samples.append(time.perf_counter() - start)
        return median(samples), size


def _alternate(run: Callable[[bool], Awaitable[float]], repeats: int) -> tuple[float, float]:
    """Median seconds with timing on and off, the sides alternating (fresh loop each)."""
    on: list[float] = []
    off: list[float] = []
    for i in range(repeats):
        order = (True, False) if i % 2 == 0 else (False, True)
        for timed in order:
            seconds = anyio.run(run, timed, backend="asyncio")
            (on if timed else off).append(seconds)
    return median(on), median(off)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.metrics_overhead", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--repeats", type=int, help="runs per side (default 7, quick 3)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 7)
    round_trips = 5_000 if args.quick else 100_000
    messages = 50_000 if args.quick else 500_000
    actors = 10_000 if args.quick else 100_000
    print(f"repeats per side: {repeats}; figures are medians")

    print(f"-- ping-pong ({round_trips:,} round trips, one message per turn)")
    on, off = _alternate(lambda timed: pingpong(round_trips, timed), repeats)
    n = 2 * round_trips
    print(figure("ping-pong timed", n / on, "msgs/s"))
    print(figure("ping-pong untimed", n / off, "msgs/s"))
    print(figure("turn timing cost", max(0.0, (on - off) / n) * 1e9, "ns per turn"))
    print(ratio("ping-pong turn timing on vs off", n / on, n / off, "timing off", target=0.9))

    print(f"-- counting ({messages:,} messages to one actor, up to 64 per turn)")
    on, off = _alternate(lambda timed: counting(messages, timed), repeats)
    print(figure("counting timed", messages / on, "msgs/s"))
    print(figure("counting untimed", messages / off, "msgs/s"))
    print(ratio("counting turn timing on vs off", messages / on, messages / off, "timing off"))

    print(f"-- scrape ({actors:,} active actors)")
    seconds, size = anyio.run(scrape, actors, repeats, backend="asyncio")
    print(figure("one scrape", seconds * 1000, "ms"))
    print(figure("exposition size", size, "bytes"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
