"""Buyer, seller and product actors together, on virtual time with the in-memory journal.

What the window and campaign actors would send (stock reservations, activation,
matches and releases) is sent by the test; a stub campaign records offer decisions.
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
from iceshop.product import NotificationRequest, ProductActor, notification_id
from iceshop.protocol import (
    CreateOffer,
    IntentMatched,
    OfferDecided,
    ProductSnapshot,
    ProductState,
    Request,
    ReservationReleased,
    ReserveStock,
    ReturnStock,
    StockReserved,
    WindowActivated,
)
from iceshop.seller import SellerActor
from iceshop.settings import Settings
from iceshop.wire import (
    ApproveOffer,
    CancelIntent,
    CommandKind,
    DemandUpdated,
    ErrorCode,
    Event,
    RegisterBuyer,
    RegisterSeller,
    ShopError,
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

    def of(self, part: str) -> list[OutboxEntry]:
        return [e for e in self.entries if f".{part}." in e.subject and ".audit." not in e.subject]


class Campaign(Actor):
    def __init__(self, seen: list[Any]) -> None:
        self.seen = seen

    def receive(self, message: Any) -> Any:
        self.seen.append(message)
        return None


def kit_on(journal: MemoryJournal, sink: ListSink, seen: list[Any], epoch: float) -> ActorTestKit:
    kit = ActorTestKit(journal=journal, outbox_sink=sink, epoch=epoch, sweep_interval=60.0)
    settings = Settings(demand_half_life_s=3600.0)
    system = kit.system
    system.register("buyer", lambda: BuyerActor(settings), cls=BuyerActor)
    system.register("seller", lambda: SellerActor(settings), cls=SellerActor)
    system.register("product", lambda: ProductActor(settings), cls=ProductActor)
    system.register("campaign", lambda: Campaign(seen), cls=Campaign)
    return kit


def req(kind: CommandKind, body: Any, **ids: str) -> Request:
    return Request(kind=kind, body=body, ids=ids)


async def test_registration_to_notification_match_release_and_expiry() -> None:
    journal, sink = MemoryJournal(), ListSink()
    campaign: list[Any] = []
    async with kit_on(journal, sink, campaign, EPOCH) as kit:
        ref = kit.system.ref
        seller = ref("seller", "s1")
        product = ref("product", "P1")

        async def snapshot() -> ProductState:
            state = await product.ask(ProductSnapshot())
            assert isinstance(state, ProductState)
            return state

        await seller.ask(req(CommandKind.SELLER_REGISTER, RegisterSeller(name="Shop")))
        upsert = UpsertListing(
            product_id="P1",
            title="Kettle",
            list_price_minor=1000,
            floor_price_minor=800,
            stock=10,
            currency="TRY",
        )
        await seller.ask(req(CommandKind.LISTING_UPSERT, upsert))

        buyers = {  # buyer: (opted in, max price)
            "b1": (True, 900),
            "b2": (True, 700),
            "b3": (False, 1000),
        }
        for buyer_id, (opt_in, price) in buyers.items():
            b = ref("buyer", buyer_id)
            body = RegisterBuyer(
                name=buyer_id, phone="+90555000000" + buyer_id[1], whatsapp_opt_in=opt_in
            )
            assert (await b.ask(req(CommandKind.BUYER_REGISTER, body))).created
            submit = SubmitIntent(
                intent_id=f"i-{buyer_id}", product_id="P1", max_price_minor=price, ttl_s=3600
            )
            assert (await b.ask(req(CommandKind.INTENT_SUBMIT, submit))).status == "open"

        # A product nobody lists is refused by the product and stored nowhere.
        ghost = SubmitIntent(intent_id="i-x", product_id="P404", max_price_minor=1)
        reply = await ref("buyer", "b1").ask(req(CommandKind.INTENT_SUBMIT, ghost))
        assert isinstance(reply, ShopError) and reply.code is ErrorCode.UNKNOWN_PRODUCT

        state = await snapshot()
        assert [i.buyer_id for i in state.intents] == ["b1", "b2", "b3"]
        assert [(x.seller_id, x.stock, x.max_active_windows) for x in state.listings] == [
            ("s1", 10, 3)
        ]
        assert state.score == 3.0

        # The campaign takes stock for a window: the product's catalog follows.
        reserved = await seller.ask(ReserveStock(product_id="P1", quantity=6, window_id="W1"))
        assert reserved == StockReserved(product_id="P1", quantity=6, window_id="W1", stock_left=4)
        await kit.settle()
        assert [x.stock for x in (await snapshot()).listings] == [4]

        # The window activates at 850: only b1 opted in and accepts that price.
        await kit.advance(60)
        product.tell(
            WindowActivated(
                window_id="W1",
                seller_id="s1",
                unit_price_minor=850,
                currency="TRY",
                activates_at=EPOCH + 60,
                expires_at=EPOCH + 960,
            )
        )
        await kit.settle()
        [note] = sink.of("notifications")
        request = msgspec.json.decode(note.payload, type=Event[NotificationRequest]).data
        assert (request.notification_id, request.buyer_id, request.phone) == (
            notification_id("W1", "b1"),
            "b1",
            "+905550000001",
        )

        # b1 joins the window: its intent is matched and leaves the demand.
        ref("buyer", "b1").tell(IntentMatched(product_id="P1", window_id="W1", join_id="J1"))
        await kit.settle()
        assert [i.buyer_id for i in (await snapshot()).intents] == ["b2", "b3"]
        # b1 leaves: the intent is open again and back in the demand, same id.
        ref("buyer", "b1").tell(ReservationReleased(product_id="P1", window_id="W1", join_id="J1"))
        await kit.settle()
        assert [(i.buyer_id, i.intent_id) for i in (await snapshot()).intents] == [
            ("b1", "i-b1"),
            ("b2", "i-b2"),
            ("b3", "i-b3"),
        ]
        assert (await snapshot()).score == pytest.approx(3.0 * 2 ** (-60 / 3600))

        # b2 cancels; b3 replaces its intent with a cheaper one.
        cancel = req(CommandKind.INTENT_CANCEL, CancelIntent(), intent_id="i-b2")
        assert (await ref("buyer", "b2").ask(cancel)).status == "cancelled"
        cheaper = SubmitIntent(intent_id="i-b3b", product_id="P1", max_price_minor=500, ttl_s=60)
        await ref("buyer", "b3").ask(req(CommandKind.INTENT_SUBMIT, cheaper))
        await kit.settle()
        assert [(i.buyer_id, i.intent_id) for i in (await snapshot()).intents] == [
            ("b1", "i-b1"),
            ("b3", "i-b3b"),
        ]

        # An offer for the seller to approve; the campaign hears the decision.
        await seller.ask(
            CreateOffer(
                offer_id="O1",
                decision_id="D1",
                product_id="P1",
                window_id="W2",
                unit_price_minor=900,
                currency="TRY",
                quantity=2,
                min_participants=1,
                max_per_buyer=1,
                activates_at=EPOCH + 600,
                expires_at=EPOCH + 1500,
            )
        )
        approve = req(CommandKind.OFFER_APPROVE, ApproveOffer(), offer_id="O1")
        assert (await seller.ask(approve)).status == "approved"
        await kit.settle()
        assert campaign == [
            OfferDecided(offer_id="O1", decision_id="D1", seller_id="s1", status="approved")
        ]
        assert [e.subject for e in sink.of("offer")] == [
            "iceshop.events.offer.O1.proposed",
            "iceshop.events.offer.O1.approved",
        ]

        # The window closes and gives back what it did not sell.
        seller.tell(ReturnStock(product_id="P1", quantity=6, window_id="W1"))
        await kit.settle()
        assert [x.stock for x in (await snapshot()).listings] == [10]

    # Down for two hours: every intent expired meanwhile, by the buyers' own deadlines.
    async with kit_on(journal, sink, campaign, EPOCH + 7200) as kit:
        await kit.advance(0)
        product = kit.system.ref("product", "P1")
        assert (await product.ask(ProductSnapshot())).intents == []
        cancel = req(CommandKind.INTENT_CANCEL, CancelIntent(), intent_id="i-b1")
        assert (await kit.system.ref("buyer", "b1").ask(cancel)).status == "expired"

    demand = [msgspec.json.decode(e.payload, type=Event[DemandUpdated]) for e in sink.of("demand")]
    seqs = [e.seq for e in demand]
    assert seqs == list(range(1, len(seqs) + 1))  # one per change, in order, none lost
    assert len(set(e.event_id for e in demand)) == len(demand)
    assert (demand[-1].data.open_intents, demand[-1].data.quantity) == (0, 0)
