"""The buyer actor on virtual time with the in-memory journal, against a stub product.

The stub answers ``AddIntent`` like a product that lists everything except products
named ``ghost*`` (``unknown_product``) and ``mute*`` (never answers), and records every
message it gets, so each test can check exactly what the buyer told the product.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from actors import Actor, ActorRef, CommitFailed
from actors.journal import MemoryJournal
from actors.testkit import ActorTestKit
from iceshop.buyer import KIND, BuyerActor, BuyerState
from iceshop.buyer.directory import KnownBuyers
from iceshop.protocol import (
    AddIntent,
    BuyerKnown,
    CheckBuyer,
    IntentAccepted,
    IntentMatched,
    RemoveIntent,
    Request,
    ReservationReleased,
)
from iceshop.settings import Settings
from iceshop.wire import (
    CancelIntent,
    CancelIntentReply,
    CommandKind,
    ErrorCode,
    RegisterBuyer,
    RegisterBuyerReply,
    ShopError,
    SubmitIntent,
    SubmitIntentReply,
    encode,
    format_time,
)

pytestmark = pytest.mark.anyio

EPOCH = 1_800_000_000.0


class StubProduct(Actor):
    def __init__(self, seen: list[tuple[str, Any]]) -> None:
        self.seen = seen

    def receive(self, message: Any) -> Any:
        self.seen.append((self.key, message))
        if isinstance(message, AddIntent):
            if self.key.startswith("ghost"):
                return ShopError(ErrorCode.UNKNOWN_PRODUCT, "no listing", {"product_id": self.key})
            if self.key.startswith("mute"):
                self.reply_later()
                return None
            return IntentAccepted(product_id=self.key, intent_id=message.intent_id, currency="TRY")
        return None


class Rig:
    """A kit with the buyer kind and a stub product that records what it gets."""

    def __init__(self, kit: ActorTestKit, known: KnownBuyers | None = None) -> None:
        self.kit = kit
        self.product: list[tuple[str, Any]] = []
        settings = Settings()
        kit.system.register(KIND, lambda: BuyerActor(settings, known), cls=BuyerActor)
        seen = self.product
        kit.system.register("product", lambda: StubProduct(seen), cls=StubProduct)

    def buyer(self, key: str = "b1") -> ActorRef:
        return self.kit.system.ref(KIND, key)

    def state(self, key: str = "b1") -> BuyerState:
        actor = self.kit.system.kind(KIND).active[key]
        assert isinstance(actor, BuyerActor)
        return actor.state

    def told(self, type_: type) -> list[tuple[str, Any]]:
        """What the product got of ``type_`` since the last call (then forgotten)."""
        found = [(k, m) for k, m in self.product if isinstance(m, type_)]
        self.product.clear()
        return found


def kit_on(journal: MemoryJournal, epoch: float = EPOCH) -> ActorTestKit:
    return ActorTestKit(journal=journal, epoch=epoch, sweep_interval=60.0)


def register(**fields: Any) -> Request:
    body = RegisterBuyer(**{"name": "Ayse", "phone": "+905551112233", **fields})
    return Request(kind=CommandKind.BUYER_REGISTER, body=body)


def submit(intent_id: str = "i1", product_id: str = "P1", **fields: Any) -> Request:
    body = SubmitIntent(
        **{"intent_id": intent_id, "product_id": product_id, "max_price_minor": 900, **fields}
    )
    return Request(kind=CommandKind.INTENT_SUBMIT, body=body)


def cancel(intent_id: str) -> Request:
    return Request(
        kind=CommandKind.INTENT_CANCEL, body=CancelIntent(), ids={"intent_id": intent_id}
    )


def assert_error(reply: Any, code: ErrorCode) -> ShopError:
    assert isinstance(reply, ShopError), reply
    assert reply.code is code
    return reply


# -- registration -----------------------------------------------------------------------


async def test_register_is_an_upsert_with_defaults_only_on_creation() -> None:
    journal = MemoryJournal()
    async with kit_on(journal) as kit:
        rig = Rig(kit)
        b = rig.buyer()
        assert await b.ask(register(locale="en")) == RegisterBuyerReply(buyer_id="b1", created=True)
        profile = rig.state().profile
        assert profile is not None
        assert (profile.locale, profile.whatsapp_opt_in) == ("en", False)  # default opt-in

        await b.ask(submit())
        [(_, add)] = rig.told(AddIntent)
        assert (add.locale, add.whatsapp_opt_in, add.phone) == ("en", False, "+905551112233")

        # Omitted fields keep their stored values (locale stays "en", not the default).
        again = await b.ask(register(name="Ayse K", phone="+905559998877", whatsapp_opt_in=True))
        assert again == RegisterBuyerReply(buyer_id="b1", created=False)
        profile = rig.state().profile
        assert profile is not None
        assert (profile.name, profile.phone, profile.locale, profile.whatsapp_opt_in) == (
            "Ayse K",
            "+905559998877",
            "en",
            True,
        )
        # The product's copy of the contact details follows (same intent, re-added).
        [(_, update)] = rig.told(AddIntent)
        assert (update.intent_id, update.phone, update.whatsapp_opt_in, update.locale) == (
            "i1",
            "+905559998877",
            True,
            "en",
        )
        assert update.submitted_at == add.submitted_at and update.expires_at == add.expires_at

        # The same registration again changes nothing and writes nothing.
        writes = journal.writes
        same = await b.ask(register(name="Ayse K", phone="+905559998877"))
        assert same == RegisterBuyerReply(buyer_id="b1", created=False)
        assert journal.writes == writes
        assert rig.told(AddIntent) == []

    async with kit_on(journal) as kit:  # and it was durable
        rig = Rig(kit)
        assert (await rig.buyer().ask(register())).created is False


async def test_check_buyer() -> None:
    async with kit_on(MemoryJournal()) as kit:
        rig = Rig(kit)
        assert_error(await rig.buyer().ask(CheckBuyer()), ErrorCode.UNKNOWN_BUYER)
        await rig.buyer().ask(register())
        assert await rig.buyer().ask(CheckBuyer()) == BuyerKnown("b1")


async def test_a_registration_reaches_the_nodes_directory_only_once_stored() -> None:
    journal = MemoryJournal()
    known = KnownBuyers()
    async with kit_on(journal) as kit:
        rig = Rig(kit, known)
        journal.fail_next_write()
        with pytest.raises(CommitFailed):
            await rig.buyer("b1").ask(register())
        assert "b1" not in known  # the commit failed: not registered
        await kit.advance(5)  # the buyer's restart after the failed commit
        assert "b1" not in known
        await rig.buyer("b1").ask(register())
        assert "b1" in known
        await rig.buyer("b2").ask(register())
        assert len(known) == 2
    # A new node (a fresh directory) learns of b1 as soon as its actor starts.
    fresh = KnownBuyers()
    async with kit_on(journal) as kit:
        rig = Rig(kit, fresh)
        assert await rig.buyer("b1").ask(CheckBuyer()) == BuyerKnown("b1")
        assert "b1" in fresh and "b2" not in fresh
        assert_error(await rig.buyer("b3").ask(CheckBuyer()), ErrorCode.UNKNOWN_BUYER)
        assert "b3" not in fresh
    full = KnownBuyers(max_size=1)
    full.add("x")
    full.add("y")
    assert "x" in full and "y" not in full  # bounded: the window asks for the rest


# -- submit -------------------------------------------------------------------------------


async def test_submit_needs_a_registered_buyer_and_asks_nothing_otherwise() -> None:
    async with kit_on(MemoryJournal()) as kit:
        rig = Rig(kit)
        error = assert_error(await rig.buyer().ask(submit()), ErrorCode.UNKNOWN_BUYER)
        assert error.details == {"buyer_id": "b1"}
        assert rig.product == []


async def test_submit_opens_the_intent_after_the_product_accepts_it() -> None:
    async with kit_on(MemoryJournal()) as kit:
        rig = Rig(kit)
        b = rig.buyer()
        await b.ask(register(whatsapp_opt_in=True))
        reply = await b.ask(submit(quantity=2, max_price_minor=950, ttl_s=3600))
        assert reply == SubmitIntentReply(
            intent_id="i1", status="open", expires_at=format_time(EPOCH + 3600)
        )
        [(key, add)] = rig.told(AddIntent)
        assert key == "P1"
        assert add == AddIntent(
            buyer_id="b1",
            intent_id="i1",
            quantity=2,
            max_price_minor=950,
            submitted_at=EPOCH,
            expires_at=EPOCH + 3600,
            whatsapp_opt_in=True,
            locale="tr",
            phone="+905551112233",
        )
        intent = rig.state().intents["i1"]
        assert (intent.status, intent.quantity, intent.expires_at) == ("open", 2, EPOCH + 3600)


async def test_repeated_submit_replies_identically_and_conflicts_on_other_parameters() -> None:
    journal = MemoryJournal()
    async with kit_on(journal) as kit:
        rig = Rig(kit)
        b = rig.buyer()
        await b.ask(register())
        first = await b.ask(submit(ttl_s=600))
        await kit.advance(30)
        again = await b.ask(submit(ttl_s=600))
        assert encode(again) == encode(first)  # the same bytes on the wire
        assert len(rig.told(AddIntent)) == 1  # the repeat never reached the product
        for other in (
            submit(ttl_s=601),
            submit(quantity=2, ttl_s=600),
            submit(max_price_minor=901, ttl_s=600),
            submit(product_id="P2", ttl_s=600),
        ):
            error = assert_error(await b.ask(other), ErrorCode.IDEMPOTENCY_CONFLICT)
            assert error.details == {"intent_id": "i1"}
    async with kit_on(journal, EPOCH + 60) as kit:  # the record survives a restart
        rig = Rig(kit)
        assert encode(await rig.buyer().ask(submit(ttl_s=600))) == encode(first)
        # The repeat reaches no product; starting re-adds the open intent (a no-op there).
        [(product_id, readd)] = rig.product
        assert (product_id, readd.intent_id, readd.expires_at) == ("P1", "i1", EPOCH + 600)


async def test_unknown_product_is_passed_on_and_nothing_is_stored() -> None:
    journal = MemoryJournal()
    async with kit_on(journal) as kit:
        rig = Rig(kit)
        b = rig.buyer()
        await b.ask(register())
        error = assert_error(await b.ask(submit(product_id="ghost")), ErrorCode.UNKNOWN_PRODUCT)
        assert error.details == {"product_id": "ghost"}
        assert rig.state().intents == {}
        # Nothing stored, so the id is free for another product.
        assert (await b.ask(submit(product_id="P1"))).status == "open"


async def test_duplicate_submit_while_the_product_answers_waits_for_the_same_answer() -> None:
    async with kit_on(MemoryJournal()) as kit:
        rig = Rig(kit)
        b = rig.buyer()
        await b.ask(register())
        got: list[Any] = []
        b.tell(submit(), reply_to=got.append)
        b.tell(submit(), reply_to=got.append)
        b.tell(submit(quantity=3), reply_to=got.append)
        await kit.settle()
        assert len(rig.told(AddIntent)) == 1
        conflict, first, second = got  # the conflict is answered at once
        assert_error(conflict, ErrorCode.IDEMPOTENCY_CONFLICT)
        assert (
            first
            == second
            == SubmitIntentReply(
                intent_id="i1", status="open", expires_at=format_time(EPOCH + 86400)
            )
        )


async def test_a_product_that_does_not_answer_makes_submit_unavailable() -> None:
    async with kit_on(MemoryJournal()) as kit:
        rig = Rig(kit)
        b = rig.buyer()
        await b.ask(register())
        got: list[Any] = []
        b.tell(submit(product_id="mute"), reply_to=got.append)
        await kit.advance(BuyerActor.product_timeout_s - 0.5)
        assert got == []
        await kit.advance(1)
        [reply] = got
        assert assert_error(reply, ErrorCode.UNAVAILABLE).retryable
        assert rig.state().intents == {}


async def test_a_new_intent_replaces_the_open_one_for_the_same_product() -> None:
    async with kit_on(MemoryJournal()) as kit:
        rig = Rig(kit)
        b = rig.buyer()
        await b.ask(register())
        await b.ask(submit("i1", ttl_s=600))
        await b.ask(submit("i2", product_id="P2", ttl_s=600))
        rig.told(AddIntent)
        assert (await b.ask(submit("i3", ttl_s=600))).status == "open"
        assert rig.told(RemoveIntent) == [("P1", RemoveIntent("b1", "i1", "replaced"))]
        assert await b.ask(cancel("i1")) == CancelIntentReply(intent_id="i1", status="cancelled")
        assert (await b.ask(submit("i1", ttl_s=600))).status == "cancelled"
        statuses = {i: r.status for i, r in rig.state().intents.items()}
        assert statuses == {"i1": "cancelled", "i2": "open", "i3": "open"}
        # The replaced intent's expiry is gone: it never expires later.
        await kit.advance(700)
        expired = {m.intent_id for _, m in rig.told(RemoveIntent) if m.reason == "expired"}
        assert expired == {"i2", "i3"}


# -- cancel and expiry -------------------------------------------------------------------


async def test_cancel_is_idempotent_by_state() -> None:
    async with kit_on(MemoryJournal()) as kit:
        rig = Rig(kit)
        b = rig.buyer()
        error = assert_error(await b.ask(cancel("i1")), ErrorCode.UNKNOWN_INTENT)
        assert error.details == {"intent_id": "i1"}
        await b.ask(register())
        assert_error(await b.ask(cancel("nope")), ErrorCode.UNKNOWN_INTENT)
        await b.ask(submit(ttl_s=120))
        rig.told(AddIntent)
        assert await b.ask(cancel("i1")) == CancelIntentReply(intent_id="i1", status="cancelled")
        assert rig.told(RemoveIntent) == [("P1", RemoveIntent("b1", "i1", "cancelled"))]
        assert await b.ask(cancel("i1")) == CancelIntentReply(intent_id="i1", status="cancelled")
        await kit.advance(300)  # no expiry after a cancel, and no second removal
        assert rig.told(RemoveIntent) == []
        assert rig.state().intents["i1"].status == "cancelled"


async def test_intent_expires_on_time() -> None:
    async with kit_on(MemoryJournal()) as kit:
        rig = Rig(kit)
        b = rig.buyer()
        await b.ask(register())
        first = await b.ask(submit(ttl_s=60))
        await kit.advance(59.9)
        assert rig.told(RemoveIntent) == []
        await kit.advance(0.1)
        assert rig.told(RemoveIntent) == [("P1", RemoveIntent("b1", "i1", "expired"))]
        again = await b.ask(submit(ttl_s=60))
        assert again == SubmitIntentReply(
            intent_id="i1", status="expired", expires_at=first.expires_at
        )
        assert await b.ask(cancel("i1")) == CancelIntentReply(intent_id="i1", status="expired")
        assert rig.told(RemoveIntent) == []


async def test_intent_expires_after_a_restart_without_any_message() -> None:
    class Snappy(BuyerActor):
        snapshot_every = 2

    journal = MemoryJournal()
    async with kit_on(journal) as kit:
        kit.system.register(KIND, lambda: Snappy(), cls=Snappy)
        seen: list[tuple[str, Any]] = []
        kit.system.register("product", lambda: StubProduct(seen), cls=StubProduct)
        b = kit.system.ref(KIND, "b1")
        await b.ask(register())
        await b.ask(submit("i1", ttl_s=3600))
        await b.ask(submit("i2", product_id="P2", ttl_s=7200))
        await b.ask(submit("i3", product_id="P3", ttl_s=3600))
        await b.ask(cancel("i3"))
    # The node comes back 1.5 hours later: i1's deadline was missed and fires at once.
    async with kit_on(journal, EPOCH + 5400) as kit:
        seen = []
        kit.system.register(KIND, lambda: Snappy(), cls=Snappy)
        kit.system.register("product", lambda: StubProduct(seen), cls=StubProduct)
        await kit.advance(0)
        # Nothing activates the buyer but its missed deadline; on start it tells the
        # products again what its unexpired intents imply (i1 and i3 are past their
        # expiry: the products drop them on their own).
        assert seen[-1] == ("P1", RemoveIntent("b1", "i1", "expired"))
        assert [(k, type(m).__name__, m.intent_id) for k, m in seen[:-1]] == [
            ("P2", "AddIntent", "i2")
        ]
        del seen[:-1]
        b = kit.system.ref(KIND, "b1")
        assert await b.ask(cancel("i1")) == CancelIntentReply(intent_id="i1", status="expired")
        assert await b.ask(cancel("i3")) == CancelIntentReply(intent_id="i3", status="cancelled")
        await kit.advance(1799)
        assert len(seen) == 1
        await kit.advance(1)
        assert seen[1:] == [("P2", RemoveIntent("b1", "i2", "expired"))]


# -- reservations ---------------------------------------------------------------------------


async def test_a_reservation_matches_the_intent_and_its_release_reopens_it() -> None:
    async with kit_on(MemoryJournal()) as kit:
        rig = Rig(kit)
        b = rig.buyer()
        await b.ask(register())
        await b.ask(submit(ttl_s=3600))
        [(_, added)] = rig.told(AddIntent)

        b.tell(IntentMatched(product_id="P1", window_id="W1", join_id="J1"))
        b.tell(IntentMatched(product_id="P1", window_id="W1", join_id="J1"))  # duplicate
        b.tell(IntentMatched(product_id="P1", window_id="W1", join_id="J2"))  # a second join
        b.tell(IntentMatched(product_id="P9", window_id="W9", join_id="J9"))  # no intent: fine
        await kit.settle()
        assert rig.told(RemoveIntent) == [("P1", RemoveIntent("b1", "i1", "matched"))]
        assert (await b.ask(submit(ttl_s=3600))).status == "matched"

        b.tell(ReservationReleased(product_id="P1", window_id="W1", join_id="J1"))
        await kit.settle()
        assert rig.product == []  # J2 still holds it
        assert rig.state().intents["i1"].status == "matched"

        b.tell(ReservationReleased(product_id="P1", window_id="W1", join_id="J2"))
        await kit.settle()
        assert rig.told(AddIntent) == [("P1", added)]  # re-added as the same intent
        assert (await b.ask(submit(ttl_s=3600))).status == "open"
        b.tell(ReservationReleased(product_id="P1", window_id="W1", join_id="J2"))  # repeat
        await kit.settle()
        assert rig.product == []

        # Still expires on time once reopened.
        await kit.advance(3600)
        assert rig.told(RemoveIntent) == [("P1", RemoveIntent("b1", "i1", "expired"))]


async def test_a_release_after_expiry_does_not_reopen_and_cancel_ends_a_match() -> None:
    async with kit_on(MemoryJournal()) as kit:
        rig = Rig(kit)
        b = rig.buyer()
        await b.ask(register())
        await b.ask(submit("i1", ttl_s=60))
        await b.ask(submit("i2", product_id="P2", ttl_s=600))
        b.tell(IntentMatched(product_id="P1", window_id="W1", join_id="J1"))
        b.tell(IntentMatched(product_id="P2", window_id="W2", join_id="J1"))
        await kit.settle()
        rig.product.clear()

        await kit.advance(60)  # a matched intent expires too, with nothing to remove
        assert rig.state().intents["i1"].status == "expired"
        assert rig.product == []
        b.tell(ReservationReleased(product_id="P1", window_id="W1", join_id="J1"))
        await kit.settle()
        assert rig.product == []
        assert rig.state().intents["i1"].status == "expired"

        # Cancelling a matched intent ends it: its release no longer reopens it.
        assert await b.ask(cancel("i2")) == CancelIntentReply(intent_id="i2", status="cancelled")
        b.tell(ReservationReleased(product_id="P2", window_id="W2", join_id="J1"))
        await kit.settle()
        assert rig.product == []
        assert rig.state().intents["i2"].status == "cancelled"


async def test_a_new_intent_leaves_a_matched_one_alone() -> None:
    async with kit_on(MemoryJournal()) as kit:
        rig = Rig(kit)
        b = rig.buyer()
        await b.ask(register())
        await b.ask(submit("i1", ttl_s=600))
        b.tell(IntentMatched(product_id="P1", window_id="W1", join_id="J1"))
        await kit.settle()
        await b.ask(submit("i2", ttl_s=600))
        rig.product.clear()
        b.tell(ReservationReleased(product_id="P1", window_id="W1", join_id="J1"))
        await kit.settle()
        assert rig.product == []  # i2 is the open intent for P1; i1 does not reopen
        statuses = {i: r.status for i, r in rig.state().intents.items()}
        assert statuses == {"i1": "matched", "i2": "open"}


async def test_state_round_trips_through_its_snapshot_encoding() -> None:
    async with kit_on(MemoryJournal()) as kit:
        rig = Rig(kit)
        b = rig.buyer()
        await b.ask(register())
        await b.ask(submit(ttl_s=600))
        b.tell(IntentMatched(product_id="P1", window_id="W1", join_id="J1"))
        await kit.settle()
        state = rig.state()
        decoded = msgspec.msgpack.decode(msgspec.msgpack.encode(state), type=BuyerState)
        assert decoded == state
        assert decoded.intents["i1"].joins == ("W1/J1",)
