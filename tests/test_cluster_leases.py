"""Shard leases (actors.cluster) on a real nats-server with JetStream.

Every node has its own connection and its own VirtualClock: lease timing (renewal,
fencing, lapse) moves only when a test moves a clock, and rounds are played with
``tick()``. What is real is the KV bucket: the compare-and-set that decides who holds a
lease, and the watch that carries changes between nodes (``sync()`` waits for it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AsyncExitStack

import anyio
import msgspec
import nats.js.errors
import pytest

from actors.clock import VirtualClock
from actors.cluster import ClusterView, ShardLeases, read_view, shard_of
from actors.nats import NatsTransport
from tests.nats_fixtures import nats_server_fixture, nats_url_fixture  # noqa: F401

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

BUCKET = "LEASES"
SHARDS = 64
TTL, HEARTBEAT, MARGIN = 3.0, 1.0, 0.5


class Node:
    """One member: its leases, its clock, and what its callbacks saw."""

    def __init__(self, leases: ShardLeases, clock: VirtualClock) -> None:
        self.leases = leases
        self.clock = clock
        self.acquired: list[frozenset[int]] = []
        self.lost: list[tuple[float, frozenset[int]]] = []  # (own clock, shards)
        self.released: list[frozenset[int]] = []
        self.owned_while_releasing: list[bool] = []
        self.owned_while_acquiring: list[bool] = []

    @property
    def id(self) -> str:
        return self.leases.node_id

    def advance(self, dt: float) -> None:
        self.clock.set(self.clock.monotonic() + dt)


Make = Callable[..., Awaitable[Node]]


@pytest.fixture
async def make_node(nats_url: str) -> AsyncIterator[Make]:
    async with AsyncExitStack() as stack:

        async def make(node_id: str, shards: int = SHARDS, start: bool = True) -> Node:
            transport = await stack.enter_async_context(
                NatsTransport([nats_url], name=node_id, reconnect_time_wait=0.05)
            )
            clock = VirtualClock()
            node: Node

            async def on_acquired(shards: frozenset[int]) -> None:
                node.owned_while_acquiring.append(any(node.leases.owns(s) for s in shards))
                node.acquired.append(shards)

            def on_lost(shards: frozenset[int]) -> None:
                node.lost.append((clock.monotonic(), shards))

            async def before_release(shards: frozenset[int]) -> None:
                node.owned_while_releasing.append(all(node.leases.owns(s) for s in shards))
                node.released.append(shards)

            leases = ShardLeases(
                transport,
                node_id=node_id,
                shards=shards,
                bucket=BUCKET,
                clock=clock,
                ttl=TTL,
                heartbeat=HEARTBEAT,
                margin=MARGIN,
                on_acquired=on_acquired,
                on_lost=on_lost,
                before_release=before_release,
            )
            node = Node(leases, clock)
            stack.push_async_callback(leases.close)
            if start:
                await leases.start()
            return node

        yield make


def assert_exclusive(nodes: Iterable[Node], shards: int = SHARDS) -> None:
    """At this instant no shard is owned by two nodes."""
    holders = Counter(s for node in nodes for s in range(shards) if node.leases.owns(s))
    assert all(count == 1 for count in holders.values()), holders.most_common(3)


def counts(nodes: Iterable[Node]) -> list[int]:
    return [len(node.leases.owned()) for node in nodes]


async def play(nodes: list[Node], rounds: int = 1, dt: float = HEARTBEAT) -> None:
    """``rounds`` rounds: every clock moves ``dt``, every node ticks, the views catch up."""
    for _ in range(rounds):
        for node in nodes:
            node.advance(dt)
        for node in nodes:
            await node.leases.tick()
            assert_exclusive(nodes)
        for node in nodes:
            await node.leases.sync()
        assert_exclusive(nodes)


async def settle(nodes: list[Node], expected: list[int], max_rounds: int = 20) -> int:
    """Play rounds until the nodes own ``expected`` shards; the rounds it took."""
    for played in range(max_rounds + 1):
        if counts(nodes) == expected:
            return played
        await play(nodes)
    raise AssertionError(f"not settled after {max_rounds} rounds: {counts(nodes)}")


# -- the shard function -----------------------------------------------------------------


def test_shard_of_is_pinned_and_spreads_evenly() -> None:
    # Pinned: these values must never change (it would move actors between shards).
    assert [shard_of(k, key, 64) for k, key in [("cart", "1"), ("cart", "2")]] == [11, 49]
    assert shard_of("order", "abc", 64) == 22
    assert shard_of("x", "", 64) == 1
    assert shard_of("cart", "1", 1024) == 523
    assert shard_of("ab", "c", 1 << 30) != shard_of("a", "bc", 1 << 30)
    assert shard_of("anything", "at all", 1) == 0
    with pytest.raises(ValueError):
        shard_of("cart", "1", 0)
    spread = Counter(shard_of("cart", f"customer-{i}", 64) for i in range(10_000))
    assert set(spread) == set(range(64))
    assert min(spread.values()) > 110 and max(spread.values()) < 205  # mean 156


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="heartbeat"):
        ShardLeases(
            None,  # type: ignore[arg-type]
            node_id="a",
            shards=4,
            bucket=BUCKET,
            clock=VirtualClock(),
            ttl=3.0,
            heartbeat=2.6,
        )
    with pytest.raises(ValueError, match="node id"):
        ShardLeases(None, node_id="a b", shards=4, bucket=BUCKET, clock=VirtualClock())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shards"):
        ShardLeases(None, node_id="a", shards=0, bucket=BUCKET, clock=VirtualClock())  # type: ignore[arg-type]


# -- claiming and rebalancing -----------------------------------------------------------


async def test_one_node_claims_every_shard(make_node: Make, nats_url: str) -> None:
    a = await make_node("a")
    assert a.leases.owned() == frozenset()
    await a.leases.tick()
    assert a.leases.owned() == frozenset(range(SHARDS))
    assert a.acquired == [frozenset(range(SHARDS))]
    assert a.owned_while_acquiring == [False]  # on_acquired ran before owns() turned true
    assert all(a.leases.owner_of(s) == "a" for s in range(SHARDS))
    tokens = [a.leases.fencing_token(s) for s in range(SHARDS)]
    assert all(isinstance(t, int) and t > 0 for t in tokens)

    await a.leases.sync()
    mine = a.leases.view()
    assert [n.node_id for n in mine.nodes] == ["a"]
    assert mine.nodes[0].shards == tuple(range(SHARDS))
    assert [s.revision for s in mine.shards] == tokens

    async with NatsTransport([nats_url]) as transport:
        outside = await read_view(transport, BUCKET, VirtualClock())
        assert [s.owner for s in outside.shards] == ["a"] * SHARDS
        assert [s.revision for s in outside.shards] == tokens
        assert [n.node_id for n in outside.nodes] == ["a"]
        assert await read_view(transport, "NO_SUCH_BUCKET", VirtualClock()) == ClusterView(
            nodes=(), shards=()
        )


async def test_two_nodes_split_after_the_members_are_stable(make_node: Make) -> None:
    a = await make_node("a")
    await a.leases.tick()
    b = await make_node("b")
    nodes = [a, b]
    # B has joined, but A hands nothing over until the members were stable for a ttl.
    await play(nodes, rounds=int(TTL / HEARTBEAT) - 1)
    assert counts(nodes) == [SHARDS, 0]
    assert a.released == []
    await settle(nodes, [32, 32], max_rounds=4)
    assert len(a.released) == 1 and len(a.released[0]) == 32
    assert a.owned_while_releasing == [True]  # before_release ran while still owned
    assert frozenset().union(*b.acquired) == a.released[0] == b.leases.owned()
    assert a.lost == [] and b.lost == []
    await play(nodes, rounds=3)  # stable: no churn
    assert counts(nodes) == [32, 32] and len(a.released) == 1
    assert a.leases.alive() == b.leases.alive() == {"a", "b"}


async def test_three_nodes_split_22_21_21(make_node: Make) -> None:
    a = await make_node("a")
    await a.leases.tick()
    b, c = await make_node("b"), await make_node("c")
    nodes = [a, b, c]
    await settle(nodes, [22, 21, 21])
    owners = [a.leases.owner_of(s) for s in range(SHARDS)]
    assert [b.leases.owner_of(s) for s in range(SHARDS)] == owners
    assert Counter(owners) == {"a": 22, "b": 21, "c": 21}
    await play(nodes, rounds=3)
    assert counts(nodes) == [22, 21, 21]


async def test_nodes_starting_together_split_without_a_first_owner(make_node: Make) -> None:
    nodes = [await make_node("a"), await make_node("b")]
    rounds = await settle(nodes, [32, 32], max_rounds=6)
    assert rounds <= 2  # quotas from the first round; collisions retried in the next
    assert all(node.released == [] for node in nodes)


# -- lapse, fencing, takeover -----------------------------------------------------------


async def test_a_silent_owner_stops_before_the_other_takes_over(
    make_node: Make, nats_url: str
) -> None:
    a = await make_node("a")
    await a.leases.tick()  # a's clock 0: renewal sent at 0
    b = await make_node("b")
    await play([a, b])  # both clocks 1: a renews (sent at 1), b sees it at 1
    old = {s: a.leases.fencing_token(s) for s in range(SHARDS)}
    assert all(old.values())
    # a stops ticking (paused). Its leases are valid until 1 + ttl - margin = 3.5 on
    # ITS clock; b judges them lapsed at 1 + ttl = 4.0 on ITS clock.
    for node in (a, b):
        node.clock.set(3.49)
    assert a.leases.owned() == frozenset(range(SHARDS))
    for node in (a, b):
        node.clock.set(3.5)
    assert not any(a.leases.owns(s) for s in range(SHARDS))
    assert a.leases.fence() == frozenset(range(SHARDS))
    assert a.lost == [(3.5, frozenset(range(SHARDS)))]
    # At this instant b's clock does not yet say lapsed: it takes nothing.
    await b.leases.tick()
    assert b.leases.owned() == frozenset()
    assert b.leases.owner_of(0) == "a"
    assert_exclusive([a, b])

    b.clock.set(4.0)
    await b.leases.tick()
    assert b.leases.owned() == frozenset(range(SHARDS))
    assert b.leases.alive() == {"b"}  # a's heartbeat lapsed with its leases
    new = {s: b.leases.fencing_token(s) for s in range(SHARDS)}
    assert all(new[s] > old[s] for s in range(SHARDS))  # type: ignore[operator]
    assert_exclusive([a, b])

    # Fencing: a write made with a's old token is refused by the server.
    async with NatsTransport([nats_url]) as transport:
        kv = await transport.jetstream().key_value(BUCKET)
        with pytest.raises(nats.js.errors.KeyWrongLastSequenceError):
            await kv.update("shard.0", b"{}", last=old[0])
    # a wakes up: it owns nothing, claims nothing (b holds everything, a's quota is 32
    # but b gives up its surplus only after the members are stable).
    a.clock.set(4.0)
    await a.leases.tick()
    assert a.leases.owned() == frozenset()
    assert a.lost == [(3.5, frozenset(range(SHARDS)))]  # nothing more to lose
    await b.leases.sync()
    assert b.leases.alive() == {"a", "b"}
    await settle([a, b], [32, 32], max_rounds=6)


async def test_a_takeover_on_a_lying_clock_is_refused_to_the_old_owner(make_node: Make) -> None:
    """b's clock runs far ahead (the one assumption broken on purpose): b takes the leases
    while a still believes them valid. a's next renewal is refused by the compare-and-set
    and a gives them up at once, before its own clock would have."""
    a = await make_node("a", shards=8)
    await a.leases.tick()
    b = await make_node("b", shards=8)
    old = {s: a.leases.fencing_token(s) for s in range(8)}
    b.clock.set(TTL)
    await b.leases.tick()
    assert b.leases.owned() == frozenset(range(8))
    assert all(b.leases.fencing_token(s) > old[s] for s in range(8))  # type: ignore[operator]
    a.clock.set(HEARTBEAT)  # well inside a's validity (2.5)
    assert a.leases.owned() == frozenset(range(8))
    await a.leases.tick()
    assert a.lost == [(HEARTBEAT, frozenset(range(8)))]
    assert a.leases.owned() == frozenset()
    assert all(a.leases.fencing_token(s) is None for s in range(8))
    assert_exclusive([a, b], shards=8)


# -- graceful hand-off ------------------------------------------------------------------


async def test_leave_hands_over_without_waiting_for_a_lapse(make_node: Make) -> None:
    a, b = await make_node("a"), await make_node("b")
    nodes = [a, b]
    await settle(nodes, [32, 32])
    mine = a.leases.owned()
    await a.leases.leave()
    assert a.released == [mine]
    assert a.owned_while_releasing == [True]
    assert a.leases.owned() == frozenset() and a.lost == []
    await b.leases.sync()
    assert b.leases.alive() == {"b"}
    assert all(b.leases.owner_of(s) is None for s in mine)  # free at once, not lapsed
    await b.leases.tick()  # same instant on b's clock: no ttl wait
    assert b.leases.owned() == frozenset(range(SHARDS))
    assert b.lost == []
    assert [n.node_id for n in b.leases.view().nodes] == ["b"]
    await a.leases.leave()  # idempotent
    await a.leases.tick()  # a no-op after leaving


async def test_run_claims_released_shards_at_once(make_node: Make) -> None:
    """b runs its own loop (on a clock that stands still, so only the watch can wake it):
    a's leave wakes it and it claims without waiting for its next heartbeat."""
    a, b = await make_node("a"), await make_node("b")
    await settle([a, b], [32, 32])
    moves: list[int] = []
    b.leases.add_listener(lambda: moves.append(len(b.leases.owned())))
    rounds = b.leases.rounds
    async with anyio.create_task_group() as tg:
        await tg.start(b.leases.run)
        with anyio.fail_after(5):  # its first round played, it sleeps until woken
            while b.leases.rounds == rounds:
                await anyio.sleep(0.005)
        started = anyio.current_time()
        await a.leases.leave()
        with anyio.fail_after(5):
            while b.leases.owned() != frozenset(range(SHARDS)):
                await anyio.sleep(0.005)
        elapsed = anyio.current_time() - started
        await b.leases.leave()
        with anyio.fail_after(5):
            while b.leases.owned():
                await anyio.sleep(0.005)
    assert elapsed < 2.0  # in practice a few milliseconds
    assert moves and moves[-1] == 0  # owners moved to b, then away on its leave
    assert SHARDS in moves
    left = await read_view(b.leases.transport, BUCKET, b.clock)
    assert left.nodes == ()
    assert all(s.owner is None for s in left.shards)


async def test_unknown_keys_and_bad_values_do_not_break_the_view(
    make_node: Make, nats_url: str
) -> None:
    a = await make_node("a", shards=4)
    async with NatsTransport([nats_url]) as transport:
        kv = await transport.jetstream().key_value(BUCKET)
        await kv.put("shard.7", msgspec.json.encode({"owner": "x", "renewed_at": 0}))
        await kv.put("shard.1", b"not json")
        await kv.put("other", b"?")
    await a.leases.sync()
    assert a.leases.owner_of(1) is None  # an unknown owner
    await a.leases.tick()
    assert a.leases.owned() == frozenset({0, 2, 3})  # shard 1 waits for its lapse
    await play([a], rounds=int(TTL / HEARTBEAT))
    assert a.leases.owned() == frozenset(range(4))
    assert a.lost == []
