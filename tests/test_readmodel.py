"""The windows / reservations read model: the SQLite store on a real file (idempotent,
order-independent apply, settling at close, filters, paging), and the projector against a
real nats-server with JetStream (durable resume, nothing missed, nothing doubled).

Event bodies are the window's own (``WindowData`` folded by its events, published
through ``event_body``), so the read model is tested against what the window emits."""

from __future__ import annotations

import base64
import random
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from actors import OutboxEntry
from actors.nats import JetStreamOutbox, NatsTransport
from iceshop.readmodel import (
    SCHEMA_VERSION,
    Projector,
    ReadModel,
    ReservationsAfter,
    StreamPosition,
    WindowsAfter,
    encode_cursor,
    list_reservations,
    list_windows,
)
from iceshop.window.events import Activated, Cancelled, Closed, Created, Joined, Left
from iceshop.window.state import WindowData
from iceshop.window.views import event_body, reservation_view, window_view
from iceshop.wire import (
    EVENT_STREAM,
    ErrorCode,
    ListReservations,
    ListWindows,
    ReservationsReply,
    ReservationView,
    ShopError,
    WindowsReply,
    WindowView,
    encode,
    event_subject,
    format_time,
)
from tests.nats_fixtures import nats_server_fixture, nats_url_fixture  # noqa: F401

pytestmark = pytest.mark.anyio

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z

Published = tuple[str, bytes]


class Sim:
    """One window driven through its real state and event bodies."""

    def __init__(
        self,
        window_id: str,
        *,
        product_id: str = "P1",
        seller_id: str = "S1",
        activates_at: float = T0,
        min_participants: int = 2,
        quantity_total: int = 10,
    ) -> None:
        self.w = WindowData(
            Created(
                window_id=window_id,
                product_id=product_id,
                seller_id=seller_id,
                decision_id=f"D-{window_id}",
                unit_price_minor=1000,
                currency="TRY",
                quantity_total=quantity_total,
                min_participants=min_participants,
                max_per_buyer=3,
                activates_at=activates_at,
                expires_at=activates_at + 3600,
                at=activates_at - 60,
            )
        )
        self.at = activates_at - 60
        self.events: list[Published] = []
        self._emit("created")

    def _emit(self, event_type: str, join_id: str | None = None) -> Published:
        reservation = None if join_id is None else self.w.reservations[join_id]
        body = event_body(self.w, event_type, format_time(self.at), reservation)
        published = (event_subject("window", self.w.info.window_id, event_type), encode(body))
        self.events.append(published)
        return published

    def _tick(self) -> float:
        self.at += 1.5
        return self.at

    def activate(self) -> Published:
        self.w.apply(Activated(at=self._tick()))
        return self._emit("activated")

    def join(self, join_id: str, buyer_id: str, quantity: int = 1) -> Published:
        self.w.apply(Joined(join_id=join_id, buyer_id=buyer_id, quantity=quantity, at=self._tick()))
        return self._emit("joined", join_id)

    def leave(self, join_id: str) -> Published:
        self.w.apply(Left(join_id=join_id, at=self._tick()))
        return self._emit("left", join_id)

    def close(self) -> Published:
        self.w.apply(Closed(reason="expired", at=self._tick()))
        return self._emit("closed")

    def cancel(self) -> Published:
        self.w.apply(Cancelled(reason="admin", at=self._tick()))
        return self._emit("cancelled")

    @property
    def view(self) -> WindowView:
        return window_view(self.w)

    @property
    def reservations(self) -> list[ReservationView]:
        w = self.w
        return [reservation_view(w, w.reservations[j]) for j in w.order]


def busy_window(window_id: str, **kwargs: Any) -> Sim:
    """Created, active, four joins by three buyers, one leave, closed with success."""
    sim = Sim(window_id, **kwargs)
    sim.activate()
    sim.join("j1", "B1", 2)
    sim.join("j2", "B2")
    sim.join("j3", "B3")
    sim.leave("j2")
    sim.join("j4", "B1")
    sim.close()
    return sim


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ReadModel]:
    async with ReadModel(tmp_path / "readmodel.db") as model:
        yield model


async def windows(store: ReadModel, **kwargs: Any) -> WindowsReply:
    reply = await list_windows(store, ListWindows(**kwargs))
    assert isinstance(reply, WindowsReply), reply
    return reply


async def reservations(store: ReadModel, window_id: str, **kwargs: Any) -> ReservationsReply:
    reply = await list_reservations(store, window_id, ListReservations(**kwargs))
    assert isinstance(reply, ReservationsReply), reply
    return reply


async def all_windows(store: ReadModel, **kwargs: Any) -> list[WindowView]:
    out: list[WindowView] = []
    cursor = None
    while True:
        page = await windows(store, cursor=cursor, **kwargs)
        out += page.windows
        if page.next_cursor is None:
            return out
        cursor = page.next_cursor


# -- the store ---------------------------------------------------------------------------


async def test_events_in_order_give_the_windows_own_view_and_reservations(
    store: ReadModel,
) -> None:
    sim = Sim("W1")
    sim.activate()
    sim.join("j1", "B1", 2)
    sim.join("j2", "B2")
    sim.leave("j2")
    result = await store.apply(sim.events)
    assert (result.applied, result.duplicates, result.malformed) == (5, 0, 0)

    listed = await windows(store)
    assert listed.windows == [sim.view]
    assert listed.windows[0].state == "active"
    assert listed.windows[0].quantity_reserved == 2
    assert listed.next_cursor is None
    page = await reservations(store, "W1")
    assert page.reservations == sim.reservations
    assert [(r.join_id, r.status) for r in page.reservations] == [
        ("j1", "reserved"),
        ("j2", "released"),
    ]
    assert await store.window_seq("W1") == 5


async def test_duplicates_and_replays_change_nothing(store: ReadModel) -> None:
    sim = busy_window("W1")
    await store.apply(sim.events)
    before = (await windows(store), await reservations(store, "W1"))

    again = await store.apply(sim.events)
    assert (again.applied, again.duplicates) == (0, len(sim.events))
    doubled = await store.apply([e for e in sim.events for _ in range(2)])
    assert doubled.applied == 0
    assert (await windows(store), await reservations(store, "W1")) == before
    assert len(before[1].reservations) == 4


async def test_any_delivery_order_ends_in_the_same_state(store: ReadModel) -> None:
    """Out of order and with gaps, one event per batch or all in one: the highest seq's
    view wins and every reservation ends as in order."""
    rng = random.Random(7)
    expected: dict[str, tuple[WindowView, list[ReservationView]]] = {}
    for n in range(12):
        sim = busy_window(f"W{n}")
        order = list(sim.events)
        if n == 0:
            order.reverse()
        else:
            rng.shuffle(order)
        if n % 2:
            await store.apply(order)
        else:
            for event in order:
                await store.apply([event])
        expected[f"W{n}"] = (sim.view, sim.reservations)

    for window_id, (view, rows) in expected.items():
        listed = await windows(store, product_id="P1", limit=500)
        assert view in listed.windows
        assert (await reservations(store, window_id)).reservations == rows
        assert await store.window_seq(window_id) == 8


async def test_batches_of_interleaved_windows_count_and_store_as_one_by_one(
    tmp_path: Path,
) -> None:
    """A batch writes each window's view once, from its newest event: the result (the
    lists, and how many events count as applied) is that of applying the same events one
    at a time, whatever the batches, the interleaving and the duplicates in a batch."""
    rng = random.Random(11)
    sims = [busy_window(f"W{n}") for n in range(3)]
    stream = [e for sim in sims for e in sim.events]
    rng.shuffle(stream)
    stream += rng.sample(stream, 9)  # redeliveries, some inside one batch
    async with (
        ReadModel(tmp_path / "batched.db") as batched,
        ReadModel(tmp_path / "single.db") as single,
    ):
        applied_batched = applied_single = 0
        i = 0
        while i < len(stream):
            size = rng.randint(1, 8)
            applied_batched += (await batched.apply(stream[i : i + size])).applied
            i += size
        for event in stream:
            applied_single += (await single.apply([event])).applied
        assert applied_batched == applied_single
        assert await all_windows(batched) == await all_windows(single)
        for sim in sims:
            wid = sim.view.window_id
            rows = (await reservations(batched, wid)).reservations
            assert rows == (await reservations(single, wid)).reservations == sim.reservations
            assert await batched.window_seq(wid) == await single.window_seq(wid) == 8


async def test_a_gap_is_applied_at_once_and_a_late_event_never_moves_the_view_back(
    store: ReadModel,
) -> None:
    sim = Sim("W1")
    created, activated = sim.events[0], sim.activate()
    j1 = sim.join("j1", "B1")
    after_j1 = sim.view
    await store.apply([created, j1])  # activated is missing: a gap
    assert (await windows(store)).windows == [after_j1]
    assert await store.window_seq("W1") == 3

    late = await store.apply([activated])
    assert (late.applied, late.duplicates) == (0, 1)
    assert (await windows(store)).windows == [after_j1]
    assert (await reservations(store, "W1")).reservations[0].status == "reserved"


async def test_a_successful_close_confirms_the_held_reservations(store: ReadModel) -> None:
    sim = busy_window("W1")
    await store.apply(sim.events)
    view = (await windows(store)).windows[0]
    assert (view.state, view.outcome, view.close_reason) == ("closed", "succeeded", "expired")
    statuses = [(r.join_id, r.status) for r in (await reservations(store, "W1")).reservations]
    assert statuses == [
        ("j1", "confirmed"),
        ("j2", "released"),
        ("j3", "confirmed"),
        ("j4", "confirmed"),
    ]


async def test_a_failed_close_and_a_cancel_release_every_reservation(store: ReadModel) -> None:
    failed = Sim("W1", min_participants=3)
    failed.activate()
    failed.join("j1", "B1")
    failed.join("j2", "B2")
    cancelled = Sim("W2")
    cancelled.activate()
    cancelled.join("j1", "B1")
    cancelled.join("j2", "B2")
    await store.apply(failed.events + cancelled.events)
    assert {r.status for r in (await reservations(store, "W2")).reservations} == {"reserved"}

    await store.apply([failed.close(), cancelled.cancel()])
    by_id = {w.window_id: w for w in (await windows(store)).windows}
    assert (by_id["W1"].state, by_id["W1"].outcome) == ("closed", "failed")
    assert (by_id["W2"].state, by_id["W2"].outcome, by_id["W2"].close_reason) == (
        "cancelled",
        "failed",
        "cancelled",
    )
    for window_id in ("W1", "W2"):
        rows = (await reservations(store, window_id)).reservations
        assert [(r.join_id, r.status) for r in rows] == [("j1", "released"), ("j2", "released")]


async def test_a_join_that_arrives_after_the_close_is_settled_too(store: ReadModel) -> None:
    sim = busy_window("W1")
    j3 = sim.events[4]
    assert b'"type":"joined"' in j3[1] and b'"j3"' in j3[1]
    await store.apply([e for e in sim.events if e != j3])
    assert [r.join_id for r in (await reservations(store, "W1")).reservations] == [
        "j1",
        "j2",
        "j4",
    ]
    await store.apply([j3])
    rows = (await reservations(store, "W1")).reservations
    assert [(r.join_id, r.status) for r in rows] == [
        ("j1", "confirmed"),
        ("j2", "released"),
        ("j3", "confirmed"),
        ("j4", "confirmed"),
    ]


async def test_unreadable_events_are_skipped_and_the_rest_applied(store: ReadModel) -> None:
    sim = Sim("W1")
    good = sim.activate()
    mismatched = (event_subject("window", "W2", "activated"), good[1])
    result = await store.apply(
        [
            sim.events[0],
            ("iceshop.events.window.W1.joined", b"{not json"),
            ("iceshop.events.window.W1.joined", b'{"event_id": "x"}'),
            mismatched,
            good,
        ]
    )
    assert (result.applied, result.malformed) == (2, 3)
    assert (await windows(store)).windows == [sim.view]


async def test_filters_by_state_product_and_seller(store: ReadModel) -> None:
    a = Sim("A", product_id="P1", seller_id="S1", activates_at=T0 + 30)
    a.activate()
    b = Sim("B", product_id="P1", seller_id="S2", activates_at=T0 + 10)
    c = Sim("C", product_id="P2", seller_id="S1", activates_at=T0 + 20)
    c.activate()
    c.cancel()
    d = Sim("D", product_id="P2", seller_id="S2", activates_at=T0 + 10)
    d.activate()
    await store.apply(a.events + b.events + c.events + d.events)

    async def ids(**kwargs: Any) -> list[str]:
        return [w.window_id for w in (await windows(store, **kwargs)).windows]

    assert await ids() == ["B", "D", "C", "A"]  # by activates_at, then window_id
    assert await ids(state="active") == ["D", "A"]
    assert await ids(state="scheduled") == ["B"]
    assert await ids(state="cancelled") == ["C"]
    assert await ids(state="closed") == []
    assert await ids(product_id="P1") == ["B", "A"]
    assert await ids(seller_id="S2") == ["B", "D"]
    assert await ids(product_id="P2", seller_id="S1") == ["C"]
    assert await ids(state="active", product_id="P2", seller_id="S2") == ["D"]
    assert await ids(product_id="nope") == []


async def test_windows_page_with_cursors_and_new_windows_between_pages(
    store: ReadModel,
) -> None:
    sims = [Sim(f"W{n}", activates_at=T0 + 10 * n) for n in range(7)]
    await store.apply([e for s in sims for e in s.events])

    first = await windows(store, limit=3)
    assert [w.window_id for w in first.windows] == ["W0", "W1", "W2"]
    assert first.next_cursor is not None
    # A window sorting before the cursor must not show up again on later pages, and
    # one sorting after it must.
    early, late = Sim("Wa", activates_at=T0 - 5), Sim("Wz", activates_at=T0 + 1000)
    await store.apply(early.events + late.events)
    second = await windows(store, limit=3, cursor=first.next_cursor)
    assert [w.window_id for w in second.windows] == ["W3", "W4", "W5"]
    assert second.next_cursor is not None
    third = await windows(store, limit=3, cursor=second.next_cursor)
    assert [w.window_id for w in third.windows] == ["W6", "Wz"]
    assert third.next_cursor is None

    exact = await windows(store, limit=9)
    assert len(exact.windows) == 9 and exact.next_cursor is None
    everything = await all_windows(store, limit=2)
    assert [w.window_id for w in everything] == ["Wa"] + [f"W{n}" for n in range(7)] + ["Wz"]
    filtered = await all_windows(store, limit=1, state="scheduled")
    assert len(filtered) == 9


async def test_reservations_page_in_join_order(store: ReadModel) -> None:
    sim = Sim("W1", quantity_total=100)
    sim.activate()
    for n in range(11):
        sim.join(f"z{10 - n:02d}", f"B{n}")  # join ids sort against join order
    await store.apply(list(reversed(sim.events)))

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await reservations(store, "W1", limit=4, cursor=cursor)
        seen += [r.join_id for r in page.reservations]
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == 3
    assert seen == [f"z{10 - n:02d}" for n in range(11)]
    assert [r.join_id for r in (await reservations(store, "W1")).reservations] == seen


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


BAD_CURSORS = [
    "garbage!",
    "ü",
    b64(b"not json"),
    b64(b'["w","2026-01-01T00:00:00.000Z","../x"]'),  # an unsafe id
    b64(b'["r",-1,"j1"]'),
    b64(b'["x","a","b"]'),
]


@pytest.mark.parametrize("cursor", [*BAD_CURSORS, encode_cursor(ReservationsAfter(3, "j1"))])
async def test_an_invalid_windows_cursor_is_invalid_request(store: ReadModel, cursor: str) -> None:
    await store.apply(Sim("W1").events)
    reply = await list_windows(store, ListWindows(cursor=cursor))
    assert isinstance(reply, ShopError)
    assert reply.code is ErrorCode.INVALID_REQUEST
    assert reply.details == {"field": "cursor"}


@pytest.mark.parametrize(
    "cursor", [*BAD_CURSORS, encode_cursor(WindowsAfter(format_time(T0), "W1"))]
)
async def test_an_invalid_reservations_cursor_is_invalid_request(
    store: ReadModel, cursor: str
) -> None:
    await store.apply(Sim("W1").events)
    reply = await list_reservations(store, "W1", ListReservations(cursor=cursor))
    assert isinstance(reply, ShopError)
    assert reply.code is ErrorCode.INVALID_REQUEST
    assert reply.details == {"field": "cursor"}


async def test_reservations_of_an_unknown_window(store: ReadModel) -> None:
    await store.apply(Sim("W1").events)
    reply = await list_reservations(store, "W9", ListReservations())
    assert isinstance(reply, ShopError)
    assert reply.code is ErrorCode.UNKNOWN_WINDOW
    known = await reservations(store, "W1")
    assert known.reservations == [] and known.next_cursor is None


async def test_the_file_keeps_state_and_position_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "rm.db"
    sim = busy_window("W1")
    async with ReadModel(path) as model:
        await model.apply(sim.events[:3], StreamPosition(EVENT_STREAM, 7))
        await model.apply(sim.events[3:], StreamPosition(EVENT_STREAM, 12))
        await model.apply(sim.events[:1], StreamPosition(EVENT_STREAM, 5))  # redelivery
        assert await model.position(EVENT_STREAM) == 12
    async with ReadModel(path) as model:
        assert await model.position(EVENT_STREAM) == 12
        assert await model.position("OTHER") == 0
        assert (await windows(model)).windows == [sim.view]
        assert (await reservations(model, "W1")).reservations == sim.reservations


async def test_a_file_of_another_schema_version_is_emptied_for_a_rebuild(tmp_path: Path) -> None:
    path = tmp_path / "rm.db"
    async with ReadModel(path) as model:
        await model.apply(Sim("W1").events, StreamPosition(EVENT_STREAM, 1))
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    async with ReadModel(path) as model:
        assert (await windows(model)).windows == []
        assert await model.position(EVENT_STREAM) == 0
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# -- the projector against a real nats-server ------------------------------------------------

pytest_integration = pytest.mark.integration


def outbox_entries(events: list[Published]) -> list[OutboxEntry]:
    return [
        OutboxEntry(id=msgspec.json.decode(body)["event_id"], subject=subject, payload=body)
        for subject, body in events
    ]


@pytest.fixture
async def transport(nats_url: str) -> AsyncIterator[NatsTransport]:
    async with NatsTransport([nats_url]) as t:
        yield t


async def publish(outbox: JetStreamOutbox, events: list[Published]) -> None:
    await outbox.publish(outbox_entries(events))


def last_seq(events: list[Published], window_id: str) -> int:
    seqs: list[int] = [
        msgspec.json.decode(body)["seq"]
        for subject, body in events
        if subject.split(".")[3] == window_id
    ]
    return max(seqs)


@pytest_integration
async def test_projector_applies_the_stream_and_resumes_after_a_restart(
    transport: NatsTransport, tmp_path: Path
) -> None:
    outbox = JetStreamOutbox(transport, stream=EVENT_STREAM)
    assert await outbox.ensure_stream(EVENT_STREAM, ["iceshop.events.>"])
    w1 = Sim("W1")
    w1.activate()
    w1.join("j1", "B1", 2)
    w1.join("j2", "B2")
    demand = ("iceshop.events.demand.P1.updated", b'{"event_id":"demand.P1.1"}')
    await publish(outbox, [*w1.events, demand])

    async with ReadModel(tmp_path / "readmodel.db") as store:
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                first = Projector(transport, store)
                await tg.start(first.run)
                await first.wait_for("W1", 4)
                await first.caught_up()
                tg.cancel_scope.cancel()
        assert first.received == 4  # the demand event is not for this consumer
        assert (await windows(store)).windows == [w1.view]
        assert [r.join_id for r in (await reservations(store, "W1")).reservations] == [
            "j1",
            "j2",
        ]

        # While no projector runs: more of W1, a new W2, and a duplicate of j1 stored
        # under another message id (as if a relay lost its de-duplication window).
        w1.leave("j2")
        w1.join("j3", "B3")
        w1.close()
        w2 = busy_window("W2", activates_at=T0 + 60)
        j1 = w1.events[2]
        later = [*w1.events[4:], *w2.events]
        await publish(outbox, later)
        await outbox.publish([OutboxEntry(id="copy-of-j1", subject=j1[0], payload=j1[1])])

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                second = Projector(transport, store)
                await tg.start(second.run)
                await second.wait_for("W2", last_seq(w2.events, "W2"))
                await second.wait_for("W1", last_seq(w1.events, "W1"))
                await second.caught_up()
                tg.cancel_scope.cancel()
        # The durable consumer resumed: nothing of the first run came again, nothing
        # new was missed, the copy was delivered and skipped.
        assert second.received == len(later) + 1
        assert second.applied == len(later)
        assert second.rebuilds == 0
        listed = await windows(store)
        assert listed.windows == [w1.view, w2.view]
        assert (await reservations(store, "W1")).reservations == w1.reservations
        assert (await reservations(store, "W2")).reservations == w2.reservations
        statuses = [r.status for r in (await reservations(store, "W1")).reservations]
        assert statuses == ["confirmed", "released", "confirmed"]


@pytest_integration
async def test_projector_waits_for_the_stream_to_exist(
    transport: NatsTransport, tmp_path: Path
) -> None:
    sim = busy_window("W1")
    async with ReadModel(tmp_path / "readmodel.db") as store:
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                projector = Projector(transport, store, retry_max=0.2)
                tg.start_soon(projector.run)
                outbox = JetStreamOutbox(transport, stream=EVENT_STREAM)
                assert await outbox.ensure_stream(EVENT_STREAM, ["iceshop.events.>"])
                await publish(outbox, sim.events)
                await projector.wait_for("W1", 8)
                tg.cancel_scope.cancel()
        assert (await reservations(store, "W1")).reservations == sim.reservations


@pytest_integration
async def test_a_lost_file_is_rebuilt_from_the_whole_stream(
    transport: NatsTransport, tmp_path: Path
) -> None:
    outbox = JetStreamOutbox(transport, stream=EVENT_STREAM)
    await outbox.ensure_stream(EVENT_STREAM, ["iceshop.events.>"])
    w1, w2 = busy_window("W1"), busy_window("W2", activates_at=T0 + 1)
    await publish(outbox, w1.events + w2.events)

    async def project(path: Path) -> tuple[Projector, list[WindowView]]:
        async with ReadModel(path) as store:
            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    projector = Projector(transport, store)
                    await tg.start(projector.run)
                    await projector.caught_up()
                    tg.cancel_scope.cancel()
            return projector, await all_windows(store)

    first, views = await project(tmp_path / "one.db")
    assert views == [w1.view, w2.view] and first.rebuilds == 0
    # A fresh file behind the same durable consumer: it replays from the start.
    again, views = await project(tmp_path / "two.db")
    assert again.rebuilds == 1
    assert again.received == len(w1.events) + len(w2.events)
    assert views == [w1.view, w2.view]


@pytest_integration
async def test_a_batch_that_cannot_be_stored_comes_back_at_once(
    transport: NatsTransport, tmp_path: Path
) -> None:
    """The store fails under a running projector: the fetched batch is nak'ed, the
    projector retries, and once the store is back the batch is applied without waiting
    for the consumer's ack_wait (30 s here)."""
    outbox = JetStreamOutbox(transport, stream=EVENT_STREAM)
    await outbox.ensure_stream(EVENT_STREAM, ["iceshop.events.>"])
    sim = busy_window("W1")
    store = ReadModel(tmp_path / "readmodel.db")
    await store.open()
    try:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                projector = Projector(transport, store, retry_max=0.1, ack_wait=30)
                await tg.start(projector.run)
                await store.close()
                await publish(outbox, sim.events)
                while projector.received == 0:  # bounded by fail_after
                    await anyio.sleep(0.01)
                await store.open()
                await projector.wait_for("W1", 8)
                tg.cancel_scope.cancel()
        assert projector.received > len(sim.events)  # the failed batch came again
        assert (await reservations(store, "W1")).reservations == sim.reservations
    finally:
        await store.close()
