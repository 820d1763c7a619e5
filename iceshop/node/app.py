"""``ShopNode``: one process of the shop, wired from its parts.

::

    nats ──► NatsBinding ──► buyer / seller / window / decision actors
                 │                        │ commit (SQLite journal, group commit)
                 │                        ▼
                 │            outbox ──► JetStream ICESHOP_EVENTS (+ notifications)
                 │                        │
    windows.list ◄── read model ◄── projector (durable consumer on window events; in
                                    this process, or `iceshop projector` beside it when
                                    readmodel_projector = "external")
    cluster.status  (this node owns every shard in single-node mode)
    events.demand.*.updated ──► campaign (singleton) ──► proposals, windows

Every long-lived piece is entered on an ``AsyncExitStack`` so leaving the node stops
them in reverse order: subscriptions first (no new work), then the actors (pending
commits finish), then the connection.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
import msgspec
import structlog
from anyio.abc import TaskGroup

from actors import ActorSystem, Clock, RealClock, TransportError
from actors.journal import SqliteJournal
from actors.nats import JetStreamOutbox, Msg, NatsBinding, NatsTransport
from iceshop.buyer import BuyerActor
from iceshop.campaign import CampaignActor
from iceshop.decision import DecisionActor
from iceshop.node.routing import encode_reply, make_route
from iceshop.product import ProductActor
from iceshop.protocol import DemandSignal, Evaluate
from iceshop.readmodel import Projector, ReadModel, list_windows
from iceshop.seller import SellerActor
from iceshop.settings import Settings
from iceshop.window import WindowActor
from iceshop.wire import (
    EVENT_STREAM,
    ClusterStatusReply,
    CommandKind,
    DemandUpdated,
    Event,
    ListWindows,
    NodeStatus,
    ShardStatus,
    ShopError,
    decode_command,
    encode_error,
    encode_ok,
    format_time,
)

__all__ = ["NOTIFICATION_STREAM", "READMODEL_FILE", "ShopNode"]

log = structlog.get_logger("iceshop.node")

NOTIFICATION_STREAM = "ICESHOP_NOTIFICATIONS"
#: The read model's file in the data directory (shared with ``iceshop projector``).
READMODEL_FILE = "readmodel.db"

_demand_event = msgspec.json.Decoder(Event[DemandUpdated])


class ShopNode:
    """One node. ``async with ShopNode(settings) as node:`` serves until left."""

    def __init__(self, settings: Settings, *, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock if clock is not None else RealClock()
        # Used in subject tokens and consumer names: keep it to A-Z a-z 0-9 _ -.
        raw_id = settings.node_id or f"{socket.gethostname()}-{os.getpid()}"
        self.node_id = re.sub(r"[^A-Za-z0-9_-]", "_", raw_id)[:64]
        self.data_dir = Path(settings.data_dir)
        self.started_at = 0.0
        self.system: ActorSystem | None = None
        self.transport: NatsTransport | None = None
        self.readmodel: ReadModel | None = None
        self.projector: Projector | None = None
        #: How long start-up waits for JetStream to accept the node's streams.
        self.stream_timeout = 30.0
        self._stack: contextlib.AsyncExitStack | None = None
        self._tg: TaskGroup | None = None

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        settings = self.settings
        prefix = settings.prefix
        if settings.journal != "sqlite":
            raise ShopError.invalid(
                "journal: only 'sqlite' is available in this version (the JetStream journal "
                "arrives with scale-out)"
            )
        if settings.auth == "on":
            raise ShopError.invalid(
                "auth: authentication is not available in this version; set auth = off"
            )
        log.warning(
            "AUTHENTICATION IS OFF: any client on this NATS server can act as anyone",
            node=self.node_id,
        )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            transport = NatsTransport(
                [u.strip() for u in settings.nats_url.split(",") if u.strip()],
                name=f"iceshop-{self.node_id}",
            )
            self.transport = await stack.enter_async_context(transport)
            outbox = JetStreamOutbox(transport)
            for stream, subjects in (
                (EVENT_STREAM, f"{prefix}.events.>"),
                (NOTIFICATION_STREAM, f"{prefix}.notifications.>"),
            ):
                await self._ensure_stream(outbox, stream, subjects)

            external = settings.readmodel_projector == "external"
            # External: `iceshop projector` writes the file; this node only queries it.
            self.readmodel = ReadModel(self.data_dir / READMODEL_FILE, writer=not external)
            await self.readmodel.open()
            stack.push_async_callback(self.readmodel.close)

            system = ActorSystem(
                clock=self.clock,
                journal=SqliteJournal(self.data_dir / "journal.db"),
                outbox_sink=outbox,
                node_id=self.node_id,
            )
            self._register(system)
            self.system = await stack.enter_async_context(system)
            self.started_at = self.clock.time()

            tg = await stack.enter_async_context(anyio.create_task_group())
            self._tg = tg
            stack.callback(tg.cancel_scope.cancel)
            if not external:
                self.projector = Projector(
                    transport, self.readmodel, stream=EVENT_STREAM, prefix=prefix
                )
                tg.start_soon(self.projector.run)

            binding = await stack.enter_async_context(NatsBinding(system, transport))
            await self._serve(binding)
            await transport.subscribe(f"{prefix}.events.demand.*.updated", self._on_demand)
            system.ref("campaign", "main").tell(Evaluate())
            await transport.flush()
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        log.info(
            "node ready",
            node=self.node_id,
            nats=settings.nats_url,
            data=str(self.data_dir),
            readmodel_projector=settings.readmodel_projector,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.__aexit__(exc_type, exc, tb)

    # -- wiring -------------------------------------------------------------------------

    async def _ensure_stream(self, outbox: JetStreamOutbox, stream: str, subjects: str) -> None:
        """Create the stream when missing. A cluster that is still electing its
        JetStream leader answers "no responders" for a moment: retry for a while."""
        delay = 0.1
        last: TransportError | None = None
        with anyio.move_on_after(self.stream_timeout):
            while True:
                try:
                    await outbox.ensure_stream(
                        stream,
                        [subjects],
                        replicas=self.settings.stream_replicas,
                        max_age=self.settings.stream_max_age_s,
                    )
                    return
                except TransportError as exc:
                    last = exc
                    log.warning("stream not ready; retrying", stream=stream, error=repr(exc))
                    await anyio.sleep(delay)
                    delay = min(delay * 2, 2.0)
        # Still failing: a server without JetStream, or a cluster without a quorum.
        raise TransportError(
            f"stream {stream} not available after {self.stream_timeout:g}s "
            f"(is JetStream enabled on the NATS server?): {last or 'no answer'}"
        ) from last

    def _register(self, system: ActorSystem) -> None:
        s = self.settings
        system.register("buyer", lambda: BuyerActor(s), cls=BuyerActor)
        system.register("seller", lambda: SellerActor(s), cls=SellerActor)
        system.register("product", lambda: ProductActor(s), cls=ProductActor)
        system.register("window", lambda: WindowActor(s), cls=WindowActor)
        system.register("decision", lambda: DecisionActor(s), cls=DecisionActor)
        system.register("campaign", lambda: CampaignActor(s), cls=CampaignActor)

    async def _serve(self, binding: NatsBinding) -> None:
        p = self.settings.prefix
        clock = self.clock
        await binding.serve(
            "buyer", f"{p}.buyers.*.>", make_route(["buyers"], "buyer_id", clock), encode_reply
        )
        await binding.serve(
            "seller", f"{p}.sellers.*.>", make_route(["sellers"], "seller_id", clock), encode_reply
        )
        await binding.serve(
            "window", f"{p}.windows.*.>", make_route(["windows"], "window_id", clock), encode_reply
        )
        await binding.serve(
            "window",
            f"{p}.admin.windows.*.cancel",
            make_route(["admin", "windows"], "window_id", clock),
            encode_reply,
        )
        await binding.serve(
            "decision",
            f"{p}.decisions.*.get",
            make_route(["decisions"], "decision_id", clock),
            encode_reply,
        )
        await binding.serve_handler(f"{p}.windows.list", self._list_windows)
        await binding.serve_handler(f"{p}.cluster.status", self._cluster_status)

    async def _on_demand(self, msg: Msg) -> None:
        """Demand events, as any subscriber sees them, become the campaign's signals."""
        system = self.system
        if system is None:
            return
        try:
            event = _demand_event.decode(msg.data)
        except msgspec.DecodeError:
            log.warning("undecodable demand event", subject=msg.subject)
            return
        d = event.data
        try:
            system.ref("campaign", "main").tell(
                DemandSignal(d.product_id, d.score, d.open_intents, d.quantity)
            )
        except Exception as exc:  # a full campaign mailbox: the next tick re-reads demand
            log.warning("demand signal dropped", product=d.product_id, error=repr(exc))

    async def _list_windows(self, tokens: list[str], headers: Any, payload: bytes) -> bytes:
        assert self.readmodel is not None
        try:
            body = decode_command(CommandKind.WINDOWS_LIST, payload)
            assert isinstance(body, ListWindows)
            return encode_reply(await list_windows(self.readmodel, body))
        except Exception as exc:  # ShopError, or a store failure -> unavailable / internal
            return encode_error(exc)

    async def _cluster_status(self, tokens: list[str], headers: Any, payload: bytes) -> bytes:
        try:
            decode_command(CommandKind.CLUSTER_STATUS, payload)
        except ShopError as exc:
            return encode_error(exc)
        shards = list(range(self.settings.shards))
        age = max(0.0, self.clock.time() - self.started_at)
        return encode_ok(
            ClusterStatusReply(
                nodes=[NodeStatus(self.node_id, format_time(self.started_at), shards)],
                shards=[ShardStatus(shard, self.node_id, round(age, 3)) for shard in shards],
            )
        )
