"""The campaign actor on virtual time, with stub product, seller and window actors.

The stubs stand in for the real actors under their kinds: the product answers
``ProductSnapshot`` with the state a test sets, the seller sets stock aside (or refuses)
and records offers, the window records what it is told. Decisions go to the real
decision actor and are read back through ``decision.get``, as a client would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pytest

from actors import Actor, OutboxEntry
from actors.journal import MemoryJournal
from actors.testkit import ActorTestKit
from iceshop.campaign import CampaignActor, decision_id, offer_id, window_id
from iceshop.campaign.evaluation import numeric_inputs, policy_settings
from iceshop.decision import DecisionActor
from iceshop.demand import DemandScore
from iceshop.policy import (
    CampaignState,
    IntentView,
    ListingView,
    SellerListing,
    SellerView,
    evaluate,
)
from iceshop.protocol import (
    CreateOffer,
    CreateWindow,
    DemandSignal,
    Evaluate,
    IntentSummary,
    ListingSummary,
    OfferDecided,
    ProductSnapshot,
    ProductState,
    Request,
    ReserveStock,
    StockReserved,
    WindowEnded,
)
from iceshop.settings import Settings
from iceshop.wire import (
    CommandKind,
    DecisionView,
    ErrorCode,
    GetDecision,
    ShopError,
    format_time,
)

pytestmark = pytest.mark.anyio

EPOCH = 1_800_000_000.0
SETTINGS = Settings(
    campaign_min_quantity=4,
    window_min_participants=3,
    window_max_per_buyer=5,
    window_lead_s=60.0,
    window_duration_s=600.0,
    campaign_interval_s=10.0,
    campaign_cooldown_s=300.0,
    demand_half_life_s=3600.0,
    auth="off",
)
# (buyer, quantity, max_price_minor): with floor 800, b1-b4 accept (8 units, 4 buyers).
INTENTS = [("b1", 2, 1200), ("b2", 2, 1100), ("b3", 2, 950), ("b4", 2, 900), ("b5", 2, 700)]


# -- the stub world -----------------------------------------------------------------------


class World:
    """What the stub actors know and what they were told."""

    def __init__(self) -> None:
        self.products: dict[str, ProductState] = {}
        self.stock: dict[tuple[str, str], int] = {}
        self.reserved: dict[str, StockReserved] = {}
        self.silent_sellers = False
        self.snapshots: list[str] = []
        self.seller_inbox: list[tuple[str, Any]] = []
        self.window_inbox: list[tuple[str, Any]] = []

    def reservations(self) -> list[ReserveStock]:
        return [m for _, m in self.seller_inbox if isinstance(m, ReserveStock)]

    def offers(self) -> list[CreateOffer]:
        return [m for _, m in self.seller_inbox if isinstance(m, CreateOffer)]

    def windows(self) -> list[CreateWindow]:
        return [m for _, m in self.window_inbox if isinstance(m, CreateWindow)]


class ProductStub(Actor):
    def __init__(self, world: World) -> None:
        self.world = world

    def receive(self, message: Any) -> Any:
        assert isinstance(message, ProductSnapshot)
        self.world.snapshots.append(self.key)
        state = self.world.products.get(self.key)
        if state is None:
            return ShopError(ErrorCode.UNKNOWN_PRODUCT, "no such product")
        return state


class SellerStub(Actor):
    """Sets stock aside idempotently by window id, like the real seller must."""

    def __init__(self, world: World) -> None:
        self.world = world

    def receive(self, message: Any) -> Any:
        world = self.world
        world.seller_inbox.append((self.key, message))
        if not isinstance(message, ReserveStock):
            return None
        if world.silent_sellers:
            self.reply_later()  # never answers: the request times out
            return None
        if (done := world.reserved.get(message.window_id)) is not None:
            return done
        have = world.stock.get((self.key, message.product_id), 0)
        if message.quantity > have:
            return ShopError(ErrorCode.INSUFFICIENT_STOCK, "not enough stock", {"available": have})
        world.stock[(self.key, message.product_id)] = have - message.quantity
        reply = StockReserved(message.product_id, message.quantity, message.window_id, have)
        world.reserved[message.window_id] = reply
        return reply


class WindowStub(Actor):
    def __init__(self, world: World) -> None:
        self.world = world

    def receive(self, message: Any) -> Any:
        self.world.window_inbox.append((self.key, message))
        return None


class ListSink:
    def __init__(self) -> None:
        self.entries: list[OutboxEntry] = []

    async def publish(self, entries: Sequence[OutboxEntry]) -> None:
        self.entries.extend(entries)


@asynccontextmanager
async def shop(
    world: World,
    journal: MemoryJournal | None = None,
    *,
    settings: Settings = SETTINGS,
    epoch: float = EPOCH,
    sink: ListSink | None = None,
    campaign_cls: type[CampaignActor] = CampaignActor,
) -> AsyncIterator[ActorTestKit]:
    kit = ActorTestKit(journal=journal or MemoryJournal(), epoch=epoch, outbox_sink=sink)
    async with kit:
        system = kit.system
        system.register("product", lambda: ProductStub(world), cls=ProductStub)
        system.register("seller", lambda: SellerStub(world), cls=SellerStub)
        system.register("window", lambda: WindowStub(world), cls=WindowStub)
        system.register("campaign", lambda: campaign_cls(settings), cls=campaign_cls)
        system.register("decision", lambda: DecisionActor(settings), cls=DecisionActor)
        yield kit


def listing(
    seller: str = "s1",
    *,
    floor: int = 800,
    list_: int = 1000,
    stock: int = 50,
    max_active: int = 3,
    auto: bool = True,
) -> ListingSummary:
    return ListingSummary(
        seller_id=seller,
        title="Grinder",
        list_price_minor=list_,
        floor_price_minor=floor,
        stock=stock,
        currency="TRY",
        max_active_windows=max_active,
        auto_approve=auto,
    )


def set_product(
    world: World,
    pid: str,
    listings: list[ListingSummary],
    intents: list[tuple[str, int, int]] = INTENTS,
) -> ProductState:
    state = ProductState(
        product_id=pid,
        score=12.0,
        score_as_of=EPOCH,
        intents=[IntentSummary(b, f"i-{pid}-{b}", q, p, EPOCH + 86_400) for b, q, p in intents],
        listings=listings,
    )
    world.products[pid] = state
    for x in listings:
        world.stock[(x.seller_id, pid)] = x.stock
    return state


def signal(kit: ActorTestKit, pid: str, world: World) -> None:
    state = world.products[pid]
    kit.system.ref("campaign", "main").tell(
        DemandSignal(pid, state.score, len(state.intents), sum(i.quantity for i in state.intents))
    )


async def get_decision(kit: ActorTestKit, did: str) -> DecisionView | ShopError:
    reply = await kit.system.ref("decision", did).ask(
        Request(kind=CommandKind.DECISION_GET, body=GetDecision())
    )
    assert isinstance(reply, DecisionView | ShopError)
    return reply


async def decision(kit: ActorTestKit, did: str) -> DecisionView:
    view = await get_decision(kit, did)
    assert isinstance(view, DecisionView), view
    return view


async def unknown(kit: ActorTestKit, did: str) -> bool:
    reply = await get_decision(kit, did)
    return isinstance(reply, ShopError) and reply.code is ErrorCode.UNKNOWN_DECISION


def codes(view: DecisionView) -> list[str]:
    return [r.code for r in view.reasons]


def ended(wid: str, pid: str = "p1", seller: str = "s1") -> WindowEnded:
    return WindowEnded(wid, seller, pid, "closed", "succeeded")


# -- deciding ------------------------------------------------------------------------------------


async def test_below_the_minimum_nothing_is_proposed_and_no_action_is_recorded_once() -> None:
    world, sink = World(), ListSink()
    set_product(world, "p1", [listing()], INTENTS[:1])  # 2 units < 4
    async with shop(world, sink=sink) as kit:
        signal(kit, "p1", world)
        await kit.advance(10)
        view = await decision(kit, "d-p1-1")
        assert view.outcome == "no_action"
        assert codes(view) == ["demand_below_minimum"]
        assert (view.reasons[0].value, view.reasons[0].threshold) == (2, 4)
        assert view.offer is None and view.window_id is None
        assert view.inputs["demand.open_quantity"] == 2
        assert view.inputs["settings.campaign_min_quantity"] == 4
        assert view.made_at == format_time(EPOCH + 10)
        # Evaluated again on the next signal, the same outcome is not recorded again.
        signal(kit, "p1", world)
        await kit.advance(10)
        assert world.snapshots == ["p1", "p1"]
        assert await unknown(kit, "d-p1-2")
        assert world.seller_inbox == [] and world.window_inbox == []
    [entry] = [e for e in sink.entries if ".events." in e.subject]
    assert entry.subject == "iceshop.events.decision.d-p1-1.made"
    assert entry.id == "decision.d-p1-1.1"
    body = msgspec.json.decode(entry.payload)
    assert body["type"] == "made" and body["seq"] == 1
    assert body["data"]["outcome"] == "no_action" and "inputs" not in body["data"]


@pytest.mark.parametrize(
    ("floor", "list_", "price", "total", "per_buyer"),
    [
        (800, 1000, 900, 8, 3),  # the lowest accepting limit, b4's 900
        (800, 880, 880, 8, 3),  # clamped to the list price
        (950, 1000, 950, 6, 2),  # only b1-b3 accept the floor
    ],
)
async def test_a_proposal_lies_within_the_sellers_bounds_with_reasons_and_inputs(
    floor: int, list_: int, price: int, total: int, per_buyer: int
) -> None:
    world = World()
    state = set_product(world, "p1", [listing(floor=floor, list_=list_)])
    async with shop(world) as kit:
        signal(kit, "p1", world)
        await kit.advance(10)
        now = EPOCH + 10
        assert world.reservations() == [ReserveStock("p1", total, "w-p1-1")]
        [(key, window)] = world.window_inbox
        assert key == "w-p1-1"
        assert window == CreateWindow(
            product_id="p1",
            seller_id="s1",
            decision_id="d-p1-1",
            unit_price_minor=price,
            currency="TRY",
            quantity_total=total,
            min_participants=3,
            max_per_buyer=per_buyer,
            activates_at=now + 60,
            expires_at=now + 660,
        )
        assert floor <= window.unit_price_minor <= list_
        # The contract's sizing: a sell-out always reaches the tipping point.
        assert window.quantity_total >= max(1, window.min_participants)
        assert window.max_per_buyer * (window.min_participants - 1) < window.quantity_total

        view = await decision(kit, "d-p1-1")
        assert view.outcome == "window_proposed"
        assert view.window_id == "w-p1-1" and view.offer is None
        assert 1 <= len(view.reasons) <= 4
        assert codes(view) == [
            "demand_sufficient",
            "price_accepted",
            "seller_selected",
            "window_sized",
        ]
        assert view.reasons[3].value == total and view.reasons[3].threshold == 50
        # Every number the policy used: the same inputs, evaluated directly.
        expected = evaluate(
            "p1",
            now,
            DemandScore(score=state.score, as_of=state.score_as_of),
            [
                SellerListing(
                    seller=SellerView(seller_id="s1"),
                    listing=ListingView(
                        seller_id="s1",
                        product_id="p1",
                        list_price_minor=list_,
                        floor_price_minor=floor,
                        stock=50,
                        currency="TRY",
                    ),
                )
            ],
            [
                IntentView(
                    intent_id=i.intent_id,
                    buyer_id=i.buyer_id,
                    quantity=i.quantity,
                    max_price_minor=i.max_price_minor,
                )
                for i in state.intents
            ],
            policy_settings(SETTINGS),
            CampaignState(),
        )
        assert view.inputs == numeric_inputs(expected.inputs)
        for key in (
            "now",
            "settings.cooldown_s",
            "state.open_windows",
            "demand.score",
            "demand.open_quantity",
            "seller.s1.floor_price_minor",
            "seller.s1.unit_price_minor",
            "seller.s1.active_windows",
            "window.max_per_buyer",
            "window.activates_at",
        ):
            assert key in view.inputs, key
        assert view.inputs["demand.open_quantity"] == 10
        assert view.inputs["seller.s1.unit_price_minor"] == price
        assert view.inputs["window.quantity_total"] == total
        assert view.inputs["demand.score"] == pytest.approx(12.0 * 0.5 ** (10 / 3600))
        # The seller's stock was set aside once.
        assert world.stock[("s1", "p1")] == 50 - total


async def test_cooldown_stops_a_second_proposal_for_the_same_product() -> None:
    world = World()
    set_product(world, "p1", [listing()])
    async with shop(world) as kit:
        signal(kit, "p1", world)
        await kit.advance(10)  # t=10: proposed
        assert len(world.reservations()) == 1
        await kit.advance(10)  # t=20: the window is open, and the cooldown runs
        view = await decision(kit, "d-p1-2")
        assert view.outcome == "deferred"
        assert codes(view)[:2] == ["window_open", "cooldown_active"]
        assert view.window_id is None and view.offer is None
        assert view.inputs["state.open_windows"] == 1
        await kit.advance(50)  # the same deferral is not recorded on every tick
        assert await unknown(kit, "d-p1-3")
        kit.system.ref("campaign", "main").tell(ended("w-p1-1"))
        await kit.advance(10)  # t=80: the window ended; the cooldown alone defers
        view = await decision(kit, "d-p1-3")
        assert view.outcome == "deferred" and codes(view)[0] == "cooldown_active"
        assert "window_open" not in codes(view)
        assert view.reasons[0].value == 70 and view.reasons[0].threshold == 300
        assert len(world.reservations()) == 1
        await kit.advance(229)  # t=309: still cooling down
        assert len(world.reservations()) == 1
        await kit.advance(1)  # t=310: 300 s after the proposal
        assert world.reservations()[-1] == ReserveStock("p1", 8, "w-p1-4")
        assert (await decision(kit, "d-p1-4")).outcome == "window_proposed"
        assert [k for k, _ in world.window_inbox] == ["w-p1-1", "w-p1-4"]


async def test_a_seller_at_capacity_defers_until_its_window_ends() -> None:
    world = World()
    set_product(world, "p1", [listing(max_active=1)])
    set_product(world, "p2", [listing(max_active=1)])
    async with shop(world) as kit:
        signal(kit, "p1", world)
        await kit.advance(10)
        assert [k for k, _ in world.window_inbox] == ["w-p1-1"]
        signal(kit, "p2", world)
        await kit.advance(10)
        view = await decision(kit, "d-p2-1")
        assert view.outcome == "deferred" and codes(view)[0] == "seller_at_capacity"
        assert (view.reasons[0].value, view.reasons[0].threshold) == (1, 1)
        assert view.inputs["seller.s1.active_windows"] == 1
        assert [r.window_id for r in world.reservations()] == ["w-p1-1"]
        kit.system.ref("campaign", "main").tell(ended("w-p1-1"))
        await kit.advance(10)
        assert [r.window_id for r in world.reservations()] == ["w-p1-1", "w-p2-2"]
        assert (await decision(kit, "d-p2-2")).window_id == "w-p2-2"


async def test_stock_gone_at_reservation_records_a_deferral_and_no_window() -> None:
    world = World()
    set_product(world, "p1", [listing(stock=50)])
    world.stock[("s1", "p1")] = 3  # the seller has sold most of it meanwhile
    async with shop(world) as kit:
        signal(kit, "p1", world)
        await kit.advance(10)
        assert world.reservations() == [ReserveStock("p1", 8, "w-p1-1")]
        assert world.window_inbox == []
        view = await decision(kit, "d-p1-1")
        assert view.outcome == "deferred" and view.window_id is None
        assert codes(view) == [
            "reservation_failed",
            "demand_sufficient",
            "price_accepted",
            "seller_selected",
        ]
        assert (view.reasons[0].value, view.reasons[0].threshold) == (8, 3)
        # No window, so no cooldown: the next tick tries again with a new id.
        await kit.advance(10)
        assert [r.window_id for r in world.reservations()] == ["w-p1-1", "w-p1-2"]


# -- offers ------------------------------------------------------------------------------------


async def test_an_offer_approved_by_the_seller_becomes_a_window() -> None:
    world = World()
    set_product(world, "p1", [listing(auto=False)])
    async with shop(world) as kit:
        signal(kit, "p1", world)
        await kit.advance(10)
        [offer] = world.offers()
        assert offer.offer_id == "o-p1-1" and offer.window_id == "w-p1-1"
        assert offer.decision_id == "d-p1-1" and offer.unit_price_minor == 900
        assert (offer.quantity, offer.min_participants, offer.max_per_buyer) == (8, 3, 3)
        assert world.reservations() == [] and world.window_inbox == []
        view = await decision(kit, "d-p1-1")
        assert view.outcome == "window_proposed" and view.window_id is None
        assert view.offer is not None and view.offer.status == "pending"
        assert view.offer.activates_at == format_time(EPOCH + 70)

        kit.system.ref("campaign", "main").tell(OfferDecided("o-p1-1", "d-p1-1", "s1", "approved"))
        await kit.settle()
        assert world.reservations() == [ReserveStock("p1", 8, "w-p1-1")]
        assert [(k, w.unit_price_minor) for k, w in world.window_inbox] == [("w-p1-1", 900)]
        view = await decision(kit, "d-p1-1")
        assert view.window_id == "w-p1-1"
        assert view.offer is not None and view.offer.status == "approved"
        # A repeated approval changes nothing.
        kit.system.ref("campaign", "main").tell(OfferDecided("o-p1-1", "d-p1-1", "s1", "approved"))
        await kit.settle()
        assert len(world.reservations()) == 1 and len(world.window_inbox) == 1


async def test_a_rejected_offer_creates_no_window_and_frees_the_sellers_slot() -> None:
    world = World()
    set_product(world, "p1", [listing(auto=False, max_active=1)])
    set_product(world, "p2", [listing(auto=False, max_active=1)])
    async with shop(world) as kit:
        signal(kit, "p1", world)
        await kit.advance(10)
        signal(kit, "p2", world)
        await kit.advance(10)  # the pending offer holds the seller's only slot
        assert codes(await decision(kit, "d-p2-1"))[0] == "seller_at_capacity"
        assert codes(await decision(kit, "d-p1-2"))[0] == "window_open"
        kit.system.ref("campaign", "main").tell(OfferDecided("o-p1-1", "d-p1-1", "s1", "rejected"))
        await kit.advance(10)
        view = await decision(kit, "d-p1-1")
        assert view.offer is not None and view.offer.status == "rejected"
        assert view.window_id is None
        assert world.reservations() == [] and world.window_inbox == []
        # The slot is free: p2 gets its offer; p1 waits for its cooldown, not a window.
        assert [o.offer_id for o in world.offers()] == ["o-p1-1", "o-p2-2"]
        view = await decision(kit, "d-p1-3")
        assert view.outcome == "deferred" and codes(view)[0] == "cooldown_active"
        assert "window_open" not in codes(view)


async def test_an_offer_without_an_answer_expires_after_its_activation() -> None:
    world = World()
    set_product(world, "p1", [listing(auto=False)])
    async with shop(world) as kit:
        signal(kit, "p1", world)
        await kit.advance(10)  # offered; activation at t=70, grace 60 s
        await kit.advance(119)
        view = await decision(kit, "d-p1-1")
        assert view.offer is not None and view.offer.status == "pending"
        await kit.advance(1)
        view = await decision(kit, "d-p1-1")
        assert view.offer is not None and view.offer.status == "expired"
        assert world.reservations() == [] and world.window_inbox == []


# -- time and restarts -------------------------------------------------------------------------


async def test_the_interval_timer_evaluates_on_time() -> None:
    world = World()
    set_product(world, "p1", [listing()], INTENTS[:1])
    async with shop(world) as kit:
        signal(kit, "p1", world)  # activates the campaign at t=0; ticks at 10, 20, ...
        await kit.advance_to(9.999)
        assert world.snapshots == []
        await kit.advance_to(10)
        assert world.snapshots == ["p1"]
        await kit.advance_to(19.999)  # below the minimum, no new signal: not re-evaluated
        assert world.snapshots == ["p1"]
        signal(kit, "p1", world)
        await kit.advance_to(20)
        assert world.snapshots == ["p1", "p1"]
        set_product(world, "p2", [listing()])  # enough demand: evaluated on every tick
        signal(kit, "p2", world)
        await kit.advance_to(50)
        assert world.snapshots.count("p2") == 3


class SnapshottingCampaign(CampaignActor):
    snapshot_every = 2


@pytest.mark.parametrize("campaign_cls", [CampaignActor, SnapshottingCampaign])
async def test_a_restart_keeps_the_counters_and_the_cooldown(
    campaign_cls: type[CampaignActor],
) -> None:
    world, journal = World(), MemoryJournal()
    set_product(world, "p1", [listing()])
    async with shop(world, journal, campaign_cls=campaign_cls) as kit:
        signal(kit, "p1", world)
        await kit.advance(10)  # d-p1-1 / w-p1-1
        kit.system.ref("campaign", "main").tell(ended("w-p1-1"))
        await kit.settle()
        stopped_at = kit.clock.time()
    assert stopped_at == EPOCH + 10
    async with shop(world, journal, epoch=stopped_at, campaign_cls=campaign_cls) as kit:
        kit.system.ref("campaign", "main").tell(Evaluate())  # the node starts it at boot
        await kit.advance(10)  # the timer runs without any signal: p1 is watched
        view = await decision(kit, "d-p1-2")
        assert view.outcome == "deferred" and codes(view)[0] == "cooldown_active"
        assert view.inputs["state.last_proposed_at"] == EPOCH + 10
        assert (await decision(kit, "d-p1-1")).window_id == "w-p1-1"
        await kit.advance(290)  # 300 s after the proposal
        assert [r.window_id for r in world.reservations()] == ["w-p1-1", "w-p1-3"]
        assert [k for k, _ in world.window_inbox] == ["w-p1-1", "w-p1-3"]


async def test_a_reservation_cut_off_by_a_restart_is_retried_with_the_same_ids() -> None:
    world, journal = World(), MemoryJournal()
    set_product(world, "p1", [listing()])
    world.silent_sellers = True
    async with shop(world, journal) as kit:
        signal(kit, "p1", world)
        await kit.advance(10)
        assert world.reservations() == [ReserveStock("p1", 8, "w-p1-1")]
        assert world.window_inbox == []
    world.silent_sellers = False
    async with shop(world, journal, epoch=EPOCH + 10) as kit:
        kit.system.ref("campaign", "main").tell(Evaluate())
        await kit.settle()
        assert world.reservations()[-1] == ReserveStock("p1", 8, "w-p1-1")
        assert [k for k, _ in world.window_inbox] == ["w-p1-1"]
        view = await decision(kit, "d-p1-1")
        assert view.outcome == "window_proposed" and view.window_id == "w-p1-1"
        assert world.stock[("s1", "p1")] == 42


async def test_a_reservation_without_an_answer_is_asked_again_on_the_next_tick() -> None:
    world = World()
    set_product(world, "p1", [listing()])
    world.silent_sellers = True
    async with shop(world) as kit:
        signal(kit, "p1", world)
        await kit.advance(10)
        world.silent_sellers = False
        await kit.advance(10)  # the first request timed out at t=15; asked again at t=20
        assert [r.window_id for r in world.reservations()] == ["w-p1-1", "w-p1-1"]
        assert [k for k, _ in world.window_inbox] == ["w-p1-1"]


async def test_a_product_with_inconsistent_listings_is_skipped_and_the_rest_go_on() -> None:
    world = World()
    set_product(
        world, "p1", [listing("s1"), msgspec.structs.replace(listing("s2"), currency="EUR")]
    )
    set_product(world, "p2", [listing("s1")])
    async with shop(world) as kit:
        signal(kit, "p1", world)
        signal(kit, "p2", world)
        await kit.advance(10)
        assert await unknown(kit, "d-p1-1")
        assert [r.window_id for r in world.reservations()] == ["w-p2-1"]
        await kit.advance(10)  # still evaluated, still skipped, the campaign keeps going
        assert world.snapshots.count("p1") == 2 and await unknown(kit, "d-p1-1")


def test_ids_are_deterministic_and_never_longer_than_64() -> None:
    assert (decision_id("p1", 7), window_id("p1", 7), offer_id("p1", 7)) == (
        "d-p1-7",
        "w-p1-7",
        "o-p1-7",
    )
    long_a, long_b = "x" * 63 + "a", "x" * 63 + "b"
    for make in (decision_id, window_id, offer_id):
        a, b = make(long_a, 12345), make(long_b, 12345)
        assert len(a) <= 64 and len(b) <= 64
        assert a != b and a == make(long_a, 12345)
        assert a.endswith("-12345")
