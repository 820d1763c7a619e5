"""The decision actor: stores a decision once, serves ``decision.get``, follows its offer
and window, emits ``decision.<id>.made`` once, and keeps it all across a restart."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import pytest

from actors import OutboxEntry
from actors.journal import MemoryJournal
from actors.testkit import ActorTestKit
from iceshop.decision import DecisionActor
from iceshop.protocol import OfferStatusChanged, RecordDecision, Request, WindowLinked
from iceshop.settings import Settings
from iceshop.wire import (
    CommandKind,
    DecisionOutcome,
    DecisionView,
    ErrorCode,
    GetDecision,
    OfferView,
    Reason,
    ShopError,
)

pytestmark = pytest.mark.anyio

SETTINGS = Settings(auth="off")
GET = Request(kind=CommandKind.DECISION_GET, body=GetDecision())


class ListSink:
    def __init__(self) -> None:
        self.entries: list[OutboxEntry] = []

    async def publish(self, entries: Sequence[OutboxEntry]) -> None:
        self.entries.extend(entries)


def view(
    did: str = "d-p1-1", *, offer: bool = True, outcome: DecisionOutcome = "window_proposed"
) -> Any:
    return DecisionView(
        decision_id=did,
        product_id="p1",
        made_at="2027-01-15T08:00:10.000Z",
        outcome=outcome,
        reasons=[
            Reason(
                code="demand_sufficient", text="Open demand is 10 units.", value=10, threshold=4
            ),
            Reason(code="price_accepted", text="8 units accept 9.00 TRY.", value=8, threshold=4),
        ],
        offer=OfferView(
            offer_id="o-p1-1",
            seller_id="s1",
            unit_price_minor=900,
            quantity=8,
            activates_at="2027-01-15T08:01:10.000Z",
            expires_at="2027-01-15T08:11:10.000Z",
            status="pending",
        )
        if offer
        else None,
        window_id=None,
        inputs={"now": 1_800_000_010, "demand.score": 11.98, "window.quantity_total": 8},
    )


def register(kit: ActorTestKit, settings: Settings = SETTINGS) -> None:
    kit.system.register("decision", lambda: DecisionActor(settings), cls=DecisionActor)


async def test_a_recorded_decision_is_returned_and_announced_once() -> None:
    sink = ListSink()
    async with ActorTestKit(journal=MemoryJournal(), outbox_sink=sink) as kit:
        register(kit)
        ref = kit.system.ref("decision", "d-p1-1")
        ref.tell(RecordDecision(view=view()))
        await kit.settle()
        assert await ref.ask(GET) == view()
        # A repeat (the campaign re-sends after a restart) changes nothing, even if it
        # differs: the first record stands, and nothing is announced again.
        ref.tell(RecordDecision(view=view()))
        ref.tell(RecordDecision(view=view(outcome="deferred")))
        await kit.settle()
        assert await ref.ask(GET) == view()
    [entry, audit] = sink.entries  # the event and the audit record, each once
    assert (audit.subject, audit.id) == ("iceshop.audit.decision.d-p1-1", "decision.d-p1-1.made")
    record = msgspec.json.decode(audit.payload)
    assert record["actor"] == {"role": "system", "id": "campaign"}
    assert record["why"] == msgspec.to_builtins(view().reasons)
    assert record["inputs"]["demand.score"] == 11.98
    assert entry.subject == "iceshop.events.decision.d-p1-1.made"
    assert entry.id == "decision.d-p1-1.1"
    body = msgspec.json.decode(entry.payload)
    assert body["event_id"] == "decision.d-p1-1.1"
    assert (body["type"], body["seq"], body["at"]) == ("made", 1, "2027-01-15T08:00:10.000Z")
    data = body["data"]
    assert "inputs" not in data
    assert data["decision_id"] == "d-p1-1" and data["outcome"] == "window_proposed"
    assert [r["code"] for r in data["reasons"]] == ["demand_sufficient", "price_accepted"]
    assert data["offer"]["status"] == "pending" and data["window_id"] is None


async def test_an_unknown_decision_is_unknown_decision() -> None:
    async with ActorTestKit(journal=MemoryJournal()) as kit:
        register(kit)
        reply = await kit.system.ref("decision", "d-nope-1").ask(GET)
        assert isinstance(reply, ShopError)
        assert reply.code is ErrorCode.UNKNOWN_DECISION and not reply.retryable


async def test_offer_status_and_window_follow_and_survive_a_restart() -> None:
    journal, sink = MemoryJournal(), ListSink()
    async with ActorTestKit(journal=journal, outbox_sink=sink) as kit:
        register(kit)
        ref = kit.system.ref("decision", "d-p1-1")
        ref.tell(RecordDecision(view=view()))
        ref.tell(OfferStatusChanged(offer_id="o-p1-1", status="approved"))
        ref.tell(OfferStatusChanged(offer_id="o-p1-1", status="rejected"))  # final already
        ref.tell(OfferStatusChanged(offer_id="o-other", status="expired"))  # not its offer
        ref.tell(WindowLinked(window_id="w-p1-1"))
        await kit.settle()
        got = await ref.ask(GET)
        assert got.offer.status == "approved" and got.window_id == "w-p1-1"
    async with ActorTestKit(journal=journal, outbox_sink=sink) as kit:
        register(kit)
        ref = kit.system.ref("decision", "d-p1-1")
        got = await ref.ask(GET)
        assert got.offer.status == "approved" and got.window_id == "w-p1-1"
        assert got.inputs == view().inputs
        ref.tell(RecordDecision(view=view()))  # re-sent after the campaign restarted
        await kit.settle()
        assert (await ref.ask(GET)).offer.status == "approved"
    assert len(sink.entries) == 2  # the event and its audit record, once


async def test_a_rejected_offer_and_a_decision_without_offer() -> None:
    async with ActorTestKit(journal=MemoryJournal()) as kit:
        register(kit)
        rejected = kit.system.ref("decision", "d-p1-1")
        rejected.tell(RecordDecision(view=view()))
        rejected.tell(OfferStatusChanged(offer_id="o-p1-1", status="rejected"))
        plain = kit.system.ref("decision", "d-p1-2")
        plain.tell(RecordDecision(view=view("d-p1-2", offer=False, outcome="no_action")))
        plain.tell(OfferStatusChanged(offer_id="o-p1-1", status="approved"))  # ignored
        await kit.settle()
        got = await rejected.ask(GET)
        assert got.offer.status == "rejected" and got.window_id is None
        got = await plain.ask(GET)
        assert got.offer is None and got.outcome == "no_action"


async def test_the_event_subject_uses_the_configured_prefix() -> None:
    sink = ListSink()
    settings = Settings(auth="off", prefix="shop.eu")
    async with ActorTestKit(journal=MemoryJournal(), outbox_sink=sink) as kit:
        register(kit, settings)
        kit.system.ref("decision", "d-p1-1").tell(RecordDecision(view=view()))
        await kit.settle()
    assert [e.subject for e in sink.entries] == [
        "shop.eu.events.decision.d-p1-1.made",
        "shop.eu.audit.decision.d-p1-1",
    ]


async def test_a_view_the_journal_could_not_read_back_is_refused_and_stores_nothing() -> None:
    async with ActorTestKit(journal=MemoryJournal()) as kit:
        register(kit)
        ref = kit.system.ref("decision", "d-p1-1")
        bad = msgspec.structs.replace(view(), inputs={"seller.s1.status": "eligible"})
        ref.tell(RecordDecision(view=bad))
        await kit.advance(10)  # the handler fails, is retried, and gives up
        reply = await ref.ask(GET)
        assert isinstance(reply, ShopError) and reply.code is ErrorCode.UNKNOWN_DECISION
        letters = await kit.system.dead_letters.list()
        assert [d.message_type for d in letters] == ["RecordDecision"]
        ref.tell(RecordDecision(view=view()))  # a good one still records
        await kit.settle()
        assert await ref.ask(GET) == view()
