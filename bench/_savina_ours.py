"""The Savina benchmarks on our runtime: ``actors.ActorSystem`` with sync ``receive`` handlers.

Message passing is tell-based exactly as in the Savina originals; refs and the completion
callback travel inside the messages. Actors are activated (and wired) by an ``ask`` before
the clock starts, mirroring the Pykka half where thread start-up is outside the figure.
Completion is an ``anyio.Event`` set by the last actor's handler, awaited by the harness.

Mailboxes are bounded, as everywhere in the runtime. Where the harness floods an actor
before it gets a turn (counting, fork-join), the actor kind is given a capacity that fits
the whole run, since Savina's mailboxes are unbounded and overflow is not what is measured.
"""

from __future__ import annotations

import time
from typing import Any

import anyio

from actors import Actor, ActorSystem, RealClock
from bench._savina_messages import (
    Expect,
    Increment,
    Ping,
    Pong,
    Retrieve,
    SetNext,
    StartPing,
    Token,
    Warm,
    Work,
    tiny_computation,
)

WAIT_SECONDS = 120.0
SMALL_MAILBOX = 16


def _system() -> ActorSystem:
    return ActorSystem(clock=RealClock(), journal=None, outbox_sink=None, node_id="bench")


async def _wait(event: anyio.Event) -> None:
    with anyio.fail_after(WAIT_SECONDS):
        await event.wait()


class _Pinger(Actor):
    mailbox_capacity = SMALL_MAILBOX
    left = 0
    start_msg: StartPing | None = None

    def receive(self, message: object) -> object:
        if isinstance(message, Pong):
            start = self.start_msg
            assert start is not None
            self.left -= 1
            if self.left == 0:
                start.done()
            else:
                start.ponger.tell(Ping(start.me))
        elif isinstance(message, StartPing):
            self.start_msg = message
            self.left = message.round_trips
            message.ponger.tell(Ping(message.me))
        return None


class _Ponger(Actor):
    mailbox_capacity = SMALL_MAILBOX

    def receive(self, message: object) -> object:
        if isinstance(message, Ping):
            message.sender.tell(Pong())
        return None


class _Counter(Actor):
    count = 0

    def receive(self, message: object) -> object:
        if isinstance(message, Increment):
            self.count += 1
            return None
        if isinstance(message, Retrieve):
            return self.count
        return None


class _RingMember(Actor):
    mailbox_capacity = SMALL_MAILBOX
    next: Any = None

    def receive(self, message: object) -> object:
        if isinstance(message, Token):
            if message.hops_left == 0:
                message.done()
            else:
                self.next.tell(Token(message.hops_left - 1, message.done))
        elif isinstance(message, SetNext):
            self.next = message.next
        return None


class _Worker(Actor):
    left = 0
    total = 0.0
    expect: Expect | None = None

    def receive(self, message: object) -> object:
        if isinstance(message, Work):
            self.total += tiny_computation(message.value)
            self.left -= 1
            if self.left == 0:
                assert self.expect is not None
                self.expect.done()
        elif isinstance(message, Expect):
            self.expect = message
            self.left = message.expected
        return None


def _with_capacity(kind: type[Actor], capacity: int) -> type[Actor]:
    """A subclass of ``kind`` whose mailbox holds ``capacity`` messages."""
    return type(kind.__name__, (kind,), {"mailbox_capacity": capacity})


async def pingpong(round_trips: int) -> float:
    async with _system() as system:
        system.register("pinger", _Pinger)
        system.register("ponger", _Ponger)
        pinger = system.ref("pinger", "p")
        ponger = system.ref("ponger", "p")
        await pinger.ask(Warm(), timeout=WAIT_SECONDS)
        await ponger.ask(Warm(), timeout=WAIT_SECONDS)
        done = anyio.Event()
        start = time.perf_counter()
        pinger.tell(StartPing(pinger, ponger, round_trips, done.set))
        await _wait(done)
        return time.perf_counter() - start


async def counting(messages: int) -> float:
    async with _system() as system:
        system.register("counter", _with_capacity(_Counter, messages + 1))
        counter = system.ref("counter", "c")
        await counter.ask(Warm(), timeout=WAIT_SECONDS)
        start = time.perf_counter()
        for _ in range(messages):
            counter.tell(Increment())
        count = await counter.ask(Retrieve(), timeout=WAIT_SECONDS)
        elapsed = time.perf_counter() - start
        if count != messages:
            raise AssertionError(f"counted {count}, expected {messages}")
        return elapsed


async def thread_ring(actors: int, hops: int) -> float:
    async with _system() as system:
        system.register("ring", _RingMember)
        ring = [system.ref("ring", str(index)) for index in range(actors)]
        for index, member in enumerate(ring):
            await member.ask(SetNext(ring[(index + 1) % actors]), timeout=WAIT_SECONDS)
        done = anyio.Event()
        start = time.perf_counter()
        ring[0].tell(Token(hops, done.set))
        await _wait(done)
        return time.perf_counter() - start


async def forkjoin(actors: int, messages: int) -> float:
    async with _system() as system:
        system.register("worker", _with_capacity(_Worker, messages + 1))
        workers = [system.ref("worker", str(index)) for index in range(actors)]
        finished = [anyio.Event() for _ in range(actors)]
        for worker, event in zip(workers, finished, strict=True):
            await worker.ask(Expect(messages, event.set), timeout=WAIT_SECONDS)
        start = time.perf_counter()
        for index in range(messages):
            work = Work(float(index))
            for worker in workers:
                worker.tell(work)
        for event in finished:
            await _wait(event)
        return time.perf_counter() - start
