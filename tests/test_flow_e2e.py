"""The seed's happy path, end to end, only through the contract's subjects.

A real nats-server (JetStream) and a node with its real SQLite files; the node runs on
a virtual clock that the test moves, so activation and expiry happen at their exact
time without waiting. Everything the test does goes over NATS as a client would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from actors import VirtualClock
from actors.nats import Msg, NatsServer, NatsTransport
from iceshop.node import ShopNode
from iceshop.settings import Settings
from tests.shop_client import Client, VirtualShop

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

INTERVAL = 10.0
LEAD = 60.0
DURATION = 600.0


@pytest.fixture
async def shop(tmp_path: Path) -> AsyncIterator[VirtualShop]:
    with NatsServer(jetstream=True, store_dir=tmp_path / "js") as server:
        settings = Settings(
            nats_url=server.url,
            data_dir=str(tmp_path / "node"),
            node_id="n1",
            auth="off",  # this file is about the flow; tests/test_auth_node.py has auth on
            campaign_min_quantity=3,
            campaign_interval_s=INTERVAL,
            campaign_cooldown_s=3600,
            window_lead_s=LEAD,
            window_duration_s=DURATION,
            window_min_participants=2,
            window_max_per_buyer=2,
        )
        clock = VirtualClock(start=0.0, epoch=1_800_000_000.0)
        async with ShopNode(settings, clock=clock) as node, NatsTransport(server.url) as t:
            yield VirtualShop(node, clock, Client(t))


async def test_happy_path_from_registration_to_a_closed_window(shop: VirtualShop) -> None:
    c = shop.client
    events: list[tuple[str, dict[str, Any]]] = []

    async def collect(msg: Msg) -> None:
        events.append((msg.subject, msgspec.json.decode(msg.data)))

    assert c.transport is not None
    await c.transport.subscribe("iceshop.events.>", collect)

    # 1-2. buyers and a seller with a listing
    buyers = [f"B{i}" for i in range(1, 7)]
    for b in buyers:
        data = await c.ok(
            f"buyers.{b}.register",
            {
                "name": f"Buyer {b}",
                "phone": "+905551112233",
                "locale": "tr",
                "whatsapp_opt_in": True,
            },
        )
        assert data == {"buyer_id": b, "created": True}
    again = await c.ok("buyers.B1.register", {"name": "Buyer One", "phone": "+905551112233"})
    assert again["created"] is False
    assert (await c.ok("sellers.S1.register", {"name": "Seller", "max_active_windows": 2}))[
        "created"
    ]
    listing = await c.ok(
        "sellers.S1.listings.upsert",
        {
            "product_id": "P1",
            "title": "Tea glasses",
            "list_price_minor": 1000,
            "floor_price_minor": 700,
            "stock": 8,
            "currency": "TRY",
        },
    )
    assert listing == {"seller_id": "S1", "product_id": "P1", "stock": 8}
    assert (
        await c.error(
            "sellers.NOPE.listings.upsert",
            {
                "product_id": "P1",
                "title": "x",
                "list_price_minor": 1,
                "floor_price_minor": 1,
                "stock": 1,
            },
        )
        == "unknown_seller"
    )

    # 3. intents (pre-commit), idempotent by id
    for i, b in enumerate(buyers):
        body = {
            "intent_id": f"I{i}",
            "product_id": "P1",
            "quantity": 1,
            "max_price_minor": 900 if b != "B6" else 600,
            "ttl_s": 86400,
        }
        first = await c.ok(f"buyers.{b}.intents.submit", body)
        assert first["status"] == "open"
        assert await c.ok(f"buyers.{b}.intents.submit", body) == first
    assert (
        await c.error(
            "buyers.B1.intents.submit",
            {"intent_id": "I0", "product_id": "P1", "quantity": 2, "max_price_minor": 900},
        )
        == "idempotency_conflict"
    )
    assert (
        await c.error(
            "buyers.B1.intents.submit",
            {"intent_id": "X1", "product_id": "NOPE", "max_price_minor": 900},
        )
        == "unknown_product"
    )
    assert (
        await c.error(
            "buyers.GHOST.intents.submit",
            {"intent_id": "X2", "product_id": "P1", "max_price_minor": 900},
        )
        == "unknown_buyer"
    )

    # 4-6. demand is aggregated; the campaign proposes a window with its reasons
    listed = await shop.until("windows.list", {}, lambda d: len(d["windows"]) == 1, tick=INTERVAL)
    window = listed["windows"][0]
    wid = window["window_id"]
    assert window["state"] == "scheduled"
    assert window["seller_id"] == "S1" and window["product_id"] == "P1"
    assert 700 <= window["unit_price_minor"] <= 1000
    assert window["quantity_total"] >= max(1, window["min_participants"])
    assert window["max_per_buyer"] * (window["min_participants"] - 1) < window["quantity_total"]
    decision = await c.ok(f"decisions.{window['decision_id']}.get")
    assert decision["outcome"] == "window_proposed"
    assert decision["window_id"] == wid
    assert 1 <= len(decision["reasons"]) <= 4
    for reason in decision["reasons"]:
        assert set(reason) == {"code", "text", "value", "threshold"}
    assert decision["inputs"]
    assert (
        await c.error(f"windows.{wid}.join", {"join_id": "J0", "buyer_id": "B1"})
        == "window_not_active"
    )

    # 7. the window activates on time
    await shop.advance(LEAD)
    view = await shop.until(f"windows.{wid}.get", {}, lambda d: d["state"] == "active")
    total = view["quantity_total"]

    # 8. buyers join; the rules hold
    j1 = await c.ok(f"windows.{wid}.join", {"join_id": "J1", "buyer_id": "B1", "quantity": 2})
    assert j1["status"] == "reserved" and j1["quantity"] == 2
    assert j1["unit_price_minor"] == view["unit_price_minor"] and j1["currency"] == "TRY"
    assert (
        await c.ok(f"windows.{wid}.join", {"join_id": "J1", "buyer_id": "B1", "quantity": 2}) == j1
    )
    assert (
        await c.error(f"windows.{wid}.join", {"join_id": "J1", "buyer_id": "B2"})
        == "idempotency_conflict"
    )
    assert (
        await c.error(f"windows.{wid}.join", {"join_id": "J9", "buyer_id": "B1"})
        == "limit_exceeded"
    )
    assert (
        await c.error(f"windows.{wid}.join", {"join_id": "J8", "buyer_id": "GHOST"})
        == "unknown_buyer"
    )
    assert (
        await c.error("windows.NOPE.join", {"join_id": "J7", "buyer_id": "B1"}) == "unknown_window"
    )
    before = await c.ok(f"windows.{wid}.get")
    for bad in (
        b"{not json",
        b'{"join_id": "J5", "buyer_id": "B2", "quantity": "2"}',
        b'{"join_id": "J5", "buyer_id": "B2", "extra": 1}',
        b'{"join_id": "J5", "buyer_id": "B 2"}',
        b'{"join_id": "J5", "buyer_id": "B2", "quantity": -1}',
        b'{"join_id": "J5", "buyer_id": "B2", "quantity": 1.5}',
        b"[]",
        b'{"join_id": "J5", "buyer_id": "' + b"x" * 70_000 + b'"}',
    ):
        reply = await c.call(f"windows.{wid}.join", raw=bad)
        assert reply["ok"] is False and reply["error"]["code"] == "invalid_request", (
            bad[:40],
            reply,
        )
    assert await c.ok(f"windows.{wid}.get") == before  # nothing changed
    assert total >= 5, view  # five buyers accept the price; stock is 8
    joined = 2
    for n, b in enumerate(["B2", "B3"], start=2):  # leave room: no sell-out here
        await c.ok(f"windows.{wid}.join", {"join_id": f"J{n}", "buyer_id": b})
        joined += 1
    left = await c.ok(f"windows.{wid}.leave", {"join_id": "J2", "buyer_id": "B2"})
    assert left == {"join_id": "J2", "status": "released"}
    assert await c.ok(f"windows.{wid}.leave", {"join_id": "J2", "buyer_id": "B2"}) == left
    assert await c.error(f"windows.{wid}.leave", {"join_id": "J3", "buyer_id": "B1"}) == "forbidden"
    view = await c.ok(f"windows.{wid}.get")
    assert view["quantity_reserved"] == joined - 1
    assert view["participants"] == 1 + (joined - 3)

    # 9. the window expires and closes with the right outcome
    await shop.advance(DURATION)
    closed = await shop.until(f"windows.{wid}.get", {}, lambda d: d["state"] == "closed")
    expect = "succeeded" if closed["participants"] >= closed["min_participants"] else "failed"
    assert closed["outcome"] == expect and closed["close_reason"] == "expired"
    assert (
        await c.error(f"windows.{wid}.join", {"join_id": "J6", "buyer_id": "B5"}) == "window_closed"
    )
    res = await shop.until(f"windows.{wid}.reservations", {}, lambda d: len(d["reservations"]) >= 3)
    statuses = {r["join_id"]: r["status"] for r in res["reservations"]}
    assert statuses["J2"] == "released"
    assert statuses["J1"] == ("confirmed" if expect == "succeeded" else "released")

    # events arrive in order per window
    await shop.until("windows.list", {"state": "closed"}, lambda d: len(d["windows"]) == 1)
    for _ in range(100):
        window_events = [e for s, e in events if s.startswith(f"iceshop.events.window.{wid}.")]
        if window_events and window_events[-1]["type"] == "closed":
            break
        await anyio.sleep(0.02)
    types = [e["type"] for e in window_events]
    assert types[0] == "created" and types[1] == "activated" and types[-1] == "closed"
    assert types.count("joined") == 3 and types.count("left") == 1  # J1, J2, J3
    assert [e["seq"] for e in window_events] == list(range(1, len(window_events) + 1))
    assert all(s.rsplit(".", 1)[1] == e["type"] for s, e in events)
    assert any(s.startswith("iceshop.events.demand.P1.updated") for s, _ in events)
    assert any(s.startswith("iceshop.events.decision.") for s, _ in events)


BAD_BODIES = [
    b"{not json",
    b"[1, 2]",
    b'"a string"',
    b"\xff\xfe",
    b'{"unknown_field": 1}',
    b'{"a": ' * 200 + b"1" + b"}" * 200,
    b'{"x": "' + b"y" * 70_000 + b'"}',
]

SUBJECTS = [
    "buyers.B1.register",
    "sellers.S1.register",
    "sellers.S1.listings.upsert",
    "buyers.B1.intents.submit",
    "buyers.B1.intents.I1.cancel",
    "windows.W1.join",
    "windows.W1.leave",
    "windows.W1.get",
    "windows.W1.reservations",
    "windows.list",
    "decisions.D1.get",
    "sellers.S1.offers.O1.approve",
    "sellers.S1.offers.O1.reject",
    "admin.windows.W1.cancel",
    "cluster.status",
]


async def test_bad_input_on_every_subject_is_refused_and_changes_nothing(shop: VirtualShop) -> None:
    c = shop.client
    for subject in SUBJECTS:
        for body in BAD_BODIES:
            reply = await c.call(subject, raw=body)
            assert reply["ok"] is False, (subject, body[:30], reply)
            assert reply["error"]["code"] == "invalid_request", (subject, body[:30], reply)
            assert reply["error"]["retryable"] is False
    # Unsafe ids in a body, wrong types, negative numbers:
    cases = {
        "buyers.B1.register": [
            {"name": "x", "phone": "12345"},
            {"name": "x", "phone": "+905551112233", "locale": "de"},
            {"name": 5, "phone": "+905551112233"},
        ],
        "sellers.S1.listings.upsert": [
            {
                "product_id": "p.1",
                "title": "t",
                "list_price_minor": 1,
                "floor_price_minor": 1,
                "stock": 1,
            },
            {
                "product_id": "p1",
                "title": "t",
                "list_price_minor": 5,
                "floor_price_minor": 9,
                "stock": 1,
            },
            {
                "product_id": "p1",
                "title": "t",
                "list_price_minor": 5,
                "floor_price_minor": 1,
                "stock": -1,
            },
            {
                "product_id": "p1",
                "title": "t",
                "list_price_minor": 2**53,
                "floor_price_minor": 1,
                "stock": 1,
            },
        ],
        "buyers.B1.intents.submit": [
            {"intent_id": "ü", "product_id": "p1", "max_price_minor": 1},
            {"intent_id": "i1", "product_id": "p1", "max_price_minor": 1, "quantity": 0},
            {"intent_id": "i1", "product_id": "p1", "max_price_minor": 1, "ttl_s": 5},
            {"intent_id": "i" * 65, "product_id": "p1", "max_price_minor": 1},
        ],
        "windows.W1.join": [{"join_id": "j*", "buyer_id": "B1"}, {"join_id": "j1"}],
        "windows.list": [{"limit": 501}, {"state": "melted"}],
    }
    for subject, bodies in cases.items():
        for body in bodies:
            assert await c.error(subject, body) == "invalid_request", (subject, body)
    # Unsafe ids in subject tokens (still valid NATS subjects):
    for subject in ("buyers.B%1.register", "windows.ü.get", "decisions." + "d" * 65 + ".get"):
        assert await c.error(subject, {}) == "invalid_request", subject
    # Nothing was created by any of it.
    assert (
        await c.error(
            "buyers.B1.intents.submit",
            {"intent_id": "i1", "product_id": "p1", "max_price_minor": 1},
        )
        == "unknown_buyer"
    )
    assert (
        await c.error(
            "sellers.S1.listings.upsert",
            {
                "product_id": "p1",
                "title": "t",
                "list_price_minor": 1,
                "floor_price_minor": 1,
                "stock": 1,
            },
        )
        == "unknown_seller"
    )
    assert (await c.ok("windows.list", {}))["windows"] == []
    # The node keeps serving.
    status = await c.ok("cluster.status", {})
    assert status["nodes"][0]["node_id"] == "n1"
    assert len(status["shards"]) == 64
