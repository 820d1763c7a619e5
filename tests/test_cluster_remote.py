"""Actor messages between nodes over a real nats-server: several actor systems in one
process, each with its own NATS connection and messenger. Each node's view of the shard
owners is a dict the test controls; its ``deliver`` tells the local system's actor."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import msgspec
import pytest

from actors import Actor, ActorSystem, RealClock, VirtualClock
from actors.clock import Clock
from actors.cluster.codec import MessageCodec
from actors.cluster.remote import HEADERS, RemoteMessenger
from actors.envelope import Reply
from actors.errors import (
    ActorFailed,
    AskTimeout,
    CodecError,
    ConnectionClosed,
    DeadlineExceeded,
    NoResponders,
    NotLocal,
    Overloaded,
)
from actors.nats import NatsTransport
from tests.nats_fixtures import nats_server_fixture, nats_url_fixture  # noqa: F401

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

PREFIX = "test.actors"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class Add(msgspec.Struct, frozen=True):
    amount: int


class Get(msgspec.Struct, frozen=True):
    pass


class Total(msgspec.Struct, frozen=True):
    value: int
    node: str


class Check(msgspec.Struct, frozen=True):
    amount: int


class Boom(msgspec.Struct, frozen=True):
    pass


class Hold(msgspec.Struct, frozen=True):
    """Take the reply and never answer: a slow actor."""


class Peek(msgspec.Struct, frozen=True):
    """Answer with the headers the actor sees."""


class Unregistered(msgspec.Struct, frozen=True):
    pass


class Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Counter(Actor):
    max_failures = 1  # fail the message at once: the caller gets ActorFailed

    def __init__(self) -> None:
        self.total = 0

    def receive(self, message: Any) -> Any:
        match message:
            case Add(amount=amount):
                self.total += amount
                return Total(self.total, self.system.node_id)
            case Get():
                return self.total
            case Check(amount=amount):
                return Refused(f"{amount} is negative") if amount < 0 else None
            case Boom():
                raise RuntimeError("boom")
            case Hold():
                self.reply_later()
                return None
            case Peek():
                return dict(self.headers)
        raise TypeError(message)


def make_codec() -> MessageCodec:
    codec = MessageCodec()
    codec.register(Add, Get, Total, Check, Boom, Hold, Peek)
    codec.register_error(Refused, lambda e: e.reason.encode(), lambda b: Refused(b.decode()))
    return codec


class Slot:
    """A reply callback that records every call."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self.event = anyio.Event()

    def __call__(self, value: Any) -> None:
        self.values.append(value)
        self.event.set()

    async def get(self, timeout: float = 5.0) -> Any:  # noqa: ASYNC109
        with anyio.fail_after(timeout):
            await self.event.wait()
        assert len(self.values) == 1, self.values
        return self.values[0]


class Seen(msgspec.Struct):
    key: str
    message: Any
    headers: Mapping[str, str] | None
    deadline: float | None


class Node:
    """One node: an actor system, a connection, a messenger and its view of owners."""

    def __init__(self, node_id: str, url: str, clock: Clock, **options: Any) -> None:
        self.node_id = node_id
        self.system = ActorSystem(node_id=node_id, clock=clock)
        self.system.register("counter", Counter)
        self.transport = NatsTransport(url, name=node_id)
        self.owners: dict[str, str] = {}
        self.refuse: set[str] = set()
        self.seen: list[Seen] = []
        self.messenger = RemoteMessenger(
            self.transport,
            node_id=node_id,
            subject_prefix=PREFIX,
            codec=make_codec(),
            clock=clock,
            deliver=self.deliver,
            locate=self.locate,
            **options,
        )
        self.scope = anyio.CancelScope()

    def locate(self, kind: str, key: str) -> str | None:
        assert kind == "counter"
        return self.owners.get(key)

    def deliver(
        self,
        kind: str,
        key: str,
        message: Any,
        reply_to: Reply | None,
        headers: Mapping[str, str] | None,
        deadline: float | None,
    ) -> None:
        self.seen.append(Seen(key, message, headers, deadline))
        if key in self.refuse:
            raise NotLocal(f"{kind}/{key} is not owned by {self.node_id}")
        self.system.ref(kind, key).tell(
            message, reply_to=reply_to, headers=headers, deadline=deadline
        )

    def send(self, key: str, message: Any, **options: Any) -> Slot:
        slot = Slot()
        self.messenger.send("counter", key, message, reply_to=slot, **options)
        return slot

    async def ask(self, key: str, message: Any, **options: Any) -> Any:
        return await self.send(key, message, **options).get()

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        with self.scope:
            async with self.transport, self.system:
                await self.messenger.run(task_status=task_status)

    async def stop(self) -> None:
        self.scope.cancel()
        with anyio.fail_after(5):
            while self.messenger.running or self.transport.is_connected:
                await anyio.sleep(0.005)


@asynccontextmanager
async def cluster(
    url: str, *ids: str, clock: Clock | None = None, **options: Any
) -> AsyncIterator[dict[str, Node]]:
    nodes = {node_id: Node(node_id, url, clock or RealClock(), **options) for node_id in ids}
    async with anyio.create_task_group() as tg:
        for node in nodes.values():
            await tg.start(node.serve)
        yield nodes
        tg.cancel_scope.cancel()


def place(nodes: dict[str, Node], key: str, owner: str) -> None:
    """Every node learns that ``owner`` owns ``key``."""
    for node in nodes.values():
        node.owners[key] = owner


# -- messages and replies ------------------------------------------------------------------


async def test_tell_and_ask_across_nodes(nats_url: str) -> None:
    async with cluster(nats_url, "a", "b") as nodes:
        a, b = nodes["a"], nodes["b"]
        place(nodes, "k1", "b")
        a.messenger.send("counter", "k1", Add(2))  # a bare tell
        assert await a.ask("k1", Add(3)) == Total(5, "b")  # a registered Struct reply
        assert await a.ask("k1", Get()) == 5  # a plain value
        assert b.system.is_active("counter", "k1")
        assert not a.system.is_active("counter", "k1")
        assert [type(seen.message) for seen in b.seen] == [Add, Add, Get]
        assert b.seen[0].deadline is None  # a tell without deadline carries none
        assert a.messenger.stats.sent == 3
        assert a.messenger.stats.replies == 2
        assert b.messenger.stats.received == 3
        assert a.messenger.pending == 0

        place(nodes, "k2", "a")  # and the other way round
        assert await b.ask("k2", Add(7)) == Total(7, "a")


async def test_an_application_error_reply_crosses(nats_url: str) -> None:
    async with cluster(nats_url, "a", "b") as nodes:
        place(nodes, "k", "b")
        error = await nodes["a"].ask("k", Check(-2))
        assert isinstance(error, Refused)
        assert error.reason == "-2 is negative"
        assert await nodes["a"].ask("k", Check(1)) is None


async def test_a_runtime_error_crosses_intact(nats_url: str) -> None:
    async with cluster(nats_url, "a", "b") as nodes:
        place(nodes, "k", "b")
        error = await nodes["a"].ask("k", Boom())
        assert type(error) is ActorFailed
        assert "boom" in str(error)
        assert error.retryable

        def overloaded(*args: Any) -> None:
            raise Overloaded("counter/k: mailbox full (1)")

        nodes["b"].messenger._deliver = overloaded  # the owner refuses at once
        error = await nodes["a"].ask("k", Add(1))
        assert type(error) is Overloaded
        assert str(error) == "counter/k: mailbox full (1)"


async def test_headers_arrive_on_the_receiving_side(nats_url: str) -> None:
    async with cluster(nats_url, "a", "b") as nodes:
        place(nodes, "k", "b")
        headers = {"traceparent": TRACEPARENT, "X-Request-Id": "r-1"}
        seen = await nodes["a"].ask("k", Peek(), headers=headers)
        assert seen == {"traceparent": TRACEPARENT, "x-request-id": "r-1"}
        assert not HEADERS & set(nodes["b"].seen[0].headers or {})


async def test_the_deadline_travels_and_a_slow_actor_times_out(nats_url: str) -> None:
    async with cluster(nats_url, "a", "b") as nodes:
        a, b = nodes["a"], nodes["b"]
        place(nodes, "k", "b")
        deadline = a.system.clock.monotonic() + 0.3
        slot = a.send("k", Hold(), deadline=deadline)
        error = await slot.get(timeout=3)
        assert type(error) is AskTimeout
        assert a.system.clock.monotonic() >= deadline
        # Sent as remaining seconds, turned into b's own monotonic deadline (the same
        # clock here, so it lands just after a's by the time the message spent in transit).
        received = b.seen[0].deadline
        assert received is not None
        assert deadline <= received < deadline + 0.1
        assert a.messenger.stats.timeouts == 1
        assert a.messenger.pending == 0


async def test_a_passed_deadline_is_refused_at_send(nats_url: str) -> None:
    async with cluster(nats_url, "a", "b") as nodes:
        a = nodes["a"]
        place(nodes, "k", "b")
        slot = a.send("k", Add(1), deadline=a.system.clock.monotonic() - 1)
        assert type(await slot.get()) is DeadlineExceeded
        assert a.messenger.stats.sent == 0


async def test_an_unregistered_type_is_refused_at_send(nats_url: str) -> None:
    async with cluster(nats_url, "a", "b") as nodes:
        place(nodes, "k", "b")
        slot = Slot()
        with pytest.raises(CodecError, match="Unregistered"):
            nodes["a"].messenger.send("counter", "k", Unregistered(), reply_to=slot)
        assert slot.values == []
        assert nodes["a"].messenger.stats.sent == 0


# -- owners unknown, moved or dead -----------------------------------------------------------


async def test_unknown_owner_parks_until_owners_change(nats_url: str) -> None:
    async with cluster(nats_url, "a", "b") as nodes:
        a = nodes["a"]
        slot = a.send("k", Add(4))
        a.messenger.send("counter", "k", Add(1))  # a tell parks too
        assert a.messenger.parked == 2
        a.messenger.owners_changed()  # still nobody: stays parked
        assert a.messenger.parked == 2
        assert slot.values == []

        place(nodes, "k", "b")
        a.messenger.owners_changed()
        assert a.messenger.parked == 0
        assert await slot.get() == Total(4, "b")
        assert await a.ask("k", Get()) == 5
        assert a.messenger.stats.parked == 2
        assert a.messenger.stats.retried == 2


async def test_moved_owner_is_located_again(nats_url: str) -> None:
    async with cluster(nats_url, "a", "b", "c") as nodes:
        a, b, c = nodes["a"], nodes["b"], nodes["c"]
        place(nodes, "k", "b")
        b.refuse.add("k")  # b gave the shard away; a does not know yet

        # a's view still says b after the "moved" answer: the message parks.
        slot = a.send("k", Add(1))
        with anyio.fail_after(5):
            while a.messenger.parked == 0:
                await anyio.sleep(0.005)
        assert slot.values == []
        place(nodes, "k", "c")
        a.messenger.owners_changed()
        assert await slot.get() == Total(1, "c")

        # a's view changed before the answer came: it goes to the new owner at once.
        place(nodes, "j", "b")
        b.refuse.add("j")
        real_deliver = b.deliver

        def moved_to_c(kind: str, key: str, *args: Any) -> None:
            a.owners[key] = "c"
            real_deliver(kind, key, *args)

        b.messenger._deliver = moved_to_c
        parked_before = a.messenger.stats.parked
        assert await a.ask("j", Add(2)) == Total(2, "c")
        assert a.messenger.stats.parked == parked_before
        assert [seen.key for seen in b.seen] == ["k", "j"]
        assert [seen.key for seen in c.seen] == ["k", "j"]
        assert a.messenger.stats.retried == 2


async def test_moved_to_the_sender_itself_is_delivered_locally(nats_url: str) -> None:
    async with cluster(nats_url, "a", "b") as nodes:
        a, b = nodes["a"], nodes["b"]
        place(nodes, "k", "b")
        b.refuse.add("k")
        slot = a.send("k", Add(6))
        with anyio.fail_after(5):
            while a.messenger.parked == 0:
                await anyio.sleep(0.005)
        a.owners["k"] = "a"
        a.messenger.owners_changed()
        assert await slot.get() == Total(6, "a")
        assert a.system.is_active("counter", "k")


async def test_dead_owner_parks_until_located_elsewhere(nats_url: str) -> None:
    async with cluster(nats_url, "a", "b", "c") as nodes:
        a, b, c = nodes["a"], nodes["b"], nodes["c"]
        place(nodes, "k", "c")
        assert await a.ask("k", Add(1)) == Total(1, "c")
        await c.stop()  # c dies: nobody subscribes to its subject any more

        slot = a.send("k", Add(2))
        a.messenger.send("counter", "k", Add(10))  # a tell follows the same path
        with anyio.fail_after(5):
            while a.messenger.parked < 2:  # NATS answered "no responders" for both
                await anyio.sleep(0.005)
        assert slot.values == []

        a.owners["k"] = "b"  # the shard's new owner (its state starts afresh here)
        a.messenger.owners_changed()
        assert await slot.get() == Total(2, "b")
        assert await a.ask("k", Get()) == 12
        assert [type(seen.message) for seen in b.seen] == [Add, Add, Get]


async def test_parking_is_bounded_and_the_oldest_fails_first(nats_url: str) -> None:
    async with cluster(nats_url, "a", "b", max_parked=2) as nodes:
        a = nodes["a"]
        first, second, third = (a.send("k", Add(n)) for n in (1, 2, 3))
        assert type(await first.get()) is NoResponders
        assert second.values == [] and third.values == []
        assert a.messenger.parked == 2
        place(nodes, "k", "b")
        a.messenger.owners_changed()
        assert await second.get() == Total(2, "b")
        assert await third.get() == Total(5, "b")


async def test_a_full_outgoing_queue_answers_overloaded(nats_url: str) -> None:
    async with cluster(nats_url, "a", "b", max_outgoing=2) as nodes:
        a = nodes["a"]
        place(nodes, "k", "b")
        slots = [a.send("k", Add(1)) for _ in range(3)]  # no await: the publisher waits
        assert type(await slots[2].get()) is Overloaded
        assert await slots[0].get() == Total(1, "b")
        assert await slots[1].get() == Total(2, "b")


# -- deadlines of parked messages (virtual time: no NATS I/O involved) -----------------------


async def test_parked_messages_expire_by_their_deadline(nats_url: str) -> None:
    clock = VirtualClock()
    async with cluster(nats_url, "a", clock=clock) as nodes:
        messenger = nodes["a"].messenger
        with_deadline = nodes["a"].send("k", Add(1), deadline=5.0)
        without = nodes["a"].send("k", Add(2))
        messenger.send("counter", "k", Add(3))  # a bare tell: 10 s of parking life
        assert messenger.parked == 3

        clock.set(5.0)
        assert messenger.sweep() == 1
        assert type(await with_deadline.get()) is DeadlineExceeded
        assert without.values == []

        clock.set(10.0)
        assert messenger.sweep() == 2
        assert type(await without.get()) is NoResponders
        assert messenger.parked == 0
        assert messenger.stats.timeouts == 2
        assert messenger.stats.dropped == 1  # the tell


async def test_stopping_answers_what_still_waits(nats_url: str) -> None:
    async with cluster(nats_url, "a", "b") as nodes:
        a = nodes["a"]
        place(nodes, "k", "b")
        held = a.send("k", Hold())
        parked = a.send("other", Add(1))
        with anyio.fail_after(5):
            while not nodes["b"].seen:
                await anyio.sleep(0.005)
        await a.stop()
        assert type(await held.get()) is ConnectionClosed
        assert type(await parked.get()) is ConnectionClosed


async def test_asks_in_flight_are_bounded_and_tells_are_not_refused(nats_url: str) -> None:
    async with cluster(nats_url, "a", "b", max_pending=1) as nodes:
        a = nodes["a"]
        place(nodes, "k", "b")
        held = a.send("k", Hold())
        assert type(await a.send("k", Add(1)).get()) is Overloaded
        assert held.values == []
        for n in (1, 2, 3):  # each new tell makes the table forget the one before
            a.messenger.send("counter", "k", Add(n))
        assert a.messenger.pending == 1
        with anyio.fail_after(5):
            while len(nodes["b"].seen) < 4:
                await anyio.sleep(0.005)
        assert [seen.message for seen in nodes["b"].seen] == [Hold(), Add(1), Add(2), Add(3)]
