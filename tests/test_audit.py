"""The decision audit, end to end: records made by real actors in a node on a real
nats-server, stored in the ICESHOP_AUDIT stream, read back through JetStream and the
``iceshop audit`` command.

Each scenario checks who (the principal of the command, ``anonymous`` with
authentication off, ``system/...`` for the shop's own doings), what and why; that a
record re-published (the outbox after a crash) or re-sent (the campaign after a restart)
is stored once; that the stream refuses deletes and purges; and that in nats.conf only
nodes publish records while the admin reads them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import msgspec
import nats.js.errors
import pytest
import structlog

from actors import OutboxEntry, RealClock, VirtualClock
from actors.journal import MemoryJournal
from actors.nats import JetStreamOutbox, NatsServer, NatsTransport
from actors.testkit import ActorTestKit
from iceshop.audit import (
    AUDIT_STREAM,
    AuditQuery,
    AuditRecord,
    actor_of,
    apikey_changed,
    decode_record,
    ensure_audit_stream,
    read_audit,
)
from iceshop.cli import main
from iceshop.cli.audit import format_record, parse_since
from iceshop.cli.errors import EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from iceshop.cli.secrets import NATS_ROLES, password_env
from iceshop.node import ShopNode
from iceshop.protocol import CreateWindow, Principal, Request
from iceshop.seller import SellerActor
from iceshop.settings import Settings
from iceshop.wire import ApiKeyView, CommandKind, RegisterSeller, parse_time
from tests.shop_client import Client, VirtualShop
from tests.test_auth_node import LISTING, PHONE, auth_shop

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

ROOT = Path(__file__).resolve().parent.parent
INTERVAL = 10.0
LEAD = 60.0


# -- helpers ----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _structlog_defaults() -> Iterator[None]:
    """The command line configures structlog for its (captured) stderr: undo it."""
    yield
    structlog.reset_defaults()


async def audit(
    transport: NatsTransport,
    *,
    kind: str | None = None,
    entity_id: str | None = None,
    since: float | None = None,
) -> list[tuple[AuditRecord, bytes]]:
    found: list[tuple[AuditRecord, bytes]] = []
    query = AuditQuery(entity=kind, entity_id=entity_id, since=since)
    await read_audit(transport, "iceshop", query, lambda r, raw: found.append((r, raw)))
    return found


async def audit_until(
    transport: NatsTransport, count: int, **filters: Any
) -> list[tuple[AuditRecord, bytes]]:
    """The records once there are ``count`` of them (they are published after commit)."""
    found: list[tuple[AuditRecord, bytes]] = []
    for _ in range(250):
        found = await audit(transport, **filters)
        if len(found) >= count:
            return found
        await anyio.sleep(0.02)
    raise AssertionError(f"{count} audit records {filters} never arrived; got {found}")


async def stream_count(transport: NatsTransport) -> int:
    info = await transport.jetstream().stream_info(AUDIT_STREAM)
    return int(info.state.messages)


async def run_cli(argv: Sequence[str]) -> int:
    """``iceshop ...`` in-process (in a thread: it runs its own event loop)."""
    status: int = await anyio.to_thread.run_sync(main, list(argv))
    return status


def actions(records: list[tuple[AuditRecord, bytes]]) -> list[str]:
    return [r.action for r, _ in records]


@pytest.fixture
async def shop(tmp_path: Path) -> AsyncIterator[VirtualShop]:
    """Authentication off (every actor is anonymous), on a virtual clock."""
    with NatsServer(jetstream=True, store_dir=tmp_path / "js") as server:
        settings = Settings(
            nats_url=server.url,
            data_dir=str(tmp_path / "node"),
            node_id="n1",
            auth="off",
            campaign_min_quantity=2,
            campaign_interval_s=INTERVAL,
            campaign_cooldown_s=3600,
            window_lead_s=LEAD,
            window_min_participants=1,
        )
        clock = VirtualClock(start=0.0, epoch=1_800_000_000.0)
        async with ShopNode(settings, clock=clock) as node, NatsTransport(server.url) as t:
            yield VirtualShop(node, clock, Client(t))


async def demand(c: Client, seller: dict[str, Any], product: str = "P1") -> None:
    """A seller with a listing of ``product`` and two buyers who want it."""
    await c.ok("sellers.S1.register", seller)
    await c.ok("sellers.S1.listings.upsert", dict(LISTING, product_id=product))
    for n, buyer in enumerate(("B1", "B2")):
        await c.ok(f"buyers.{buyer}.register", {"name": buyer, "phone": PHONE})
        intent = {"intent_id": f"I{n}", "product_id": product, "max_price_minor": 900}
        await c.ok(f"buyers.{buyer}.intents.submit", intent)


# -- the stream ---------------------------------------------------------------------------------


async def test_the_node_makes_an_append_only_audit_stream(shop: VirtualShop) -> None:
    t = shop.client.transport
    js = t.jetstream()
    info = await js.stream_info(AUDIT_STREAM)
    config = info.config
    assert config.subjects == ["iceshop.audit.>"]
    assert config.deny_delete and config.deny_purge
    assert config.max_age == shop.node.settings.audit_max_age_s == 365 * 86_400.0
    assert config.num_replicas == shop.node.settings.stream_replicas
    assert config.duplicate_window == 86_400.0
    # an existing stream is left alone (a second node, or a restart)
    assert not await ensure_audit_stream(t, "iceshop")

    await shop.client.ok("sellers.S1.register", {"name": "S"})
    [(record, _)] = await audit_until(t, 1)
    seq = 1
    with pytest.raises(nats.js.errors.APIError, match=r"(?i)delete"):
        await js.delete_msg(AUDIT_STREAM, seq)
    with pytest.raises(nats.js.errors.APIError, match=r"(?i)purge"):
        await js.purge_stream(AUDIT_STREAM)
    with pytest.raises(nats.js.errors.APIError, match=r"(?i)deny"):
        await js.update_stream(dataclasses.replace(config, deny_delete=False))
    assert await stream_count(t) == 1
    assert [r for r, _ in await audit(t)] == [record]


# -- who, what, why -------------------------------------------------------------------------------


async def test_a_campaign_decision_is_audited_once_with_its_reasons(
    shop: VirtualShop,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    c, t = shop.client, shop.client.transport
    await demand(c, {"name": "S"})
    listed = await shop.until("windows.list", {}, lambda d: len(d["windows"]) == 1, tick=INTERVAL)
    window = listed["windows"][0]
    did = window["decision_id"]
    decision = await c.ok(f"decisions.{did}.get")
    assert decision["outcome"] == "window_proposed"

    [(record, raw)] = await audit_until(t, 1, kind="decision", entity_id=did)
    assert record.action == "decision.made"
    assert (record.entity, record.entity_id) == ("decision", did)
    assert str(record.actor) == "system/campaign"
    assert record.at == decision["made_at"]
    assert record.outcome == "window_proposed"
    # the same reasons as decisions.<id>.get, and every input it used
    assert msgspec.to_builtins(record.why) == decision["reasons"]
    assert {k: record.inputs[k] for k in decision["inputs"]} == decision["inputs"]
    assert record.refs["window_id"] == window["window_id"]
    assert record.refs["product_id"] == "P1"
    # the seller's registration, by nobody in particular (authentication is off)
    [(seller, _)] = await audit(t, kind="seller")
    assert (seller.action, str(seller.actor)) == ("seller.registered", "anonymous/anonymous")
    assert seller.inputs == {"max_active_windows": 3, "auto_approve": 1}

    # the command line shows the same, as JSON lines and as text
    monkeypatch.chdir(tmp_path)  # no ./data/secrets login here
    base = ["audit", "--nats", shop.node.settings.nats_url]
    capsys.readouterr()
    assert await run_cli([*base, "--kind", "decision", "--id", did, "--json"]) == EXIT_OK
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1
    assert msgspec.json.decode(out[0])["why"] == decision["reasons"]
    assert out[0].encode() == raw

    assert await run_cli([*base, "--id", did]) == EXIT_OK
    captured = capsys.readouterr()
    [line] = captured.out.splitlines()
    assert line == format_record(record)
    assert line.startswith(decision["made_at"])
    assert "system/campaign" in line and "decision.made" in line and f"decision/{did}" in line
    assert "[window_proposed]" in line
    for reason in decision["reasons"]:
        assert reason["text"] in line
    assert "(1 record)" in captured.err

    # filters: by kind only, everything, a limit, nothing at all
    assert await run_cli([*base, "--kind", "seller", "--json"]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert [msgspec.json.decode(x)["action"] for x in lines] == ["seller.registered"]
    assert await run_cli([*base, "--json", "--limit", "0"]) == EXIT_OK
    every = [msgspec.json.decode(x)["action"] for x in capsys.readouterr().out.splitlines()]
    assert sorted(every) == ["decision.made", "seller.registered"]
    assert await run_cli([*base, "--json", "--limit", "1"]) == EXIT_OK
    assert len(capsys.readouterr().out.splitlines()) == 1
    assert await run_cli([*base, "--kind", "window", "--json"]) == EXIT_OK
    assert capsys.readouterr().out == ""
    assert await run_cli([*base, "--kind", "a.b"]) == EXIT_USAGE
    assert await run_cli([*base, "--since", "yesterday-ish"]) == EXIT_USAGE


async def test_a_replayed_record_is_stored_once(shop: VirtualShop) -> None:
    """The outbox publishes again after a crash (same id: the stream drops the copy), and
    the campaign re-sends its decisions after a restart (the decision records nothing
    new)."""
    c, t = shop.client, shop.client.transport
    await demand(c, {"name": "S"})
    await shop.until("windows.list", {}, lambda d: len(d["windows"]) == 1, tick=INTERVAL)
    [(record, raw)] = await audit_until(t, 1, kind="decision")
    stored = await stream_count(t)

    outbox = JetStreamOutbox(t)
    entry = OutboxEntry(
        id=record.audit_id, subject=f"iceshop.audit.decision.{record.entity_id}", payload=raw
    )
    await outbox.publish([entry, entry])
    assert outbox.duplicates == 2
    assert await stream_count(t) == stored

    # A restart: the campaign tells every decision it holds to record itself again.
    settings = shop.node.settings
    await shop.node.__aexit__(None, None, None)
    async with ShopNode(settings, clock=shop.clock) as again:
        assert again.system is not None
        await again.system.drain()
        await shop.advance(INTERVAL)
        assert (await c.ok(f"decisions.{record.entity_id}.get"))["decision_id"]
        await again.system.drain()
        assert [r for r, _ in await audit(t, kind="decision", entity_id=record.entity_id)] == [
            record
        ]
        # (a later tick may decide anew, under a new decision id)
        ids = [r.audit_id for r, _ in await audit(t)]
        assert len(ids) == len(set(ids)) == await stream_count(t) >= stored


async def test_a_seller_rejecting_an_offer_and_an_admin_cancel_say_who_and_why(
    tmp_path: Path,
) -> None:
    async with auth_shop(tmp_path) as shop:
        t = shop.client.transport
        admin = shop.token("root", "admin")
        s1 = shop.token("S1", "seller")
        await shop.ok("sellers.S1.register", {"name": "S1", "auto_approve": False}, token=admin)
        for product in ("P1", "P2"):
            await shop.ok("sellers.S1.listings.upsert", dict(LISTING, product_id=product), token=s1)
        for n, buyer in enumerate(("B1", "B2")):
            b = shop.token(buyer, "buyer")
            await shop.ok(f"buyers.{buyer}.register", {"name": buyer, "phone": PHONE}, token=b)
            for product in ("P1", "P2"):
                intent = {"intent_id": f"I{n}{product}", "product_id": product}
                await shop.ok(
                    f"buyers.{buyer}.intents.submit", dict(intent, max_price_minor=900), token=b
                )

        def proposed() -> list[dict[str, Any]]:
            found = [e["data"] for s, e in shop.events if s.endswith(".proposed")]
            return found if len(found) >= 2 else []

        offers = (await shop.until("two offers", proposed, tick=INTERVAL))[:2]
        rejected, left = sorted(offers, key=lambda o: str(o["offer_id"]))
        oid = rejected["offer_id"]
        reply = await shop.ok(f"sellers.S1.offers.{oid}.reject", token=s1)
        assert reply["status"] == "rejected"
        await shop.ok(f"sellers.S1.offers.{oid}.reject", token=s1)  # a repeat: no record

        [(record, _)] = await audit_until(t, 1, kind="offer", entity_id=oid)
        assert record.action == "offer.rejected" and record.outcome == "rejected"
        assert str(record.actor) == "seller/S1"
        assert record.refs["seller_id"] == "S1" and record.refs["offer_id"] == oid
        assert record.inputs["unit_price_minor"] == rejected["unit_price_minor"]
        assert record.inputs["quantity"] == rejected["quantity"]
        assert record.why == []

        # The other offer gets no answer: at activation the seller's deadline expires it.
        await shop.advance(LEAD + 1)
        [(expired, _)] = await audit_until(t, 1, kind="offer", entity_id=left["offer_id"])
        assert expired.action == "offer.expired" and str(expired.actor) == "system/clock"
        [why] = expired.why
        assert why.code == "offer_expired" and left["activates_at"] in why.text

        # An admin cancels a window, saying why.
        assert shop.node.system is not None
        now = shop.clock.time()
        await shop.node.system.ref("window", "W1").ask(
            CreateWindow(
                product_id="P1",
                seller_id="S1",
                decision_id=None,
                unit_price_minor=800,
                currency="TRY",
                quantity_total=4,
                min_participants=1,
                max_per_buyer=2,
                activates_at=now - 1.0,
                expires_at=now + 600.0,
            ),
            timeout=5.0,
        )
        b1 = shop.token("B1", "buyer")
        await shop.ok(
            "windows.W1.join", {"join_id": "J1", "buyer_id": "B1", "quantity": 2}, token=b1
        )
        reason = "listing photo was wrong"
        assert await shop.error("admin.windows.W1.cancel", {"reason": "x"}, token=s1) == (
            "forbidden"
        )
        view = await shop.ok("admin.windows.W1.cancel", {"reason": reason}, token=admin)
        assert view["state"] == "cancelled"
        await shop.ok("admin.windows.W1.cancel", {"reason": "again"}, token=admin)  # a repeat

        [(cancel, _)] = await audit_until(t, 1, kind="window", entity_id="W1")
        assert (cancel.action, str(cancel.actor)) == ("window.cancelled", "admin/root")
        assert [(r.code, r.text) for r in cancel.why] == [("given_reason", reason)]
        assert cancel.refs["state_before"] == "active"
        assert cancel.inputs["released_reservations"] == 1
        assert cancel.inputs["released_quantity"] == 2
        assert cancel.inputs["quantity_reserved"] == 2

        # API keys: created and revoked by the admin, the note as why, no secret.
        created = await shop.ok(
            "admin.apikeys.k1.create", {"role": "gateway", "note": "partner app"}, token=admin
        )
        await shop.ok("admin.apikeys.k1.revoke", token=admin)
        keys = await audit_until(t, 2, kind="apikey")
        assert actions(keys) == ["apikey.created", "apikey.revoked"]
        assert {str(r.actor) for r, _ in keys} == {"admin/root"}
        assert [w.text for w in keys[0][0].why] == ["partner app"]
        secret = created["api_key"].rsplit("_", 1)[1]
        assert all(secret.encode() not in raw for _, raw in keys)

        # The whole trail, in order; the seller's registration by the admin.
        trail = await audit(t)
        assert str(trail[0][0].actor) == "admin/root"
        assert trail[0][0].action == "seller.registered"
        assert actions(trail).count("decision.made") >= 2
        times = [parse_time(r.at) for r, _ in trail if r.entity != "decision"]
        assert times == sorted(times)


# -- reading ------------------------------------------------------------------------------------


async def test_since_compares_with_the_records_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the real clock (the stream's own times are real): ``--since`` keeps the records
    at or after it, by their ``at``."""
    with NatsServer(jetstream=True, store_dir=tmp_path / "js") as server:
        settings = Settings(
            nats_url=server.url, data_dir=str(tmp_path / "n"), node_id="n1", auth="off"
        )
        monkeypatch.chdir(tmp_path)
        async with ShopNode(settings, clock=RealClock()) as node, NatsTransport(server.url) as t:
            c = Client(t)
            await c.ok("sellers.S1.register", {"name": "S"})
            [(first, _)] = await audit_until(t, 1)
            await c.ok("sellers.S1.register", {"name": "S", "max_active_windows": 5})
            both = await audit_until(t, 2)
            second = both[1][0]
            assert actions(both) == ["seller.registered", "seller.updated"]
            assert second.audit_id != first.audit_id
            since = parse_time(second.at)
            expected = [r for r in (first, second) if parse_time(r.at) >= since]
            assert [r for r, _ in await audit(t, since=since)] == expected
            assert len(await audit(t, since=node.clock.time() - 3600)) == 2
            assert await audit(t, since=node.clock.time() + 3600) == []
            assert await run_cli(["audit", "--nats", server.url, "--since", "1h"]) == EXIT_OK
    # NATS gone: the command line says unavailable
    assert await run_cli(["audit", "--nats", server.url, "--timeout", "0.5"]) == (EXIT_UNAVAILABLE)


def test_since_takes_times_dates_and_ages() -> None:
    now = 1_800_000_000.0
    assert parse_since("2027-01-15T08:00:00.000Z", now) == parse_time("2027-01-15T08:00:00.000Z")
    assert parse_since("2027-01-15", now) == parse_time("2027-01-15T00:00:00.000Z")
    assert parse_since("2027-01-15T10:00+02:00", now) == parse_time("2027-01-15T08:00:00.000Z")
    assert parse_since("90s", now) == now - 90
    assert parse_since("2h", now) == now - 7200
    assert parse_since("7d", now) == now - 7 * 86_400


def test_records_name_their_actor_and_never_a_secret() -> None:
    assert str(actor_of(None)) == "anonymous/anonymous"
    assert str(actor_of(Principal("root", "admin"))) == "admin/root"
    view = ApiKeyView(
        key_id="k1",
        role="buyer",
        principal="B1",
        note=None,
        status="active",
        created_at="2027-01-15T08:00:00.000Z",
        revoked_at=None,
        api_key="isk_k1_" + "0" * 64,
    )
    record = apikey_changed(view, verb="created", actor=actor_of(None), at=1_800_000_000.0)
    assert record.audit_id == "apikey.k1.created" and record.why == []
    assert "isk_" not in msgspec.json.encode(record).decode()
    assert decode_record(msgspec.json.encode(record)) == record


class _Sink:
    def __init__(self) -> None:
        self.entries: list[OutboxEntry] = []

    async def publish(self, entries: Sequence[OutboxEntry]) -> None:
        self.entries.extend(entries)


async def test_registrations_in_one_turn_get_their_own_records() -> None:
    """A turn may apply several commands (and commit them together): each change is
    numbered by the seller's own count, also across a restart."""
    journal, sink = MemoryJournal(), _Sink()
    admin = Principal("root", "admin")

    def register(name: str, windows: int) -> Request:
        body = RegisterSeller(name=name, max_active_windows=windows)
        return Request(CommandKind.SELLER_REGISTER, body, principal=admin)

    for names in (("A", "B", "A"), ("C",)):
        async with ActorTestKit(journal=journal, outbox_sink=sink) as kit:
            kit.system.register("seller", SellerActor, cls=SellerActor)
            ref = kit.system.ref("seller", "S1")
            for n, name in enumerate(names):
                ref.tell(register(name, n + 1))  # queued together: one turn
            await kit.settle()
    records = [decode_record(e.payload) for e in sink.entries if ".audit." in e.subject]
    assert [r.audit_id for r in records] == [
        "seller.S1.registered.1",
        "seller.S1.updated.2",
        "seller.S1.updated.3",
        "seller.S1.updated.4",
    ]
    assert {str(r.actor) for r in records} == {"admin/root"}
    assert [r.inputs["max_active_windows"] for r in records] == [1, 2, 3, 1]


# -- NATS permissions (nats.conf) ---------------------------------------------------------------

PASSWORDS = {role: f"{role}-password-for-tests" for role in NATS_ROLES}


def _login(server: NatsServer, user: str) -> NatsTransport:
    return NatsTransport(
        server.url,
        name=f"test-{user}",
        user=user,
        password=PASSWORDS[user],
        inbox_prefix=f"_INBOX_{user}",
    )


async def test_only_nodes_write_the_audit_and_the_admin_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {password_env(role): password for role, password in PASSWORDS.items()}
    with NatsServer(
        config=ROOT / "nats.conf", env=env, store_dir=tmp_path / "js", monitor_port=0
    ) as server:
        password_file = tmp_path / "node.password"
        password_file.write_text(PASSWORDS["node"] + "\n")
        settings = Settings(
            nats_url=server.url,
            data_dir=str(tmp_path / "node"),
            node_id="n1",
            auth="off",
            nats_user="node",
            nats_password_file=str(password_file),
        )
        async with ShopNode(settings) as node, _login(server, "admin") as admin:
            # the admin's command is audited (anonymous: the message layer is off here)
            reply, _ = await admin.request("iceshop.sellers.S1.register", b'{"name": "S"}')
            assert msgspec.json.decode(reply)["ok"] is True
            [(record, _)] = await audit_until(admin, 1)
            assert record.action == "seller.registered"
            assert admin.permission_violations == 0  # consumer, deliveries, flow control

            # nobody but a node publishes records; the admin cannot delete the stream
            for role in ("admin", "gateway", "events"):
                async with _login(server, role) as client:
                    await client.publish("iceshop.audit.window.W1", b"{}")
                    await client.flush()
                    assert client.permission_violations == 1, role
            await admin.publish("$JS.API.STREAM.DELETE.ICESHOP_AUDIT", b"")
            await admin.flush()
            assert admin.permission_violations == 1
            assert len(await audit(admin)) == 1
            assert node.transport is not None and node.transport.permission_violations == 0

            # the command line, logged in as admin
            monkeypatch.chdir(tmp_path)
            monkeypatch.setenv("ICESHOP_NATS_USER", "admin")
            monkeypatch.setenv("ICESHOP_NATS_PASSWORD", PASSWORDS["admin"])
            capsys.readouterr()
            assert await run_cli(["audit", "--nats", server.url, "--json"]) == EXIT_OK
            [line] = capsys.readouterr().out.splitlines()
            assert decode_record(line.encode()) == record
