"""Clocks: where the runtime reads time and how its one timer task sleeps.

Two readings are kept apart on purpose:

* ``monotonic()`` — seconds on a clock that never jumps; used for in-memory timers,
  ask deadlines and message deadlines.
* ``time()`` — wall-clock seconds since the epoch; used for durable deadlines, which
  must mean the same instant after a restart.

:class:`VirtualClock` moves only when a test says so (:meth:`VirtualClock.set` /
:class:`~actors.testkit.ActorTestKit.advance`), so a scenario spanning hours runs in
milliseconds. :class:`RealClock` accepts an ``offset`` that shifts its wall reading,
which lets a test restart a node "an hour later" without waiting an hour.
"""

from __future__ import annotations

import math
import time as _time
from typing import Protocol

import anyio

__all__ = ["Clock", "RealClock", "VirtualClock"]


class Clock(Protocol):
    """What the runtime needs from time."""

    def monotonic(self) -> float: ...

    def time(self) -> float: ...

    async def sleep_until(self, deadline: float, wakeup: anyio.Event) -> None:
        """Return at ``deadline`` (monotonic) or as soon as ``wakeup`` is set."""
        ...


class RealClock:
    """The machine's clocks. ``offset`` (seconds) is added to the wall reading."""

    __slots__ = ("offset",)

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def monotonic(self) -> float:
        return _time.monotonic()

    def time(self) -> float:
        return _time.time() + self.offset

    async def sleep_until(self, deadline: float, wakeup: anyio.Event) -> None:
        delay = deadline - _time.monotonic()
        if math.isinf(delay):
            await wakeup.wait()
            return
        with anyio.move_on_after(max(0.0, delay)):
            await wakeup.wait()


class VirtualClock:
    """A clock that stands still until moved. ``time()`` is ``epoch + monotonic()``.

    Sleepers are woken only through their ``wakeup`` event: the test kit fires due
    timers itself, step by step, so virtual time never races the scheduler.
    """

    __slots__ = ("_epoch", "_now")

    def __init__(self, start: float = 0.0, epoch: float = 1_800_000_000.0) -> None:
        self._now = start
        self._epoch = epoch

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._epoch + self._now

    def set(self, now: float) -> None:
        """Move the clock to ``now`` (never backwards)."""
        if now < self._now:
            raise ValueError(f"virtual time cannot go back ({now} < {self._now})")
        self._now = now

    async def sleep_until(self, deadline: float, wakeup: anyio.Event) -> None:
        await wakeup.wait()
