"""Review regressions for the window and the campaign: the edges where a timer and a
command meet, and where a node stops between two steps."""

from __future__ import annotations

from typing import Any

import pytest

from iceshop.protocol import ReturnStock, WindowEnded
from iceshop.wire import JoinReply, ShopError
from tests.window_support import ACTIVATE_IN, EXPIRE_IN, Shop

pytestmark = pytest.mark.anyio


def code(reply: Any) -> str:
    assert isinstance(reply, ShopError), reply
    return reply.code.value


def lag(shop: Shop, seconds: float) -> None:
    """Move the wall clock without delivering the timers due meanwhile: the timer
    service is late (a busy loop, a node that just came back), commands are not."""
    clock = shop.k.clock
    clock.set(clock.monotonic() + seconds)


# -- time decides the state, not the timer's delivery ---------------------------------------


async def test_a_join_after_expiry_is_refused_even_if_the_expiry_timer_is_late() -> None:
    async with Shop() as shop:
        await shop.create(min_participants=1)
        await shop.advance(ACTIVATE_IN)
        assert isinstance(await shop.join("j1", "b1"), JoinReply)
        lag(shop, EXPIRE_IN - ACTIVATE_IN + 0.5)
        assert code(await shop.join("j2", "b2")) == "window_closed"
        view = await shop.get()
        assert (view.state, view.close_reason, view.outcome) == ("closed", "expired", "succeeded")
        assert (view.quantity_reserved, view.participants) == (1, 1)
        assert [e["type"] for e in shop.sink.events()] == [
            "created",
            "activated",
            "joined",
            "closed",
        ]
        assert shop.peers.of("seller") == [ReturnStock("P1", 4, "W1")]


async def test_an_admin_cancel_after_expiry_cannot_undo_a_succeeded_window() -> None:
    async with Shop() as shop:
        await shop.create(min_participants=1)
        await shop.advance(ACTIVATE_IN)
        await shop.join("j1", "b1")
        lag(shop, EXPIRE_IN)
        assert code(await shop.cancel()) == "window_closed"
        view = await shop.get()
        assert (view.state, view.outcome) == ("closed", "succeeded")
        assert shop.peers.of("campaign") == [WindowEnded("W1", "S1", "P1", "closed", "succeeded")]


async def test_a_join_at_activation_time_is_taken_even_if_the_activation_timer_is_late() -> None:
    async with Shop() as shop:
        await shop.create(min_participants=1)
        lag(shop, ACTIVATE_IN)
        reply = await shop.join("j1", "b1")
        assert isinstance(reply, JoinReply) and reply.status == "reserved"
        assert [e["type"] for e in shop.sink.events()] == ["created", "activated", "joined"]


async def test_a_no_action_decision_lost_in_a_crash_is_recorded_after_restart() -> None:
    """The campaign commits a decision, then the node dies before the decision actor
    got it: on start the campaign hands it over again."""
    from actors import Actor
    from actors.journal import MemoryJournal
    from actors.testkit import ActorTestKit
    from iceshop.campaign import CampaignActor
    from iceshop.decision import DecisionActor
    from iceshop.protocol import Evaluate
    from tests.test_campaign import (
        EPOCH,
        INTENTS,
        SETTINGS,
        ProductStub,
        SellerStub,
        WindowStub,
        World,
        get_decision,
        listing,
        set_product,
        signal,
    )

    class Lost(Actor):
        """Stands for a decision actor whose message died with the node."""

        def receive(self, message: object) -> object:
            return None

    world = World()
    set_product(world, "p1", [listing()], INTENTS[:1])  # below the minimum: no_action
    journal = MemoryJournal()
    for decision_cls in (Lost, DecisionActor):
        async with ActorTestKit(journal=journal, epoch=EPOCH) as kit:
            system = kit.system
            system.register("product", lambda: ProductStub(world), cls=ProductStub)
            system.register("seller", lambda: SellerStub(world), cls=SellerStub)
            system.register("window", lambda: WindowStub(world), cls=WindowStub)
            system.register("campaign", lambda: CampaignActor(SETTINGS), cls=CampaignActor)
            if decision_cls is Lost:
                system.register("decision", Lost)
                signal(kit, "p1", world)
                await kit.advance(10)
            else:
                system.register("decision", lambda: DecisionActor(SETTINGS), cls=DecisionActor)
                system.ref("campaign", "main").tell(Evaluate())  # the node starts it
                await kit.settle()
                view = await get_decision(kit, "d-p1-1")
                assert not isinstance(view, Exception), view
                assert view.outcome == "no_action"
