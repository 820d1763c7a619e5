"""Commit pipelining: an actor takes its next turns while earlier ones commit.

Up to ``PIPELINE_DEPTH`` turns of one actor wait for their commits at once; each reply
still leaves only after its own commit, a query answered meanwhile waits for the commits
before it (read your writes), and a failed commit takes every later turn in flight with
it before the actor is rebuilt from what was stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import pytest

from actors import ActorState, CommitFailed, SequenceConflict
from actors.journal import MemoryJournal
from actors.journal.base import WriteRequest
from actors.persistence import PIPELINE_DEPTH
from actors.testkit import ActorTestKit
from tests.test_persistent_actors import Add, Get, Ledger

pytestmark = pytest.mark.anyio


class HeldJournal(MemoryJournal):
    """Writes wait while ``held``; ``release()`` lets them all through."""

    def __init__(self) -> None:
        super().__init__()
        self.held = True
        self._gate = anyio.Event()
        self.started = 0

    def release(self) -> None:
        self.held = False
        self._gate.set()

    async def write(self, batch: Sequence[WriteRequest]) -> list[SequenceConflict | None]:
        self.started += 1
        if self.held:
            await self._gate.wait()
        return await super().write(batch)


async def stored_seq(journal: MemoryJournal, key: str) -> int:
    (recovery,) = await journal.recover([("ledger", key)])
    return recovery.seq


class Idle(Ledger):
    passivate_after = 1.0


async def spin(turns: int = 200) -> None:
    """Let the loop run a while. ``kit.settle()`` would wait for the held commit."""
    for _ in range(turns):
        await anyio.lowlevel.checkpoint()


async def move(kit: ActorTestKit, seconds: float) -> None:
    """Advance virtual time firing due timers, without waiting for held commits."""
    target = kit.clock.monotonic() + seconds
    timers = kit.system.timers
    while (due := timers.next_due()) is not None and due <= target:
        kit.clock.set(max(due, kit.clock.monotonic()))
        timers.fire_due()
        await spin()
    kit.clock.set(target)
    await spin()


def actor_of(kit: ActorTestKit, key: str) -> Any:
    actor = kit.system._lookup("ledger", key)
    assert actor is not None
    return actor


async def test_turns_go_on_while_a_commit_is_in_flight_and_replies_wait_for_their_own() -> None:
    journal = HeldJournal()
    async with ActorTestKit(journal=journal) as kit:
        kit.system.register("ledger", Ledger)
        ref = kit.system.ref("ledger", "L")
        got: list[Any] = []
        for n in range(1, PIPELINE_DEPTH + 1):
            ref.tell(Add(n), reply_to=got.append)
            await spin()  # one turn per message
        actor = actor_of(kit, "L")
        # Every turn ran (the state holds all of them) but nothing is committed yet.
        assert actor.total == sum(range(1, PIPELINE_DEPTH + 1))
        assert len(actor._p_flight) == PIPELINE_DEPTH
        assert actor._a_state == ActorState.COMMITTING  # the pipeline is full: it waits
        assert got == []
        ref.tell(Add(100), reply_to=got.append)
        await spin()
        assert actor.total == sum(range(1, PIPELINE_DEPTH + 1))  # not taken while full
        journal.release()
        await kit.settle()
        totals = [sum(range(1, n + 1)) for n in range(1, PIPELINE_DEPTH + 1)]
        assert got == [*totals, totals[-1] + 100]
        assert await stored_seq(journal, "L") == PIPELINE_DEPTH + 1


async def test_a_query_during_a_commit_in_flight_is_answered_after_it() -> None:
    journal = HeldJournal()
    async with ActorTestKit(journal=journal) as kit:
        kit.system.register("ledger", Ledger)
        ref = kit.system.ref("ledger", "L")
        added: list[Any] = []
        seen: list[Any] = []
        ref.tell(Add(7), reply_to=added.append)
        await spin()
        ref.tell(Get(), reply_to=seen.append)
        await spin()
        assert actor_of(kit, "L").total == 7
        assert seen == []  # it would show the uncommitted +7
        journal.release()
        await kit.settle()
        assert added == [7] and seen == [(7, 1, [])]


async def test_a_failed_commit_fails_every_later_turn_in_flight_and_rebuilds() -> None:
    journal = HeldJournal()
    async with ActorTestKit(journal=journal) as kit:
        kit.system.register("ledger", Ledger)
        ref = kit.system.ref("ledger", "L")
        journal.release()
        assert await ref.ask(Add(10)) == 10
        journal.held = True
        journal._gate = anyio.Event()
        got: list[Any] = []
        ref.tell(Add(1), reply_to=got.append)
        await spin()
        ref.tell(Add(2), reply_to=got.append)
        await spin()
        ref.tell(Get(), reply_to=got.append)
        await spin()
        assert len(actor_of(kit, "L")._p_flight) == 2
        journal.fail_next_write()
        journal.release()
        await kit.advance(5)  # restart backoff
        assert len(got) == 3
        assert all(isinstance(g, CommitFailed) and g.retryable for g in got)
        assert await ref.ask(Get()) == (10, 1, [])  # rebuilt from what was stored
        assert await ref.ask(Add(5)) == 15
        assert await stored_seq(journal, "L") == 2


async def test_a_handler_failure_restarts_only_after_the_commits_in_flight_landed() -> None:
    journal = HeldJournal()
    async with ActorTestKit(journal=journal) as kit:
        kit.system.register("ledger", Ledger)
        ref = kit.system.ref("ledger", "L")
        got: list[Any] = []
        ref.tell(Add(4), reply_to=got.append)
        await spin()
        first = actor_of(kit, "L")
        ref.tell(Add(-1), reply_to=got.append)  # the handler raises
        await move(kit, 2)  # past the restart backoff, the commit still held
        assert first._a_state == ActorState.BACKOFF  # the restart waits
        assert kit.system._lookup("ledger", "L") is first
        assert got == []
        journal.release()
        await kit.advance(5)
        assert got[0] == 4
        # The new incarnation recovered after the +4 landed, so it sees it.
        assert kit.system._lookup("ledger", "L") is not first
        assert await ref.ask(Get()) == (4, 1, [])


async def test_an_actor_with_commits_in_flight_is_not_passivated() -> None:
    journal = HeldJournal()
    async with ActorTestKit(journal=journal) as kit:
        kit.system.register("ledger", Idle)
        ref = kit.system.ref("ledger", "L")
        got: list[Any] = []
        ref.tell(Add(3), reply_to=got.append)
        await spin()
        first = actor_of(kit, "L")
        await move(kit, 30)  # many sweeps while the commit is held
        assert kit.system._lookup("ledger", "L") is first
        journal.release()
        await kit.settle()
        assert got == [3]
        assert await ref.ask(Get()) == (3, 1, [])


class Noting(Ledger):
    """A ledger that notes each committed addition through ``after_commit``."""

    noted: list[int] = []

    def receive(self, message: Any) -> Any:
        result = super().receive(message)
        if isinstance(message, Add) and message.amount >= 0:
            total = self.total
            self.after_commit(lambda: Noting.noted.append(total))
        return result


async def test_after_commit_runs_once_the_turn_is_stored_and_never_on_failure() -> None:
    journal = HeldJournal()
    Noting.noted = []
    async with ActorTestKit(journal=journal) as kit:
        kit.system.register("ledger", Noting)
        ref = kit.system.ref("ledger", "L")
        got: list[Any] = []
        ref.tell(Add(2), reply_to=got.append)
        await spin()
        assert Noting.noted == []  # applied in memory, not stored yet
        journal.release()
        await kit.settle()
        assert Noting.noted == [2] and got == [2]
        journal.fail_next_write()
        ref.tell(Add(3), reply_to=got.append)
        await kit.advance(5)
        assert isinstance(got[-1], CommitFailed)
        assert Noting.noted == [2]  # the failed commit called nothing
