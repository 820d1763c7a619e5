"""The JetStream journal: the shared suite on a real nats-server, plus what only it has:
the server's per-actor sequence check between two writers, atomic units (a refused
record takes its deadlines and outbox entries with it), a stream that outlives the
server process, recovery that reads only the records since the snapshot, and subjects
for any kind, key or id."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TypeVar

import anyio
import msgspec
import nats.js.errors
import pytest
from journal_suite import JournalSuite, deadline, events
from nats.js.api import DiscardPolicy, StorageType, StreamConfig

from actors.errors import JournalUnavailable, SequenceConflict
from actors.journal import JetStreamJournal, Journal, OutboxEntry, Recovery, WriteRequest
from actors.nats import NatsServer, NatsTransport, free_port
from tests.nats_fixtures import nats_server_fixture, nats_url_fixture  # noqa: F401

pytestmark = pytest.mark.integration

T = TypeVar("T")


@pytest.fixture
async def transport(nats_url: str) -> AsyncIterator[NatsTransport]:
    async with NatsTransport([nats_url], reconnect_time_wait=0.05) as connected:
        yield connected


@pytest.fixture
def make_journal(transport: NatsTransport) -> Callable[[], JetStreamJournal]:
    return lambda: JetStreamJournal(transport, stream="J", prefix="j")


class TestJetStreamJournal(JournalSuite):
    @pytest.fixture
    def journal_factory(
        self, make_journal: Callable[[], JetStreamJournal]
    ) -> Callable[[], Journal]:
        return make_journal


@pytest.fixture
async def two(
    make_journal: Callable[[], JetStreamJournal],
) -> AsyncIterator[tuple[JetStreamJournal, JetStreamJournal]]:
    """Two journals on one stream: two nodes that both think they own an actor."""
    first, second = make_journal(), make_journal()
    await first.open()
    await second.open()
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


@pytest.mark.anyio
async def test_the_server_refuses_the_second_writer(
    two: tuple[JetStreamJournal, JetStreamJournal],
) -> None:
    first, second = two
    # Both have read the actor (so both caches hold seq 0) before either writes.
    assert [r.seq for r in await first.recover([("acct", "a")])] == [0]
    assert [r.seq for r in await second.recover([("acct", "a")])] == [0]
    assert await first.write([WriteRequest("acct", "a", 0, events=events("mine"))]) == [None]
    [conflict] = await second.write([WriteRequest("acct", "a", 0, events=events("theirs"))])
    assert isinstance(conflict, SequenceConflict)
    assert (conflict.expected, conflict.actual) == (0, 1)
    # Having learned the head, the second writer can append after it.
    assert await second.write([WriteRequest("acct", "a", 1, events=events("next"))]) == [None]
    [a] = await first.recover([("acct", "a")])
    assert (a.seq, a.events) == (2, events("mine", "next"))
    # The first writer's cache is stale now: the server refuses, nothing is lost.
    [stale] = await first.write([WriteRequest("acct", "a", 1, events=events("late"))])
    assert isinstance(stale, SequenceConflict)
    assert stale.actual == 2


@pytest.mark.anyio
async def test_a_refused_record_takes_its_deadlines_and_outbox_with_it(
    two: tuple[JetStreamJournal, JetStreamJournal],
) -> None:
    first, second = two
    await first.write([WriteRequest("acct", "a", 0, events=events("a1"))])
    await second.recover([("acct", "a")])
    await first.write([WriteRequest("acct", "a", 1, events=events("a2"))])
    # ``second`` believes a is at 1; its write goes out in one atomic batch with c's.
    results = await second.write(
        [
            WriteRequest(
                "acct",
                "a",
                1,
                events=events("lost"),
                deadlines_set=[deadline("acct", "a", "t", 1.0)],
                outbox=[OutboxEntry("ob-lost", "s.a", b"x")],
            ),
            WriteRequest(
                "acct",
                "c",
                0,
                events=events("c1"),
                deadlines_set=[deadline("acct", "c", "u", 2.0)],
                outbox=[OutboxEntry("ob-c", "s.c", b"y")],
            ),
        ]
    )
    assert isinstance(results[0], SequenceConflict)
    assert (results[0].expected, results[0].actual) == (1, 2)
    assert results[1] is None
    assert [(d.key, d.name) for d in await first.deadlines()] == [("c", "u")]
    assert [e.id for e in await first.outbox()] == ["ob-c"]
    a, c = await first.recover([("acct", "a"), ("acct", "c")])
    assert (a.seq, a.events, a.deadlines) == (2, events("a1", "a2"), [])
    assert (c.seq, c.events, [d.name for d in c.deadlines]) == (1, events("c1"), ["u"])


@pytest.mark.anyio
async def test_the_stream_outlives_the_server_process(
    nats_server: NatsServer, make_journal: Callable[[], JetStreamJournal]
) -> None:
    journal = make_journal()
    await journal.open()
    await journal.write(
        [
            WriteRequest(
                "acct",
                "a",
                0,
                events=events("e1", "e2"),
                snapshot=b"S2",
                deadlines_set=[deadline("acct", "a", "t", 9.5)],
                idempotency=[("r", b"ok")],
                outbox=[OutboxEntry("m", "ev", b"p")],
            )
        ]
    )
    await journal.write([WriteRequest("acct", "a", 2, events=events("e3"))])
    await journal.close()
    await journal.transport.close()

    await nats_server.astop()
    await nats_server.astart()
    async with NatsTransport([nats_server.url]) as transport:
        again = JetStreamJournal(transport, stream="J", prefix="j")
        await again.open()
        try:
            [a] = await again.recover([("acct", "a")])
            assert a == Recovery(
                "acct",
                "a",
                seq=3,
                snapshot=b"S2",
                snapshot_seq=2,
                events=events("e3"),
                idempotency={"r": b"ok"},
                deadlines=[deadline("acct", "a", "t", 9.5)],
            )
            assert [e.id for e in await again.outbox()] == ["m"]
            assert [d.name for d in await again.deadlines()] == ["t"]
        finally:
            await again.close()


@pytest.mark.anyio
async def test_a_write_with_no_answer_is_unavailable_and_recovery_tells_the_outcome(
    nats_server: NatsServer, transport: NatsTransport
) -> None:
    journal = JetStreamJournal(transport, stream="J", prefix="j", timeout=0.5)
    await journal.open()
    try:
        assert await journal.write([WriteRequest("acct", "a", 0, events=events("e1"))]) == [None]
        await nats_server.akill()
        with pytest.raises(JournalUnavailable):
            await journal.write([WriteRequest("acct", "a", 1, events=events("e2"))])
        await nats_server.astart()
        # The client may deliver the buffered record after reconnecting, or not, and
        # maybe only after a first read: the runtime does not guess. It recovers and
        # writes after what is stored; a conflict sends it back to recovery.
        for _ in range(3):
            [a] = await _retrying(lambda: journal.recover([("acct", "a")]))
            [result] = await journal.write([WriteRequest("acct", "a", a.seq, events=events("e3"))])
            if result is None:
                break
            assert isinstance(result, SequenceConflict)
        [final] = await journal.recover([("acct", "a")])
        assert final.events in (events("e1", "e3"), events("e1", "e2", "e3"))
    finally:
        await journal.close()


@pytest.mark.anyio
async def test_the_stream_it_creates(
    transport: NatsTransport, make_journal: Callable[[], JetStreamJournal]
) -> None:
    journal = make_journal()
    await journal.open()
    await journal.close()
    config = (await transport.jetstream().stream_info("J")).config
    assert config.subjects == ["j.>"]
    assert config.storage == StorageType.FILE
    assert config.discard == DiscardPolicy.NEW  # a limit refuses writes, never drops history
    assert (config.max_age, config.max_msgs, config.max_bytes) == (0, -1, -1)
    assert config.num_replicas == 1
    assert config.allow_direct and config.allow_atomic and config.allow_rollup_hdrs


@pytest.mark.anyio
async def test_an_existing_stream_gets_the_features_it_needs(transport: NatsTransport) -> None:
    js = transport.jetstream()
    await js.add_stream(StreamConfig(name="OLD", subjects=["old.>"], max_msgs_per_subject=-1))
    journal = JetStreamJournal(transport, stream="OLD", prefix="old")
    await journal.open()
    try:
        assert await journal.write(
            [WriteRequest("k", "a", 0, deadlines_set=[deadline("k", "a", "t", 1.0)])]
        ) == [None]
        config = (await js.stream_info("OLD")).config
        assert config.allow_atomic and config.allow_direct and config.allow_rollup_hdrs
    finally:
        await journal.close()
    wrong = JetStreamJournal(transport, stream="OLD", prefix="other")
    with pytest.raises(JournalUnavailable, match="not other"):
        await wrong.open()


@pytest.mark.anyio
async def test_recovery_reads_the_records_since_the_snapshot_only(
    make_journal: Callable[[], JetStreamJournal],
) -> None:
    journal = make_journal()
    await journal.open()
    try:
        for i in range(10):  # ten records, the seventh with a snapshot
            snapshot = b"S7" if i == 6 else None
            req = WriteRequest(
                "acct",
                "a",
                i,
                events=events(f"e{i + 1}"),
                snapshot=snapshot,
                idempotency=[(f"r{i}", b"ok")],
            )
            assert await journal.write([req]) == [None]
        reader = make_journal()
        await reader.open()
        try:
            [a] = await reader.recover([("acct", "a")])
            # The snapshot's record and the three after it.
            assert reader.records_read == 4
        finally:
            await reader.close()
        assert (a.seq, a.snapshot, a.snapshot_seq) == (10, b"S7", 7)
        assert a.events == events("e8", "e9", "e10")
        assert a.idempotency == {f"r{i}": b"ok" for i in range(10)}
    finally:
        await journal.close()


@pytest.mark.anyio
async def test_a_writer_that_forgot_an_actor_reads_its_head_first(
    transport: NatsTransport,
) -> None:
    """With room for one actor's head, every other write misses the cache: the head is
    read back (its sequence, deadlines and idempotency records) before the write, so a
    snapshot written then still carries every idempotency record of the actor."""
    journal = JetStreamJournal(transport, stream="J", prefix="j", cache_actors=1)
    await journal.open()
    try:
        for i in range(3):
            for key in ("a", "b"):
                req = WriteRequest(
                    "acct",
                    key,
                    i,
                    events=events(f"{key}{i}"),
                    snapshot=b"S" if i == 2 else None,
                    idempotency=[(f"{key}-r{i}", b"ok")],
                    deadlines_set=[deadline("acct", key, f"t{i}", float(i))],
                    deadlines_cancel=[f"t{i - 1}"],
                )
                assert await journal.write([req]) == [None]
        reader = JetStreamJournal(transport, stream="J", prefix="j")
        await reader.open()
        try:
            a, b = await reader.recover([("acct", "a"), ("acct", "b")])
            assert reader.records_read == 2  # each actor's last record holds everything
        finally:
            await reader.close()
        for rec, key in ((a, "a"), (b, "b")):
            assert (rec.seq, rec.snapshot, rec.snapshot_seq, rec.events) == (3, b"S", 3, [])
            assert rec.idempotency == {f"{key}-r{i}": b"ok" for i in range(3)}
            assert [d.name for d in rec.deadlines] == ["t2"]
        assert [(d.key, d.name) for d in await journal.deadlines()] == [("a", "t2"), ("b", "t2")]
    finally:
        await journal.close()


@pytest.mark.anyio
async def test_a_long_history_is_read_in_pages(
    make_journal: Callable[[], JetStreamJournal],
) -> None:
    journal = make_journal()
    await journal.open()
    try:
        for i in range(600):  # more records than one batched read returns
            await journal.write([WriteRequest("acct", "a", i, events=[str(i).encode()])])
        reader = make_journal()
        await reader.open()
        try:
            [a] = await reader.recover([("acct", "a")])
        finally:
            await reader.close()
        assert a.seq == 600
        assert a.events == [str(i).encode() for i in range(600)]
    finally:
        await journal.close()


@pytest.mark.anyio
async def test_any_kind_key_and_outbox_id_is_a_subject_token(
    make_journal: Callable[[], JetStreamJournal],
) -> None:
    journal = make_journal()
    await journal.open()
    odd = [("a.b", "x y"), ("a", "b.x y"), ("*", ">"), ("=", "")]
    try:
        assert await journal.write(
            [
                WriteRequest(
                    kind,
                    key,
                    0,
                    events=[f"{kind}|{key}".encode()],
                    deadlines_set=[deadline(kind, key, "t.1 *", 1.0)],
                    outbox=[OutboxEntry(f"id.{i} >", "s", b"p")],
                )
                for i, (kind, key) in enumerate(odd)
            ]
        ) == [None] * len(odd)
        got = await journal.recover(odd)
        assert [r.events for r in got] == [[f"{k}|{y}".encode()] for k, y in odd]
        assert sorted((d.kind, d.key, d.name) for d in await journal.deadlines()) == sorted(
            (k, y, "t.1 *") for k, y in odd
        )
        ids = [e.id for e in await journal.outbox()]
        assert ids == [f"id.{i} >" for i in range(len(odd))]
        await journal.ack_outbox(ids[:2])
        assert [e.id for e in await journal.outbox()] == ids[2:]
    finally:
        await journal.close()


@pytest.mark.anyio
async def test_a_group_larger_than_an_atomic_batch(
    make_journal: Callable[[], JetStreamJournal],
) -> None:
    journal = make_journal()
    await journal.open()
    try:
        batch = [
            WriteRequest(
                "acct",
                f"a{i}",
                0,
                events=events("e"),
                outbox=[OutboxEntry(f"m{i}-{j}", "s", b"p") for j in range(3)],
            )
            for i in range(300)  # 1,200 messages: three atomic batches
        ]
        assert await journal.write(batch) == [None] * 300
        pending = await journal.outbox(limit=2000)
        assert [e.id for e in pending] == [f"m{i}-{j}" for i in range(300) for j in range(3)]
    finally:
        await journal.close()


@pytest.mark.anyio
async def test_a_record_over_the_message_limit_is_refused_before_sending(
    transport: NatsTransport, make_journal: Callable[[], JetStreamJournal]
) -> None:
    journal = make_journal()
    await journal.open()
    try:
        huge = b"x" * transport.max_payload
        with pytest.raises(ValueError, match="exceeds"):
            await journal.write(
                [
                    WriteRequest("acct", "small", 0, events=events("fits")),
                    WriteRequest("acct", "big", 0, events=[huge]),
                ]
            )
        small, big = await journal.recover([("acct", "small"), ("acct", "big")])
        assert (small.seq, big.seq) == (0, 0)
    finally:
        await journal.close()


@pytest.mark.anyio
async def test_dead_letters_from_two_writers_chain(
    two: tuple[JetStreamJournal, JetStreamJournal],
) -> None:
    from actors.journal import DeadLetter

    first, second = two
    for i in range(4):
        writer = first if i % 2 == 0 else second
        await writer.add_dead_letter(DeadLetter("acct", f"k{i}", "T", None, "boom", 1, float(i)))
    assert [d.key for d in await first.dead_letters()] == ["k3", "k2", "k1", "k0"]
    assert [d.key for d in await second.dead_letters(limit=3)] == ["k3", "k2", "k1"]


@pytest.mark.anyio
async def test_records_are_msgpack_on_the_actor_subject(
    transport: NatsTransport, make_journal: Callable[[], JetStreamJournal]
) -> None:
    """One record per actor per write: the chain of a group is folded into it."""
    journal = make_journal()
    await journal.open()
    try:
        await journal.write(
            [
                WriteRequest("acct", "a", 0, events=events("e1")),
                WriteRequest("acct", "a", 1, events=events("e2", "e3")),
            ]
        )
        info = await transport.jetstream().stream_info("J", subjects_filter="j.ev.>")
        assert info.state.subjects == {"j.ev.acct.a": 1}
        stored = await transport.jetstream().get_last_msg("J", "j.ev.acct.a")
        record = msgspec.msgpack.decode(stored.data)
        assert record[0] == 3  # the sequence after it
        with pytest.raises(nats.js.errors.NotFoundError):
            await transport.jetstream().get_last_msg("J", "j.deadline.acct.a")
    finally:
        await journal.close()


# -- three replicas ---------------------------------------------------------------------


async def _retrying(step: Callable[[], Awaitable[T]], within: float = 20.0) -> T:
    """A new cluster answers "no responders" or times out while it elects its leaders
    (for JetStream, then for the stream); retry until it stops doing so."""
    with anyio.fail_after(within):
        while True:
            try:
                return await step()
            except JournalUnavailable:
                await anyio.sleep(0.05)


@pytest.mark.anyio
async def test_three_replicas_survive_the_loss_of_a_server(tmp_path: Path) -> None:
    cluster_ports = [free_port() for _ in range(3)]
    servers = [
        NatsServer(
            name=f"n{i}",
            store_dir=tmp_path / f"n{i}",
            cluster_name="journal",
            cluster_port=port,
            routes=[f"nats://127.0.0.1:{p}" for p in cluster_ports if p != port],
        )
        for i, port in enumerate(cluster_ports)
    ]
    async with AsyncExitStack() as stack:
        for server in servers:
            await stack.enter_async_context(server)
        urls = [s.url for s in servers]
        transport = await stack.enter_async_context(NatsTransport(urls, reconnect_time_wait=0.05))
        writer = JetStreamJournal(transport, stream="J3", prefix="j3", replicas=3, timeout=2.0)
        await _retrying(writer.open)
        stack.push_async_callback(writer.close)
        batch = [
            WriteRequest(
                "acct",
                f"a{i}",
                0,
                events=events("e1", "e2"),
                deadlines_set=[deadline("acct", f"a{i}", "t", float(i))],
                outbox=[OutboxEntry(f"m{i}", "s", b"p")],
            )
            for i in range(20)
        ]
        assert await _retrying(lambda: writer.write(batch)) == [None] * 20
        info = await transport.jetstream().stream_info("J3")
        assert info.config.num_replicas == 3
        assert info.cluster is not None and len(info.cluster.replicas or []) == 2

        # A server holding a replica dies (not the stream's leader: a new election would
        # take seconds). A new owner, connected to the other two, reads it all and the
        # remaining quorum of two takes its writes.
        lost = next(s for s in servers if s.name != info.cluster.leader)
        await lost.akill()
        others = [s.url for s in servers if s is not lost]
        async with NatsTransport(others, reconnect_time_wait=0.05) as survivor:
            owner = JetStreamJournal(survivor, stream="J3", prefix="j3", timeout=2.0)
            await _retrying(owner.open)
            try:
                got = await _retrying(lambda: owner.recover([("acct", "a7")]))
                assert (got[0].seq, got[0].events) == (2, events("e1", "e2"))
                assert len(await owner.deadlines()) == 20
                assert len(await owner.outbox()) == 20
                assert await _retrying(
                    lambda: owner.write([WriteRequest("acct", "a7", 2, events=events("e3"))])
                ) == [None]
            finally:
                await owner.close()
