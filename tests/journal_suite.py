"""The behaviour every journal must have, written once.

A journal module gets this whole suite by subclassing :class:`JournalSuite` in a test
module and providing a ``journal_factory`` fixture: a callable returning a new, unopened
journal over the SAME store each time it is called (so closing one and opening the next
is a restart). The suite opens and closes journals itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from actors.errors import JournalUnavailable, SequenceConflict
from actors.journal import (
    DeadLetter,
    Deadline,
    Journal,
    OutboxEntry,
    Recovery,
    WriteRequest,
)

JournalFactory = Callable[[], Journal]


def events(*names: str) -> list[bytes]:
    return [name.encode() for name in names]


def deadline(kind: str, key: str, name: str, due: float, payload: bytes = b"") -> Deadline:
    return Deadline(kind=kind, key=key, name=name, due=due, payload=payload or name.encode())


@pytest.mark.anyio
class JournalSuite:
    """Subclass it and define a ``journal_factory`` fixture."""

    @pytest.fixture
    async def journal(self, journal_factory: JournalFactory) -> AsyncIterator[Journal]:
        j = journal_factory()
        await j.open()
        try:
            yield j
        finally:
            await j.close()

    # -- events and sequence numbers ---------------------------------------------------

    async def test_is_a_journal(self, journal: Journal) -> None:
        assert isinstance(journal, Journal)

    async def test_append_then_recover_in_order(self, journal: Journal) -> None:
        assert await journal.write(
            [WriteRequest("acct", "a", 0, events=events("e1", "e2", "e3"))]
        ) == [None]
        assert await journal.write([WriteRequest("acct", "a", 3, events=events("e4", "e5"))]) == [
            None
        ]
        [rec] = await journal.recover([("acct", "a")])
        assert rec.kind == "acct"
        assert rec.key == "a"
        assert rec.seq == 5
        assert rec.snapshot is None
        assert rec.snapshot_seq == 0
        assert rec.events == events("e1", "e2", "e3", "e4", "e5")

    async def test_kinds_are_separate_namespaces(self, journal: Journal) -> None:
        await journal.write(
            [
                WriteRequest("acct", "x", 0, events=events("acct")),
                WriteRequest("cart", "x", 0, events=events("cart1", "cart2")),
            ]
        )
        acct, cart = await journal.recover([("acct", "x"), ("cart", "x")])
        assert (acct.seq, acct.events) == (1, events("acct"))
        assert (cart.seq, cart.events) == (2, events("cart1", "cart2"))

    async def test_unknown_actor_recovers_empty(self, journal: Journal) -> None:
        assert await journal.recover([("acct", "nobody")]) == [Recovery("acct", "nobody")]

    async def test_stale_expected_seq_is_refused(self, journal: Journal) -> None:
        await journal.write([WriteRequest("acct", "a", 0, events=events("e1", "e2"))])
        [conflict] = await journal.write([WriteRequest("acct", "a", 1, events=events("x"))])
        assert isinstance(conflict, SequenceConflict)
        assert (conflict.kind, conflict.key, conflict.expected, conflict.actual) == (
            "acct",
            "a",
            1,
            2,
        )
        [ahead] = await journal.write([WriteRequest("acct", "b", 4, events=events("x"))])
        assert isinstance(ahead, SequenceConflict)
        assert (ahead.expected, ahead.actual) == (4, 0)
        a, b = await journal.recover([("acct", "a"), ("acct", "b")])
        assert (a.seq, a.events) == (2, events("e1", "e2"))
        assert (b.seq, b.events) == (0, [])

    async def test_conflict_is_isolated_within_a_group(self, journal: Journal) -> None:
        await journal.write([WriteRequest("acct", "a", 0, events=events("a1", "a2"))])
        stale = WriteRequest(
            "acct",
            "a",
            1,
            events=events("lost"),
            snapshot=b"lost-snap",
            deadlines_set=[deadline("acct", "a", "t", 5.0)],
            idempotency=[("req-lost", b"r")],
            outbox=[OutboxEntry("ob-lost", "s.lost", b"p")],
        )
        fine = WriteRequest(
            "acct",
            "b",
            0,
            events=events("b1"),
            idempotency=[("req-b", b"rb")],
            outbox=[OutboxEntry("ob-b", "s.b", b"pb")],
        )
        results = await journal.write([stale, fine])
        assert isinstance(results[0], SequenceConflict)
        assert results[0].actual == 2
        assert results[1] is None
        a, b = await journal.recover([("acct", "a"), ("acct", "b")])
        assert a == Recovery("acct", "a", seq=2, events=events("a1", "a2"))
        assert (b.seq, b.events, b.idempotency) == (1, events("b1"), {"req-b": b"rb"})
        assert [e.id for e in await journal.outbox()] == ["ob-b"]
        assert await journal.deadlines() == []

    async def test_same_actor_twice_in_one_group(self, journal: Journal) -> None:
        results = await journal.write(
            [
                WriteRequest("acct", "a", 0, events=events("e1", "e2")),
                WriteRequest("acct", "a", 2, events=events("e3")),
                WriteRequest("acct", "a", 2, events=events("dup")),
            ]
        )
        assert results[:2] == [None, None]
        assert isinstance(results[2], SequenceConflict)
        assert (results[2].expected, results[2].actual) == (2, 3)
        [a] = await journal.recover([("acct", "a")])
        assert (a.seq, a.events) == (3, events("e1", "e2", "e3"))

    async def test_empty_batch(self, journal: Journal) -> None:
        assert await journal.write([]) == []
        assert await journal.recover([]) == []

    # -- snapshots ---------------------------------------------------------------------

    async def test_snapshot_then_events_after_it(self, journal: Journal) -> None:
        await journal.write([WriteRequest("acct", "a", 0, events=events("e1", "e2"))])
        await journal.write([WriteRequest("acct", "a", 2, events=events("e3"), snapshot=b"S3")])
        await journal.write([WriteRequest("acct", "a", 3, events=events("e4", "e5"))])
        [a] = await journal.recover([("acct", "a")])
        assert (a.seq, a.snapshot, a.snapshot_seq) == (5, b"S3", 3)
        assert a.events == events("e4", "e5")

        await journal.write([WriteRequest("acct", "a", 5, events=events("e6"), snapshot=b"S6")])
        [a] = await journal.recover([("acct", "a")])
        assert (a.seq, a.snapshot, a.snapshot_seq, a.events) == (6, b"S6", 6, [])

    async def test_snapshot_without_events(self, journal: Journal) -> None:
        await journal.write([WriteRequest("acct", "a", 0, events=events("e1", "e2"))])
        assert await journal.write([WriteRequest("acct", "a", 2, snapshot=b"S2")]) == [None]
        [a] = await journal.recover([("acct", "a")])
        assert (a.seq, a.snapshot, a.snapshot_seq, a.events) == (2, b"S2", 2, [])

    # -- deadlines ---------------------------------------------------------------------

    async def test_deadline_set_replace_cancel(self, journal: Journal) -> None:
        await journal.write(
            [
                WriteRequest(
                    "acct",
                    "a",
                    0,
                    events=events("e1"),
                    deadlines_set=[
                        deadline("acct", "a", "close", 20.0),
                        deadline("acct", "a", "remind", 10.0),
                    ],
                )
            ]
        )
        [a] = await journal.recover([("acct", "a")])
        assert [(d.name, d.due) for d in a.deadlines] == [("remind", 10.0), ("close", 20.0)]

        # Replace "close" (same name) so it comes first; cancel "remind".
        await journal.write(
            [
                WriteRequest(
                    "acct",
                    "a",
                    1,
                    events=events("e2"),
                    deadlines_set=[deadline("acct", "a", "close", 5.0, b"new")],
                    deadlines_cancel=["remind", "never-set"],
                )
            ]
        )
        assert await journal.deadlines() == [Deadline("acct", "a", "close", 5.0, b"new")]
        [a] = await journal.recover([("acct", "a")])
        assert a.deadlines == [Deadline("acct", "a", "close", 5.0, b"new")]

    async def test_write_with_only_a_deadline_cancel(self, journal: Journal) -> None:
        await journal.write(
            [
                WriteRequest(
                    "acct",
                    "a",
                    0,
                    events=events("e1"),
                    deadlines_set=[deadline("acct", "a", "t", 3.0)],
                )
            ]
        )
        # No events: the sequence is still checked, and stays where it was.
        [stale] = await journal.write([WriteRequest("acct", "a", 0, deadlines_cancel=["t"])])
        assert isinstance(stale, SequenceConflict)
        assert len(await journal.deadlines()) == 1
        assert await journal.write([WriteRequest("acct", "a", 1, deadlines_cancel=["t"])]) == [None]
        assert await journal.deadlines() == []
        [a] = await journal.recover([("acct", "a")])
        assert (a.seq, a.events, a.deadlines) == (1, events("e1"), [])

    async def test_later_request_in_group_cancels_earlier_set(self, journal: Journal) -> None:
        await journal.write(
            [
                WriteRequest("acct", "a", 0, deadlines_set=[deadline("acct", "a", "t", 1.0)]),
                WriteRequest("acct", "a", 0, deadlines_cancel=["t"]),
                WriteRequest("acct", "b", 0, deadlines_cancel=["u"]),
                WriteRequest("acct", "b", 0, deadlines_set=[deadline("acct", "b", "u", 2.0)]),
            ]
        )
        assert [(d.key, d.name) for d in await journal.deadlines()] == [("b", "u")]

    async def test_deadlines_page_in_order_by_cursor(self, journal: Journal) -> None:
        # Equal due times across kinds/keys/names exercise every tie-breaker.
        batch = []
        for kind in ("k2", "k1"):
            for key in ("b", "a", "c"):
                sets = [
                    deadline(kind, key, name, due)
                    for name, due in (("y", 2.0), ("x", 2.0), ("z", 1.5), ("w", 7.25))
                ]
                batch.append(WriteRequest(kind, key, 0, deadlines_set=sets))
        await journal.write(batch)
        every = await journal.deadlines()
        assert len(every) == 24
        order = [(d.due, d.kind, d.key, d.name) for d in every]
        assert order == sorted(order)
        assert order[:3] == [(1.5, "k1", "a", "z"), (1.5, "k1", "b", "z"), (1.5, "k1", "c", "z")]

        paged: list[Deadline] = []
        cursor: tuple[float, str, str, str] | None = None
        pages = 0
        while True:
            page = await journal.deadlines(after=cursor, limit=5)
            if not page:
                break
            assert len(page) <= 5
            paged.extend(page)
            last = page[-1]
            cursor = (last.due, last.kind, last.key, last.name)
            pages += 1
        assert pages == 5
        assert paged == every
        # The cursor is exclusive.
        after_first = await journal.deadlines(after=order[0], limit=1)
        assert after_first == [every[1]]

    async def test_deadline_for_another_actor_is_rejected(self, journal: Journal) -> None:
        bad = WriteRequest(
            "acct", "a", 0, events=events("e1"), deadlines_set=[deadline("acct", "b", "t", 1.0)]
        )
        with pytest.raises(ValueError, match="targets acct/b"):
            await journal.write([WriteRequest("acct", "c", 0, events=events("c1")), bad])
        a, c = await journal.recover([("acct", "a"), ("acct", "c")])
        assert (a.seq, c.seq) == (0, 0)

    # -- idempotency -------------------------------------------------------------------

    async def test_idempotency_records_commit_with_events(self, journal: Journal) -> None:
        await journal.write(
            [
                WriteRequest(
                    "acct",
                    "a",
                    0,
                    events=events("e1"),
                    idempotency=[("r1", b"ok-1"), ("r2", b"ok-2")],
                )
            ]
        )
        # The first reply recorded for an id is the one kept.
        await journal.write(
            [
                WriteRequest(
                    "acct",
                    "a",
                    1,
                    events=events("e2"),
                    idempotency=[("r1", b"second"), ("r3", b"ok-3")],
                )
            ]
        )
        a, other = await journal.recover([("acct", "a"), ("acct", "other")])
        assert a.idempotency == {"r1": b"ok-1", "r2": b"ok-2", "r3": b"ok-3"}
        assert other.idempotency == {}

    # -- outbox ------------------------------------------------------------------------

    async def test_outbox_pending_in_commit_order_until_acked(self, journal: Journal) -> None:
        first = [
            OutboxEntry("m-2", "ev.a", b"p2", {"Nats-Msg-Id": "m-2"}),
            OutboxEntry("m-1", "ev.a", b"p1"),
        ]
        await journal.write([WriteRequest("acct", "a", 0, events=events("e1"), outbox=first)])
        await journal.write(
            [
                WriteRequest("acct", "b", 0, outbox=[OutboxEntry("m-0", "ev.b", b"p0")]),
                WriteRequest("acct", "a", 1, outbox=[OutboxEntry("m-3", "ev.a", b"p3")]),
            ]
        )
        pending = await journal.outbox()
        assert [e.id for e in pending] == ["m-2", "m-1", "m-0", "m-3"]
        assert pending[0] == first[0]
        assert pending[1].headers == {}
        assert [e.id for e in await journal.outbox(limit=2)] == ["m-2", "m-1"]

        await journal.ack_outbox(["m-1", "m-0", "unknown"])
        assert [e.id for e in await journal.outbox()] == ["m-2", "m-3"]
        await journal.ack_outbox([])
        await journal.ack_outbox(["m-2", "m-3"])
        assert await journal.outbox() == []

    async def test_outbox_id_already_pending_keeps_the_first(self, journal: Journal) -> None:
        await journal.write(
            [
                WriteRequest("acct", "a", 0, outbox=[OutboxEntry("m-1", "ev", b"first")]),
                WriteRequest("acct", "b", 0, outbox=[OutboxEntry("m-2", "ev", b"p2")]),
            ]
        )
        await journal.write([WriteRequest("acct", "c", 0, outbox=[OutboxEntry("m-1", "ev", b"x")])])
        pending = await journal.outbox()
        assert [(e.id, e.payload) for e in pending] == [("m-1", b"first"), ("m-2", b"p2")]

    # -- dead letters ------------------------------------------------------------------

    async def test_dead_letters_newest_first(self, journal: Journal) -> None:
        for i in range(5):
            await journal.add_dead_letter(
                DeadLetter(
                    kind="acct",
                    key=f"k{i}",
                    message_type="Join",
                    payload=None if i == 2 else f"p{i}".encode(),
                    error=f"boom {i}",
                    attempts=i + 1,
                    at=100.0 + i,
                )
            )
        letters = await journal.dead_letters()
        assert [d.key for d in letters] == ["k4", "k3", "k2", "k1", "k0"]
        assert len({d.id for d in letters}) == 5
        assert [d.id for d in letters] == sorted((d.id for d in letters), reverse=True)
        k2 = letters[2]
        assert (k2.payload, k2.error, k2.attempts, k2.at, k2.message_type) == (
            None,
            "boom 2",
            3,
            102.0,
            "Join",
        )
        assert letters[0].payload == b"p4"
        assert [d.key for d in await journal.dead_letters(limit=2)] == ["k4", "k3"]

    # -- recovery ----------------------------------------------------------------------

    async def test_batch_recover_keeps_the_order_asked(self, journal: Journal) -> None:
        await journal.write(
            [
                WriteRequest("acct", key, 0, events=events(*(f"{key}{i}" for i in range(n))))
                for key, n in (("a", 1), ("b", 2), ("c", 3))
            ]
        )
        ids = [("acct", "c"), ("acct", "a"), ("acct", "zz"), ("acct", "b"), ("acct", "a")]
        got = await journal.recover(ids)
        assert [(r.kind, r.key) for r in got] == ids
        assert [r.seq for r in got] == [3, 1, 0, 2, 1]
        assert got[0].events == events("c0", "c1", "c2")
        assert got[2] == Recovery("acct", "zz")

    async def test_recover_many_actors(self, journal: Journal) -> None:
        n = 2_500
        await journal.write(
            [
                WriteRequest(
                    "acct",
                    f"a{i}",
                    0,
                    events=events(f"{i}-1", f"{i}-2"),
                    snapshot=f"s{i}".encode() if i % 3 == 0 else None,
                    idempotency=[(f"r{i}", b"ok")] if i % 2 == 0 else [],
                    deadlines_set=[deadline("acct", f"a{i}", "t", float(i))] if i % 5 == 0 else [],
                )
                for i in range(n)
            ]
        )
        ids = [("acct", f"a{i}") for i in reversed(range(n))]
        got = await journal.recover(ids)
        assert len(got) == n
        for rec in got:
            i = int(rec.key[1:])
            assert rec.seq == 2
            if i % 3 == 0:
                assert (rec.snapshot, rec.snapshot_seq, rec.events) == (f"s{i}".encode(), 2, [])
            else:
                assert (rec.snapshot, rec.events) == (None, events(f"{i}-1", f"{i}-2"))
            assert rec.idempotency == ({f"r{i}": b"ok"} if i % 2 == 0 else {})
            assert [d.due for d in rec.deadlines] == ([float(i)] if i % 5 == 0 else [])

    # -- lifecycle ---------------------------------------------------------------------

    async def test_everything_survives_a_restart(self, journal_factory: JournalFactory) -> None:
        first = journal_factory()
        await first.open()
        await first.write(
            [
                WriteRequest(
                    "acct",
                    "a",
                    0,
                    events=events("e1", "e2"),
                    snapshot=b"S2",
                    deadlines_set=[deadline("acct", "a", "t", 9.5)],
                    idempotency=[("r", b"ok")],
                    outbox=[OutboxEntry("m", "ev", b"p", {"h": "v"})],
                )
            ]
        )
        await first.write([WriteRequest("acct", "a", 2, events=events("e3"))])
        await first.add_dead_letter(DeadLetter("acct", "a", "T", b"x", "err", 3, 1.0))
        await first.close()

        second = journal_factory()
        await second.open()
        try:
            [a] = await second.recover([("acct", "a")])
            assert a == Recovery(
                "acct",
                "a",
                seq=3,
                snapshot=b"S2",
                snapshot_seq=2,
                events=events("e3"),
                idempotency={"r": b"ok"},
                deadlines=[Deadline("acct", "a", "t", 9.5, b"t")],
            )
            assert await second.outbox() == [OutboxEntry("m", "ev", b"p", {"h": "v"})]
            [letter] = await second.dead_letters()
            assert (letter.key, letter.error) == ("a", "err")
            [conflict] = await second.write([WriteRequest("acct", "a", 2, events=events("x"))])
            assert isinstance(conflict, SequenceConflict)
        finally:
            await second.close()

    async def test_closed_journal_is_unavailable(self, journal_factory: JournalFactory) -> None:
        j = journal_factory()
        with pytest.raises(JournalUnavailable):
            await j.write([WriteRequest("acct", "a", 0, events=events("e1"))])
        await j.open()
        await j.close()
        with pytest.raises(JournalUnavailable):
            await j.recover([("acct", "a")])
        with pytest.raises(JournalUnavailable):
            await j.write([WriteRequest("acct", "a", 0, events=events("e1"))])
        with pytest.raises(JournalUnavailable):
            await j.deadlines()
        with pytest.raises(JournalUnavailable):
            await j.outbox()
