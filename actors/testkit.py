"""Test kit: run actors on virtual time, watch what they send, settle the system.

::

    async with ActorTestKit() as kit:
        kit.system.register("window", Window)
        ref = kit.system.ref("window", "w1")
        await ref.ask(Open(...))
        await kit.advance(3600)          # an hour passes in microseconds
        probe = kit.probe()
        ...

:meth:`ActorTestKit.advance` moves the virtual clock from one due timer to the next,
letting the system settle after each, so timers fire in order and at their exact time.
"""

from __future__ import annotations

from collections import deque
from types import TracebackType
from typing import Any

import anyio
import anyio.lowlevel

from .actor import Actor
from .clock import VirtualClock
from .journal.base import Journal
from .outbox import OutboxSink
from .ref import ActorRef
from .system import ActorSystem

__all__ = ["ActorTestKit", "Probe", "advance_to", "settle"]


class _ProbeActor(Actor):
    __slots__ = ("probe",)

    probe: Probe

    def receive(self, message: Any) -> Any:
        self.probe._received.append(message)
        self.probe._arrived.set()
        return None


class Probe:
    """An actor that records what it receives; ``ref`` is where to send things."""

    def __init__(self, system: ActorSystem) -> None:
        self._received: deque[Any] = deque()
        self._arrived = anyio.Event()
        actor = _ProbeActor()
        actor.probe = self
        self.ref: ActorRef = system.spawn(lambda: actor)
        self._system = system

    @property
    def received(self) -> list[Any]:
        return list(self._received)

    def reply_to(self, value: Any) -> None:
        """Usable as a ``reply_to`` callback: records the reply."""
        self._received.append(value)
        self._arrived.set()

    async def expect(self, type_: type | None = None, *, within: int = 10_000) -> Any:
        """Return the next message (of ``type_`` if given), letting the system run up to
        ``within`` loop iterations for it; fails when nothing comes."""
        for _ in range(within):
            if self._received:
                message = self._received.popleft()
                if type_ is not None and not isinstance(message, type_):
                    raise AssertionError(f"expected {type_.__name__}, got {message!r}")
                return message
            await anyio.lowlevel.checkpoint()
        raise AssertionError("probe received nothing")

    async def expect_nothing(self) -> None:
        """Settle the system and check nothing was received."""
        await settle(self._system)
        if self._received:
            raise AssertionError(f"unexpected messages: {list(self._received)!r}")


async def settle(system: ActorSystem, *, max_iterations: int = 1_000_000) -> None:
    """Let the system run until it is idle (no mail, no commits, no publishes)."""
    quiet = 0
    for i in range(max_iterations):
        if system.busy:
            quiet = 0
        else:
            quiet += 1
            if quiet >= 3:
                return
        # Journal work happens in worker threads: yield to them now and then.
        await anyio.sleep(0 if i < 1000 else 0.0005)
    raise AssertionError("the actor system did not settle")


async def advance_to(system: ActorSystem, clock: VirtualClock, target: float) -> None:
    """Move ``clock`` (the system's own) to monotonic ``target``, firing every timer due
    on the way at its own time and settling the system after each. Works for any system
    built on a :class:`VirtualClock`, e.g. a whole node under test."""
    timers = system.timers
    while True:
        await settle(system)
        due = timers.next_due()
        if due is None or due > target:
            break
        clock.set(max(due, clock.monotonic()))
        timers.fire_due()
    clock.set(target)
    await settle(system)


class ActorTestKit:
    """An :class:`ActorSystem` on a :class:`VirtualClock`."""

    def __init__(
        self,
        *,
        journal: Journal | None = None,
        outbox_sink: OutboxSink | None = None,
        start: float = 0.0,
        epoch: float = 1_800_000_000.0,
        sweep_interval: float = 1.0,
    ) -> None:
        self.clock = VirtualClock(start, epoch)
        self.system = ActorSystem(
            clock=self.clock,
            journal=journal,
            outbox_sink=outbox_sink,
            node_id="test-node",
            sweep_interval=sweep_interval,
        )

    async def __aenter__(self) -> ActorTestKit:
        await self.system.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return await self.system.__aexit__(exc_type, exc, tb)

    def probe(self) -> Probe:
        return Probe(self.system)

    async def settle(self) -> None:
        await settle(self.system)

    async def advance(self, seconds: float) -> None:
        """Move virtual time forward by ``seconds``, firing every timer due on the way
        at its own time, settling the system after each."""
        await self.advance_to(self.clock.monotonic() + seconds)

    async def advance_to(self, target: float) -> None:
        await advance_to(self.system, self.clock, target)
