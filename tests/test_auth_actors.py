"""The rules only an actor can decide, and the ``apikey`` actor, on virtual time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from actors import Actor
from actors.errors import CommitFailed
from actors.journal import MemoryJournal
from actors.nats import Msg
from actors.testkit import ActorTestKit
from iceshop.auth import APIKEY_KIND, REGISTRY_KEY, ApiKeyActor, ApiKeyRegistry, LoadKeys
from iceshop.auth.apikey_actor import REFRESH_INTERVAL_S
from iceshop.auth.apikeys import format_api_key, new_record
from iceshop.auth.service import NodeAuth
from iceshop.buyer import KIND as BUYER
from iceshop.buyer import BuyerActor
from iceshop.decision import DecisionActor
from iceshop.protocol import AddIntent, IntentAccepted, Principal, RecordDecision, Request
from iceshop.settings import Settings
from iceshop.wire import (
    ApiKeyView,
    CancelIntent,
    CommandKind,
    CreateApiKey,
    DecisionView,
    ErrorCode,
    GetDecision,
    OfferView,
    RegisterBuyer,
    RevokeApiKey,
    ShopError,
    SubmitIntent,
    format_time,
)

pytestmark = pytest.mark.anyio

ADMIN = Principal("root", "admin")


def create(key_id: str, role: str = "gateway", principal: str | None = None) -> Request:
    body = CreateApiKey(role=role, principal=principal)  # type: ignore[arg-type]
    return Request(CommandKind.APIKEY_CREATE, body, {"key_id": key_id}, ADMIN)


def revoke(key_id: str, principal: Principal = ADMIN) -> Request:
    return Request(CommandKind.APIKEY_REVOKE, RevokeApiKey(), {"key_id": key_id}, principal)


def code(reply: Any) -> ErrorCode:
    assert isinstance(reply, ShopError), reply
    return reply.code


# -- the apikey actor ------------------------------------------------------------------------


async def test_the_registry_follows_the_journal_also_after_a_failed_commit() -> None:
    journal = MemoryJournal()
    registry = ApiKeyRegistry()
    settings = Settings()
    async with ActorTestKit(journal=journal) as kit:
        kit.system.register(APIKEY_KIND, lambda: ApiKeyActor(settings, registry), cls=ApiKeyActor)
        keys = kit.system.ref(APIKEY_KIND, REGISTRY_KEY)
        assert await keys.ask(LoadKeys()) == 0
        made = await keys.ask(create("k1"))
        assert isinstance(made, ApiKeyView) and made.api_key is not None
        assert registry.verify(made.api_key) == Principal("k1", "gateway")
        assert code(await keys.ask(revoke("k1", Principal("S1", "seller")))) is ErrorCode.FORBIDDEN

        journal.fail_next_write()
        with pytest.raises(CommitFailed):
            await keys.ask(revoke("k1"))
        await kit.advance(1.0)  # the actor is rebuilt from its journal
        assert await keys.ask(LoadKeys()) == 1
        assert registry.verify(made.api_key).sub == "k1"  # the revoke was not stored

        journal.fail_next_write()
        with pytest.raises(CommitFailed):
            await keys.ask(create("k2"))
        await kit.advance(1.0)
        assert await keys.ask(LoadKeys()) == 1
        assert registry.get("k2") is None  # nor the create

        done = await keys.ask(revoke("k1"))
        assert isinstance(done, ApiKeyView) and done.status == "revoked"
        with pytest.raises(ShopError, match="revoked"):
            registry.verify(made.api_key)

    # a new system on the same journal: the registry is loaded before anything is served
    fresh = ApiKeyRegistry()
    async with ActorTestKit(journal=journal) as kit:
        kit.system.register(APIKEY_KIND, lambda: ApiKeyActor(settings, fresh), cls=ApiKeyActor)
        assert await kit.system.ref(APIKEY_KIND, REGISTRY_KEY).ask(LoadKeys()) == 1
        stored = fresh.get("k1")
        assert stored is not None and stored.revoked
        secret = made.api_key.rsplit("_", 1)[1].encode()
        recovered = await journal.recover([(APIKEY_KIND, REGISTRY_KEY)])
        assert all(secret not in e for e in recovered[0].events)


async def test_a_change_made_through_another_node_applies_here_without_its_event() -> None:
    """Two nodes over one journal, and the revocation's announcement never reaches the
    second: its actor's refresh still applies it within one interval (and brings it keys
    created elsewhere)."""
    journal = MemoryJournal()
    settings = Settings()
    here, there = ApiKeyRegistry(), ApiKeyRegistry()
    interval = REFRESH_INTERVAL_S
    async with ActorTestKit(journal=journal) as a, ActorTestKit(journal=journal) as b:

        def actor(registry: ApiKeyRegistry) -> Callable[[], ApiKeyActor]:
            return lambda: ApiKeyActor(settings, registry, refresh_s=interval)

        a.system.register(APIKEY_KIND, actor(here), cls=ApiKeyActor)
        b.system.register(APIKEY_KIND, actor(there), cls=ApiKeyActor)
        keys_a = a.system.ref(APIKEY_KIND, REGISTRY_KEY)
        keys_b = b.system.ref(APIKEY_KIND, REGISTRY_KEY)
        assert await keys_b.ask(LoadKeys()) == 0
        made = await keys_a.ask(create("k1"))
        assert isinstance(made, ApiKeyView) and made.api_key is not None
        assert there.get("k1") is None
        keys_b.stop()  # what b does on the "created" event: reload (NodeAuth.reload_api_keys)
        assert await keys_b.ask(LoadKeys()) == 1
        assert there.verify(made.api_key).sub == "k1"

        await keys_a.ask(revoke("k1"))
        with pytest.raises(ShopError, match="revoked"):
            here.verify(made.api_key)  # at once where it was revoked
        await b.advance(interval - 1.0)
        assert there.verify(made.api_key).sub == "k1"  # not yet refreshed
        await b.advance(1.0)
        with pytest.raises(ShopError, match="revoked"):
            there.verify(made.api_key)  # bounded by the refresh interval
        assert code(await keys_b.ask(create("k1"))) is ErrorCode.IDEMPOTENCY_CONFLICT
        done = await keys_b.ask(revoke("k1"))  # idempotent: it knows k1 is revoked
        assert isinstance(done, ApiKeyView) and done.status == "revoked"

        # b's actor was activated again at the journal's position: its next write lands.
        k2 = await keys_b.ask(create("k2"))
        assert isinstance(k2, ApiKeyView) and k2.api_key is not None
        await a.advance(interval)
        assert here.verify(k2.api_key).sub == "k2"
        # a took b's write the same way: its own next write lands, and b's timer, armed
        # again by its new activation, brings the revocation over.
        done = await keys_a.ask(revoke("k2"))
        assert isinstance(done, ApiKeyView) and done.status == "revoked"
        await b.advance(interval)
        with pytest.raises(ShopError, match="revoked"):
            there.verify(k2.api_key)


async def test_buyer_and_seller_keys_must_name_their_principal() -> None:
    registry = ApiKeyRegistry()
    async with ActorTestKit(journal=MemoryJournal()) as kit:
        kit.system.register(APIKEY_KIND, lambda: ApiKeyActor(Settings(), registry), cls=ApiKeyActor)
        keys = kit.system.ref(APIKEY_KIND, REGISTRY_KEY)
        refused = await keys.ask(create("k1", "buyer"))
        assert code(refused) is ErrorCode.INVALID_REQUEST
        assert refused.details == {"field": "principal"}
        made = await keys.ask(create("k1", "buyer", "B7"))
        assert isinstance(made, ApiKeyView) and made.principal == "B7"
        assert code(await keys.ask(create("k1", "buyer", "B7"))) is ErrorCode.IDEMPOTENCY_CONFLICT
        assert code(await keys.ask(revoke("k9"))) is ErrorCode.INVALID_REQUEST


async def test_a_revocation_heard_from_another_node_applies_here() -> None:
    auth = NodeAuth(Settings(), ActorTestKit().clock)
    record, secret = new_record("k1", "gateway", "k1", None, now=0.0)
    auth.apikeys.put(record)
    view = ApiKeyView(
        key_id="k1",
        role="gateway",
        principal="k1",
        note=None,
        status="revoked",
        created_at=format_time(0.0),
        revoked_at=format_time(10.0),
    )
    body = {"event_id": "apikey.k1.2", "type": "revoked", "at": view.revoked_at, "seq": 2}
    data = msgspec.json.encode({**body, "data": view})
    subject = "iceshop.events.apikey.k1.revoked"
    await auth.on_key_event(Msg(None, subject=subject, data=data))  # type: ignore[arg-type]
    with pytest.raises(ShopError, match="revoked"):
        auth.apikeys.verify(format_api_key("k1", secret))
    await auth.on_key_event(Msg(None, subject=subject, data=b"{"))  # type: ignore[arg-type]


# -- decisions: admins and the seller of the offer ----------------------------------------------


def decision(offer_seller: str | None) -> DecisionView:
    offer = None
    if offer_seller is not None:
        offer = OfferView(
            offer_id="O1",
            seller_id=offer_seller,
            unit_price_minor=900,
            quantity=3,
            activates_at=format_time(60.0),
            expires_at=format_time(600.0),
            status="pending",
        )
    return DecisionView(
        decision_id="D1",
        product_id="P1",
        made_at=format_time(0.0),
        outcome="window_proposed" if offer else "no_action",
        reasons=[],
        offer=offer,
        window_id=None,
        inputs={},
    )


@pytest.mark.parametrize(
    ("offer_seller", "principal", "allowed"),
    [
        ("S1", Principal("S1", "seller"), True),
        ("S1", Principal("S2", "seller"), False),
        ("S1", Principal("B1", "buyer"), False),
        ("S1", Principal("g", "gateway"), False),
        ("S1", ADMIN, True),
        ("S1", None, True),
        (None, Principal("S1", "seller"), False),
        (None, ADMIN, True),
    ],
)
async def test_a_decision_is_for_admins_and_its_offers_seller(
    offer_seller: str | None, principal: Principal | None, allowed: bool
) -> None:
    async with ActorTestKit(journal=MemoryJournal()) as kit:
        kit.system.register("decision", lambda: DecisionActor(Settings()), cls=DecisionActor)
        ref = kit.system.ref("decision", "D1")
        get = Request(CommandKind.DECISION_GET, GetDecision(), {}, principal)
        if principal is not None and principal.role == "seller":
            # no telling a seller which decisions exist
            assert code(await ref.ask(get)) is ErrorCode.FORBIDDEN
        await ref.ask(RecordDecision(decision(offer_seller)))
        reply = await ref.ask(get)
        if allowed:
            assert isinstance(reply, DecisionView) and reply.decision_id == "D1"
        else:
            assert code(reply) is ErrorCode.FORBIDDEN


# -- open intents per buyer -------------------------------------------------------------------


class Product(Actor):
    def receive(self, message: Any) -> Any:
        if isinstance(message, AddIntent):
            return IntentAccepted(product_id=self.key, intent_id=message.intent_id, currency="TRY")
        return None


async def test_a_buyer_holds_at_most_the_configured_open_intents() -> None:
    settings = Settings(max_open_intents_per_buyer=2)
    async with ActorTestKit(journal=MemoryJournal()) as kit:
        kit.system.register(BUYER, lambda: BuyerActor(settings), cls=BuyerActor)
        kit.system.register("product", Product)
        buyer = kit.system.ref(BUYER, "B1")
        await buyer.ask(
            Request(CommandKind.BUYER_REGISTER, RegisterBuyer(name="n", phone="+905551112233"))
        )

        def submit(intent_id: str, product_id: str) -> Request:
            body = SubmitIntent(intent_id=intent_id, product_id=product_id, max_price_minor=1)
            return Request(CommandKind.INTENT_SUBMIT, body)

        assert (await buyer.ask(submit("i1", "P1"))).status == "open"
        assert (await buyer.ask(submit("i2", "P2"))).status == "open"
        refused = await buyer.ask(submit("i3", "P3"))
        assert code(refused) is ErrorCode.LIMIT_EXCEEDED
        assert refused.details == {"open_intents": 2, "max_open_intents": 2}
        assert (await buyer.ask(submit("i4", "P1"))).status == "open"  # replaces i1
        assert (await buyer.ask(submit("i2", "P2"))).status == "open"  # a repeat: same reply
        cancel = Request(CommandKind.INTENT_CANCEL, CancelIntent(), {"intent_id": "i4"})
        assert (await buyer.ask(cancel)).status == "cancelled"
        assert (await buyer.ask(submit("i3", "P3"))).status == "open"  # room again
