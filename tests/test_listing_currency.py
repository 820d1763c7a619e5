"""One currency per product, decided before the seller commits.

Real seller and product actors on virtual time with the in-memory journal; the product
is wrapped to record what it receives. Where the product must answer late or never, a
stub stands in for it.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from actors import Actor, ActorRef
from actors.envelope import Reply
from actors.journal import MemoryJournal
from actors.testkit import ActorTestKit
from iceshop.product import ProductActor
from iceshop.product.currency import ClaimCurrency, CurrencyGranted
from iceshop.protocol import ListingChanged, ProductSnapshot, ProductState, Request, ReserveStock
from iceshop.seller import SellerActor
from iceshop.settings import Settings
from iceshop.wire import (
    CommandKind,
    ErrorCode,
    RegisterSeller,
    ShopError,
    UpsertListing,
    UpsertListingReply,
)

pytestmark = pytest.mark.anyio

EPOCH = 1_800_000_000.0
SETTINGS = Settings(demand_half_life_s=3600.0)


class SpyProduct(ProductActor):
    """The real product, recording every message it receives."""

    seen: list[Any] = []

    def receive(self, message: Any) -> Any:
        SpyProduct.seen.append(message)
        return super().receive(message)


class GateProduct(Actor):
    """Holds every claim until the test answers it; records listings."""

    held: list[tuple[Reply, ClaimCurrency]] = []
    listings: list[ListingChanged] = []

    def receive(self, message: Any) -> Any:
        if isinstance(message, ClaimCurrency):
            GateProduct.held.append((self.reply_later(), message))
        elif isinstance(message, ListingChanged):
            GateProduct.listings.append(message)
        return None


def kit_on(journal: MemoryJournal, product: type[Actor] = SpyProduct) -> ActorTestKit:
    SpyProduct.seen = []
    GateProduct.held = []
    GateProduct.listings = []
    kit = ActorTestKit(journal=journal, epoch=EPOCH, sweep_interval=60.0)
    kit.system.register("seller", lambda: SellerActor(SETTINGS), cls=SellerActor)
    if product is SpyProduct:
        kit.system.register("product", lambda: SpyProduct(SETTINGS), cls=SpyProduct)
    else:
        kit.system.register("product", product)
    return kit


def upsert(product_id: str, currency: str, stock: int = 10) -> Request:
    body = UpsertListing(
        product_id=product_id,
        title="Kettle",
        list_price_minor=1000,
        floor_price_minor=800,
        stock=stock,
        currency=currency,
    )
    return Request(kind=CommandKind.LISTING_UPSERT, body=body)


async def sellers(kit: ActorTestKit, *keys: str) -> list[ActorRef]:
    refs = [kit.system.ref("seller", key) for key in keys]
    for ref in refs:
        await ref.ask(Request(kind=CommandKind.SELLER_REGISTER, body=RegisterSeller(name="S")))
    return refs


async def catalog(kit: ActorTestKit, product_id: str = "P1") -> list[tuple[str, str, int]]:
    state = await kit.system.ref("product", product_id).ask(ProductSnapshot())
    assert isinstance(state, ProductState)
    return [(x.seller_id, x.currency, x.stock) for x in state.listings]


def ok(seller_id: str, stock: int = 10, product_id: str = "P1") -> UpsertListingReply:
    return UpsertListingReply(seller_id=seller_id, product_id=product_id, stock=stock)


def refused(reply: Any, listed_in: str) -> None:
    assert isinstance(reply, ShopError), reply
    assert reply.code is ErrorCode.INVALID_REQUEST
    assert reply.details == {"field": "currency"}
    assert f"listed in {listed_in} by other sellers" in reply.message
    assert reply.retryable is False


def claims() -> list[ClaimCurrency]:
    return [m for m in SpyProduct.seen if isinstance(m, ClaimCurrency)]


def announced() -> list[tuple[str, str, int]]:
    return [
        (m.seller_id, m.currency, m.stock) for m in SpyProduct.seen if isinstance(m, ListingChanged)
    ]


# -- the rule --------------------------------------------------------------------------


async def test_another_currency_than_the_other_sellers_is_refused_and_nothing_is_stored() -> None:
    journal = MemoryJournal()
    async with kit_on(journal) as kit:
        s1, s2 = await sellers(kit, "s1", "s2")
        assert await s1.ask(upsert("P1", "TRY")) == ok("s1")
        await kit.settle()
        SpyProduct.seen.clear()

        # A new listing in another currency: refused, stored nowhere, announced to nobody.
        refused(await s2.ask(upsert("P1", "EUR", stock=3)), "TRY")
        await kit.settle()
        assert announced() == []
        assert await catalog(kit) == [("s1", "TRY", 10)]
        reply = await s2.ask(ReserveStock(product_id="P1", quantity=1, window_id="W1"))
        assert isinstance(reply, ShopError) and reply.code is ErrorCode.UNKNOWN_PRODUCT

        # An existing listing moved to another currency: refused, the old one stays.
        assert await s2.ask(upsert("P1", "TRY", stock=5)) == ok("s2", 5)
        refused(await s2.ask(upsert("P1", "EUR", stock=9)), "TRY")
        await kit.settle()
        assert await catalog(kit) == [("s1", "TRY", 10), ("s2", "TRY", 5)]
        reply = await s2.ask(ReserveStock(product_id="P1", quantity=6, window_id="W1"))
        assert isinstance(reply, ShopError) and reply.code is ErrorCode.INSUFFICIENT_STOCK
        assert reply.details == {"available": 5}
    async with kit_on(journal) as kit:
        # After a restart the journals agree: nothing of the refused upserts was kept.
        assert await catalog(kit) == [("s1", "TRY", 10), ("s2", "TRY", 5)]
        reply = await kit.system.ref("seller", "s2").ask(
            ReserveStock(product_id="P1", quantity=6, window_id="W1")
        )
        assert isinstance(reply, ShopError) and reply.details == {"available": 5}
        await kit.settle()
        assert announced() == [("s2", "TRY", 5)]  # what the seller re-announces on start


async def test_a_seller_may_change_the_currency_of_its_only_listing() -> None:
    async with kit_on(MemoryJournal()) as kit:
        s1, s2 = await sellers(kit, "s1", "s2")
        assert await s1.ask(upsert("P1", "TRY")) == ok("s1")
        assert await s1.ask(upsert("P1", "EUR", stock=4)) == ok("s1", 4)
        await kit.settle()
        assert await catalog(kit) == [("s1", "EUR", 4)]
        # The product now speaks EUR: the old currency is the wrong one for others.
        refused(await s2.ask(upsert("P1", "TRY")), "EUR")
        assert await s2.ask(upsert("P1", "EUR")) == ok("s2")
        await kit.settle()
        # With a second seller, s1 cannot move away from EUR any more.
        refused(await s1.ask(upsert("P1", "USD")), "EUR")
        await kit.settle()
        assert await catalog(kit) == [("s1", "EUR", 4), ("s2", "EUR", 10)]


async def test_two_sellers_listing_a_new_product_at_once_in_two_currencies_one_wins() -> None:
    async with kit_on(MemoryJournal()) as kit:
        s1, s2 = await sellers(kit, "s1", "s2")
        first: list[Any] = []
        second: list[Any] = []
        s1.tell(upsert("P9", "TRY"), reply_to=first.append)
        s2.tell(upsert("P9", "EUR"), reply_to=second.append)
        await kit.settle()
        # Both asked before either listing reached the product.
        kinds = [type(m).__name__ for m in SpyProduct.seen]
        assert kinds == ["ClaimCurrency", "ClaimCurrency", "ListingChanged"], kinds
        assert first == [ok("s1", product_id="P9")]
        [loser] = second
        refused(loser, "TRY")
        assert await catalog(kit, "P9") == [("s1", "TRY", 10)]


async def test_a_claim_survives_a_product_restart_and_lapses_if_never_confirmed() -> None:
    journal = MemoryJournal()
    async with kit_on(journal) as kit:
        p = kit.system.ref("product", "P1")
        assert await p.ask(ClaimCurrency("s1", "TRY")) == CurrencyGranted("P1", "s1", "TRY")
        assert await p.ask(ClaimCurrency("s1", "TRY")) == CurrencyGranted("P1", "s1", "TRY")
    async with kit_on(journal) as kit:
        p = kit.system.ref("product", "P1")
        refused(await p.ask(ClaimCurrency("s2", "EUR")), "TRY")
        assert await p.ask(ClaimCurrency("s2", "TRY")) == CurrencyGranted("P1", "s2", "TRY")
        assert await catalog(kit) == []  # a claim is not a listing
        # s1 never lists: its claim lapses (s2's own claim does not stand in its way).
        await kit.advance(ProductActor.claim_ttl_s - 1)
        refused(await p.ask(ClaimCurrency("s3", "EUR")), "TRY")
        await kit.advance(1)
        assert await p.ask(ClaimCurrency("s3", "EUR")) == CurrencyGranted("P1", "s3", "EUR")


async def test_a_confirmed_claim_gives_way_to_the_listing() -> None:
    async with kit_on(MemoryJournal()) as kit:
        (s1,) = await sellers(kit, "s1")
        assert await s1.ask(upsert("P1", "TRY")) == ok("s1")
        await kit.settle()
        await kit.advance(ProductActor.claim_ttl_s + 1)
        p = kit.system.ref("product", "P1")
        refused(await p.ask(ClaimCurrency("s2", "EUR")), "TRY")


# -- idempotency, waiting, failure ------------------------------------------------------------


async def test_repeats_while_waiting_share_one_answer_and_a_stored_listing_asks_nothing() -> None:
    async with kit_on(MemoryJournal()) as kit:
        s1, s2 = await sellers(kit, "s1", "s2")
        replies: list[Any] = []
        s1.tell(upsert("P1", "TRY"), reply_to=replies.append)
        s1.tell(upsert("P1", "TRY"), reply_to=replies.append)
        await kit.settle()
        assert replies == [ok("s1"), ok("s1")]
        assert len(claims()) == 1
        assert announced() == [("s1", "TRY", 10)]

        refusals: list[Any] = []
        s2.tell(upsert("P1", "EUR"), reply_to=refusals.append)
        s2.tell(upsert("P1", "EUR"), reply_to=refusals.append)
        await kit.settle()
        assert len(refusals) == 2
        for reply in refusals:
            refused(reply, "TRY")
        assert len(claims()) == 2

        # A listing already stored in this currency needs no word from the product.
        SpyProduct.seen.clear()
        assert await s1.ask(upsert("P1", "TRY")) == ok("s1")
        assert await s1.ask(upsert("P1", "TRY", stock=2)) == ok("s1", 2)
        await kit.settle()
        assert claims() == []
        assert announced() == [("s1", "TRY", 10), ("s1", "TRY", 2)]


async def test_upserts_of_a_listing_wait_behind_its_claim_and_apply_in_order() -> None:
    async with kit_on(MemoryJournal(), GateProduct) as kit:
        (s1,) = await sellers(kit, "s1")
        replies: list[Any] = []
        s1.tell(upsert("P1", "EUR", stock=5), reply_to=replies.append)
        s1.tell(upsert("P1", "EUR", stock=7), reply_to=replies.append)
        s1.tell(upsert("P2", "USD", stock=1), reply_to=replies.append)  # another product
        await kit.settle()
        assert replies == []
        assert [(c.seller_id, c.currency) for c in (m for _, m in GateProduct.held)] == [
            ("s1", "EUR"),
            ("s1", "USD"),
        ]
        for handle, claim in list(GateProduct.held):
            handle(CurrencyGranted("P", claim.seller_id, claim.currency))
        await kit.settle()
        assert replies == [ok("s1", 5), ok("s1", 7), ok("s1", 1, "P2")]
        assert [(m.product_id, m.stock) for m in GateProduct.listings] == [
            ("P1", 5),
            ("P1", 7),
            ("P2", 1),
        ]
        assert len(GateProduct.held) == 2  # the second EUR upsert found EUR stored


async def test_no_answer_from_the_product_is_unavailable_and_stores_nothing() -> None:
    async with kit_on(MemoryJournal(), GateProduct) as kit:
        (s1,) = await sellers(kit, "s1")
        replies: list[Any] = []
        s1.tell(upsert("P1", "TRY"), reply_to=replies.append)
        await kit.settle()
        assert replies == []
        await kit.advance(SellerActor.product_timeout_s)
        [reply] = replies
        assert isinstance(reply, ShopError) and reply.code is ErrorCode.UNAVAILABLE
        assert reply.retryable
        # A late grant is dropped: the request is over.
        for handle, claim in GateProduct.held:
            handle(CurrencyGranted("P1", claim.seller_id, claim.currency))
        await kit.settle()
        assert GateProduct.listings == []
        reply = await s1.ask(ReserveStock(product_id="P1", quantity=1, window_id="W1"))
        assert isinstance(reply, ShopError) and reply.code is ErrorCode.UNKNOWN_PRODUCT


async def test_an_upsert_without_currency_keeps_the_listings_currency() -> None:
    """Upserts keep omitted fields: leaving ``currency`` out neither resets a EUR listing
    to TRY (which other EUR sellers would then refuse) nor asks the product again."""
    async with kit_on(MemoryJournal()) as kit:
        (s1,) = await sellers(kit, "S1")
        assert await s1.ask(upsert("P1", "EUR")) == ok("S1")
        claims = len([m for m in SpyProduct.seen if isinstance(m, ClaimCurrency)])
        body = UpsertListing(
            product_id="P1", title="Kettle", list_price_minor=1000, floor_price_minor=800, stock=3
        )
        reply = await s1.ask(Request(kind=CommandKind.LISTING_UPSERT, body=body))
        assert reply == ok("S1", stock=3)
        await kit.settle()
        assert await catalog(kit) == [("S1", "EUR", 3)]
        assert len([m for m in SpyProduct.seen if isinstance(m, ClaimCurrency)]) == claims
        # A new listing without a currency is in TRY, the contract's default.
        other = msgspec.structs.replace(body, product_id="P2")
        reply = await s1.ask(Request(kind=CommandKind.LISTING_UPSERT, body=other))
        assert reply == ok("S1", stock=3, product_id="P2")
        await kit.settle()
        assert await catalog(kit, "P2") == [("S1", "TRY", 3)]
