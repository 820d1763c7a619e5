"""Actors served over a real nats-server: one wildcard subscription per kind, routing,
replies after commit, overload answers, trace headers, deadlines, handlers, shutdown."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
import msgspec
import pytest
from anyio.abc import TaskStatus

from actors import Actor, ActorsError, ActorState, ActorSystem, PersistentActor, SequenceConflict
from actors.dispatcher import has_mail
from actors.errors import NoResponders, RequestTimeout
from actors.journal.base import WriteRequest
from actors.journal.memory import MemoryJournal
from actors.nats import NatsBinding, NatsServer, NatsTransport, Route, Routed
from actors.persistence import PIPELINE_DEPTH
from tests.nats_fixtures import nats_server_fixture, nats_url_fixture  # noqa: F401

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

SUBJECT = "test.counters.*.>"


class Add(msgspec.Struct, frozen=True):
    amount: int


class Trace(msgspec.Struct, frozen=True):
    pass


class Added(msgspec.Struct, frozen=True):
    amount: int


class Counter(Actor):
    def __init__(self) -> None:
        self.total = 0

    def receive(self, message: Any) -> Any:
        match message:
            case Add(amount=amount):
                self.total += amount
                return self.total
            case Trace():
                return self.headers.get("traceparent")
        raise TypeError(message)


class Ledger(PersistentActor):
    """Replies only after its commit; a small mailbox so overload is easy to reach."""

    event_type = Added
    mailbox_capacity = 2

    def __init__(self) -> None:
        self.total = 0

    def apply(self, event: Any) -> None:
        self.total += event.amount

    def receive(self, message: Any) -> Any:
        assert isinstance(message, Add)
        self.persist(Added(message.amount))
        return self.total


class GatedJournal(MemoryJournal):
    """A memory journal whose writes wait for ``gate``: commits in flight on demand."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = anyio.Event()
        self.writing = anyio.Event()

    async def write(self, batch: Sequence[WriteRequest]) -> list[SequenceConflict | None]:
        self.writing.set()
        await self.gate.wait()
        return await super().write(batch)


def encode(value: Any) -> bytes:
    if isinstance(value, ActorsError):
        return b"err:" + type(value).__name__.encode()
    if isinstance(value, Exception):
        return b"err:internal"
    return b"ok:" + str(value).encode()


def make_route(system: ActorSystem) -> Route:
    def route(tokens: list[str], headers: Mapping[str, str], payload: bytes) -> Routed | bytes:
        key, verb = tokens
        if verb == "add":
            return Routed(key, Add(int(payload or b"1")))
        if verb == "late":
            return Routed(key, Add(1), deadline=system.clock.monotonic() - 1.0)
        if verb == "trace":
            return Routed(key, Trace())
        if verb == "boom":
            raise RuntimeError("route bug")
        return b"err:unknown_verb"

    return route


@asynccontextmanager
async def node(
    url: str, journal: MemoryJournal | None = None, kind: str = "counter", **options: Any
) -> AsyncIterator[tuple[ActorSystem, NatsBinding]]:
    system = ActorSystem(journal=journal)
    async with (
        system,
        NatsTransport([url], name="node") as transport,
        NatsBinding(system, transport, **options) as binding,
    ):
        system.register("counter", Counter)
        if journal is not None:
            system.register("ledger", Ledger)
        await binding.serve(kind, SUBJECT, make_route(system), encode)
        yield system, binding


@asynccontextmanager
async def client(url: str) -> AsyncIterator[NatsTransport]:
    async with NatsTransport([url], name="client") as transport:
        yield transport


async def ask(c: NatsTransport, subject: str, payload: bytes = b"") -> bytes:
    reply, _ = await c.request(subject, payload, timeout=5)
    return reply


async def test_requests_reach_their_actor(nats_url: str) -> None:
    async with node(nats_url) as (system, binding), client(nats_url) as c:
        assert await ask(c, "test.counters.a.add", b"5") == b"ok:5"
        assert await ask(c, "test.counters.a.add", b"2") == b"ok:7"
        assert await ask(c, "test.counters.b.add", b"10") == b"ok:10"
        assert await ask(c, "test.counters.a.add", b"1") == b"ok:8"
        assert system.active_count("counter") == 2
        assert binding.stats.requests == 4
        assert binding.stats.replies == 4
        assert binding.in_flight == 0


async def test_one_subscription_for_the_whole_kind() -> None:
    async with (
        NatsServer(jetstream=False, monitor_port=0) as server,
        node(server.url) as (system, _),
        client(server.url) as c,
    ):
        if True:
            for i in range(50):
                assert await ask(c, f"test.counters.k{i}.add", b"1") == b"ok:1"
            assert system.active_count("counter") == 50

            def node_subscriptions() -> list[str]:
                url = f"{server.monitor_url}/connz?subs=1"
                with urllib.request.urlopen(url, timeout=5) as response:
                    connz = json.load(response)
                (conn,) = [c for c in connz["connections"] if c.get("name") == "node"]
                return list(conn.get("subscriptions_list", []))

            assert await anyio.to_thread.run_sync(node_subscriptions) == [SUBJECT]


async def test_route_replies_and_route_failures(nats_url: str) -> None:
    async with node(nats_url) as (system, binding), client(nats_url) as c:
        assert await ask(c, "test.counters.x.nope") == b"err:unknown_verb"
        assert not system.is_active("counter", "x")
        assert await ask(c, "test.counters.x.boom") == b"err:internal"
        assert binding.stats.route_errors == 1
        # Still serving after a faulty route.
        assert await ask(c, "test.counters.x.add", b"3") == b"ok:3"


async def test_trace_headers_reach_the_actor_and_come_back(nats_url: str) -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with node(nats_url), client(nats_url) as c:
        payload, headers = await c.request(
            "test.counters.t.trace",
            b"",
            headers={"TraceParent": parent, "TraceState": "k=v", "X-Other": "1"},
            timeout=5,
        )
        assert payload == f"ok:{parent}".encode()
        assert headers == {"traceparent": parent, "tracestate": "k=v"}
        payload, headers = await c.request("test.counters.t.add", b"1", timeout=5)
        assert (payload, headers) == (b"ok:1", {})


async def test_a_passed_deadline_is_not_applied(nats_url: str) -> None:
    async with node(nats_url), client(nats_url) as c:
        assert await ask(c, "test.counters.d.add", b"4") == b"ok:4"
        assert await ask(c, "test.counters.d.late") == b"err:DeadlineExceeded"
        assert await ask(c, "test.counters.d.add", b"0") == b"ok:4"


async def test_publish_without_reply_is_still_told(nats_url: str) -> None:
    async with node(nats_url) as (_, binding), client(nats_url) as c:
        await c.publish("test.counters.p.add", b"6")
        await c.flush()
        assert await ask(c, "test.counters.p.add", b"1") == b"ok:7"
        assert binding.stats.requests == 2
        assert binding.stats.replies == 1


async def test_many_requests_in_flight(nats_url: str) -> None:
    keys, per_key = 20, 25
    replies: dict[str, list[int]] = {f"k{i}": [] for i in range(keys)}
    async with node(nats_url) as (_, binding), client(nats_url) as c:

        async def one(key: str) -> None:
            reply = await ask(c, f"test.counters.{key}.add", b"1")
            replies[key].append(int(reply.removeprefix(b"ok:")))

        async with anyio.create_task_group() as tg:
            for _ in range(per_key):
                for key in replies:
                    tg.start_soon(one, key)
        assert binding.stats.replies == keys * per_key
    for values in replies.values():
        assert sorted(values) == list(range(1, per_key + 1))


async def test_replies_wait_for_commit_and_a_full_mailbox_answers_at_once(
    nats_url: str,
) -> None:
    journal = GatedJournal()
    results: dict[int, bytes] = {}
    # While the first commit is held, the actor keeps taking turns until PIPELINE_DEPTH
    # of them wait for their commits; then its mailbox (capacity 2) fills.
    accepted = PIPELINE_DEPTH + 2
    async with node(nats_url, journal, kind="ledger") as (system, binding), client(nats_url) as c:

        async def send(n: int) -> None:
            results[n] = await ask(c, "test.counters.L.add", b"1")

        async with anyio.create_task_group() as tg:
            tg.start_soon(send, 1)
            with anyio.fail_after(5):
                await journal.writing.wait()  # request 1 is being committed
            ledger = system._lookup("ledger", "L")
            assert ledger is not None
            for n in range(2, accepted + 1):
                tg.start_soon(send, n)
                with anyio.fail_after(5):  # one turn per request: let it be taken
                    while binding.stats.requests < n or (
                        ledger._a_state == ActorState.READY and has_mail(ledger)
                    ):
                        await anyio.sleep(0.001)
            assert ledger._a_state == ActorState.COMMITTING
            # The next one is refused at once, while the commit of the 1st is still held.
            assert await ask(c, "test.counters.L.add", b"1") == b"err:Overloaded"
            assert binding.stats.rejected == 1
            assert results == {}  # no reply before its commit
            assert binding.in_flight == accepted
            journal.gate.set()
    assert results == {n: f"ok:{n}".encode() for n in range(1, accepted + 1)}


async def test_shutdown_waits_for_replies_in_flight(nats_url: str) -> None:
    journal = GatedJournal()
    result: list[bytes] = []
    stop = anyio.Event()
    system = ActorSystem(journal=journal)
    async with (
        client(nats_url) as c,
        system,
        NatsTransport([nats_url], name="node") as transport,
    ):
        system.register("ledger", Ledger)

        async def run_binding(*, task_status: TaskStatus[NatsBinding]) -> None:
            async with NatsBinding(system, transport) as binding:
                await binding.serve("ledger", SUBJECT, make_route(system), encode)
                task_status.started(binding)
                await stop.wait()

        async def send() -> None:
            result.append(await ask(c, "test.counters.S.add", b"9"))

        async with anyio.create_task_group() as tg:
            binding = await tg.start(run_binding)
            tg.start_soon(send)
            with anyio.fail_after(5):
                await journal.writing.wait()
            stop.set()
            # Once the subscription is gone nobody answers (the route answers this
            # verb at once while subscribed) ...
            with anyio.fail_after(5):
                while True:
                    try:
                        await c.request("test.counters.S.nope", b"", timeout=1)
                    except NoResponders:
                        break
                    except RequestTimeout:
                        pass  # a slow machine; ask again
                    await anyio.sleep(0.001)
            # ... but the request already told still gets its reply after the commit.
            assert result == []
            assert binding.in_flight == 1
            journal.gate.set()
    assert result == [b"ok:9"]
    assert binding.in_flight == 0


async def test_serve_handler_runs_a_bounded_number_at_once(nats_url: str) -> None:
    running = 0
    most = 0
    gate = anyio.Event()

    async def handler(tokens: list[str], headers: Mapping[str, str], payload: bytes) -> bytes:
        nonlocal running, most
        if tokens == ["fail"]:
            raise ValueError("handler bug")
        running += 1
        most = max(most, running)
        await gate.wait()
        running -= 1
        return b"pong:" + ".".join(tokens).encode() + b":" + payload

    async with node(nats_url) as (_, binding), client(nats_url) as c:
        sub = await binding.serve_handler("test.query.>", handler, encode, concurrency=3)
        assert await ask(c, "test.query.fail") == b"err:internal"
        replies: list[bytes] = []

        async def one(i: int) -> None:
            replies.append(await ask(c, f"test.query.q{i}", str(i).encode()))

        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(one, i)
            # Three handlers run, the fourth request waits for a slot and the other six
            # wait in the subscription's queue.
            with anyio.fail_after(5):
                while not (running == 3 and sub.pending_msgs == 6):
                    await anyio.sleep(0.001)
            assert binding.stats.requests == 1 + 4
            gate.set()
        assert sorted(replies) == sorted(f"pong:q{i}:{i}".encode() for i in range(10))
        assert most == 3
        assert binding.stats.route_errors == 1


async def test_after_exit_nobody_answers(nats_url: str) -> None:
    async with client(nats_url) as c:
        async with node(nats_url):
            assert await ask(c, "test.counters.z.add", b"1") == b"ok:1"
        with pytest.raises(NoResponders):
            await c.request("test.counters.z.add", b"1", timeout=2)


async def test_serve_needs_a_running_binding(nats_url: str) -> None:
    system = ActorSystem()
    async with NatsTransport([nats_url]) as transport:
        binding = NatsBinding(system, transport)
        with pytest.raises(ActorsError, match="not running"):
            await binding.serve("counter", SUBJECT, make_route(system), encode)


async def test_a_reply_that_cannot_be_encoded_is_answered_with_the_encoders_error(
    nats_url: str,
) -> None:
    def picky(value: Any) -> bytes:
        if value == 13:
            raise ValueError("unlucky")
        return encode(value)

    system = ActorSystem()
    async with (
        system,
        NatsTransport([nats_url]) as transport,
        NatsBinding(system, transport) as binding,
        NatsTransport([nats_url]) as client,
    ):
        system.register("counter", Counter)
        await binding.serve("counter", SUBJECT, make_route(system), picky)
        reply, _ = await client.request("test.counters.c1.add", b"13", timeout=5)
        assert reply == b"err:internal"  # an answer, not a timeout
        reply, _ = await client.request("test.counters.c1.add", b"1", timeout=5)
        assert reply == b"ok:14"
