"""The Savina benchmarks on Pykka's ThreadingActor: the baseline we compare against.

Each run starts its actors, times only the message phase, and stops every actor again, so
thread start-up and teardown stay out of the figure. Completion is a ``threading.Event``
set by the last actor; the harness blocks on it (no polling).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pykka

from bench._savina_messages import (
    Expect,
    Increment,
    Ping,
    Pong,
    Retrieve,
    SetNext,
    StartPing,
    Token,
    Work,
    tiny_computation,
)

WAIT_SECONDS = 120.0


def _wait(event: threading.Event) -> None:
    if not event.wait(WAIT_SECONDS):
        raise TimeoutError("pykka benchmark did not finish")


class _Pinger(pykka.ThreadingActor):
    def __init__(self) -> None:
        super().__init__()
        self.left = 0
        self.start_msg: StartPing | None = None

    def on_receive(self, message: Any) -> Any:
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


class _Ponger(pykka.ThreadingActor):
    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Ping):
            message.sender.tell(Pong())
        return None


class _Counter(pykka.ThreadingActor):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Increment):
            self.count += 1
            return None
        if isinstance(message, Retrieve):
            return self.count
        return None


class _RingMember(pykka.ThreadingActor):
    def __init__(self) -> None:
        super().__init__()
        self.next: Any = None

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Token):
            if message.hops_left == 0:
                message.done()
            else:
                self.next.tell(Token(message.hops_left - 1, message.done))
        elif isinstance(message, SetNext):
            self.next = message.next
        return None


class _Worker(pykka.ThreadingActor):
    def __init__(self) -> None:
        super().__init__()
        self.left = 0
        self.expect: Expect | None = None
        self.total = 0.0

    def on_receive(self, message: Any) -> Any:
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


def _stop_all(refs: list[pykka.ActorRef[Any]]) -> None:
    for ref in refs:
        ref.stop()


def pingpong(round_trips: int) -> float:
    pinger = _Pinger.start()
    ponger = _Ponger.start()
    done = threading.Event()
    try:
        start = time.perf_counter()
        pinger.tell(StartPing(pinger, ponger, round_trips, done.set))
        _wait(done)
        return time.perf_counter() - start
    finally:
        _stop_all([pinger, ponger])


def counting(messages: int) -> float:
    counter = _Counter.start()
    try:
        start = time.perf_counter()
        for _ in range(messages):
            counter.tell(Increment())
        count = counter.ask(Retrieve(), timeout=WAIT_SECONDS)
        elapsed = time.perf_counter() - start
        if count != messages:
            raise AssertionError(f"counted {count}, expected {messages}")
        return elapsed
    finally:
        counter.stop()


def thread_ring(actors: int, hops: int) -> float:
    ring = [_RingMember.start() for _ in range(actors)]
    done = threading.Event()
    try:
        for index, member in enumerate(ring):
            member.ask(SetNext(ring[(index + 1) % actors]), timeout=WAIT_SECONDS)
        start = time.perf_counter()
        ring[0].tell(Token(hops, done.set))
        _wait(done)
        return time.perf_counter() - start
    finally:
        _stop_all(ring)


def forkjoin(actors: int, messages: int) -> float:
    workers = [_Worker.start() for _ in range(actors)]
    finished = [threading.Event() for _ in range(actors)]
    try:
        for worker, event in zip(workers, finished, strict=True):
            worker.ask(Expect(messages, event.set), timeout=WAIT_SECONDS)
        start = time.perf_counter()
        for index in range(messages):
            work = Work(float(index))
            for worker in workers:
                worker.tell(work)
        for event in finished:
            _wait(event)
        return time.perf_counter() - start
    finally:
        _stop_all(workers)
