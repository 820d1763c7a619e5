"""Regression tests for defects found reviewing the buyer, seller and product actors.

Each test drives the real actors on virtual time with the in-memory journal and checks
one rule the contract or the runtime's guarantees imply.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import pytest

from actors import Actor, OutboxEntry
from actors.journal import MemoryJournal
from actors.testkit import ActorTestKit
from iceshop.buyer import BuyerActor
from iceshop.product import ProductActor
from iceshop.protocol import (
    AddIntent,
    CheckBuyer,
    ListingChanged,
    ProductSnapshot,
    ProductState,
    RemoveIntent,
    Request,
)
from iceshop.seller import SellerActor
from iceshop.settings import Settings
from iceshop.wire import (
    CancelIntent,
    CommandKind,
    DemandUpdated,
    Event,
    RegisterBuyer,
    RegisterSeller,
    SubmitIntent,
    UpsertListing,
)

pytestmark = pytest.mark.anyio

EPOCH = 1_800_000_000.0


class ListSink:
    def __init__(self) -> None:
        self.entries: list[OutboxEntry] = []

    async def publish(self, entries: Sequence[OutboxEntry]) -> None:
        self.entries.extend(entries)

    def demand(self) -> list[Event[DemandUpdated]]:
        return [
            msgspec.json.decode(e.payload, type=Event[DemandUpdated])
            for e in self.entries
            if ".events.demand." in e.subject
        ]


def kit_on(journal: MemoryJournal, sink: ListSink) -> ActorTestKit:
    kit = ActorTestKit(journal=journal, outbox_sink=sink, epoch=EPOCH, sweep_interval=60.0)
    settings = Settings(demand_half_life_s=3600.0)
    system = kit.system
    system.register("buyer", lambda: BuyerActor(settings), cls=BuyerActor)
    system.register("seller", lambda: SellerActor(settings), cls=SellerActor)
    system.register("product", lambda: ProductActor(settings), cls=ProductActor)
    return kit


def listing(seller_id: str, currency: str = "TRY") -> ListingChanged:
    return ListingChanged(
        seller_id=seller_id,
        product_id="P1",
        title="Kettle",
        list_price_minor=1000,
        floor_price_minor=800,
        stock=10,
        currency=currency,
        max_active_windows=3,
        auto_approve=True,
    )


def add(at: float, ttl: float = 600.0) -> AddIntent:
    return AddIntent(
        buyer_id="b1",
        intent_id="i1",
        quantity=2,
        max_price_minor=900,
        submitted_at=at,
        expires_at=at + ttl,
        whatsapp_opt_in=False,
        locale="tr",
        phone="+905550000001",
    )


async def snapshot(kit: ActorTestKit) -> ProductState:
    state = await kit.system.ref("product", "P1").ask(ProductSnapshot())
    assert isinstance(state, ProductState)
    return state


# -- product ----------------------------------------------------------------------------


async def test_a_reopened_intent_expires_once() -> None:
    """Matched then reopened: the intent is indexed twice, but expires (and is announced
    as dropped) exactly once."""
    sink = ListSink()
    async with kit_on(MemoryJournal(), sink) as kit:
        p = kit.system.ref("product", "P1")
        p.tell(listing("s1"))
        await p.ask(add(EPOCH))
        p.tell(RemoveIntent("b1", "i1", "matched"))
        await kit.advance(60)
        p.tell(add(EPOCH))  # reopened after its reservation was released
        await kit.settle()
        await kit.advance(600)
        await snapshot(kit)
        events = sink.demand()
        assert [(e.seq, e.data.open_intents) for e in events] == [(1, 1), (2, 0), (3, 1), (4, 0)]


async def test_a_listing_in_another_currency_does_not_enter_the_catalog() -> None:
    """All listings of one product share one currency: the catalog never holds two."""
    async with kit_on(MemoryJournal(), ListSink()) as kit:
        p = kit.system.ref("product", "P1")
        p.tell(listing("s1", "TRY"))
        p.tell(listing("s2", "EUR"))
        state = await snapshot(kit)
        assert {x.currency for x in state.listings} == {"TRY"}
        assert [x.seller_id for x in state.listings] == ["s1"]


# -- tells lost with the process ------------------------------------------------------------


class Deaf(Actor):
    """Stands in for the product while the node 'dies': what it is told is lost."""

    def receive(self, message: Any) -> Any:
        return None


def req(kind: CommandKind, body: Any, **ids: str) -> Request:
    return Request(kind=kind, body=body, ids=ids)


async def test_a_cancel_whose_tell_to_the_product_was_lost_reaches_it_after_a_restart() -> None:
    journal, sink = MemoryJournal(), ListSink()
    async with kit_on(journal, sink) as kit:
        ref = kit.system.ref
        await ref("seller", "s1").ask(req(CommandKind.SELLER_REGISTER, RegisterSeller(name="S")))
        upsert = UpsertListing(
            product_id="P1", title="Kettle", list_price_minor=1000, floor_price_minor=800, stock=5
        )
        await ref("seller", "s1").ask(req(CommandKind.LISTING_UPSERT, upsert))
        await kit.settle()
        b = ref("buyer", "b1")
        await b.ask(req(CommandKind.BUYER_REGISTER, RegisterBuyer(name="A", phone="+905551")))
        submit = SubmitIntent(intent_id="i1", product_id="P1", max_price_minor=900)
        assert (await b.ask(req(CommandKind.INTENT_SUBMIT, submit))).status == "open"
        assert [i.intent_id for i in (await snapshot(kit)).intents] == ["i1"]
    # The cancel commits, but the node dies before the product hears of it.
    kit = ActorTestKit(journal=journal, outbox_sink=sink, epoch=EPOCH + 10, sweep_interval=60.0)
    kit.system.register("buyer", lambda: BuyerActor(Settings()), cls=BuyerActor)
    kit.system.register("product", Deaf)
    async with kit:
        reply = await kit.system.ref("buyer", "b1").ask(
            req(CommandKind.INTENT_CANCEL, CancelIntent(), intent_id="i1")
        )
        assert reply.status == "cancelled"
        await kit.settle()
    async with kit_on(journal, sink) as kit:
        await kit.system.ref("buyer", "b1").ask(CheckBuyer())  # the buyer comes back
        await kit.settle()
        assert (await snapshot(kit)).intents == []


async def test_a_listing_change_lost_with_the_node_reaches_the_product_after_a_restart() -> None:
    journal, sink = MemoryJournal(), ListSink()
    async with kit_on(journal, sink) as kit:
        s = kit.system.ref("seller", "s1")
        await s.ask(req(CommandKind.SELLER_REGISTER, RegisterSeller(name="S")))
        upsert = UpsertListing(
            product_id="P1", title="Kettle", list_price_minor=1000, floor_price_minor=800, stock=5
        )
        await s.ask(req(CommandKind.LISTING_UPSERT, upsert))
        await kit.settle()
    kit = ActorTestKit(journal=journal, outbox_sink=sink, epoch=EPOCH + 10, sweep_interval=60.0)
    kit.system.register("seller", lambda: SellerActor(Settings()), cls=SellerActor)
    kit.system.register("product", Deaf)
    async with kit:
        lower = UpsertListing(
            product_id="P1", title="Kettle", list_price_minor=700, floor_price_minor=600, stock=5
        )
        reply = await kit.system.ref("seller", "s1").ask(req(CommandKind.LISTING_UPSERT, lower))
        assert reply.stock == 5
        await kit.settle()
    async with kit_on(journal, sink) as kit:
        await kit.system.ref("seller", "s1").ask(
            req(CommandKind.SELLER_REGISTER, RegisterSeller(name="S"))
        )
        await kit.settle()
        [summary] = (await snapshot(kit)).listings
        assert (summary.list_price_minor, summary.floor_price_minor) == (700, 600)


class SlowProduct(Actor):
    """Holds every AddIntent until the test releases it, then accepts it."""

    held: list[tuple[Any, AddIntent]] = []

    def receive(self, message: Any) -> Any:
        if isinstance(message, AddIntent):
            SlowProduct.held.append((self.reply_later(), message))
            return None
        return None


async def test_a_late_answer_to_an_earlier_submit_does_not_answer_a_different_one() -> None:
    from iceshop.protocol import IntentAccepted
    from iceshop.wire import ErrorCode, ShopError

    SlowProduct.held = []
    async with ActorTestKit(journal=MemoryJournal(), epoch=EPOCH) as kit:
        kit.system.register("buyer", lambda: BuyerActor(Settings()), cls=BuyerActor)
        kit.system.register("product", SlowProduct)
        buyer = kit.system.ref("buyer", "b1")
        await buyer.ask(Request(CommandKind.BUYER_REGISTER, RegisterBuyer("B", "+905551112233")))
        first: list[Any] = []
        a = SubmitIntent(intent_id="i1", product_id="p1", quantity=1, max_price_minor=900)
        buyer.tell(Request(CommandKind.INTENT_SUBMIT, a), reply_to=first.append)
        await kit.settle()
        buyer.tell("boom")  # the buyer fails and restarts: its pending submit is forgotten
        await kit.advance(1)  # restarted, well before the product's 5 s answer deadline
        second: list[Any] = []
        b = SubmitIntent(intent_id="i1", product_id="p1", quantity=3, max_price_minor=900)
        buyer.tell(Request(CommandKind.INTENT_SUBMIT, b), reply_to=second.append)
        await kit.settle()
        assert len(SlowProduct.held) == 2
        for handle, add in SlowProduct.held:  # the old answer first, then the new one
            handle(IntentAccepted("p1", add.intent_id, "TRY"))
            await kit.settle()
        assert len(second) == 1
        assert isinstance(second[0], ShopError), second  # i1 now means the first submit
        assert second[0].code == ErrorCode.IDEMPOTENCY_CONFLICT
