"""The seller actor on virtual time with the in-memory journal.

A stub product and a stub campaign record what the seller tells them (the stub product
grants every currency claim; the rule itself is tested in ``test_listing_currency``); a
list sink records the events it publishes (after commit, through the outbox).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import pytest

from actors import Actor, ActorRef, OutboxEntry
from actors.journal import MemoryJournal
from actors.testkit import ActorTestKit
from iceshop.product.currency import ClaimCurrency, CurrencyGranted
from iceshop.protocol import (
    CreateOffer,
    ListingChanged,
    OfferDecided,
    Request,
    ReserveStock,
    ReturnStock,
    StockReserved,
)
from iceshop.seller import KIND, SellerActor
from iceshop.settings import Settings
from iceshop.wire import (
    ApproveOffer,
    CommandKind,
    ErrorCode,
    Event,
    OfferStatusReply,
    OfferView,
    RegisterSeller,
    RegisterSellerReply,
    RejectOffer,
    ShopError,
    UpsertListing,
    UpsertListingReply,
    encode,
    format_time,
)

pytestmark = pytest.mark.anyio

EPOCH = 1_800_000_000.0
PREFIX = "shop.test"


class Recorder(Actor):
    def __init__(self, seen: list[tuple[str, Any]]) -> None:
        self.seen = seen

    def receive(self, message: Any) -> Any:
        if isinstance(message, ClaimCurrency):
            return CurrencyGranted(self.key, message.seller_id, message.currency)
        self.seen.append((self.key, message))
        return None


class ListSink:
    def __init__(self) -> None:
        self.entries: list[OutboxEntry] = []

    async def publish(self, entries: Sequence[OutboxEntry]) -> None:
        self.entries.extend(entries)


class Rig:
    def __init__(self, kit: ActorTestKit, sink: ListSink) -> None:
        self.kit = kit
        self.sink = sink
        self.product: list[tuple[str, Any]] = []
        self.campaign: list[tuple[str, Any]] = []
        settings = Settings(prefix=PREFIX)
        kit.system.register(KIND, lambda: SellerActor(settings), cls=SellerActor)
        product, campaign = self.product, self.campaign
        kit.system.register("product", lambda: Recorder(product), cls=Recorder)
        kit.system.register("campaign", lambda: Recorder(campaign), cls=Recorder)

    def seller(self, key: str = "s1") -> ActorRef:
        return self.kit.system.ref(KIND, key)

    def listings(self) -> list[tuple[str, ListingChanged]]:
        found = [(k, m) for k, m in self.product if isinstance(m, ListingChanged)]
        self.product.clear()
        return found

    def events(self) -> list[tuple[str, Event[OfferView]]]:
        found = [
            (e.subject, msgspec.json.decode(e.payload, type=Event[OfferView]))
            for e in self.sink.entries
            if ".events." in e.subject  # audit records: tests/test_audit.py
        ]
        self.sink.entries.clear()
        return found


def kit_on(journal: MemoryJournal, sink: ListSink, epoch: float = EPOCH) -> ActorTestKit:
    return ActorTestKit(journal=journal, outbox_sink=sink, epoch=epoch, sweep_interval=60.0)


def register(**fields: Any) -> Request:
    return Request(
        kind=CommandKind.SELLER_REGISTER, body=RegisterSeller(**{"name": "Shop", **fields})
    )


def upsert(product_id: str = "P1", **fields: Any) -> Request:
    body = UpsertListing(
        **{
            "product_id": product_id,
            "title": "Kettle",
            "list_price_minor": 1000,
            "floor_price_minor": 800,
            "stock": 10,
            **fields,
        }
    )
    return Request(kind=CommandKind.LISTING_UPSERT, body=body)


def approve(offer_id: str) -> Request:
    return Request(kind=CommandKind.OFFER_APPROVE, body=ApproveOffer(), ids={"offer_id": offer_id})


def reject(offer_id: str) -> Request:
    return Request(kind=CommandKind.OFFER_REJECT, body=RejectOffer(), ids={"offer_id": offer_id})


def offer(offer_id: str = "O1", lead: float = 300.0) -> CreateOffer:
    return CreateOffer(
        offer_id=offer_id,
        decision_id="D1",
        product_id="P1",
        window_id="W1",
        unit_price_minor=900,
        currency="TRY",
        quantity=6,
        min_participants=2,
        max_per_buyer=2,
        activates_at=EPOCH + lead,
        expires_at=EPOCH + lead + 900,
    )


def assert_error(reply: Any, code: ErrorCode) -> ShopError:
    assert isinstance(reply, ShopError), reply
    assert reply.code is code
    return reply


def changed(stock: int, windows: int = 3, auto: bool = True, **fields: Any) -> ListingChanged:
    values: dict[str, Any] = {
        "seller_id": "s1",
        "product_id": "P1",
        "title": "Kettle",
        "list_price_minor": 1000,
        "floor_price_minor": 800,
        "currency": "TRY",
        **fields,
    }
    return ListingChanged(**values, stock=stock, max_active_windows=windows, auto_approve=auto)


# -- registration and listings ------------------------------------------------------------


async def test_register_is_an_upsert_and_capacity_changes_reach_every_listing() -> None:
    journal, sink = MemoryJournal(), ListSink()
    async with kit_on(journal, sink) as kit:
        rig = Rig(kit, sink)
        s = rig.seller()
        assert await s.ask(register()) == RegisterSellerReply(seller_id="s1", created=True)
        await s.ask(upsert("P1"))
        await s.ask(upsert("P2", title="Mug", currency="EUR"))
        # Defaults on creation: 3 windows, auto approve.
        assert [(k, m.max_active_windows, m.auto_approve) for k, m in rig.listings()] == [
            ("P1", 3, True),
            ("P2", 3, True),
        ]
        again = await s.ask(register(max_active_windows=5))
        assert again == RegisterSellerReply(seller_id="s1", created=False)
        # auto_approve omitted: kept (True); every listing re-sent with the new capacity.
        assert sorted((k, m.max_active_windows, m.auto_approve) for k, m in rig.listings()) == [
            ("P1", 5, True),
            ("P2", 5, True),
        ]
        await s.ask(register(auto_approve=False))  # capacity omitted: stays 5
        assert sorted((k, m.max_active_windows, m.auto_approve) for k, m in rig.listings()) == [
            ("P1", 5, False),
            ("P2", 5, False),
        ]
        await s.ask(register(name="Renamed"))  # a name alone tells the products nothing
        assert rig.listings() == []
    async with kit_on(journal, sink) as kit:
        rig = Rig(kit, sink)
        assert (await rig.seller().ask(register())).created is False


async def test_upsert_listing() -> None:
    journal, sink = MemoryJournal(), ListSink()
    async with kit_on(journal, sink) as kit:
        rig = Rig(kit, sink)
        s = rig.seller()
        error = assert_error(await s.ask(upsert()), ErrorCode.UNKNOWN_SELLER)
        assert error.details == {"seller_id": "s1"}
        assert rig.product == []
        await s.ask(register())
        reply = await s.ask(upsert(stock=7))
        assert reply == UpsertListingReply(seller_id="s1", product_id="P1", stock=7)
        assert rig.listings() == [("P1", changed(7))]
        reply = await s.ask(upsert(stock=4, list_price_minor=1200))
        assert reply == UpsertListingReply(seller_id="s1", product_id="P1", stock=4)
        assert rig.listings() == [("P1", changed(4, list_price_minor=1200))]
        # The wire layer refuses floor > list; the actor checks again.
        bad = UpsertListing(
            product_id="P1", title="Kettle", list_price_minor=900, floor_price_minor=800, stock=1
        )
        msgspec.structs.force_setattr(bad, "floor_price_minor", 950)
        request = Request(kind=CommandKind.LISTING_UPSERT, body=bad)
        assert assert_error(await s.ask(request), ErrorCode.INVALID_REQUEST).details == {
            "field": "floor_price_minor"
        }
        assert rig.listings() == []
    async with kit_on(journal, sink) as kit:
        rig = Rig(kit, sink)
        # Stored: reserving sees the last upsert's stock.
        reply = await rig.seller().ask(ReserveStock(product_id="P1", quantity=5, window_id="W"))
        assert assert_error(reply, ErrorCode.INSUFFICIENT_STOCK).details == {"available": 4}


# -- stock for windows --------------------------------------------------------------------------


async def test_reserve_stock_errors() -> None:
    sink = ListSink()
    async with kit_on(MemoryJournal(), sink) as kit:
        rig = Rig(kit, sink)
        s = rig.seller()
        reserve = ReserveStock(product_id="P1", quantity=3, window_id="W1")
        assert_error(await s.ask(reserve), ErrorCode.UNKNOWN_SELLER)
        await s.ask(register())
        assert_error(await s.ask(reserve), ErrorCode.UNKNOWN_PRODUCT)
        await s.ask(upsert(stock=2))
        error = assert_error(await s.ask(reserve), ErrorCode.INSUFFICIENT_STOCK)
        assert error.details == {"available": 2}
        rig.listings()
        # A refusal is not remembered: after a restock the same window may reserve.
        await s.ask(upsert(stock=3))
        ok = await s.ask(reserve)
        assert ok == StockReserved(product_id="P1", quantity=3, window_id="W1", stock_left=0)


async def test_reserve_and_return_stock_are_idempotent_by_window() -> None:
    journal, sink = MemoryJournal(), ListSink()
    async with kit_on(journal, sink) as kit:
        rig = Rig(kit, sink)
        s = rig.seller()
        await s.ask(register())
        await s.ask(upsert(stock=10))
        rig.listings()
        first = await s.ask(ReserveStock(product_id="P1", quantity=6, window_id="W1"))
        assert first == StockReserved(product_id="P1", quantity=6, window_id="W1", stock_left=4)
        assert rig.listings() == [("P1", changed(4))]
        again = await s.ask(ReserveStock(product_id="P1", quantity=6, window_id="W1"))
        assert encode(again) == encode(first)
        assert rig.listings() == []
        conflict = await s.ask(ReserveStock(product_id="P1", quantity=2, window_id="W1"))
        assert_error(conflict, ErrorCode.IDEMPOTENCY_CONFLICT)
        second = await s.ask(ReserveStock(product_id="P1", quantity=4, window_id="W2"))
        assert second.stock_left == 0
        rig.listings()

        s.tell(ReturnStock(product_id="P1", quantity=2, window_id="W1"))
        s.tell(ReturnStock(product_id="P1", quantity=2, window_id="W1"))  # repeat: no-op
        s.tell(ReturnStock(product_id="P1", quantity=9, window_id="W2"))  # capped at 4 taken
        s.tell(ReturnStock(product_id="P1", quantity=5, window_id="W-unknown"))  # ignored
        await kit.settle()
        assert [m.stock for _, m in rig.listings()] == [2, 6]
    async with kit_on(journal, sink) as kit:
        rig = Rig(kit, sink)
        s = rig.seller()
        # After a restart: the first reply is still the reply, returns still counted once.
        again = await s.ask(ReserveStock(product_id="P1", quantity=6, window_id="W1"))
        assert encode(again) == encode(first)
        s.tell(ReturnStock(product_id="P1", quantity=2, window_id="W1"))
        await kit.settle()
        # Only the listing announced again when the seller started (returns: none).
        assert rig.product == [("P1", changed(6))]
        reply = await s.ask(ReserveStock(product_id="P1", quantity=7, window_id="W3"))
        assert assert_error(reply, ErrorCode.INSUFFICIENT_STOCK).details == {"available": 6}


# -- offers ---------------------------------------------------------------------------------------


def offer_view(status: str, offer_id: str = "O1", lead: float = 300.0) -> OfferView:
    return OfferView(
        offer_id=offer_id,
        seller_id="s1",
        unit_price_minor=900,
        quantity=6,
        activates_at=format_time(EPOCH + lead),
        expires_at=format_time(EPOCH + lead + 900),
        status=status,  # type: ignore[arg-type]
    )


async def test_offer_approved() -> None:
    journal, sink = MemoryJournal(), ListSink()
    async with kit_on(journal, sink) as kit:
        rig = Rig(kit, sink)
        s = rig.seller()
        await s.ask(register(auto_approve=False))
        assert await s.ask(offer()) == OfferStatusReply(offer_id="O1", status="pending")
        assert await s.ask(offer()) == OfferStatusReply(offer_id="O1", status="pending")
        [(subject, proposed)] = rig.events()
        assert subject == f"{PREFIX}.events.offer.O1.proposed"
        assert proposed == Event(
            event_id="offer.O1.1",
            type="proposed",
            at=format_time(EPOCH),
            seq=1,
            data=offer_view("pending"),
        )
        await kit.advance(10)
        assert await s.ask(approve("O1")) == OfferStatusReply(offer_id="O1", status="approved")
        [(subject, approved)] = rig.events()
        assert subject == f"{PREFIX}.events.offer.O1.approved"
        assert approved == Event(
            event_id="offer.O1.2",
            type="approved",
            at=format_time(EPOCH + 10),
            seq=2,
            data=offer_view("approved"),
        )
        assert rig.campaign == [
            (
                "main",
                OfferDecided(offer_id="O1", decision_id="D1", seller_id="s1", status="approved"),
            )
        ]
        # Idempotent by state: approve again is ok, reject now answers "approved".
        assert await s.ask(approve("O1")) == OfferStatusReply(offer_id="O1", status="approved")
        assert await s.ask(reject("O1")) == OfferStatusReply(offer_id="O1", status="approved")
        assert [d.name for d in await journal.deadlines()] == []  # expiry cancelled
        await kit.advance(600)
        assert rig.events() == []
        assert len(rig.campaign) == 1
        # The campaign offers it again (after its restart): it hears the outcome again.
        assert await s.ask(offer()) == OfferStatusReply(offer_id="O1", status="approved")
        assert [m.status for _, m in rig.campaign] == ["approved", "approved"]
        assert rig.events() == []


async def test_offer_rejected_and_errors() -> None:
    sink = ListSink()
    async with kit_on(MemoryJournal(), sink) as kit:
        rig = Rig(kit, sink)
        s = rig.seller()
        error = assert_error(await s.ask(approve("O1")), ErrorCode.UNKNOWN_SELLER)
        assert error.details == {"seller_id": "s1"}
        await s.ask(register(auto_approve=False))
        error = assert_error(await s.ask(reject("O1")), ErrorCode.UNKNOWN_OFFER)
        assert error.details == {"offer_id": "O1"}
        await s.ask(offer())
        assert await s.ask(reject("O1")) == OfferStatusReply(offer_id="O1", status="rejected")
        assert [(e.type, e.seq, e.data.status) for _, e in rig.events()] == [
            ("proposed", 1, "pending"),
            ("rejected", 2, "rejected"),
        ]
        assert [m.status for _, m in rig.campaign] == ["rejected"]
        assert await s.ask(approve("O1")) == OfferStatusReply(offer_id="O1", status="rejected")
        assert rig.events() == []


async def test_offer_expires_at_activation_even_across_a_restart() -> None:
    journal, sink = MemoryJournal(), ListSink()
    async with kit_on(journal, sink) as kit:
        rig = Rig(kit, sink)
        s = rig.seller()
        await s.ask(register(auto_approve=False))
        await s.ask(offer("O1", lead=60))
        await s.ask(offer("O2", lead=600))
        await kit.advance(59.9)
        assert [e.type for _, e in rig.events()] == ["proposed", "proposed"]
        await kit.advance(0.1)
        [(subject, expired)] = rig.events()
        assert subject == f"{PREFIX}.events.offer.O1.expired"
        assert expired == Event(
            event_id="offer.O1.2",
            type="expired",
            at=format_time(EPOCH + 60),
            seq=2,
            data=offer_view("expired", lead=60),
        )
        assert [(k, m.offer_id, m.status) for k, m in rig.campaign] == [("main", "O1", "expired")]
        assert await s.ask(approve("O1")) == OfferStatusReply(offer_id="O1", status="expired")
    # Down until after O2's activation time: it expires as soon as the node starts.
    async with kit_on(journal, sink, EPOCH + 3600) as kit:
        rig = Rig(kit, sink)
        await kit.advance(0)
        assert [(e.event_id, e.type) for _, e in rig.events()] == [("offer.O2.2", "expired")]
        assert [(m.offer_id, m.status) for _, m in rig.campaign] == [("O2", "expired")]
        assert await rig.seller().ask(approve("O2")) == OfferStatusReply(
            offer_id="O2", status="expired"
        )
