"""Messages and parameters shared by both halves of the Savina benchmarks.

Both runtimes pass the very same message objects, so the comparison measures the runtimes,
not the message classes. Refs and completion callbacks travel inside the messages, as in the
Savina originals, so no actor needs to know how the other runtime names actors.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import msgspec

Done = Callable[[], None]


class Teller(Protocol):
    """What both runtimes' refs share: a non-blocking ``tell``."""

    def tell(self, message: Any) -> None: ...


class SavinaParams(msgspec.Struct, frozen=True):
    """Sizes of one Savina run; identical for both runtimes within one run."""

    pingpong_round_trips: int
    counting_messages: int
    ring_actors: int
    ring_hops: int
    forkjoin_actors: int
    forkjoin_messages: int


FULL = SavinaParams(
    pingpong_round_trips=40_000,
    counting_messages=300_000,
    ring_actors=100,
    ring_hops=100_000,
    forkjoin_actors=60,
    forkjoin_messages=10_000,
)
QUICK = SavinaParams(
    pingpong_round_trips=2_000,
    counting_messages=20_000,
    ring_actors=20,
    ring_hops=5_000,
    forkjoin_actors=10,
    forkjoin_messages=500,
)


class Warm(msgspec.Struct, frozen=True):
    """Activates an actor before the clock starts; every actor ignores it."""


# ping-pong: the harness tells Start to the pinger; pinger and ponger trade Ping/Pong.
class StartPing(msgspec.Struct, frozen=True):
    me: Teller
    ponger: Teller
    round_trips: int
    done: Done


class Ping(msgspec.Struct, frozen=True):
    sender: Teller


class Pong(msgspec.Struct, frozen=True):
    pass


# counting: the harness tells N Increments, then asks Retrieve; the reply is the count.
class Increment(msgspec.Struct, frozen=True):
    pass


class Retrieve(msgspec.Struct, frozen=True):
    pass


# thread ring: every member learns its successor; a Token travels `hops` hops.
class SetNext(msgspec.Struct, frozen=True):
    next: Teller


class Token(msgspec.Struct, frozen=True):
    hops_left: int
    done: Done


# fork-join throughput: each worker expects `expected` Work messages, then calls done.
class Expect(msgspec.Struct, frozen=True):
    expected: int
    done: Done


class Work(msgspec.Struct, frozen=True):
    value: float


def tiny_computation(value: float) -> float:
    """The per-message work of fork-join throughput (Savina uses a few sin/cos calls)."""
    return math.sin(value) * math.cos(value)
