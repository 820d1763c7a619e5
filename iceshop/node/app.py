"""``ShopNode``: one process of the shop, wired from its parts.

::

    nats ──► NatsBinding ──► buyer / seller / window / decision actors
                 │                        │ commit (SQLite journal, group commit)
                 │                        ▼
                 │            outbox ──► JetStream ICESHOP_EVENTS (+ notifications,
                 │                        │    + ICESHOP_AUDIT: decisions, admin actions)
                 │                        │
    windows.list ◄── read model ◄── projector (durable consumer on window events; in
                                    this process, or `iceshop projector` beside it when
                                    readmodel_projector = "external")
    cluster.status  (this node owns every shard in single-node mode)
    events.demand.*.updated ──► campaign (singleton) ──► proposals, windows

With ``journal = "jetstream"`` the node is one member of a cluster (``actors.cluster``):
it holds leases on shards in the KV bucket ICESHOP_SHARDS, runs only its shards' actors,
journals into the replicated stream ICESHOP_JOURNAL, and sends messages for actors it
does not run to their owner over ``<prefix>.internal.nodes.<node id>``. Every node
subscribes the command subjects in one queue group, so a request reaches one node,
which serves it or passes it on; the campaign, one actor, runs wherever its shard is.
See docs/cluster.md.
    GET /metrics (Prometheus, when metrics_port is set); $SRV.PING|INFO|STATS.iceshop
    (NATS service discovery): see iceshop.observability

Every command is checked by the node's gate (``iceshop.auth``: credentials, role rules,
per-buyer rates) in its route, before any actor sees it; with ``auth = "on"`` the node
reads its token keys first and refuses to start without any.

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
from actors.cluster import shard_of
from actors.cluster.member import ClusterMember
from actors.journal import JetStreamJournal, Journal, SqliteJournal
from actors.nats import JetStreamOutbox, Msg, NatsBinding, NatsTransport
from actors.tracing import TRACEPARENT, Tracer
from iceshop.audit import AUDIT_STREAM, ensure_audit_stream
from iceshop.auth import APIKEY_KIND, REGISTRY_KEY
from iceshop.auth.service import NodeAuth
from iceshop.buyer import BuyerActor
from iceshop.buyer.directory import KnownBuyers
from iceshop.campaign import CampaignActor
from iceshop.connection import nats_transport
from iceshop.decision import DecisionActor
from iceshop.node.messages import shop_codec
from iceshop.node.routing import check_command, encode_reply, make_route
from iceshop.notify import Notifier, start_notifier
from iceshop.observability import ShopCounters, node_version, start_tracing
from iceshop.observability.discovery import announce
from iceshop.observability.endpoint import MetricsEndpoint
from iceshop.observability.metrics import NodeMetrics
from iceshop.product import ProductActor
from iceshop.protocol import DemandSignal, Evaluate
from iceshop.readmodel import Projector, ReadModel, list_windows
from iceshop.readmodel.projector import node_durable
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
    encode_error,
    encode_ok,
    format_time,
)

__all__ = ["NOTIFICATION_STREAM", "READMODEL_FILE", "ShopNode", "safe_node_id"]

log = structlog.get_logger("iceshop.node")

NOTIFICATION_STREAM = "ICESHOP_NOTIFICATIONS"
#: The cluster journal (``journal = "jetstream"``) and the bucket of shard leases.
JOURNAL_STREAM = "ICESHOP_JOURNAL"
LEASE_BUCKET = "ICESHOP_SHARDS"
#: The queue group of every node's command subscriptions: one node gets each request.
NODES_QUEUE = "iceshop-nodes"
CAMPAIGN = ("campaign", "main")
#: The read model's file in the data directory (shared with ``iceshop projector``).
READMODEL_FILE = "readmodel.db"

_demand_event = msgspec.json.Decoder(Event[DemandUpdated])


def safe_node_id(raw: str) -> str:
    """A node id as used in subject tokens and consumer names: A-Z a-z 0-9 _ - only."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", raw)[:64]


class ShopNode:
    """One node. ``async with ShopNode(settings) as node:`` serves until left."""

    def __init__(
        self, settings: Settings, *, clock: Clock | None = None, tracer: Tracer | None = None
    ) -> None:
        self.settings = settings
        #: Where the node's spans go (``actors.tracing``): the given tracer, else one made
        #: from the ``trace_*`` settings at start (None: no tracing).
        self.tracer = tracer
        self.clock: Clock = clock if clock is not None else RealClock()
        # Used in subject tokens and consumer names: keep it to A-Z a-z 0-9 _ -.
        self.node_id = safe_node_id(settings.node_id or f"{socket.gethostname()}-{os.getpid()}")
        self.data_dir = Path(settings.data_dir)
        self.started_at = 0.0
        self.system: ActorSystem | None = None
        self.transport: NatsTransport | None = None
        self.readmodel: ReadModel | None = None
        self.projector: Projector | None = None
        self.auth: NodeAuth | None = None
        self.notifier: Notifier | None = None
        #: This node's part in a cluster (``journal = "jetstream"``), else None.
        self.member: ClusterMember | None = None
        #: Joins and notifications by outcome; read by ``metrics`` (see observability).
        self.counters = ShopCounters()
        #: Buyers known to be registered, shared by this node's buyer and window actors.
        self.known_buyers = KnownBuyers()
        self.metrics = NodeMetrics(self.node_id, self.counters, version=node_version())
        #: The port ``/metrics`` listens on once started (0: no endpoint).
        self.metrics_port = 0
        #: How long start-up waits for JetStream to accept the node's streams.
        self.stream_timeout = 30.0
        self._stack: contextlib.AsyncExitStack | None = None
        self._tg: TaskGroup | None = None

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        settings = self.settings
        prefix = settings.prefix
        if (
            settings.journal == "jetstream"
            and settings.lease_heartbeat_s >= settings.lease_ttl_s - 0.5
        ):
            raise ShopError.invalid(
                "lease_heartbeat_s: must be below lease_ttl_s - 0.5 "
                f"({settings.lease_ttl_s - 0.5:g}), or leases lapse between renewals"
            )
        # Before anything starts: a node that could authenticate no one refuses to.
        self.auth = auth = await NodeAuth.create(settings, self.data_dir, self.clock)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            # Every log line of the tasks started from here on names this node.
            structlog.contextvars.bind_contextvars(node=self.node_id)
            stack.callback(structlog.contextvars.unbind_contextvars, "node")
            if self.tracer is None:
                self.tracer = await start_tracing(stack, settings, self.node_id)
            # Logged in as settings.nats_user (the "node" user of nats.conf), if any.
            transport = nats_transport(settings, name=f"iceshop-{self.node_id}")
            self.transport = await stack.enter_async_context(transport)
            outbox = JetStreamOutbox(transport)
            for stream, subjects in (
                (EVENT_STREAM, f"{prefix}.events.>"),
                (NOTIFICATION_STREAM, f"{prefix}.notifications.>"),
                (AUDIT_STREAM, f"{prefix}.audit.>"),
            ):
                await self._ensure_stream(outbox, stream, subjects)

            external = settings.readmodel_projector == "external"
            # External: `iceshop projector` writes the file; this node only queries it.
            self.readmodel = ReadModel(self.data_dir / READMODEL_FILE, writer=not external)
            await self.readmodel.open()
            stack.push_async_callback(self.readmodel.close)

            journal: Journal
            member = None
            if settings.journal == "jetstream":
                member = self.member = ClusterMember(
                    transport,
                    node_id=self.node_id,
                    shards=settings.shards,
                    bucket=LEASE_BUCKET,
                    subject_prefix=f"{prefix}.internal.nodes",
                    codec=shop_codec(),
                    clock=self.clock,
                    replicas=settings.stream_replicas,
                    ttl=settings.lease_ttl_s,
                    heartbeat=settings.lease_heartbeat_s,
                    on_owned=self._on_owned,
                )
                journal = JetStreamJournal(
                    transport,
                    stream=JOURNAL_STREAM,
                    prefix=f"{prefix}.journal",
                    replicas=settings.stream_replicas,
                )
            else:
                journal = SqliteJournal(self.data_dir / "journal.db")
            system = ActorSystem(
                clock=self.clock,
                journal=journal,
                outbox_sink=outbox,
                node_id=self.node_id,
                tracer=self.tracer,
                placement=None if member is None else member.placement,
            )
            # Turn timing feeds only iceshop_actor_turn_seconds: no endpoint, no timing.
            system.dispatcher.timed = settings.metrics_port != 0
            self._register(system)
            self.system = await stack.enter_async_context(system)
            self.started_at = self.clock.time()

            tg = await stack.enter_async_context(anyio.create_task_group())
            self._tg = tg
            stack.callback(tg.cancel_scope.cancel)
            if member is not None:
                member.attach(system)
                member.leases.add_listener(self._count_shards)
                await tg.start(member.run)
                # Left before the task group is cancelled: shards are handed over while
                # the messenger still runs (the subscriptions have stopped by then).
                stack.push_async_callback(member.leave)
            await auth.load_api_keys(system)
            if not external:
                # Every node keeps its own read model, so in a cluster each needs its own
                # consumer (a shared one would give each node part of the events).
                durable = node_durable(self.node_id, member is not None)
                self.projector = Projector(
                    transport,
                    self.readmodel,
                    stream=EVENT_STREAM,
                    prefix=prefix,
                    durable=durable,
                    tracer=self.tracer,
                )
                tg.start_soon(self.projector.run)
            if settings.notifier == "node":  # "external": `iceshop notifier` processes
                self.notifier = await start_notifier(stack, transport, settings, tracer=self.tracer)
                self.metrics.notifier = self.notifier

            self.metrics.system, self.metrics.readmodel = system, self.readmodel
            if member is None:
                self.metrics.shards_owned = settings.shards  # single node: every shard
            if settings.metrics_port:
                endpoint = MetricsEndpoint(self.metrics.scrape)
                self.metrics_port = await tg.start(
                    endpoint.serve, settings.metrics_host, settings.metrics_port
                )

            binding = await stack.enter_async_context(NatsBinding(system, transport))
            if auth.required:
                tg.start_soon(auth.watch_keys)
                await transport.subscribe(f"{prefix}.events.apikey.*.revoked", auth.on_key_event)
                if member is not None:
                    # Every node runs its own API key actor over the shared journal: a key
                    # created through another node is read back from there.
                    await transport.subscribe(
                        f"{prefix}.events.apikey.*.created", self._on_key_created
                    )
            await self._serve(binding)
            await transport.subscribe(
                f"{prefix}.events.demand.*.updated", self._on_demand, queue=NODES_QUEUE
            )
            await announce(
                stack,
                transport,
                node_id=self.node_id,
                prefix=prefix,
                version=self.metrics.version,
                stats=lambda: None if self.system is None else self.system.stats(),
            )
            if member is None:
                system.ref(*CAMPAIGN).tell(Evaluate())
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
                    if stream == AUDIT_STREAM:  # append-only, with its own retention
                        await ensure_audit_stream(
                            outbox.transport,
                            self.settings.prefix,
                            replicas=self.settings.stream_replicas,
                            max_age=self.settings.audit_max_age_s,
                        )
                    else:
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
        known = self.known_buyers
        system.register("buyer", lambda: BuyerActor(s, known), cls=BuyerActor)
        system.register("seller", lambda: SellerActor(s), cls=SellerActor)
        system.register("product", lambda: ProductActor(s), cls=ProductActor)
        counters = self.counters
        system.register("window", lambda: WindowActor(s, counters, known), cls=WindowActor)
        system.register("decision", lambda: DecisionActor(s), cls=DecisionActor)
        system.register("campaign", lambda: CampaignActor(s), cls=CampaignActor)
        assert self.auth is not None
        self.auth.register(system)

    async def _serve(self, binding: NatsBinding) -> None:
        p = self.settings.prefix
        clock = self.clock
        assert self.auth is not None
        gate = self.auth.gate
        for kind, subject, head, key_name in (
            ("buyer", "buyers.*.>", ["buyers"], "buyer_id"),
            ("seller", "sellers.*.>", ["sellers"], "seller_id"),
            ("window", "windows.*.>", ["windows"], "window_id"),
            ("window", "admin.windows.*.cancel", ["admin", "windows"], "window_id"),
            ("decision", "decisions.*.get", ["decisions"], "decision_id"),
        ):
            route = make_route(head, key_name, clock, gate)
            await binding.serve(kind, f"{p}.{subject}", route, encode_reply, queue=NODES_QUEUE)
        # Every API key lives in one actor; the key id travels in Request.ids.
        await binding.serve(
            APIKEY_KIND,
            f"{p}.admin.apikeys.*.>",
            make_route(["admin", "apikeys"], "key_id", clock, gate, key=REGISTRY_KEY),
            encode_reply,
            queue=NODES_QUEUE,
        )
        await binding.serve_handler(f"{p}.windows.list", self._list_windows, queue=NODES_QUEUE)
        await binding.serve_handler(f"{p}.cluster.status", self._cluster_status, queue=NODES_QUEUE)

    def _on_owned(self, shards: frozenset[int]) -> None:
        """Shards started serving here: if the campaign's is one, wake it (its interval
        timer lives in memory, so a new owner starts it)."""
        system = self.system
        if system is not None and shard_of(*CAMPAIGN, self.settings.shards) in shards:
            system.ref(*CAMPAIGN).tell(Evaluate())

    async def _on_key_created(self, msg: Msg) -> None:
        system, auth = self.system, self.auth
        if system is None or auth is None:
            return
        try:
            await auth.reload_api_keys(system)
        except Exception as exc:  # the next created event, or a restart, tries again
            log.warning("API keys not reloaded", error=repr(exc))

    def _count_shards(self) -> None:
        if self.member is not None:
            self.metrics.shards_owned = len(self.member.leases.owned())

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
        # A traced event (its traceparent, from the turn that published it) continues its
        # trace here and into the campaign's turn; an event without one starts no trace.
        span = None
        headers = msg.headers
        tracer = self.tracer
        if tracer is not None and headers and TRACEPARENT in headers:
            span = tracer.start(
                "demand signal",
                headers,
                {"messaging.destination.name": msg.subject, "product.id": d.product_id},
                "consumer",
            )
        try:
            system.ref("campaign", "main").tell(
                DemandSignal(d.product_id, d.score, d.open_intents, d.quantity),
                headers=None if span is None else {TRACEPARENT: span.traceparent},
            )
        except Exception as exc:  # a full campaign mailbox: the next tick re-reads demand
            log.warning("demand signal dropped", product=d.product_id, error=repr(exc))
            if span is not None:
                span.end(exc)
            return
        if span is not None:
            span.end()

    async def _list_windows(self, tokens: list[str], headers: Any, payload: bytes) -> bytes:
        assert self.readmodel is not None and self.auth is not None
        try:
            body, _ = check_command(self.auth.gate, CommandKind.WINDOWS_LIST, headers, payload)
            assert isinstance(body, ListWindows)
            return encode_reply(await list_windows(self.readmodel, body))
        except Exception as exc:  # ShopError, or a store failure -> unavailable / internal
            return encode_error(exc)

    async def _cluster_status(self, tokens: list[str], headers: Any, payload: bytes) -> bytes:
        assert self.auth is not None
        try:
            check_command(self.auth.gate, CommandKind.CLUSTER_STATUS, headers, payload)
        except ShopError as exc:
            return encode_error(exc)
        if self.member is not None:
            view = self.member.leases.view()
            return encode_ok(
                ClusterStatusReply(
                    nodes=[
                        NodeStatus(n.node_id, format_time(n.started_at), list(n.shards))
                        for n in view.nodes
                    ],
                    shards=[
                        ShardStatus(
                            s.shard,
                            s.owner,
                            None if s.lease_age_s is None else round(s.lease_age_s, 3),
                        )
                        for s in view.shards
                    ],
                )
            )
        shards = list(range(self.settings.shards))
        age = max(0.0, self.clock.time() - self.started_at)
        return encode_ok(
            ClusterStatusReply(
                nodes=[NodeStatus(self.node_id, format_time(self.started_at), shards)],
                shards=[ShardStatus(shard, self.node_id, round(age, 3)) for shard in shards],
            )
        )
