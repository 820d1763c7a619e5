"""The product actor (catalog + demand aggregator) on virtual time, in-memory journal.

Messages are sent to it directly, as the buyer, seller and window actors would; a list
sink records the demand events and notification requests it publishes after commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import pytest

from actors import OutboxEntry
from actors.journal import MemoryJournal
from actors.testkit import ActorTestKit
from iceshop.product import (
    KIND,
    NotificationRequest,
    ProductActor,
    notification_id,
    notification_subject,
)
from iceshop.protocol import (
    AddIntent,
    IntentAccepted,
    IntentSummary,
    ListingChanged,
    ListingSummary,
    ProductSnapshot,
    ProductState,
    RemoveIntent,
    WindowActivated,
)
from iceshop.settings import Settings
from iceshop.wire import DemandUpdated, ErrorCode, Event, ShopError, format_time

pytestmark = pytest.mark.anyio

EPOCH = 1_800_000_000.0
HALF_LIFE = 3600.0
PREFIX = "iceshop"


class ListSink:
    def __init__(self) -> None:
        self.entries: list[OutboxEntry] = []

    async def publish(self, entries: Sequence[OutboxEntry]) -> None:
        self.entries.extend(entries)

    def take(self, prefix: str) -> list[OutboxEntry]:
        found = [e for e in self.entries if e.subject.startswith(prefix)]
        self.entries = [e for e in self.entries if not e.subject.startswith(prefix)]
        return found

    def demand(self) -> list[Event[DemandUpdated]]:
        return [
            msgspec.json.decode(e.payload, type=Event[DemandUpdated])
            for e in self.take(f"{PREFIX}.events.demand.")
        ]


def kit_on(journal: MemoryJournal, sink: ListSink, epoch: float = EPOCH) -> ActorTestKit:
    kit = ActorTestKit(journal=journal, outbox_sink=sink, epoch=epoch, sweep_interval=60.0)
    settings = Settings(demand_half_life_s=HALF_LIFE)
    kit.system.register(KIND, lambda: ProductActor(settings), cls=ProductActor)
    return kit


def listing(seller_id: str = "s1", stock: int = 10, **fields: Any) -> ListingChanged:
    values: dict[str, Any] = {
        "seller_id": seller_id,
        "product_id": "P1",
        "title": "Kettle",
        "list_price_minor": 1000,
        "floor_price_minor": 800,
        "stock": stock,
        "currency": "TRY",
        "max_active_windows": 3,
        "auto_approve": True,
        **fields,
    }
    return ListingChanged(**values)


def add(
    buyer_id: str = "b1",
    intent_id: str = "i1",
    *,
    at: float = EPOCH,
    ttl: float = 3600.0,
    quantity: int = 1,
    price: int = 900,
    opt_in: bool = True,
    phone: str = "+905550000001",
) -> AddIntent:
    return AddIntent(
        buyer_id=buyer_id,
        intent_id=intent_id,
        quantity=quantity,
        max_price_minor=price,
        submitted_at=at,
        expires_at=at + ttl,
        whatsapp_opt_in=opt_in,
        locale="tr",
        phone=phone,
    )


def demand(score: float, open_intents: int, quantity: int) -> DemandUpdated:
    """The expected event data; the score is compared to 1e-9 relative."""
    approx: Any = pytest.approx(score, rel=1e-9)
    return DemandUpdated(
        product_id="P1", score=approx, open_intents=open_intents, quantity=quantity
    )


def decayed(score: float, seconds: float) -> float:
    return score * 2 ** (-seconds / HALF_LIFE)


async def test_unknown_product_until_a_seller_lists_it() -> None:
    sink = ListSink()
    async with kit_on(MemoryJournal(), sink) as kit:
        p = kit.system.ref(KIND, "P1")
        reply = await p.ask(add())
        assert isinstance(reply, ShopError) and reply.code is ErrorCode.UNKNOWN_PRODUCT
        assert reply.details == {"product_id": "P1"}
        assert (await p.ask(ProductSnapshot())).intents == []
        assert sink.entries == []
        p.tell(listing(currency="EUR"))
        assert await p.ask(add()) == IntentAccepted(product_id="P1", intent_id="i1", currency="EUR")


async def test_catalog_keeps_one_listing_per_seller() -> None:
    journal, sink = MemoryJournal(), ListSink()
    async with kit_on(journal, sink) as kit:
        p = kit.system.ref(KIND, "P1")
        p.tell(listing("s2", stock=5))
        p.tell(listing("s1", stock=10))
        p.tell(listing("s1", stock=4, auto_approve=False))
        await kit.settle()
        writes = journal.writes
        p.tell(listing("s1", stock=4, auto_approve=False))  # unchanged: nothing written
        state = await p.ask(ProductSnapshot())
        assert journal.writes == writes
        assert [(x.seller_id, x.stock, x.auto_approve) for x in state.listings] == [
            ("s1", 4, False),
            ("s2", 5, True),
        ]
        assert sink.entries == []  # the catalog is not demand
    async with kit_on(journal, sink) as kit:
        state = await kit.system.ref(KIND, "P1").ask(ProductSnapshot())
        assert state.listings[0] == ListingSummary(
            seller_id="s1",
            title="Kettle",
            list_price_minor=1000,
            floor_price_minor=800,
            stock=4,
            currency="TRY",
            max_active_windows=3,
            auto_approve=False,
        )


async def test_demand_events_score_and_decay() -> None:
    sink = ListSink()
    async with kit_on(MemoryJournal(), sink) as kit:
        p = kit.system.ref(KIND, "P1")
        p.tell(listing())
        await p.ask(add("b1", "i1", quantity=2, ttl=86400))
        await kit.advance(HALF_LIFE)
        now = EPOCH + HALF_LIFE
        await p.ask(add("b2", "i2", at=now, quantity=3, ttl=86400))
        events = sink.demand()
        assert [(e.event_id, e.type, e.seq, e.at) for e in events] == [
            ("demand.P1.1", "updated", 1, format_time(EPOCH)),
            ("demand.P1.2", "updated", 2, format_time(now)),
        ]
        assert events[0].data == demand(2.0, 1, 2)
        # One half-life later the first arrival counts for half: 2/2 + 3.
        assert events[1].data == demand(4.0, 2, 5)

        p.tell(RemoveIntent("b1", "i1", "cancelled"))
        await kit.settle()
        [removed] = sink.demand()
        # Leaving the open demand does not take anything off the score (it is momentum).
        assert (removed.seq, removed.data) == (3, demand(4.0, 1, 3))

        await kit.advance(2 * HALF_LIFE)
        state = await p.ask(ProductSnapshot())
        assert state.score == pytest.approx(1.0)
        assert state.score_as_of == now + 2 * HALF_LIFE


async def test_add_intent_is_idempotent_and_replaces_an_older_intent_of_the_buyer() -> None:
    sink = ListSink()
    async with kit_on(MemoryJournal(), sink) as kit:
        p = kit.system.ref(KIND, "P1")
        p.tell(listing())
        first = add("b1", "i1", quantity=2)
        accepted = IntentAccepted(product_id="P1", intent_id="i1", currency="TRY")
        assert await p.ask(first) == accepted
        assert await p.ask(first) == accepted  # a retried submit: nothing changes
        assert [e.data for e in sink.demand()] == [demand(2.0, 1, 2)]

        # A contact update of the same intent: stored, but not a new arrival.
        assert await p.ask(add("b1", "i1", quantity=2, phone="+905550000009")) == accepted
        assert [e.data for e in sink.demand()] == [demand(2.0, 1, 2)]
        state = await p.ask(ProductSnapshot())
        assert [i.intent_id for i in state.intents] == ["i1"]

        await kit.advance(10)
        await p.ask(add("b1", "i2", at=EPOCH + 10, quantity=1))
        assert [(e.seq, e.data) for e in sink.demand()] == [
            (3, demand(decayed(2.0, 10), 0, 0)),  # i1 replaced
            (4, demand(decayed(2.0, 10) + 1, 1, 1)),  # i2 arrived
        ]
        # A late re-add of the replaced, older intent changes nothing.
        await p.ask(add("b1", "i1", quantity=2))
        assert sink.demand() == []
        # RemoveIntent for an intent that is not the open one is ignored.
        p.tell(RemoveIntent("b1", "i1", "replaced"))
        await kit.settle()
        assert sink.demand() == []
        assert [i.intent_id for i in (await p.ask(ProductSnapshot())).intents] == ["i2"]


async def test_a_reopened_intent_comes_back_without_adding_weight() -> None:
    sink = ListSink()
    async with kit_on(MemoryJournal(), sink) as kit:
        p = kit.system.ref(KIND, "P1")
        p.tell(listing())
        await p.ask(add("b1", "i1", quantity=4))
        p.tell(RemoveIntent("b1", "i1", "matched"))
        await kit.advance(60)
        p.tell(add("b1", "i1", quantity=4))  # the buyer re-adds after a release
        await kit.settle()
        assert [e.data for e in sink.demand()] == [
            demand(4.0, 1, 4),
            demand(4.0, 0, 0),
            demand(decayed(4.0, 60), 1, 4),
        ]


async def test_expired_intents_drop_out_without_the_buyer() -> None:
    sink = ListSink()
    async with kit_on(MemoryJournal(), sink) as kit:
        p = kit.system.ref(KIND, "P1")
        p.tell(listing())
        await p.ask(add("b1", "i1", ttl=600))
        await p.ask(add("b2", "i2", ttl=1200, quantity=2))
        sink.demand()
        await kit.advance(600)
        # Exactly at expiry, before the safety deadline: the snapshot already drops it.
        state = await p.ask(ProductSnapshot())
        assert [i.buyer_id for i in state.intents] == ["b2"]
        [dropped] = sink.demand()
        assert (dropped.seq, dropped.data) == (3, demand(decayed(3.0, 600), 1, 2))
        # Nobody asks: the deadline drops b2 a few seconds after its expiry.
        await kit.advance(600 + ProductActor.expiry_grace_s - 0.1)
        assert sink.demand() == []
        await kit.advance(0.1)
        [dropped] = sink.demand()
        assert (dropped.seq, dropped.data.open_intents, dropped.data.quantity) == (4, 0, 0)
        assert dropped.at == format_time(EPOCH + 1200 + ProductActor.expiry_grace_s)
        # A re-add of an intent that has expired is accepted and ignored.
        assert (await p.ask(add("b2", "i2", ttl=1200))).intent_id == "i2"
        assert (await p.ask(ProductSnapshot())).intents == []
        assert sink.demand() == []


async def test_expiry_after_a_restart() -> None:
    journal, sink = MemoryJournal(), ListSink()
    async with kit_on(journal, sink) as kit:
        p = kit.system.ref(KIND, "P1")
        p.tell(listing())
        await p.ask(add("b1", "i1", ttl=600))
        await p.ask(add("b2", "i2", ttl=7200))
        sink.demand()
    async with kit_on(journal, sink, EPOCH + 3600) as kit:
        await kit.advance(0)  # the missed deadline fires at start
        [dropped] = sink.demand()
        assert (dropped.seq, dropped.data.open_intents) == (3, 1)
        state = await kit.system.ref(KIND, "P1").ask(ProductSnapshot())
        assert state.intents == [
            IntentSummary(
                buyer_id="b2",
                intent_id="i2",
                quantity=1,
                max_price_minor=900,
                expires_at=EPOCH + 7200,
            )
        ]
        await kit.advance(3600 + ProductActor.expiry_grace_s)
        [dropped] = sink.demand()
        assert (dropped.seq, dropped.data.open_intents) == (4, 0)


async def test_state_survives_a_restart_from_a_snapshot() -> None:
    class Snappy(ProductActor):
        snapshot_every = 3

    journal, sink = MemoryJournal(), ListSink()
    settings = Settings(demand_half_life_s=HALF_LIFE)
    async with ActorTestKit(journal=journal, outbox_sink=sink, epoch=EPOCH) as kit:
        kit.system.register(KIND, lambda: Snappy(settings), cls=Snappy)
        p = kit.system.ref(KIND, "P1")
        p.tell(listing())
        for n in range(5):
            await p.ask(add(f"b{n}", "i", quantity=n + 1))
        before = await p.ask(ProductSnapshot())
    await journal.open()
    [rec] = await journal.recover([(KIND, "P1")])
    await journal.close()
    assert rec.snapshot is not None and rec.snapshot_seq >= 3
    async with ActorTestKit(journal=journal, outbox_sink=sink, epoch=EPOCH) as kit:
        kit.system.register(KIND, lambda: Snappy(settings), cls=Snappy)
        p = kit.system.ref(KIND, "P1")
        assert await p.ask(ProductSnapshot()) == before
        sink.demand()
        # The seq and the seen intents carry on: a re-add changes nothing, a new one is seq 6.
        await p.ask(add("b0", "i", quantity=1))
        await p.ask(add("b9", "i", quantity=1))
        assert [(e.seq, e.data) for e in sink.demand()] == [(6, demand(16.0, 6, 16))]
        assert before == ProductState(
            product_id="P1",
            score=15.0,
            score_as_of=EPOCH,
            intents=before.intents,
            listings=before.listings,
        )


# -- notifications ------------------------------------------------------------------------


def activated(window_id: str = "W1", price: int = 850) -> WindowActivated:
    return WindowActivated(
        window_id=window_id,
        seller_id="s1",
        unit_price_minor=price,
        currency="TRY",
        activates_at=EPOCH + 60,
        expires_at=EPOCH + 960,
    )


async def test_window_activation_requests_notifications_for_opted_in_buyers_within_price() -> None:
    journal, sink = MemoryJournal(), ListSink()
    async with kit_on(journal, sink) as kit:
        p = kit.system.ref(KIND, "P1")
        p.tell(listing())
        p.tell(add("b1", "i1", price=900, phone="+905550000001"))  # yes
        p.tell(add("b2", "i2", price=850, phone="+905550000002"))  # yes: exactly the price
        p.tell(add("b3", "i3", price=849))  # below the price
        p.tell(add("b4", "i4", price=2000, opt_in=False))  # did not opt in
        p.tell(add("b5", "i5", price=2000))
        p.tell(RemoveIntent("b5", "i5", "matched"))  # no longer open
        p.tell(add("b6", "i6", price=2000, ttl=60))  # expired by activation time
        await kit.advance(60)
        assert [e.seq for e in sink.demand()] == [1, 2, 3, 4, 5, 6, 7]
        p.tell(activated())
        await kit.settle()
        requests = sink.take(f"{PREFIX}.notifications.")
        # b6 expired at this very moment: the activation's turn dropped it first.
        [dropped] = sink.demand()
        assert (dropped.seq, dropped.data.open_intents) == (8, 4)
        assert sink.entries == []
        ids = [notification_id("W1", b) for b in ("b1", "b2")]
        assert [e.subject for e in requests] == [notification_subject(i, PREFIX) for i in ids]
        assert [e.subject for e in requests] == [
            f"iceshop.notifications.{i}.requested" for i in ids
        ]
        assert [e.id for e in requests] == [f"notification.{i}.requested" for i in ids]
        bodies = [msgspec.json.decode(e.payload, type=Event[NotificationRequest]) for e in requests]
        assert [(b.type, b.seq, b.at) for b in bodies] == [
            ("requested", 1, format_time(EPOCH + 60))
        ] * 2
        assert bodies[0].data == NotificationRequest(
            notification_id=ids[0],
            buyer_id="b1",
            phone="+905550000001",
            locale="tr",
            window_id="W1",
            product_id="P1",
            seller_id="s1",
            intent_id="i1",
            unit_price_minor=850,
            currency="TRY",
            activates_at=format_time(EPOCH + 60),
            expires_at=format_time(EPOCH + 960),
        )
        assert bodies[1].data.buyer_id == "b2"
        # Idempotent per window.
        p.tell(activated())
        await kit.settle()
        assert sink.entries == []
        # Another window of the same product is another set of requests.
        p.tell(activated("W2", price=900))
        await kit.settle()
        assert [e.subject for e in sink.take(f"{PREFIX}.notifications.")] == [
            notification_subject(notification_id("W2", "b1"), PREFIX)
        ]
    async with kit_on(journal, sink, EPOCH + 120) as kit:
        kit.system.ref(KIND, "P1").tell(activated())  # still idempotent after a restart
        await kit.settle()
        assert sink.take(f"{PREFIX}.notifications.") == []


def test_notification_ids_are_stable_valid_and_distinct() -> None:
    a = notification_id("W-1", "b")
    assert a == notification_id("W-1", "b")
    assert a != notification_id("W", "1-b")
    assert len(a) == 27 and a.isalnum()
    long = notification_id("W" * 64, "b" * 64)
    assert len(long) == 27
