"""Authentication on, end to end: a real nats-server, a node with its SQLite journal, and
clients that carry tokens or API keys (or none, or bad ones).

Every refusal is checked to have changed nothing: the journal's events for the actor
the request named are counted before and after (read-only, in a thread), and views are
read again over NATS.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from actors import VirtualClock
from actors.nats import Msg, NatsServer, NatsTransport
from actors.testkit import advance_to
from iceshop.auth import (
    KeyDirectory,
    KeyRing,
    TokenKey,
    generate_ed25519,
    generate_hs256,
    mint,
    write_key_file,
)
from iceshop.auth.service import NodeAuth
from iceshop.node import ShopNode
from iceshop.settings import Settings
from tests.shop_client import Client

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

INTERVAL = 10.0
LEAD = 60.0
DURATION = 600.0
PHONE = "+905551112233"


class AuthShop:
    """A node with authentication on, and ways to speak to it as anyone."""

    def __init__(
        self, node: ShopNode, clock: VirtualClock, client: Client, keys: dict[str, TokenKey]
    ) -> None:
        self.node = node
        self.clock = clock
        self.client = client
        self.keys = keys
        self.journal = Path(node.settings.data_dir) / "journal.db"
        self.events: list[tuple[str, dict[str, Any]]] = []

    def token(self, sub: str, role: str, *, kid: str = "hs1", ttl: float = 3600.0) -> str:
        return mint(self.keys[kid], sub=sub, role=role, ttl_s=ttl, now=self.clock.time())

    async def call(
        self, subject: str, body: dict[str, Any] | None = None, *, token: str | None = None
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        return await self.client.call(subject, body, headers=headers)

    async def ok(
        self, subject: str, body: dict[str, Any] | None = None, *, token: str
    ) -> dict[str, Any]:
        reply = await self.call(subject, body, token=token)
        assert reply["ok"] is True, (subject, reply)
        data: dict[str, Any] = reply["data"]
        return data

    async def error(
        self, subject: str, body: dict[str, Any] | None = None, *, token: str | None
    ) -> str:
        reply = await self.call(subject, body, token=token)
        assert reply["ok"] is False, (subject, reply)
        if token:
            assert token not in reply["error"]["message"]
        return str(reply["error"]["code"])

    async def stored(self, kind: str, key: str) -> int:
        """How many events the journal holds for actor ``(kind, key)``."""

        def count() -> int:
            db = sqlite3.connect(f"file:{self.journal}?mode=ro", uri=True)
            try:
                row = db.execute(
                    "SELECT COUNT(*) FROM events WHERE kind = ? AND key = ?", (kind, key)
                ).fetchone()
                return int(row[0])
            finally:
                db.close()

        return await anyio.to_thread.run_sync(count)

    async def journal_bytes(self) -> bytes:
        def read() -> bytes:
            db = sqlite3.connect(f"file:{self.journal}?mode=ro", uri=True)
            try:
                rows = db.execute("SELECT data FROM events UNION ALL SELECT data FROM snapshots")
                return b"".join(bytes(r[0]) for r in rows)
            finally:
                db.close()

        return await anyio.to_thread.run_sync(read)

    async def advance(self, seconds: float) -> None:
        assert self.node.system is not None
        await advance_to(self.node.system, self.clock, self.clock.monotonic() + seconds)

    async def until(self, what: str, check: Any, *, tick: float = 0.0) -> Any:
        for _ in range(200):
            found = check()
            if found:
                return found
            if tick:
                await self.advance(tick)
            await anyio.sleep(0.02)
        raise AssertionError(f"{what}: never happened")

    async def collect(self, msg: Msg) -> None:
        self.events.append((msg.subject, msgspec.json.decode(msg.data)))


@contextlib.asynccontextmanager
async def auth_shop(tmp_path: Path, **overrides: Any) -> AsyncIterator[AuthShop]:
    keys_dir = tmp_path / "keys"
    if not keys_dir.exists():  # a restart on the same tmp_path keeps its keys
        write_key_file(keys_dir / "ed1.key", generate_ed25519("ed1")[1])
        write_key_file(keys_dir / "hs1.key", generate_hs256("hs1")[1])
    ring = KeyRing(KeyDirectory(keys_dir).read())
    with NatsServer(jetstream=True, store_dir=tmp_path / "js") as server:
        settings = Settings(
            nats_url=server.url,
            data_dir=str(tmp_path / "node"),
            node_id="n1",
            auth="on",
            auth_keys_dir=str(keys_dir),
            campaign_min_quantity=2,
            campaign_interval_s=INTERVAL,
            campaign_cooldown_s=3600,
            window_lead_s=LEAD,
            window_duration_s=DURATION,
            window_min_participants=1,
            window_max_per_buyer=2,
            **overrides,
        )
        clock = VirtualClock(start=0.0, epoch=1_800_000_000.0)
        async with ShopNode(settings, clock=clock) as node, NatsTransport(server.url) as t:
            keys = {kid: key for kid in ring.kids() if (key := ring.get(kid)) is not None}
            shop = AuthShop(node, clock, Client(t), keys)
            await t.subscribe("iceshop.events.>", shop.collect)
            yield shop


LISTING = {
    "product_id": "P1",
    "title": "Tea glasses",
    "list_price_minor": 1000,
    "floor_price_minor": 700,
    "stock": 8,
}


async def test_bad_credentials_are_unauthorized_and_change_nothing(tmp_path: Path) -> None:
    async with auth_shop(tmp_path) as shop:
        admin = shop.token("root", "admin")
        await shop.ok("sellers.S1.register", {"name": "Seller"}, token=admin)
        seller = shop.token("S1", "seller", kid="ed1")  # EdDSA tokens work alike
        await shop.ok("sellers.S1.listings.upsert", LISTING, token=seller)
        before = await shop.stored("seller", "S1")

        forger = TokenKey.hs256("hs1", b"f" * 32)  # the right kid, the wrong secret
        forged = mint(forger, sub="S1", role="seller", ttl_s=60, now=shop.clock.time())
        short = shop.token("S1", "seller", ttl=60)
        changed = dict(LISTING, stock=999)
        for token in (None, forged, "not-a-jwt", "isk_nope_" + "0" * 64):
            assert await shop.error("sellers.S1.listings.upsert", changed, token=token) == (
                "unauthorized"
            )
        # unauthorized comes before invalid_request
        assert await shop.error("sellers.S1.listings.upsert", {"x": 1}, token=None) == (
            "unauthorized"
        )
        reply = await shop.client.call(
            "sellers.S1.listings.upsert", changed, headers={"authorization": "Basic dTpw"}
        )
        assert reply["error"]["code"] == "unauthorized"
        await shop.advance(60 + 31)  # past exp and the 30 s leeway
        assert await shop.error("sellers.S1.listings.upsert", changed, token=short) == (
            "unauthorized"
        )
        # a valid principal outside its rights: forbidden, after invalid_request
        buyer = shop.token("B1", "buyer")
        assert await shop.error("sellers.S1.listings.upsert", changed, token=buyer) == "forbidden"
        assert await shop.error("sellers.S1.listings.upsert", {"x": 1}, token=buyer) == (
            "invalid_request"
        )
        assert await shop.error("sellers.S9.register", {"name": "S"}, token=seller) == "forbidden"
        assert await shop.error("sellers.S9.register", {"name": "S"}, token=buyer) == "forbidden"

        assert await shop.stored("seller", "S1") == before
        assert await shop.stored("seller", "S9") == 0
        # and the node still serves the rightful owner
        assert (await shop.ok("sellers.S1.listings.upsert", LISTING, token=seller))["stock"] == 8


async def test_every_principal_acts_only_within_its_rights(tmp_path: Path) -> None:
    async with auth_shop(tmp_path) as shop:
        admin = shop.token("root", "admin")
        gateway = shop.token("gw1", "gateway")
        s1, s2 = shop.token("S1", "seller"), shop.token("S2", "seller")
        b1, b2 = shop.token("B1", "buyer"), shop.token("B2", "buyer")
        await shop.ok("sellers.S1.register", {"name": "S1", "auto_approve": False}, token=admin)
        await shop.ok("sellers.S2.register", {"name": "S2"}, token=admin)

        # a seller only on its own listings
        s1_events = await shop.stored("seller", "S1")
        assert await shop.error("sellers.S1.listings.upsert", LISTING, token=s2) == "forbidden"
        assert await shop.error("sellers.S1.listings.upsert", LISTING, token=gateway) == (
            "forbidden"
        )
        assert await shop.stored("seller", "S1") == s1_events
        await shop.ok("sellers.S1.listings.upsert", LISTING, token=s1)

        # a buyer only as itself; a gateway for any buyer
        buyer = {"name": "B", "phone": PHONE}
        await shop.ok("buyers.B1.register", buyer, token=b1)
        await shop.ok("buyers.B2.register", buyer, token=gateway)
        b2_events = await shop.stored("buyer", "B2")
        assert await shop.error("buyers.B2.register", {"name": "X", "phone": PHONE}, token=b1) == (
            "forbidden"
        )
        intent = {"intent_id": "I1", "product_id": "P1", "max_price_minor": 900}
        assert await shop.error("buyers.B2.intents.submit", intent, token=b1) == "forbidden"
        assert await shop.error("buyers.B2.intents.I1.cancel", token=s1) == "forbidden"
        assert await shop.stored("buyer", "B2") == b2_events
        await shop.ok("buyers.B1.intents.submit", intent, token=b1)
        await shop.ok("buyers.B2.intents.submit", dict(intent, intent_id="I2"), token=gateway)

        # the campaign offers S1 a window (S1 approves its windows itself)
        offer = await shop.until(
            "an offer",
            lambda: [e["data"] for s, e in shop.events if ".events.offer." in s],
            tick=INTERVAL,
        )
        offer_id = offer[0]["offer_id"]
        [decision] = [e["data"] for s, e in shop.events if ".events.decision." in s]
        approve = f"sellers.S1.offers.{offer_id}.approve"
        assert await shop.error(approve, token=s2) == "forbidden"
        assert await shop.error(f"sellers.S2.offers.{offer_id}.approve", token=s1) == "forbidden"
        assert await shop.error(approve, token=gateway) == "forbidden"
        assert (await shop.ok(approve, token=s1))["status"] == "approved"

        # a decision is for admins and the seller of its offer
        get_decision = f"decisions.{decision['decision_id']}.get"
        for other in (s2, b1, gateway):
            assert await shop.error(get_decision, token=other) == "forbidden"
        assert (await shop.ok(get_decision, token=s1))["offer"]["seller_id"] == "S1"
        assert (await shop.ok(get_decision, token=admin))["decision_id"] == decision["decision_id"]
        assert await shop.error("decisions.D404.get", token=s1) == "forbidden"
        assert await shop.error("decisions.D404.get", token=admin) == "unknown_decision"

        # the window: joins as oneself, reservations for its seller
        listed = await shop.until(
            "the window",
            lambda: [s for s, e in shop.events if s.endswith(".created") and ".window." in s],
            tick=INTERVAL,
        )
        wid = listed[0].split(".")[3]
        await shop.advance(LEAD)
        await shop.until(
            "activation", lambda: any(s.endswith(f"{wid}.activated") for s, _ in shop.events)
        )
        view = await shop.ok(f"windows.{wid}.get", token=b1)
        assert view["state"] == "active" and view["quantity_reserved"] == 0
        w_events = await shop.stored("window", wid)
        join_b2 = {"join_id": "J2", "buyer_id": "B2"}
        assert await shop.error(f"windows.{wid}.join", join_b2, token=b1) == "forbidden"
        assert await shop.error(f"windows.{wid}.join", join_b2, token=s1) == "forbidden"
        assert await shop.stored("window", wid) == w_events
        assert (await shop.ok(f"windows.{wid}.get", token=s2))["quantity_reserved"] == 0
        await shop.ok(f"windows.{wid}.join", {"join_id": "J1", "buyer_id": "B1"}, token=b1)
        await shop.ok(f"windows.{wid}.join", join_b2, token=gateway)
        # leaving another buyer's join: refused by routing (body) and by the window (join)
        assert await shop.error(f"windows.{wid}.leave", join_b2, token=b1) == "forbidden"
        steal = {"join_id": "J2", "buyer_id": "B1"}
        assert await shop.error(f"windows.{wid}.leave", steal, token=b1) == "forbidden"
        assert (await shop.ok(f"windows.{wid}.get", token=b2))["quantity_reserved"] == 2

        reservations = f"windows.{wid}.reservations"
        for other in (s2, b1, gateway):
            assert await shop.error(reservations, token=other) == "forbidden"
        assert await shop.error("windows.W404.reservations", token=s1) == "forbidden"
        mine = await shop.ok(reservations, token=s1)
        assert sorted(r["join_id"] for r in mine["reservations"]) == ["J1", "J2"]

        # admin subjects
        cancel = f"admin.windows.{wid}.cancel"
        for other in (s1, gateway, b1):
            assert await shop.error(cancel, {"reason": "no"}, token=other) == "forbidden"
            assert await shop.error("cluster.status", token=other) == "forbidden"
        # (2 units wanted, 2 joined: it sold out; but nobody cancelled it)
        assert (await shop.ok(f"windows.{wid}.get", token=admin))["state"] != "cancelled"
        assert (await shop.ok("cluster.status", token=admin))["nodes"][0]["node_id"] == "n1"
        listed_windows = await shop.ok("windows.list", token=b2)
        assert [w["window_id"] for w in listed_windows["windows"]] in ([], [wid])
        assert await shop.error("windows.list", token=None) == "unauthorized"


async def test_api_keys_work_until_revoked_and_stop_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The node's own "revoked" event would also revoke the key here, and it may arrive
    # before the next request: ignore it, so only the actor's synchronous update of the
    # registry (in the turn that stores the revoke) can make the key stop at once.
    heard: list[str] = []

    async def ignore(self: NodeAuth, msg: Msg) -> None:
        heard.append(msg.subject)

    monkeypatch.setattr(NodeAuth, "on_key_event", ignore)
    async with auth_shop(tmp_path) as shop:
        admin = shop.token("root", "admin")
        create = "admin.apikeys.partner1.create"
        body = {"role": "gateway", "note": "partner app"}
        assert await shop.error(create, body, token=shop.token("S1", "seller")) == "forbidden"
        assert await shop.error(create, body, token=None) == "unauthorized"
        assert (
            await shop.error("admin.apikeys.b.create", {"role": "buyer"}, token=admin)
            == "invalid_request"
        )
        created = await shop.ok(create, body, token=admin)
        key = created["api_key"]
        assert key.startswith("isk_partner1_")
        assert created["status"] == "active" and created["principal"] == "partner1"
        assert await shop.error(create, body, token=admin) == "idempotency_conflict"
        # the secret is stored nowhere: neither in the journal nor in the event
        secret = key.rsplit("_", 1)[1]
        assert secret.encode() not in await shop.journal_bytes()
        await shop.until("created event", lambda: [s for s, _ in shop.events if "apikey" in s])
        assert all(secret not in msgspec.json.encode(e).decode() for _, e in shop.events)

        buyer = {"name": "B", "phone": PHONE}
        assert (await shop.ok("buyers.B7.register", buyer, token=key))["created"] is True
        assert await shop.error("sellers.S1.register", {"name": "S"}, token=key) == "forbidden"

        revoked = await shop.ok("admin.apikeys.partner1.revoke", token=admin)
        assert revoked["status"] == "revoked" and revoked["api_key"] is None
        # the very next request with the key is refused
        assert await shop.error("buyers.B7.register", buyer, token=key) == "unauthorized"
        assert await shop.stored("buyer", "B7") == 1
        again = await shop.ok("admin.apikeys.partner1.revoke", token=admin)
        assert again["revoked_at"] == revoked["revoked_at"]
        assert await shop.error("admin.apikeys.nope.revoke", token=admin) == "invalid_request"
        assert await shop.error("buyers.B7.register", buyer, token=key) == "unauthorized"
        # the event was sent, and ignored: the refusal above owes nothing to it
        await shop.until("revoked event", lambda: [s for s, _ in shop.events if "revoked" in s])
        await shop.until("the node heard it", lambda: heard)


async def test_api_keys_survive_a_restart(tmp_path: Path) -> None:
    buyer = {"name": "B", "phone": PHONE}
    async with auth_shop(tmp_path) as shop:
        admin = shop.token("root", "admin")
        keep = await shop.ok("admin.apikeys.keep.create", {"role": "gateway"}, token=admin)
        gone = await shop.ok("admin.apikeys.gone.create", {"role": "gateway"}, token=admin)
        await shop.ok("admin.apikeys.gone.revoke", token=admin)
    # a new node on the same data directory loads the records before it serves
    async with auth_shop(tmp_path) as shop:
        assert shop.node.auth is not None and len(shop.node.auth.apikeys) == 2
        assert (await shop.ok("buyers.B1.register", buyer, token=keep["api_key"]))["created"]
        assert await shop.error("buyers.B2.register", buyer, token=gone["api_key"]) == (
            "unauthorized"
        )


async def test_open_intents_are_capped_per_buyer_and_submits_rate_limited(tmp_path: Path) -> None:
    async with auth_shop(
        tmp_path, max_open_intents_per_buyer=2, buyer_intent_rate_per_s=1.0, buyer_intent_burst=4
    ) as shop:
        admin = shop.token("root", "admin")
        await shop.ok("sellers.S1.register", {"name": "S1"}, token=admin)
        for product in ("P1", "P2", "P3"):
            await shop.ok(
                "sellers.S1.listings.upsert", dict(LISTING, product_id=product), token=admin
            )
        b1 = shop.token("B1", "buyer")
        await shop.ok("buyers.B1.register", {"name": "B", "phone": PHONE}, token=b1)
        submit = "buyers.B1.intents.submit"
        for n, product in enumerate(("P1", "P2")):
            intent = {"intent_id": f"I{n}", "product_id": product, "max_price_minor": 900}
            await shop.ok(submit, intent, token=b1)
        over = await shop.call(
            submit, {"intent_id": "I9", "product_id": "P3", "max_price_minor": 900}, token=b1
        )
        assert over["error"]["code"] == "limit_exceeded"
        assert over["error"]["details"] == {"open_intents": 2, "max_open_intents": 2}
        # a new intent for a product already wanted replaces the open one: allowed
        await shop.ok(
            submit, {"intent_id": "I3", "product_id": "P1", "max_price_minor": 950}, token=b1
        )
        # four submits in a burst, then one a second
        limited = await shop.call(
            submit, {"intent_id": "I4", "product_id": "P1", "max_price_minor": 950}, token=b1
        )
        assert limited["error"]["code"] == "overloaded"
        assert limited["error"]["retryable"] is True
        assert limited["error"]["details"]["retry_after_s"] == pytest.approx(1.0)
        await shop.advance(1.0)
        await shop.ok(
            submit, {"intent_id": "I4", "product_id": "P1", "max_price_minor": 950}, token=b1
        )
