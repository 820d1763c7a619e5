"""Test support for the window actor: stub peers, an outbox sink and a small harness.

The window's peers are registered under their real kind names (``buyer``, ``seller``,
``product``, ``campaign``) as tiny actors that record every message they get. The buyer
stub answers ``CheckBuyer`` with ``BuyerKnown``, or ``unknown_buyer`` for ids starting
with ``ghost``; it can also hold its answers back (``Peers.hold_checks``) so a test can
decide when a check completes, or swallow them (``Peers.silent_buyers``).

:class:`Shop` runs one node on virtual time over a journal that outlives it, so
``restart`` is a node going down and coming back (the clock moved on meanwhile).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

from actors import Actor, OutboxEntry
from actors.journal import MemoryJournal
from actors.testkit import ActorTestKit
from iceshop.buyer.directory import KnownBuyers
from iceshop.protocol import BuyerKnown, CheckBuyer, CreateWindow, Principal, Request
from iceshop.settings import Settings
from iceshop.window import WindowActor
from iceshop.wire import (
    AdminCancelWindow,
    CommandKind,
    ErrorCode,
    GetWindow,
    Join,
    Leave,
    ListReservations,
    ShopError,
)

EPOCH = 1_800_000_000.0
ACTIVATE_IN = 10.0
EXPIRE_IN = 100.0


class Peers:
    """What the stub peers received, across restarts of the node."""

    def __init__(self) -> None:
        self.got: list[tuple[str, str, Any]] = []
        self.hold_checks = False
        self.held: list[tuple[Callable[[Any], None], Any]] = []
        self.silent_buyers: set[str] = set()
        self.silent_kinds: set[str] = set()

    def of(self, kind: str, type_: type | None = None) -> list[Any]:
        return [m for k, _, m in self.got if k == kind and (type_ is None or isinstance(m, type_))]

    def release(self) -> None:
        """Answer the held buyer checks (in the order they were asked)."""
        held, self.held = self.held, []
        for reply, value in held:
            reply(value)


def _check_answer(buyer_id: str) -> Any:
    if buyer_id.startswith("ghost"):
        return ShopError(ErrorCode.UNKNOWN_BUYER, f"no buyer {buyer_id!r}")
    return BuyerKnown(buyer_id)


class StubPeer(Actor):
    def __init__(self, peers: Peers) -> None:
        self.peers = peers

    def receive(self, message: Any) -> Any:
        peers = self.peers
        peers.got.append((self.kind, self.key, message))
        if self.kind in peers.silent_kinds:
            self.reply_later()
            return None
        if isinstance(message, CheckBuyer):
            if self.key in peers.silent_buyers:
                self.reply_later()
                return None
            if peers.hold_checks:
                peers.held.append((self.reply_later(), _check_answer(self.key)))
                return None
            return _check_answer(self.key)
        return None


class ListSink:
    """An outbox sink that keeps what was published."""

    def __init__(self) -> None:
        self.entries: list[OutboxEntry] = []

    async def publish(self, entries: Sequence[OutboxEntry]) -> None:
        self.entries.extend(entries)

    def events(self, window_id: str | None = None) -> list[dict[str, Any]]:
        """Published window events, de-duplicated by event id (delivery is at least
        once), in publish order."""
        seen: set[str] = set()
        out: list[dict[str, Any]] = []
        for e in self.entries:
            if e.id in seen or ".events." not in e.subject:  # not audit records
                continue
            seen.add(e.id)
            body = msgspec.json.decode(e.payload)
            if window_id is None or body["data"]["window_id"] == window_id:
                body["subject"] = e.subject
                out.append(body)
        return out


def create_message(
    *,
    now: float = EPOCH,
    quantity_total: int = 5,
    min_participants: int = 2,
    max_per_buyer: int = 2,
    activates_in: float = ACTIVATE_IN,
    expires_in: float = EXPIRE_IN,
    unit_price_minor: int = 4_500,
    decision_id: str | None = "D1",
) -> CreateWindow:
    return CreateWindow(
        product_id="P1",
        seller_id="S1",
        decision_id=decision_id,
        unit_price_minor=unit_price_minor,
        currency="TRY",
        quantity_total=quantity_total,
        min_participants=min_participants,
        max_per_buyer=max_per_buyer,
        activates_at=now + activates_in,
        expires_at=now + expires_in,
    )


def node_window(
    now: float, quantity: int = 5, *, activates_in: float = -1.0, expires_in: float = 600.0
) -> CreateWindow:
    """A window for tests of a whole node: no decision behind it, one unit per buyer, one
    buyer enough; active at once for ten minutes unless told otherwise."""
    return create_message(
        now=now,
        quantity_total=quantity,
        min_participants=1,
        max_per_buyer=1,
        activates_in=activates_in,
        expires_in=expires_in,
        unit_price_minor=500,
        decision_id=None,
    )


class Shop:
    """One node (virtual time, memory journal) with a window actor and stub peers."""

    def __init__(
        self,
        *,
        settings: Settings | None = None,
        window_cls: type[WindowActor] = WindowActor,
        journal: MemoryJournal | None = None,
        known: KnownBuyers | None = None,
    ) -> None:
        self.settings = settings or Settings(auth="off")
        self.window_cls = window_cls
        self.known = known
        self.journal = journal or MemoryJournal()
        self.peers = Peers()
        self.sink = ListSink()
        self.kit: ActorTestKit | None = None
        self.now = EPOCH  # wall time of the running (or last) node

    async def start(self, down_for: float = 0.0) -> ActorTestKit:
        """Start a node whose wall clock reads ``down_for`` seconds after the last one."""
        self.now += down_for
        kit = ActorTestKit(journal=self.journal, outbox_sink=self.sink, epoch=self.now)
        # Registered before the node starts: deadlines armed at start find their kind.
        settings, cls, peers, known = self.settings, self.window_cls, self.peers, self.known
        kit.system.register("window", lambda: cls(settings, None, known), cls=cls)
        for kind in ("buyer", "seller", "product", "campaign"):
            kit.system.register(kind, lambda: StubPeer(peers), cls=StubPeer)
        await kit.__aenter__()
        self.kit = kit
        # Deadlines missed while down are due now: let them fire.
        await kit.advance(0)
        return kit

    async def stop(self) -> None:
        kit = self.kit
        if kit is None:
            return
        self.now = kit.clock.time()
        self.kit = None
        await kit.__aexit__(None, None, None)

    async def restart(self, down_for: float = 0.0) -> None:
        await self.stop()
        await self.start(down_for)

    async def __aenter__(self) -> Shop:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.kit is not None:
            await self.stop()

    # -- driving ------------------------------------------------------------------------

    @property
    def k(self) -> ActorTestKit:
        assert self.kit is not None
        return self.kit

    def clock(self) -> float:
        return self.k.clock.time()

    async def advance(self, seconds: float) -> None:
        await self.k.advance(seconds)

    async def advance_to(self, wall: float) -> None:
        await self.k.advance(max(0.0, wall - self.clock()))

    async def ask(self, message: Any, window_id: str = "W1", **kw: Any) -> Any:
        """Ask and let timers due by now fire, as they would on a real clock (the
        virtual one fires them only when moved)."""
        reply = await self.k.system.ref("window", window_id).ask(message, **kw)
        await self.k.advance(0)
        return reply

    async def settle(self) -> None:
        await self.k.advance(0)

    async def create(self, window_id: str = "W1", **kw: Any) -> Any:
        kw.setdefault("now", self.clock())
        return await self.ask(create_message(**kw), window_id)

    async def command(
        self,
        kind: CommandKind,
        body: Any,
        window_id: str = "W1",
        principal: Principal | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        return await self.ask(Request(kind, body, {}, principal), window_id, headers=headers)

    async def join(
        self, join_id: str, buyer_id: str, quantity: int = 1, window_id: str = "W1", **kw: Any
    ) -> Any:
        body = Join(join_id=join_id, buyer_id=buyer_id, quantity=quantity)
        return await self.command(CommandKind.WINDOW_JOIN, body, window_id, **kw)

    def tell_join(
        self, join_id: str, buyer_id: str, quantity: int = 1, window_id: str = "W1"
    ) -> list[Any]:
        """Send a join without waiting; the returned list receives its reply."""
        got: list[Any] = []
        body = Join(join_id=join_id, buyer_id=buyer_id, quantity=quantity)
        self.k.system.ref("window", window_id).tell(
            Request(CommandKind.WINDOW_JOIN, body), reply_to=got.append
        )
        return got

    async def leave(self, join_id: str, buyer_id: str, window_id: str = "W1", **kw: Any) -> Any:
        body = Leave(join_id=join_id, buyer_id=buyer_id)
        return await self.command(CommandKind.WINDOW_LEAVE, body, window_id, **kw)

    async def get(self, window_id: str = "W1") -> Any:
        return await self.command(CommandKind.WINDOW_GET, GetWindow(), window_id)

    async def reservations(
        self, window_id: str = "W1", limit: int = 100, cursor: str | None = None, **kw: Any
    ) -> Any:
        body = ListReservations(limit=limit, cursor=cursor)
        return await self.command(CommandKind.WINDOW_RESERVATIONS, body, window_id, **kw)

    async def all_reservations(self, window_id: str = "W1") -> list[Any]:
        out: list[Any] = []
        cursor = None
        while True:
            page = await self.reservations(window_id, limit=500, cursor=cursor)
            out.extend(page.reservations)
            cursor = page.next_cursor
            if cursor is None:
                return out

    async def cancel(self, window_id: str = "W1", reason: str = "ops", **kw: Any) -> Any:
        body = AdminCancelWindow(reason=reason)
        return await self.command(CommandKind.ADMIN_WINDOW_CANCEL, body, window_id, **kw)
