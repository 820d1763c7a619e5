"""Fuzz a live node over NATS and prove that refused input changed nothing.

Authentication off, or on (``fuzz_shop(tmp, creds)``): then every request carries one
credential from ``fuzz_inputs.CREDENTIALS`` (forged, expired, unknown or revoked, ... or
good but outside its principal's rights) and must be refused all the same.

A real nats-server (JetStream) and a ``ShopNode`` with its SQLite journal, on a virtual
clock that stands still while the fuzz runs (no timer fires, so nothing changes on its
own). ``seed_world`` builds a shop through the contract's subjects: buyers, a seller with
a listing, intents, the window the campaign proposes, activated, with one join. The fuzz
then aims defective requests (``fuzz_inputs.defective_case``, NATS-safe) at the world's
own ids, so a defect that slipped through would act on real records.

``Snapshot`` is what "nothing changed" means: a digest of every journal table (events,
snapshots, deadlines, idempotency replies, the outbox, dead letters, actor sequence
numbers), read from the file in read-only mode in a worker thread, and the views the
contract offers of the world (the window, its reservations, the window list, the
decision). ``fuzz_over_nats`` sends the cases ``concurrency`` at a time, judges every
reply with the same oracle as the in-process level, and counts events published while
it ran (there must be none).
"""

from __future__ import annotations

import collections
import hashlib
import random
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from actors import NoResponders, VirtualClock
from actors.nats import Msg, NatsServer, NatsTransport
from iceshop.node import ShopNode
from iceshop.settings import Settings
from tests.fuzz_inputs import (
    CREDENTIALS,
    EPOCH,
    KINDS,
    ApiKey,
    AuthCase,
    Case,
    Credentials,
    FuzzFailure,
    Unrouted,
    World,
    auth_case,
    defect_pairs,
    defective_case,
    good_token,
    judge,
    judge_auth,
)
from tests.shop_client import Client, VirtualShop

__all__ = [
    "JOURNAL_TABLES",
    "AuthedClient",
    "NatsReport",
    "Snapshot",
    "create_api_keys",
    "credentials_for_every_kind",
    "defects_for_every_kind",
    "draw_cases",
    "fuzz_over_nats",
    "fuzz_shop",
    "seed_world",
    "snapshot",
]

T = TypeVar("T")

INTERVAL = 10.0
LEAD = 60.0
JOURNAL_TABLES = (
    "actors",
    "events",
    "snapshots",
    "deadlines",
    "idempotency",
    "outbox",
    "dead_letters",
)


class AuthedClient(Client):
    """A client that sends every request with one bearer credential (unless the call
    names its own Authorization)."""

    def __init__(self, transport: NatsTransport, token: str) -> None:
        super().__init__(transport)
        self.token = token

    async def call(
        self,
        subject: str,
        body: dict[str, Any] | None = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 - passed to the NATS request
    ) -> dict[str, Any]:
        merged = {"Authorization": f"Bearer {self.token}", **(headers or {})}
        return await super().call(subject, body, raw=raw, headers=merged, timeout=timeout)


@asynccontextmanager
async def fuzz_shop(tmp: Path, creds: Credentials | None = None) -> AsyncIterator[VirtualShop]:
    """A node on a fresh nats-server and data dir: authentication off (said explicitly),
    or, given ``creds``, on with their token keys, spoken to as an admin."""
    keys_dir = tmp / "keys"
    if creds is not None:
        keys_dir.mkdir(parents=True)
        for name, content in creds.key_files().items():
            (keys_dir / name).write_bytes(content)
    with NatsServer(jetstream=True, store_dir=tmp / "js") as server:
        settings = Settings(
            nats_url=server.url,
            data_dir=str(tmp / "node"),
            node_id="fuzz",
            auth="off" if creds is None else "on",
            auth_keys_dir=str(keys_dir) if creds is not None else "",
            campaign_min_quantity=3,
            campaign_interval_s=INTERVAL,
            campaign_cooldown_s=3600,
            window_lead_s=LEAD,
            window_duration_s=600,
            window_min_participants=2,
            window_max_per_buyer=2,
        )
        clock = VirtualClock(start=0.0, epoch=EPOCH)
        async with ShopNode(settings, clock=clock) as node, NatsTransport(server.url) as t:
            if creds is None:
                yield VirtualShop(node, clock, Client(t))
            else:
                admin = good_token(creds, "fuzz-admin", "admin", clock.time())
                yield VirtualShop(node, clock, AuthedClient(t, admin))


async def create_api_keys(shop: VirtualShop, creds: Credentials) -> Credentials:
    """API keys made through the admin subjects (two of them revoked): ``creds`` with
    them, for the fuzz to use and forge."""
    made = []
    for key_id, role, principal, revoke in (
        ("fz-gw", "gateway", None, False),
        ("fz-b1", "buyer", "B1", False),
        ("fz-s1", "seller", "S1", False),
        ("fz-adm", "admin", None, False),
        ("fz-rev", "gateway", None, True),
        ("fz-rev-adm", "admin", None, True),
    ):
        body: dict[str, Any] = {"role": role}
        if principal is not None:
            body["principal"] = principal
        view = await shop.client.ok(f"admin.apikeys.{key_id}.create", body)
        if revoke:
            await shop.client.ok(f"admin.apikeys.{key_id}.revoke")
        made.append(ApiKey(view["api_key"], role, view["principal"], revoke))
    return Credentials(tuple(made), creds.hs_secret, creds.ed_seed)


async def seed_world(shop: VirtualShop) -> World:
    """Buyers, a seller and listing, intents, an active window with one join."""
    c = shop.client
    buyers = ["B1", "B2", "B3"]
    for b in buyers:
        await c.ok(f"buyers.{b}.register", {"name": f"Buyer {b}", "phone": "+905551112233"})
    await c.ok("sellers.S1.register", {"name": "Seller"})
    listing = {
        "product_id": "P1",
        "title": "Tea glasses",
        "list_price_minor": 1000,
        "floor_price_minor": 700,
        "stock": 8,
    }
    await c.ok("sellers.S1.listings.upsert", listing)
    for i, b in enumerate(buyers, start=1):
        intent = {"intent_id": f"I{i}", "product_id": "P1", "max_price_minor": 900}
        await c.ok(f"buyers.{b}.intents.submit", intent)
    listed = await shop.until("windows.list", {}, lambda d: len(d["windows"]) == 1, tick=INTERVAL)
    window = listed["windows"][0]
    wid = window["window_id"]
    await shop.advance(LEAD)
    await shop.until(f"windows.{wid}.get", {}, lambda d: d["state"] == "active")
    await c.ok(f"windows.{wid}.join", {"join_id": "J1", "buyer_id": "B1"})
    decision = await c.ok(f"decisions.{window['decision_id']}.get")
    offers = [decision["offer"]["offer_id"]] if decision.get("offer") else []
    return World.of(
        now=shop.clock.time(),
        buyer_id=buyers,
        seller_id=["S1"],
        product_id=["P1"],
        intent_id=["I1", "I2", "I3"],
        window_id=[wid],
        join_id=["J1", "J2"],
        decision_id=[window["decision_id"]],
        offer_id=offers or ["O1"],
        key_id=["K1"],
    )


def _digest(path: Path) -> dict[str, tuple[int, str]]:
    """Row count and a hash of the rows of every journal table (read-only, any order)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    try:
        out = {}
        for table in JOURNAL_TABLES:
            rows = sorted(repr(row) for row in db.execute(f"SELECT * FROM {table}"))
            out[table] = (len(rows), hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16])
        return out
    finally:
        db.close()


@dataclass(frozen=True)
class Snapshot:
    tables: dict[str, tuple[int, str]]
    views: dict[str, Any]

    def changes(self, other: Snapshot) -> list[str]:
        out = [
            f"journal table {t}: {self.tables[t]} -> {other.tables[t]}"
            for t in JOURNAL_TABLES
            if self.tables[t] != other.tables[t]
        ]
        out += [f"view {v} changed" for v in self.views if self.views[v] != other.views[v]]
        return out


async def snapshot(shop: VirtualShop, world: World) -> Snapshot:
    """The journal and the views, once the outbox has drained and the journal is still."""
    path = Path(shop.node.settings.data_dir) / "journal.db"
    last: dict[str, tuple[int, str]] = {}
    for _ in range(250):
        tables = await anyio.to_thread.run_sync(_digest, path)
        if tables == last and tables["outbox"][0] == 0:
            break
        last = tables
        await anyio.sleep(0.02)
    else:
        raise AssertionError(f"the journal never settled: {last}")
    (wid,), (did,) = world.pool("window_id"), world.pool("decision_id")
    views = {
        "window": await shop.client.ok(f"windows.{wid}.get"),
        "reservations": await shop.client.ok(f"windows.{wid}.reservations"),
        "windows": await shop.client.ok("windows.list"),
        "decision": await shop.client.ok(f"decisions.{did}.get"),
    }
    return Snapshot(tables, views)


def defects_for_every_kind(world: World, per_pair: int, seed: int) -> list[Case]:
    """``per_pair`` NATS-safe cases of every defect for every command, interleaved."""
    cases = [
        case
        for kind, defect in defect_pairs()
        for case in draw_cases(defective_case(world, True, kind, defect), per_pair, seed)
    ]
    random.Random(seed).shuffle(cases)
    return cases


def credentials_for_every_kind(
    world: World, creds: Credentials, per_pair: int, seed: int
) -> list[AuthCase]:
    """``per_pair`` NATS-safe requests for every (command, credential) pair, each one
    the node must refuse at routing (bad credentials with any request; good ones with a
    defect, or with a valid request outside the principal's rights), interleaved."""
    cases = [
        case
        for kind in KINDS
        for label in CREDENTIALS
        for case in draw_cases(
            auth_case(creds, world, True, kind, label, refusals_only=True), per_pair, seed
        )
    ]
    random.Random(seed).shuffle(cases)
    return cases


def draw_cases(strategy: st.SearchStrategy[T], count: int, seed: int) -> list[T]:
    """``count`` cases from ``strategy``, the same ones for the same seed (the first is
    Hypothesis's simplest example)."""
    out: list[T] = []

    @hypothesis_seed(seed)
    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(case: T) -> None:
        out.append(case)

    collect()
    return out


@dataclass
class NatsReport:
    sent: int = 0
    seconds: float = 0.0
    buckets: collections.Counter[str] = field(default_factory=collections.Counter)
    by_defect: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    failures: list[str] = field(default_factory=list)
    events: int = 0


async def fuzz_over_nats(
    shop: VirtualShop,
    world: World,
    cases: Sequence[Case | AuthCase],
    *,
    concurrency: int = 16,
    progress: Callable[[int], None] | None = None,
) -> NatsReport:
    """Send every case, judge every reply; count the events published meanwhile. A
    case with a credential is judged by the authentication oracle (``by_defect`` then
    counts by credential)."""
    transport = shop.client.transport
    report = NatsReport()
    events: list[str] = []

    async def on_event(msg: Msg) -> None:
        events.append(msg.subject)

    probe = await transport.subscribe("iceshop.events.>", on_event)
    await transport.flush()
    pending: Iterator[Case | AuthCase] = iter(cases)

    async def worker() -> None:
        for item in pending:
            case = item.case if isinstance(item, AuthCase) else item
            try:
                reply, _ = await transport.request(
                    case.subject, case.payload, headers=case.headers or None, timeout=10.0
                )
                outcome: bytes | Unrouted = reply
            except NoResponders:
                outcome = Unrouted()
            except Exception as exc:  # a timeout: the node stopped answering
                report.failures.append(f"{exc!r}: {item.reproducer()}")
                continue
            try:
                if isinstance(item, AuthCase):
                    bucket = judge_auth(item, outcome, world.now)
                else:
                    bucket = judge(case, outcome, world.now)
            except FuzzFailure as exc:
                report.failures.append(f"{exc}: {item.reproducer()}")
                continue
            report.sent += 1
            report.buckets[bucket] += 1
            group = item.credential if isinstance(item, AuthCase) else case.defect
            report.by_defect[group, bucket] += 1
            if progress is not None:
                progress(report.sent)

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    report.seconds = time.perf_counter() - start
    await transport.flush()
    await probe.unsubscribe()
    report.events = len(events)
    return report
