"""The flash window actor on virtual time: lifecycle on the dot, every join and leave
error in the contract's precedence, sell-out, cancel, events, restarts, buyer checks in
flight, notices delivered until confirmed, snapshots and paging."""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec
import pytest

from actors import Overloaded
from actors.journal import MemoryJournal
from iceshop.buyer.directory import KnownBuyers
from iceshop.protocol import (
    CheckBuyer,
    IntentMatched,
    Principal,
    Request,
    ReservationReleased,
    ReturnStock,
    WindowActivated,
    WindowEnded,
)
from iceshop.settings import Settings
from iceshop.window import (
    ACTIVATE,
    EXPIRE,
    NOTIFY,
    Activated,
    Closed,
    Created,
    Joined,
    NoticeAcked,
    WindowActor,
    WindowSnapshot,
)
from iceshop.window.actor import CHECK_TIMEOUT_S
from iceshop.window.notices import NOTICE_RETRY_S
from iceshop.wire import (
    CommandKind,
    GetWindow,
    Join,
    JoinReply,
    LeaveReply,
    ShopError,
    WindowView,
    format_time,
)
from tests.window_support import ACTIVATE_IN, EPOCH, EXPIRE_IN, Shop, create_message

pytestmark = pytest.mark.anyio


def code(reply: Any) -> str:
    assert isinstance(reply, ShopError), reply
    return reply.code.value


async def active_shop(shop: Shop, **kw: Any) -> None:
    """Create W1 and move to its activation."""
    await shop.create(**kw)
    await shop.advance(ACTIVATE_IN)
    assert (await shop.get()).state == "active"


async def stored(shop: Shop, window_id: str = "W1") -> tuple[int, list[str]]:
    """(journal seq, pending deadline names) of a window, read from the journal."""
    journal = shop.journal
    opened = shop.kit is None
    if opened:
        await journal.open()
    [rec] = await journal.recover([("window", window_id)])
    names = sorted(d.name for d in rec.deadlines)
    if opened:
        await journal.close()
    return rec.seq, names


# -- create and lifecycle --------------------------------------------------------------------


async def test_create_schedules_the_window_and_a_repeat_changes_nothing() -> None:
    async with Shop() as shop:
        view = await shop.create()
        assert isinstance(view, WindowView)
        assert (view.state, view.outcome, view.close_reason) == ("scheduled", None, None)
        assert view.activates_at == format_time(EPOCH + ACTIVATE_IN)
        assert view.expires_at == format_time(EPOCH + EXPIRE_IN)
        assert (view.quantity_total, view.quantity_reserved, view.participants) == (5, 0, 0)
        assert (view.min_participants, view.max_per_buyer, view.decision_id) == (2, 2, "D1")
        # The campaign repeats itself (even with other numbers): the first window stands.
        again = await shop.ask(create_message(now=EPOCH, quantity_total=99))
        assert again == view
        assert await stored(shop) == (1, [ACTIVATE, EXPIRE])
        [event] = shop.sink.events()
        assert (event["type"], event["seq"], event["event_id"]) == ("created", 1, "window.W1.1")
        assert event["subject"] == "iceshop.events.window.W1.created"
        assert event["at"] == format_time(EPOCH)
        assert event["data"]["state"] == "scheduled"


async def test_invalid_create_is_refused_and_stores_nothing() -> None:
    async with Shop() as shop:
        bad = msgspec.structs.replace(create_message(), expires_at=EPOCH + 5)
        assert code(await shop.ask(bad)) == "invalid_request"
        bad = msgspec.structs.replace(create_message(), quantity_total=0)
        assert code(await shop.ask(bad)) == "invalid_request"
        assert code(await shop.get()) == "unknown_window"
        assert await stored(shop) == (0, [])
        assert shop.sink.events() == []


async def test_a_window_never_created_answers_unknown_window_and_stores_nothing() -> None:
    async with Shop() as shop:
        assert code(await shop.join("j1", "b1", window_id="W9")) == "unknown_window"
        assert code(await shop.join("j1", "ghost1", window_id="W9")) == "unknown_window"
        assert code(await shop.leave("j1", "b1", window_id="W9")) == "unknown_window"
        assert code(await shop.get("W9")) == "unknown_window"
        assert code(await shop.reservations("W9")) == "unknown_window"
        assert code(await shop.cancel("W9")) == "unknown_window"
        assert await stored(shop, "W9") == (0, [])
        assert shop.peers.got == []  # not even a buyer check
        assert shop.sink.entries == []


async def test_activation_and_expiry_happen_exactly_on_time() -> None:
    async with Shop() as shop:
        await shop.create(min_participants=1)
        await shop.advance(ACTIVATE_IN - 0.001)
        assert (await shop.get()).state == "scheduled"
        assert code(await shop.join("j1", "b1")) == "window_not_active"
        assert shop.peers.of("product") == []
        await shop.advance(0.001)
        assert shop.clock() == EPOCH + ACTIVATE_IN
        assert (await shop.get()).state == "active"
        [activated] = shop.peers.of("product", WindowActivated)
        assert activated == WindowActivated(
            window_id="W1",
            seller_id="S1",
            unit_price_minor=4_500,
            currency="TRY",
            activates_at=EPOCH + ACTIVATE_IN,
            expires_at=EPOCH + EXPIRE_IN,
        )
        assert isinstance(await shop.join("j1", "b1"), JoinReply)
        await shop.advance(EXPIRE_IN - ACTIVATE_IN - 0.001)
        assert (await shop.get()).state == "active"
        await shop.advance(0.001)
        view = await shop.get()
        assert (view.state, view.close_reason, view.outcome) == ("closed", "expired", "succeeded")
        events = shop.sink.events()
        assert [e["type"] for e in events] == ["created", "activated", "joined", "closed"]
        assert events[1]["at"] == format_time(EPOCH + ACTIVATE_IN)
        assert events[3]["at"] == format_time(EPOCH + EXPIRE_IN)
        assert code(await shop.join("j2", "b2")) == "window_closed"
        # Every timer and notice is done: nothing is left in the journal.
        assert (await stored(shop))[1] == []


async def test_a_window_created_after_its_activation_time_activates_at_once() -> None:
    async with Shop() as shop:
        await shop.advance(30)
        view = await shop.create(now=EPOCH, activates_in=0, expires_in=EXPIRE_IN)
        assert view.state == "scheduled"
        await shop.advance(0)
        assert (await shop.get()).state == "active"
        assert isinstance(await shop.join("j1", "b1"), JoinReply)


async def test_created_entirely_in_the_past_still_goes_through_every_state() -> None:
    async with Shop() as shop:
        await shop.advance(500)
        await shop.create(now=EPOCH)
        await shop.advance(0)
        view = await shop.get()
        assert (view.state, view.close_reason, view.outcome) == ("closed", "expired", "failed")
        assert [e["type"] for e in shop.sink.events()] == ["created", "activated", "closed"]
        # The activation came too late to matter: the product is not asked to notify.
        assert shop.peers.of("product") == []


# -- joins -------------------------------------------------------------------------------------


async def test_join_reserves_and_a_repeat_returns_the_first_reply() -> None:
    async with Shop() as shop:
        await active_shop(shop)
        first = await shop.join("j1", "b1", 2)
        assert first == JoinReply(
            join_id="j1",
            window_id="W1",
            status="reserved",
            quantity=2,
            unit_price_minor=4_500,
            currency="TRY",
        )
        assert await shop.join("j1", "b1", 2) == first
        view = await shop.get()
        assert (view.quantity_reserved, view.participants) == (2, 1)
        assert shop.peers.of("buyer", IntentMatched) == [IntentMatched("P1", "W1", "j1")]
        assert len(shop.peers.of("buyer", CheckBuyer)) == 1  # verified once, then cached


async def test_reusing_a_join_id_with_other_parameters_is_a_conflict_first_of_all() -> None:
    async with Shop() as shop:
        await active_shop(shop, quantity_total=3, max_per_buyer=3, min_participants=1)
        await shop.join("j1", "b1", 3)  # sells out: the window closes
        assert code(await shop.join("j1", "b1", 1)) == "idempotency_conflict"
        assert code(await shop.join("j1", "b2", 3)) == "idempotency_conflict"
        # before unknown_buyer, and before sold_out / window_closed
        assert code(await shop.join("j1", "ghost1", 3)) == "idempotency_conflict"
        replay = await shop.join("j1", "b1", 3)
        assert replay.status == "confirmed"  # the first reply, with the current status


async def test_unknown_buyer_comes_before_the_window_state() -> None:
    async with Shop() as shop:
        await shop.create(quantity_total=2, min_participants=1)
        assert code(await shop.join("j1", "ghost1")) == "unknown_buyer"
        assert code(await shop.join("j1", "b1")) == "window_not_active"
        await shop.advance(ACTIVATE_IN)
        # A rejected join left no trace: its join_id is free.
        assert (await shop.join("j1", "b1", 2)).status == "reserved"
        assert (await shop.get()).close_reason == "sold_out"
        assert code(await shop.join("j2", "ghost2")) == "unknown_buyer"
        assert code(await shop.join("j2", "b2")) == "sold_out"
        # The unknown buyer is asked again each time (it may register meanwhile).
        assert [k for k, b, m in shop.peers.got if b == "ghost1"] == ["buyer"]


async def test_limit_stock_and_sold_out_in_precedence() -> None:
    async with Shop() as shop:
        await active_shop(shop, quantity_total=5, max_per_buyer=2, min_participants=1)
        err = await shop.join("j1", "b1", 3)
        assert code(err) == "limit_exceeded"
        assert err.details == {"max_per_buyer": 2, "held": 0}
        await shop.join("j1", "b1", 2)
        assert code(await shop.join("j2", "b1", 1)) == "limit_exceeded"
        await shop.join("j3", "b2", 2)
        err = await shop.join("j4", "b3", 2)
        assert code(err) == "insufficient_stock"
        assert err.details == {"available": 1}
        # limit_exceeded outranks insufficient_stock
        assert code(await shop.join("j5", "b1", 2)) == "limit_exceeded"
        assert (await shop.join("j6", "b3", 1)).status == "reserved"
        view = await shop.get()
        assert (view.state, view.close_reason, view.quantity_reserved) == ("closed", "sold_out", 5)
        assert code(await shop.join("j7", "b4", 1)) == "sold_out"


async def test_sold_out_when_nothing_remains_while_still_active() -> None:
    class NeverClose(WindowActor):
        """A window whose sell-out close is held back, to reach the plain sold_out rule."""

        def _close(self, reason: Any, now: float) -> None:
            if reason != "sold_out":
                super()._close(reason, now)

    async with Shop(window_cls=NeverClose) as shop:
        await active_shop(shop, quantity_total=2, max_per_buyer=2)
        await shop.join("j1", "b1", 2)
        assert (await shop.get()).state == "active"
        err = await shop.join("j2", "b2", 1)
        assert code(err) == "sold_out" and err.details is None


async def test_sell_out_closes_at_once_with_sold_out_then_closed() -> None:
    async with Shop() as shop:
        await active_shop(shop, quantity_total=4, max_per_buyer=2, min_participants=2)
        await shop.join("j1", "b1", 2)
        last = await shop.join("j2", "b2", 2)
        assert last.status == "reserved"
        view = await shop.get()
        assert (view.state, view.outcome, view.close_reason) == ("closed", "succeeded", "sold_out")
        types = [e["type"] for e in shop.sink.events()]
        assert types == ["created", "activated", "joined", "joined", "sold_out", "closed"]
        assert [r.status for r in await shop.all_reservations()] == ["confirmed"] * 2
        assert shop.peers.of("seller") == [ReturnStock("P1", 0, "W1")]
        assert shop.peers.of("campaign") == [WindowEnded("W1", "S1", "P1", "closed", "succeeded")]
        # The expiry deadline went with the close.
        assert (await stored(shop))[1] == []
        await shop.advance(EXPIRE_IN)
        assert len(shop.sink.events()) == 6


# -- leave --------------------------------------------------------------------------------------


async def test_leave_releases_stock_and_is_idempotent_by_state() -> None:
    async with Shop() as shop:
        await active_shop(shop, quantity_total=3, max_per_buyer=2)
        await shop.join("j1", "b1", 2)
        assert code(await shop.leave("nope", "b1")) == "unknown_join"
        assert code(await shop.leave("j1", "b2")) == "forbidden"
        assert await shop.leave("j1", "b1") == LeaveReply(join_id="j1", status="released")
        assert await shop.leave("j1", "b1") == LeaveReply(join_id="j1", status="released")
        view = await shop.get()
        assert (view.quantity_reserved, view.participants) == (0, 0)
        assert shop.peers.of("buyer", ReservationReleased) == [
            ReservationReleased("P1", "W1", "j1")
        ]
        assert [e["type"] for e in shop.sink.events()].count("left") == 1
        # The released quantity is free again, and so is the buyer's limit.
        assert (await shop.join("j2", "b1", 2)).status == "reserved"
        assert (await shop.join("j1", "b1", 2)).status == "released"  # replay of j1


async def test_leave_after_close_keeps_confirmed_reservations() -> None:
    async with Shop() as shop:
        await active_shop(shop, min_participants=1)
        await shop.join("j1", "b1")
        await shop.advance(EXPIRE_IN)
        assert code(await shop.leave("j1", "b1")) == "window_closed"
        assert code(await shop.leave("j1", "b2")) == "forbidden"
        assert code(await shop.leave("j9", "b1")) == "unknown_join"


async def test_expiry_below_the_tipping_point_fails_and_releases_everything() -> None:
    async with Shop() as shop:
        await active_shop(shop, quantity_total=5, min_participants=3)
        await shop.join("j1", "b1", 2)
        await shop.join("j2", "b2", 1)
        await shop.advance(EXPIRE_IN)
        view = await shop.get()
        assert (view.state, view.outcome, view.close_reason) == ("closed", "failed", "expired")
        assert (view.quantity_reserved, view.participants) == (0, 0)
        assert [r.status for r in await shop.all_reservations()] == ["released"] * 2
        assert shop.peers.of("seller") == [ReturnStock("P1", 5, "W1")]
        assert shop.peers.of("campaign") == [WindowEnded("W1", "S1", "P1", "closed", "failed")]
        released = shop.peers.of("buyer", ReservationReleased)
        assert sorted(r.join_id for r in released) == ["j1", "j2"]
        # Leaving a reservation the close released is ok: it is released already.
        assert await shop.leave("j1", "b1") == LeaveReply(join_id="j1", status="released")
        assert (await shop.join("j1", "b1", 2)).status == "released"
        closed = shop.sink.events()[-1]
        assert closed["type"] == "closed"
        assert (closed["data"]["outcome"], closed["data"]["close_reason"]) == ("failed", "expired")


async def test_expiry_at_the_tipping_point_succeeds_and_confirms() -> None:
    async with Shop() as shop:
        await active_shop(shop, quantity_total=5, min_participants=2)
        await shop.join("j1", "b1", 2)
        await shop.join("j2", "b2", 1)
        await shop.join("j3", "b3", 1)
        await shop.leave("j3", "b3")  # leaving drops a participant
        await shop.advance(EXPIRE_IN)
        view = await shop.get()
        assert (view.outcome, view.quantity_reserved, view.participants) == ("succeeded", 3, 2)
        statuses = [(r.join_id, r.status) for r in await shop.all_reservations()]
        assert statuses == [("j1", "confirmed"), ("j2", "confirmed"), ("j3", "released")]
        assert shop.peers.of("seller") == [ReturnStock("P1", 2, "W1")]


# -- cancel -------------------------------------------------------------------------------------


async def test_cancel_an_active_window_releases_everything() -> None:
    async with Shop() as shop:
        await active_shop(shop, min_participants=1)
        await shop.join("j1", "b1", 2)
        view = await shop.cancel(reason="fraud suspected")
        assert (view.state, view.outcome, view.close_reason) == ("cancelled", "failed", "cancelled")
        assert view.quantity_reserved == 0
        assert await shop.cancel() == view  # a repeat returns the view
        types = [e["type"] for e in shop.sink.events()]
        assert types == ["created", "activated", "joined", "cancelled"]
        assert shop.peers.of("seller") == [ReturnStock("P1", 5, "W1")]
        assert shop.peers.of("campaign") == [WindowEnded("W1", "S1", "P1", "cancelled", "failed")]
        assert shop.peers.of("buyer", ReservationReleased) == [
            ReservationReleased("P1", "W1", "j1")
        ]
        assert code(await shop.join("j2", "b2")) == "window_closed"
        assert await shop.leave("j1", "b1") == LeaveReply(join_id="j1", status="released")
        await shop.advance(EXPIRE_IN)  # the expiry deadline is gone
        assert len(shop.sink.events()) == 4
        assert (await stored(shop))[1] == []


async def test_cancel_a_scheduled_window_and_cancel_after_close() -> None:
    async with Shop() as shop:
        await shop.create()
        assert (await shop.cancel()).state == "cancelled"
        await shop.advance(EXPIRE_IN)
        assert (await shop.get()).state == "cancelled"
        assert [e["type"] for e in shop.sink.events()] == ["created", "cancelled"]
        assert shop.peers.of("product") == []
        await shop.create("W2")
        await shop.advance(EXPIRE_IN)
        assert code(await shop.cancel("W2")) == "window_closed"


# -- events, restarts, snapshots ---------------------------------------------------------------


async def test_events_are_numbered_per_window_and_carry_the_reservation() -> None:
    settings = Settings(auth="off", prefix="shop.eu")
    async with Shop(settings=settings) as shop:
        await active_shop(shop, quantity_total=3, min_participants=1)
        await shop.create("W2")
        await shop.join("j1", "b1", 2)
        await shop.leave("j1", "b1")
        await shop.advance(EXPIRE_IN)
        w1 = shop.sink.events("W1")
        assert [e["seq"] for e in w1] == [1, 2, 3, 4, 5]
        assert [e["event_id"] for e in w1] == [f"window.W1.{i}" for i in range(1, 6)]
        assert [e["subject"] for e in w1] == [
            f"shop.eu.events.window.W1.{t}"
            for t in ("created", "activated", "joined", "left", "closed")
        ]
        assert all(e["type"] == e["subject"].rsplit(".", 1)[1] for e in w1)
        joined, left = w1[2]["data"], w1[3]["data"]
        assert joined["reservation"] == {
            "join_id": "j1",
            "buyer_id": "b1",
            "quantity": 2,
            "status": "reserved",
            "reserved_at": format_time(EPOCH + ACTIVATE_IN),
        }
        assert (joined["quantity_reserved"], joined["participants"]) == (2, 1)
        assert left["reservation"]["status"] == "released"
        assert (left["quantity_reserved"], left["participants"]) == (0, 0)
        assert "reservation" not in w1[4]["data"]
        assert [e["seq"] for e in shop.sink.events("W2")] == [1, 2, 3]


async def test_a_restart_in_the_middle_fires_the_missed_expiry_at_start() -> None:
    shop = Shop()
    await shop.start()
    try:
        await active_shop(shop, quantity_total=5, min_participants=2)
        await shop.join("j1", "b1", 2)
        await shop.join("j2", "b2", 1)
        await shop.stop()
        assert await stored(shop) == (5, [EXPIRE])
        # Down past the expiry: it fires as soon as the node is back, with no message.
        await shop.start(down_for=EXPIRE_IN)
        assert shop.k.system.is_active("window", "W1")
        view = await shop.get()
        assert (view.state, view.outcome, view.quantity_reserved) == ("closed", "succeeded", 3)
        events = shop.sink.events()
        assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
        assert events[-1]["type"] == "closed"
        assert events[-1]["at"] == format_time(shop.clock())  # late, and it says when
        assert shop.peers.of("seller") == [ReturnStock("P1", 2, "W1")]
        # Idempotency survives the restart too.
        assert (await shop.join("j1", "b1", 2)).status == "confirmed"
        await shop.restart()
        assert shop.peers.of("seller") == [ReturnStock("P1", 2, "W1")]
        assert shop.peers.of("campaign") == [WindowEnded("W1", "S1", "P1", "closed", "succeeded")]
        assert len(shop.sink.events()) == 5
    finally:
        await shop.stop()


async def test_an_active_window_back_from_its_journal_tells_its_buyers_again() -> None:
    """Tells to buyers die with the node: a window that comes back while selling tells
    each buyer again where its reservations stand. A closed one tells nothing again."""
    shop = Shop()
    await shop.start()
    try:
        await active_shop(shop, quantity_total=5)
        await shop.join("j1", "b1", 2)
        await shop.join("j2", "b2", 1)
        await shop.leave("j2", "b2")
        await shop.settle()
        told = [IntentMatched("P1", "W1", "j1"), IntentMatched("P1", "W1", "j2")]
        assert shop.peers.of("buyer", IntentMatched) == told
        assert shop.peers.of("buyer", ReservationReleased) == [
            ReservationReleased("P1", "W1", "j2")
        ]
        # Down before the buyers heard anything of it (their stubs forget it all).
        await shop.stop()
        shop.peers.got.clear()
        await shop.start(down_for=1.0)
        assert shop.peers.of("buyer") == []  # nothing before the window is loaded
        assert (await shop.get()).state == "active"
        await shop.settle()
        assert sorted(
            shop.peers.of("buyer", IntentMatched) + shop.peers.of("buyer", ReservationReleased),
            key=repr,
        ) == sorted(
            [IntentMatched("P1", "W1", "j1"), ReservationReleased("P1", "W1", "j2")], key=repr
        )
        # A closed window stays quiet when it is loaded again.
        await shop.advance_to(EPOCH + EXPIRE_IN)
        assert (await shop.get()).state == "closed"
        await shop.restart()
        await shop.settle()
        shop.peers.got.clear()
        await shop.restart()
        assert (await shop.get()).state == "closed"
        await shop.settle()
        assert shop.peers.of("buyer") == []
    finally:
        await shop.stop()


async def test_a_window_closed_just_before_a_crash_tells_its_buyers_again() -> None:
    """A crash at the close (its notices not yet confirmed): when the window starts again
    its buyers hear again that their reservations were released."""
    shop = Shop()
    await shop.start()
    try:
        await active_shop(shop, quantity_total=5, min_participants=3)
        await shop.join("j1", "b1", 1)
        await shop.join("j2", "b2", 1)
        shop.peers.silent_kinds.update({"seller", "campaign"})  # the notices stay open
        await shop.advance_to(EPOCH + EXPIRE_IN)
        view = await shop.get()
        assert (view.state, view.outcome) == ("closed", "failed")  # below the tipping point
        await shop.stop()
        shop.peers.got.clear()
        shop.peers.silent_kinds.clear()
        await shop.start(down_for=1.0)
        assert shop.peers.of("buyer") == []  # nothing before the window is loaded
        assert (await shop.get()).state == "closed"
        await shop.settle()
        released = [ReservationReleased("P1", "W1", "j1"), ReservationReleased("P1", "W1", "j2")]
        assert shop.peers.of("buyer", ReservationReleased) == released
        assert shop.peers.of("buyer", IntentMatched) == []
    finally:
        await shop.stop()


async def test_a_restart_before_activation_keeps_the_schedule() -> None:
    shop = Shop()
    await shop.start()
    try:
        await shop.create()
        await shop.restart(down_for=ACTIVATE_IN / 2)
        assert (await shop.get()).state == "scheduled"
        await shop.advance_to(EPOCH + ACTIVATE_IN)
        assert (await shop.get()).state == "active"
        assert len(shop.peers.of("product", WindowActivated)) == 1
    finally:
        await shop.stop()


class SnappyWindow(WindowActor):
    snapshot_every: ClassVar[int] = 4


async def test_snapshots_bound_recovery_and_restore_the_same_state() -> None:
    shop = Shop(window_cls=SnappyWindow)
    await shop.start()
    try:
        await active_shop(shop, quantity_total=50, max_per_buyer=3, min_participants=2)
        for i in range(12):
            await shop.join(f"j{i}", f"b{i % 5}", 1)
        await shop.leave("j3", "b3")
        before = (await shop.get(), await shop.all_reservations())
        await shop.stop()
        await shop.journal.open()
        [rec] = await shop.journal.recover([("window", "W1")])
        await shop.journal.close()
        # created, activated, notice_acked, 12 x joined, left: a snapshot every 4
        assert rec.seq == 16 and rec.snapshot_seq == 16 and rec.events == []
        assert rec.snapshot is not None
        snap = msgspec.msgpack.decode(rec.snapshot, type=WindowSnapshot)
        assert [r.join_id for r in snap.reservations] == [f"j{i}" for i in range(12)]
        assert [r.released for r in snap.reservations].count(True) == 1
        await shop.start()
        assert (await shop.get(), await shop.all_reservations()) == before
        # The limits still hold after recovery: b0 holds 3 (j0, j5, j10).
        assert code(await shop.join("jx", "b0", 1)) == "limit_exceeded"
        assert (await shop.join("jy", "b3", 1)).status == "reserved"
    finally:
        await shop.stop()


async def test_journal_events_are_the_fold() -> None:
    async with Shop() as shop:
        await active_shop(shop, min_participants=1)
        await shop.join("j1", "b1")
        await shop.advance(EXPIRE_IN)
        await shop.settle()
    await shop.journal.open()
    [rec] = await shop.journal.recover([("window", "W1")])
    await shop.journal.close()
    decoded = [msgspec.msgpack.decode(e, type=WindowActor.event_type) for e in rec.events]
    published = [type(e) for e in decoded if not isinstance(e, NoticeAcked)]
    assert published == [Created, Activated, Joined, Closed]
    acked = [e.notice for e in decoded if isinstance(e, NoticeAcked)]
    assert sorted(acked) == ["activated", "ended", "return_stock"]


# -- buyer checks in flight ----------------------------------------------------------------------


async def test_joins_waiting_for_a_check_are_decided_when_it_answers_in_order() -> None:
    async with Shop() as shop:
        await active_shop(shop, quantity_total=3, max_per_buyer=2, min_participants=1)
        await shop.join("j0", "b0", 1)  # b0 is verified
        shop.peers.hold_checks = True
        a = shop.tell_join("ja", "b1", 2)
        b = shop.tell_join("jb", "b1", 1)  # same buyer: waits behind the same check
        c = shop.tell_join("ja", "b1", 2)  # same join_id while it waits: a replay later
        d = shop.tell_join("jd", "b0", 1)  # a verified buyer goes ahead
        await shop.settle()
        assert (a, b, c) == ([], [], [])
        assert [r.status for r in d] == ["reserved"]
        assert len(shop.peers.held) == 1  # one check for b1, not three
        shop.peers.release()
        await shop.settle()
        # Stock is decided when the join is applied: only 1 was left for b1.
        assert code(a[0]) == "insufficient_stock" and a[0].details == {"available": 1}
        assert b[0].status == "reserved"
        # ja was rejected, so its repeat is new too, and came after the sell-out
        assert code(c[0]) == "sold_out"
        view = await shop.get()
        assert (view.state, view.quantity_reserved) == ("closed", 3)


async def test_a_duplicate_join_id_from_another_buyer_waits_and_conflicts() -> None:
    async with Shop() as shop:
        await active_shop(shop, quantity_total=5, min_participants=1)
        await shop.join("j0", "b2", 1)  # b2 is verified
        shop.peers.hold_checks = True
        first = shop.tell_join("jx", "b1", 1)
        dup = shop.tell_join("jx", "b2", 1)  # must not overtake the first one
        await shop.settle()
        assert (first, dup) == ([], [])
        shop.peers.release()
        await shop.settle()
        assert first[0].status == "reserved"
        assert code(dup[0]) == "idempotency_conflict"
        assert [r.join_id for r in await shop.all_reservations()] == ["j0", "jx"]


async def test_a_check_for_an_unknown_buyer_fails_only_its_joins() -> None:
    async with Shop() as shop:
        await active_shop(shop, min_participants=1)
        shop.peers.hold_checks = True
        g1 = shop.tell_join("g1", "ghost1", 1)
        g2 = shop.tell_join("g2", "ghost1", 1)
        ok = shop.tell_join("k1", "b1", 1)
        await shop.settle()
        shop.peers.release()
        await shop.settle()
        assert [code(g1[0]), code(g2[0])] == ["unknown_buyer", "unknown_buyer"]
        assert ok[0].status == "reserved"
        assert len(shop.peers.of("buyer", CheckBuyer)) == 2


async def test_a_buyer_the_node_knows_is_registered_needs_no_check() -> None:
    known = KnownBuyers()
    known.add("b1")
    async with Shop(known=known) as shop:
        await active_shop(shop, min_participants=1)
        shop.peers.silent_buyers.update({"b1", "b2"})  # a check would never be answered
        assert (await shop.join("j1", "b1", 1)).status == "reserved"
        assert len(shop.peers.of("buyer", CheckBuyer)) == 0
        got = shop.tell_join("j2", "b2", 1)  # not in the directory: asked as before
        await shop.settle()
        assert got == [] and len(shop.peers.of("buyer", CheckBuyer)) == 1


async def test_a_check_that_never_answers_fails_its_joins_as_unavailable() -> None:
    async with Shop() as shop:
        await active_shop(shop, min_participants=1)
        shop.peers.silent_buyers.add("b1")
        got = shop.tell_join("j1", "b1", 1)
        await shop.advance(CHECK_TIMEOUT_S - 0.01)
        assert got == []
        await shop.advance(2)
        assert code(got[0]) == "unavailable" and got[0].retryable
        assert (await shop.get()).quantity_reserved == 0
        # The buyer answers again: the client's retry with the same join_id succeeds.
        shop.peers.silent_buyers.clear()
        assert (await shop.join("j1", "b1", 1)).status == "reserved"


async def test_a_waiting_join_whose_deadline_passed_is_not_applied() -> None:
    async with Shop() as shop:
        await active_shop(shop, min_participants=1)
        shop.peers.hold_checks = True
        got: list[Any] = []
        deadline = format_time(shop.clock() + 1)
        body = Request(CommandKind.WINDOW_JOIN, Join(join_id="j1", buyer_id="b1"))
        shop.k.system.ref("window", "W1").tell(
            body, reply_to=got.append, headers={"iceshop-deadline": deadline}
        )
        await shop.advance(2)
        shop.peers.release()
        await shop.settle()
        assert code(got[0]) == "unavailable"
        assert (await shop.get()).quantity_reserved == 0


async def test_too_many_waiting_joins_are_overloaded() -> None:
    assert WindowActor.max_waiting >= 10_000

    class Small(WindowActor):
        max_waiting: ClassVar[int] = 3

    async with Shop(window_cls=Small) as shop:
        await active_shop(shop, quantity_total=10, max_per_buyer=2)
        shop.peers.hold_checks = True
        replies = [shop.tell_join(f"j{i}", f"b{i}", 1) for i in range(4)]
        await shop.settle()
        assert [r for r in replies[:3]] == [[], [], []]
        assert code(replies[3][0]) == "overloaded" and replies[3][0].retryable
        shop.peers.hold_checks = False
        shop.peers.release()
        await shop.settle()
        assert [r[0].status for r in replies[:3]] == ["reserved"] * 3
        # Nothing waits any more: a new buyer may queue again.
        assert (await shop.join("j9", "b9", 1)).status == "reserved"


# -- notices ------------------------------------------------------------------------------------


async def test_notices_are_sent_again_until_confirmed() -> None:
    async with Shop() as shop:
        await active_shop(shop, min_participants=1)
        shop.peers.silent_kinds.add("seller")
        await shop.join("j1", "b1")
        await shop.advance(EXPIRE_IN - ACTIVATE_IN)
        assert len(shop.peers.of("seller")) == 1
        assert (await stored(shop))[1] == [NOTIFY]
        await shop.advance(NOTICE_RETRY_S)
        assert len(shop.peers.of("seller")) == 2
        shop.peers.silent_kinds.clear()
        await shop.advance(2 * NOTICE_RETRY_S)
        assert shop.peers.of("seller") == [ReturnStock("P1", 4, "W1")] * 3
        assert (await stored(shop))[1] == []
        await shop.advance(3600)
        assert len(shop.peers.of("seller")) == 3
        assert len(shop.peers.of("campaign")) == 1  # confirmed the first time


async def test_an_unconfirmed_notice_is_sent_after_a_restart() -> None:
    shop = Shop()
    shop.peers.silent_kinds.add("campaign")
    await shop.start()
    try:
        await active_shop(shop)
        await shop.advance(EXPIRE_IN - ACTIVATE_IN)
        assert len(shop.peers.of("campaign")) == 1
        await shop.stop()
        shop.peers.silent_kinds.clear()
        await shop.start(down_for=3600)
        assert shop.peers.of("campaign") == [WindowEnded("W1", "S1", "P1", "closed", "failed")] * 2
        assert shop.peers.of("seller") == [ReturnStock("P1", 5, "W1")]
        assert (await stored(shop))[1] == []
    finally:
        await shop.stop()


# -- queries and access ------------------------------------------------------------------------


async def test_reservations_are_paged_in_join_order() -> None:
    async with Shop() as shop:
        await active_shop(shop, quantity_total=20, max_per_buyer=1, min_participants=1)
        for i in range(7):
            await shop.join(f"j{i}", f"b{i}")
        await shop.leave("j2", "b2")
        page = await shop.reservations(limit=3)
        assert [r.join_id for r in page.reservations] == ["j0", "j1", "j2"]
        assert page.reservations[2].status == "released"
        page2 = await shop.reservations(limit=3, cursor=page.next_cursor)
        page3 = await shop.reservations(limit=3, cursor=page2.next_cursor)
        assert [r.join_id for r in page2.reservations] == ["j3", "j4", "j5"]
        assert [r.join_id for r in page3.reservations] == ["j6"]
        assert page3.next_cursor is None
        assert (await shop.reservations(limit=7)).next_cursor is None
        for bad in ("x", "-1", "99", "1e3"):
            err = await shop.reservations(cursor=bad)
            assert code(err) == "invalid_request" and err.details == {"field": "cursor"}


async def test_access_rules_when_authentication_is_on() -> None:
    buyer = Principal("b1", "buyer")
    async with Shop() as shop:
        await active_shop(shop, min_participants=1)
        assert code(await shop.join("j1", "b2", principal=buyer)) == "forbidden"
        assert code(await shop.join("j1", "b1", principal=Principal("S1", "seller"))) == (
            "forbidden"
        )
        # forbidden outranks unknown_window
        assert code(await shop.join("j1", "b2", "W9", principal=buyer)) == "forbidden"
        assert (await shop.join("j1", "b1", principal=buyer)).status == "reserved"
        gateway = Principal("gw", "gateway")
        assert (await shop.join("j2", "b2", principal=gateway)).status == "reserved"
        assert code(await shop.leave("j2", "b2", principal=buyer)) == "forbidden"
        assert code(await shop.reservations(principal=buyer)) == "forbidden"
        assert code(await shop.reservations(principal=Principal("S2", "seller"))) == "forbidden"
        own = await shop.reservations(principal=Principal("S1", "seller"))
        assert [r.join_id for r in own.reservations] == ["j1", "j2"]
        assert code(await shop.cancel(principal=Principal("S1", "seller"))) == "forbidden"
        assert (await shop.get()).state == "active"
        assert (await shop.cancel(principal=Principal("root", "admin"))).state == "cancelled"


async def test_a_full_mailbox_rejects_at_once() -> None:
    assert WindowActor.mailbox_capacity >= 10_000
    async with Shop() as shop:
        await shop.create()
        ref = shop.k.system.ref("window", "W1")
        get = Request(CommandKind.WINDOW_GET, GetWindow())
        got: list[Any] = []
        for _ in range(WindowActor.mailbox_capacity):
            ref.tell(get, reply_to=got.append)
        with pytest.raises(Overloaded):
            ref.tell(get, reply_to=got.append)
        await shop.settle()
        assert len(got) == WindowActor.mailbox_capacity
        assert all(isinstance(v, WindowView) for v in got)


async def test_a_join_for_a_verified_buyer_needs_no_check_after_restart() -> None:
    shop = Shop(journal=MemoryJournal())
    await shop.start()
    try:
        await active_shop(shop, min_participants=1)
        await shop.join("j1", "b1")
        await shop.restart()
        assert (await shop.join("j2", "b1")).status == "reserved"
        assert len(shop.peers.of("buyer", CheckBuyer)) == 1
    finally:
        await shop.stop()
