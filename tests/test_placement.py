"""The runtime's side of placement (actors.placement), on virtual time: two systems share
one journal as two nodes share a replicated one, and a placement in the test says which
node runs which actor. What travels between them is carried in-process here; the NATS
carrier is tested in test_cluster_remote.py."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import pytest

from actors import ActorSystem, CommitFailed, PersistentActor
from actors.actor import Actor
from actors.clock import VirtualClock
from actors.envelope import Reply
from actors.journal import MemoryJournal, OutboxEntry, WriteRequest
from actors.persistent import DeadlineFired
from actors.testkit import advance_to, settle

pytestmark = pytest.mark.anyio


class Added(msgspec.Struct, frozen=True, tag=True):
    amount: int


class Add(msgspec.Struct, frozen=True):
    amount: int


class Get(msgspec.Struct, frozen=True):
    pass


class Ring(msgspec.Struct, frozen=True):
    at: float


class Counter(PersistentActor):
    event_type = Added

    fired: list[tuple[str, str]] = []  # (node, key), across every instance of a test

    def __init__(self, node: str) -> None:
        self.node = node
        self.total = 0

    def apply(self, event: Any) -> None:
        self.total += event.amount

    def receive(self, message: Any) -> Any:
        match message:
            case Add(amount=amount):
                self.persist(Added(amount))
                return self.total
            case Get():
                return (self.node, self.total)
            case Ring(at=at):
                self.set_deadline("ring", at)
                return None
            case DeadlineFired(name="ring"):
                Counter.fired.append((self.node, self.key))
                self.persist(Added(0))
                return None
        return None


class Here(Actor):
    def __init__(self, node: str) -> None:
        self.node = node

    def receive(self, message: Any) -> Any:
        return self.node


class Owners:
    """Which node runs each actor (by key), and the in-process carrier between them."""

    def __init__(self) -> None:
        self.owner: dict[str, str] = {}
        self.systems: dict[str, ActorSystem] = {}
        self.sent: list[tuple[str, str, Any]] = []

    def placement(self, node: str) -> _Placement:
        return _Placement(self, node)


class _Placement:
    def __init__(self, owners: Owners, node: str) -> None:
        self.owners = owners
        self.node = node

    def is_local(self, kind: str, key: str) -> bool:
        return self.owners.owner.get(key, "a") == self.node

    def may_write(self, kind: str, key: str) -> bool:
        return self.is_local(kind, key)

    def send(
        self,
        kind: str,
        key: str,
        message: Any,
        reply_to: Reply | None,
        headers: Mapping[str, str] | None,
        deadline: float | None,
    ) -> None:
        target = self.owners.owner.get(key, "a")
        self.owners.sent.append((self.node, key, message))
        self.owners.systems[target].ref(kind, key).tell(
            message, reply_to=reply_to, headers=headers, deadline=deadline
        )


async def two_nodes() -> tuple[Owners, ActorSystem, ActorSystem, VirtualClock]:
    clock = VirtualClock()
    journal = MemoryJournal()
    owners = Owners()
    for node in ("a", "b"):
        system = ActorSystem(
            clock=clock, journal=journal, node_id=node, placement=owners.placement(node)
        )
        system.register("counter", lambda node=node: Counter(node), cls=Counter)  # type: ignore[misc]
        system.register("here", lambda node=node: Here(node), cls=Here, local=True)  # type: ignore[misc]
        owners.systems[node] = system
    return owners, owners.systems["a"], owners.systems["b"], clock


async def test_an_actor_runs_only_on_its_owner_and_refs_reach_it_from_anywhere() -> None:
    owners, a, b, _ = await two_nodes()
    owners.owner["c2"] = "b"
    async with a, b:
        assert await a.ref("counter", "c2").ask(Add(5)) == 5
        assert await a.ref("counter", "c2").ask(Get()) == ("b", 5)
        assert await b.ref("counter", "c1").ask(Add(1)) == 1
        assert a.is_active("counter", "c1") and not b.is_active("counter", "c1")
        assert b.is_active("counter", "c2") and not a.is_active("counter", "c2")
        # a local kind runs on every node, whatever the placement says
        assert await a.ref("here", "c2").ask(Get()) == "a"
        assert await b.ref("here", "c2").ask(Get()) == "b"
        assert [(n, k) for n, k, _ in owners.sent] == [("a", "c2"), ("a", "c2"), ("b", "c1")]


async def test_a_shard_that_moves_takes_its_mail_and_deadlines_to_the_new_owner() -> None:
    owners, a, b, clock = await two_nodes()
    Counter.fired = []
    async with a, b:
        ref = a.ref("counter", "c1")
        assert await ref.ask(Add(2)) == 2
        await ref.ask(Ring(clock.time() + 60))
        assert a.timers.get("counter", "c1", "ring") is not None
        # mail that A has not handled yet when the shard leaves it
        actor = a.kind("counter").active["c1"]
        a._enqueue(actor, Add(3))
        owners.owner["c1"] = "b"
        assert a.relinquish(lambda kind, key: owners.owner.get(key) == "b") == 1
        assert not a.is_active("counter", "c1")
        assert a.timers.get("counter", "c1", "ring") is None
        assert await b.arm_deadlines(lambda kind, key: owners.owner.get(key) == "b") == 1
        await settle(b)
        # the forwarded Add(3) reached B, which recovered the 2 from the shared journal
        assert await a.ref("counter", "c1").ask(Get()) == ("b", 5)
        await advance_to(b, clock, clock.monotonic() + 61)
        await settle(a)
        assert Counter.fired == [("b", "c1")]


async def test_a_node_that_lost_the_shard_does_not_write_for_it() -> None:
    owners, a, b, _ = await two_nodes()
    journal = a.journal
    assert journal is not None
    async with a, b:
        ref = a.ref("counter", "c1")
        assert await ref.ask(Add(1)) == 1
        replies: list[Any] = []
        ref.tell(Add(10), reply_to=replies.append)
        # The lease lapses before A's writer runs: the staged turn must not be stored.
        owners.owner["c1"] = "b"
        await settle(a)
        assert len(replies) == 1 and isinstance(replies[0], CommitFailed), replies
        (recovery,) = await journal.recover([("counter", "c1")])
        assert recovery.seq == 1
        assert not a.is_active("counter", "c1")  # not rebuilt on A
        assert await a.ref("counter", "c1").ask(Get()) == ("b", 1)


class Sink:
    def __init__(self) -> None:
        self.published: list[str] = []

    async def publish(self, entries: Sequence[OutboxEntry]) -> None:
        self.published.extend(e.id for e in entries)


async def test_the_node_taking_a_shard_publishes_what_a_dead_owner_left_in_the_outbox() -> None:
    journal = MemoryJournal()
    sink = Sink()
    system = ActorSystem(clock=VirtualClock(), journal=journal, outbox_sink=sink)
    async with system:
        await settle(system)
        # another node committed this and died before publishing it
        await journal.write(
            [
                WriteRequest(
                    "counter",
                    "c9",
                    0,
                    events=[b"x"],
                    outbox=[OutboxEntry("e-1", "events.c9", b"{}")],
                )
            ]
        )
        await settle(system)
        assert sink.published == []  # nobody looks at the shared journal unasked
        system.outbox.drain_soon()
        await settle(system)
        assert sink.published == ["e-1"]
        assert await journal.outbox() == []


async def test_a_deadline_that_fires_before_its_shard_serves_is_armed_again_later() -> None:
    owners, a, b, clock = await two_nodes()
    Counter.fired = []
    async with a, b:
        ref = a.ref("counter", "c1")
        await ref.ask(Ring(clock.time() + 10))
        owners.owner["c1"] = "nobody"  # a died; b has won the shard but does not serve yet
        a.relinquish(lambda kind, key: key == "c1")
        assert await b.arm_deadlines(lambda kind, key: key == "c1") == 1
        await advance_to(b, clock, clock.monotonic() + 11)
        assert Counter.fired == []
        assert b.timers.get("counter", "c1", "ring") is None  # forgotten, not stuck as fired
        owners.owner["c1"] = "b"  # now it serves: the same deadline arms and fires
        assert await b.arm_deadlines(lambda kind, key: key == "c1") == 1
        await advance_to(b, clock, clock.monotonic() + 1)
        assert Counter.fired == [("b", "c1")]


async def test_local_kinds_are_neither_fenced_nor_moved() -> None:
    clock = VirtualClock()
    journal = MemoryJournal()
    owners = Owners()
    owners.owner["k1"] = "b"
    system = ActorSystem(clock=clock, journal=journal, placement=owners.placement("a"))
    system.register("local-counter", lambda: Counter("a"), cls=Counter, local=True)
    async with system:
        ref = system.ref("local-counter", "k1")
        assert await ref.ask(Add(4)) == 4  # stored although the key's shard is b's
        await ref.ask(Ring(clock.time() + 5))
        assert system.relinquish(lambda kind, key: True) == 0
        assert system.timers.get("local-counter", "k1", "ring") is not None
        (recovery,) = await journal.recover([("local-counter", "k1")])
        assert recovery.seq == 1 and [d.name for d in recovery.deadlines] == ["ring"]
