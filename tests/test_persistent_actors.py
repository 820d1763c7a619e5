"""Event-sourced actors on virtual time with the in-memory journal: replies after
commit, recovery, group commit, durable deadlines, idempotency, outbox, snapshots."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import pytest

from actors import (
    ActorFailed,
    CommitFailed,
    DeadlineExceeded,
    DeadlineFired,
    OutboxEntry,
    PersistentActor,
    TransportError,
)
from actors.journal import MemoryJournal
from actors.testkit import ActorTestKit

pytestmark = pytest.mark.anyio


class Added(msgspec.Struct, frozen=True, tag=True):
    amount: int


class Rang(msgspec.Struct, frozen=True, tag=True):
    name: str
    late: float


Event = Added | Rang


class LedgerState(msgspec.Struct):
    total: int
    entries: int
    rang: list[str]


class Add(msgspec.Struct, frozen=True):
    amount: int
    request_id: str | None = None


class Get(msgspec.Struct, frozen=True):
    pass


class Alarm(msgspec.Struct, frozen=True):
    name: str
    at: float


class Ledger(PersistentActor):
    event_type = Event
    snapshot_type = LedgerState
    snapshot_every = 0

    def __init__(self) -> None:
        self.total = 0
        self.entries = 0
        self.rang: list[str] = []

    def apply(self, event: Any) -> None:
        match event:
            case Added(amount=amount):
                self.total += amount
                self.entries += 1
            case Rang(name=name):
                self.rang.append(name)

    def snapshot(self) -> LedgerState:
        return LedgerState(self.total, self.entries, list(self.rang))

    def restore(self, snapshot: LedgerState) -> None:
        self.total, self.entries, self.rang = snapshot.total, snapshot.entries, snapshot.rang

    def receive(self, message: Any) -> Any:
        match message:
            case Add(amount=amount, request_id=rid):
                if rid is not None and (first := self.recall(rid)) is not None:
                    return ("replay", int(first))
                if amount < 0:
                    raise ValueError("negative")
                self.persist(Added(amount))
                self.emit(
                    f"ledger.{self.key}.added",
                    str(amount).encode(),
                    id=f"{self.key}-{self.entries}",
                )
                if rid is not None:
                    self.remember(rid, str(self.total).encode())
                return self.total
            case Get():
                return (self.total, self.entries, list(self.rang))
            case Alarm(name=name, at=at):
                self.set_deadline(name, at)
                return None
            case DeadlineFired(name=name, late=late):
                self.persist(Rang(name, late))
                return None
        raise TypeError(message)


class ListSink:
    def __init__(self) -> None:
        self.entries: list[OutboxEntry] = []

    async def publish(self, entries: Sequence[OutboxEntry]) -> None:
        self.entries.extend(entries)


async def test_reply_comes_only_after_commit_and_state_recovers() -> None:
    journal = MemoryJournal()
    async with ActorTestKit(journal=journal) as kit:
        kit.system.register("ledger", Ledger)
        ref = kit.system.ref("ledger", "L1")
        got: list[Any] = []
        ref.tell(Add(5), reply_to=got.append)
        assert got == []  # not even handled yet
        await kit.settle()
        assert got == [5]
        assert await ref.ask(Add(7)) == 12
    # A new node on the same journal: state comes back from the events.
    async with ActorTestKit(journal=journal) as kit:
        kit.system.register("ledger", Ledger)
        assert await kit.system.ref("ledger", "L1").ask(Get()) == (12, 2, [])


async def test_a_message_whose_deadline_passed_in_the_mailbox_is_counted_not_applied() -> None:
    async with ActorTestKit(journal=MemoryJournal()) as kit:
        kit.system.register("ledger", Ledger)
        ref = kit.system.ref("ledger", "L1")
        got: list[Any] = []
        ref.tell(Add(5), reply_to=got.append, deadline=kit.clock.monotonic() + 1)
        kit.clock.set(kit.clock.monotonic() + 5)  # it waited too long for its turn
        await kit.settle()
        assert len(got) == 1 and isinstance(got[0], DeadlineExceeded)
        assert await ref.ask(Get()) == (0, 0, [])
        [stats] = [k for k in kit.system.stats().kinds if k.kind == "ledger"]
        assert stats.expired == 1


async def test_group_commit_puts_many_actors_and_messages_in_one_write() -> None:
    journal = MemoryJournal()
    async with ActorTestKit(journal=journal) as kit:
        kit.system.register("ledger", Ledger)
        got: list[Any] = []
        for key in ("a", "b", "c"):
            await kit.system.ref("ledger", key).ask(Get())  # activate first
        before = journal.writes
        for key in ("a", "b", "c"):
            for _ in range(10):
                kit.system.ref("ledger", key).tell(Add(1), reply_to=got.append)
        await kit.settle()
        assert sorted(got) == sorted(list(range(1, 11)) * 3)
        assert journal.writes - before == 1  # 30 events, 3 actors, one transaction


async def test_failed_commit_answers_commit_failed_and_rebuilds_from_the_journal() -> None:
    journal = MemoryJournal()
    async with ActorTestKit(journal=journal) as kit:
        kit.system.register("ledger", Ledger)
        ref = kit.system.ref("ledger", "L")
        assert await ref.ask(Add(10)) == 10
        journal.fail_next_write()
        got: list[Any] = []
        ref.tell(Add(5), reply_to=got.append)
        await kit.advance(5)
        assert len(got) == 1 and isinstance(got[0], CommitFailed) and got[0].retryable
        # The in-memory +5 was discarded: the actor was rebuilt from what is stored.
        assert await ref.ask(Get()) == (10, 1, [])
        assert await ref.ask(Add(1)) == 11


async def test_failing_handler_discards_the_uncommitted_batch_and_retries_it() -> None:
    journal = MemoryJournal()
    async with ActorTestKit(journal=journal) as kit:
        kit.system.register("ledger", Ledger)
        ref = kit.system.ref("ledger", "L")
        await ref.ask(Get())
        got: list[Any] = []
        ref.tell(Add(1), reply_to=got.append)
        ref.tell(Add(-1), reply_to=got.append)  # poison: fails every time
        ref.tell(Add(2), reply_to=got.append)
        await kit.advance(30)
        assert isinstance(got[0], ActorFailed)
        assert sorted(x for x in got if isinstance(x, int)) == [1, 3]
        assert await ref.ask(Get()) == (3, 2, [])
        letters = await kit.system.dead_letters.list()
        assert [dl.message_type for dl in letters] == ["Add"]


async def test_durable_deadline_fires_on_time_and_survives_a_restart() -> None:
    journal = MemoryJournal()
    async with ActorTestKit(journal=journal) as kit:
        kit.system.register("ledger", Ledger)
        ref = kit.system.ref("ledger", "L")
        now = kit.clock.time()
        await ref.ask(Alarm("soon", now + 10))
        await ref.ask(Alarm("later", now + 1000))
        await kit.advance(10)
        assert (await ref.ask(Get()))[2] == ["soon"]
    await journal.open()
    pending = await journal.deadlines()
    await journal.close()
    assert [d.name for d in pending] == ["later"]
    # The node was down for an hour: the missed deadline fires as soon as it starts,
    # without any message to the actor.
    async with ActorTestKit(journal=journal, start=0.0, epoch=now + 3600) as kit:
        kit.system.register("ledger", Ledger)
        await kit.settle()
        await kit.advance(0)
        assert not await journal.deadlines()
        state = await kit.system.ref("ledger", "L").ask(Get())
        assert state[2] == ["soon", "later"]


async def test_deadline_replaced_and_cancelled() -> None:
    class Sched(Ledger):
        def receive(self, message: Any) -> Any:
            if message == "cancel":
                self.cancel_deadline("x")
                return None
            return super().receive(message)

    async with ActorTestKit(journal=MemoryJournal()) as kit:
        kit.system.register("s", Sched)
        ref = kit.system.ref("s", "k")
        now = kit.clock.time()
        await ref.ask(Alarm("x", now + 10))
        await ref.ask(Alarm("x", now + 20))  # replaces
        await kit.advance(15)
        assert (await ref.ask(Get()))[2] == []
        await kit.advance(10)
        assert (await ref.ask(Get()))[2] == ["x"]
        await ref.ask(Alarm("x", kit.clock.time() + 10))
        await ref.ask("cancel")
        await kit.advance(60)
        assert (await ref.ask(Get()))[2] == ["x"]


async def test_passivated_actor_is_woken_by_its_deadline() -> None:
    class Sleepy(Ledger):
        passivate_after = 5.0

    async with ActorTestKit(journal=MemoryJournal(), sweep_interval=1.0) as kit:
        kit.system.register("s", Sleepy)
        ref = kit.system.ref("s", "k")
        await ref.ask(Alarm("wake", kit.clock.time() + 100))
        await kit.advance(50)
        assert not kit.system.is_active("s", "k")
        await kit.advance(50)
        assert (await ref.ask(Get()))[2] == ["wake"]


async def test_idempotency_records_are_committed_with_the_events() -> None:
    journal = MemoryJournal()
    async with ActorTestKit(journal=journal) as kit:
        kit.system.register("ledger", Ledger)
        ref = kit.system.ref("ledger", "L")
        assert await ref.ask(Add(5, "r1")) == 5
        assert await ref.ask(Add(5, "r1")) == ("replay", 5)
    async with ActorTestKit(journal=journal) as kit:
        kit.system.register("ledger", Ledger)
        ref = kit.system.ref("ledger", "L")
        assert await ref.ask(Add(5, "r1")) == ("replay", 5)
        assert await ref.ask(Get()) == (5, 1, [])


class DownSink:
    """A sink whose broker is unreachable."""

    def __init__(self) -> None:
        self.tries = 0

    async def publish(self, entries: Sequence[OutboxEntry]) -> None:
        self.tries += 1
        raise TransportError("broker down")


async def test_outbox_entries_wait_in_the_journal_until_a_sink_takes_them() -> None:
    journal = MemoryJournal()
    down = DownSink()
    async with ActorTestKit(journal=journal, outbox_sink=down) as kit:
        kit.system.shutdown_timeout = 0.05
        kit.system.register("ledger", Ledger)
        await kit.system.ref("ledger", "L").ask(Add(3))
        await kit.system.ref("ledger", "L").ask(Add(4))
    assert down.tries >= 1
    await journal.open()
    assert [e.payload for e in await journal.outbox()] == [b"3", b"4"]
    await journal.close()
    sink = ListSink()
    async with ActorTestKit(journal=journal, outbox_sink=sink) as kit:
        kit.system.register("ledger", Ledger)
        await kit.settle()
        assert [e.payload for e in sink.entries] == [b"3", b"4"]
    await journal.open()
    assert await journal.outbox() == []
    await journal.close()


async def test_outbox_entries_reach_the_sink_in_commit_order() -> None:
    sink = ListSink()
    async with ActorTestKit(journal=MemoryJournal(), outbox_sink=sink) as kit:
        kit.system.register("ledger", Ledger)
        ref = kit.system.ref("ledger", "L")
        for i in range(1, 6):
            ref.tell(Add(i))
        await kit.settle()
        assert [e.payload for e in sink.entries] == [b"1", b"2", b"3", b"4", b"5"]
        assert [e.subject for e in sink.entries] == ["ledger.L.added"] * 5


async def test_snapshots_bound_replay() -> None:
    class Snappy(Ledger):
        snapshot_every = 10

    journal = MemoryJournal()
    async with ActorTestKit(journal=journal) as kit:
        kit.system.register("s", Snappy)
        ref = kit.system.ref("s", "k")
        for _ in range(25):
            await ref.ask(Add(2))
    await journal.open()
    [rec] = await journal.recover([("s", "k")])
    await journal.close()
    assert rec.seq == 25 and rec.snapshot is not None and rec.snapshot_seq >= 10
    assert len(rec.events) == 25 - rec.snapshot_seq
    async with ActorTestKit(journal=journal) as kit:
        kit.system.register("s", Snappy)
        assert await kit.system.ref("s", "k").ask(Get()) == (50, 25, [])
