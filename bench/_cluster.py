"""A shop cluster on this machine: three NATS servers, N node processes, and failover.

The cluster benchmark and the failover tests need the same thing: a real three-server
NATS cluster with JetStream (local processes on free ports, their stores under a work
directory) and real node processes (``python -m iceshop.node`` with ``journal =
"jetstream"`` and three replicas), each node connected to a different server, so the
requests and the messages between nodes cross the servers' routes as they would
between machines.

* :class:`NatsCluster` runs the servers. JetStream elects its leaders after the servers
  start; the nodes wait for that themselves (they retry creating their streams).
* :class:`ClusterNode` is a :class:`~bench._flash_shop.NodeProcess` with a node id: it
  is ready once it answers on its own subject (``<prefix>.nodes.<id>.status``) and
  ``cluster.status`` lists it (any node may answer that one, so "something answers"
  would prove nothing), and it can be paused (SIGSTOP) and resumed (SIGCONT).
  Its read model projector runs inside it (each node has its own read model; see
  docs/cluster.md).
* :class:`ShopCluster` ties them to a :class:`~bench._flash_shop.ShopClient`: start
  nodes (all at once: a node waits for the streams and the lease bucket a new cluster is
  still placing), wait until every node holds shards and every shard is owned
  (:meth:`ShopCluster.wait_ready`), and measure a failover
  (:meth:`ShopCluster.kill_and_measure`): from the SIGKILL until (a) ``cluster.status``
  shows none of the killed node's shards owned by it and every shard owned, and (b) a
  request to an actor on one of those shards succeeds.
* :func:`window_events` reads a window event type back from the ICESHOP_EVENTS stream,
  to count how often each window was activated or closed.

Everything is observed over NATS with bounded waits; nothing sleeps for a lease to
lapse.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
import msgspec
from nats.js.api import DeliverPolicy

from actors.cluster import shard_of
from actors.errors import TransportError
from actors.nats import NatsServer, NatsTransport, free_port
from actors.nats.errors import mapped_errors
from bench._flash_shop import BenchError, NodeProcess, ShopClient, cpu_seconds_of, fan_out
from iceshop.wire import EVENT_STREAM

__all__ = [
    "CLUSTER_SETTINGS",
    "SHARDS",
    "ClusterNode",
    "ClusterStatus",
    "Failover",
    "NatsCluster",
    "Probe",
    "ShopCluster",
    "register_probe",
    "request_probe",
    "window_events",
]

SHARDS = 64
CLUSTER_SETTINGS: dict[str, str] = {
    "journal": "jetstream",
    "stream_replicas": "3",
    "shards": str(SHARDS),
    "lease_ttl_s": "3.0",
    "lease_heartbeat_s": "0.75",
    "auth": "off",
}
"""Node settings of a cluster member (on top of the flash crowd's ``NODE_SETTINGS``)."""

Probe = Callable[[], Awaitable[bool]]
"""One attempt of a request; True when it succeeded."""


class NatsCluster:
    """``size`` nats-servers with JetStream, routed to each other, on free loopback
    ports; their stores under ``store_root``. ``async with`` starts and stops them."""

    def __init__(self, store_root: Path, size: int = 3, name: str = "iceshop") -> None:
        routes = [free_port() for _ in range(size)]
        self.servers = [
            NatsServer(
                name=f"{name}-{i + 1}",
                store_dir=store_root / f"server-{i + 1}",
                cluster_name=name,
                cluster_port=routes[i],
                routes=[f"nats://127.0.0.1:{p}" for j, p in enumerate(routes) if j != i],
            )
            for i in range(size)
        ]

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self.servers]

    @property
    def url(self) -> str:
        """Every server, comma separated (what a node's ``nats_url`` accepts)."""
        return ",".join(self.urls)

    async def __aenter__(self) -> Self:
        try:
            for server in self.servers:
                await server.astart()
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop()

    async def _stop(self) -> None:
        with anyio.CancelScope(shield=True):
            for server in self.servers:
                await server.astop()


class ClusterStatus(msgspec.Struct, frozen=True):
    """``cluster.status`` as one node answered it."""

    owners: dict[int, str | None]
    """Every shard's owner (None: free)."""
    nodes: tuple[str, ...]
    """The members listed (a crashed one stays listed, without shards, for a while)."""

    @classmethod
    def parse(cls, data: dict[str, Any]) -> ClusterStatus:
        return cls(
            owners={row["shard"]: row["owner"] for row in data["shards"]},
            nodes=tuple(node["node_id"] for node in data["nodes"]),
        )

    def owned_by(self, node_id: str) -> frozenset[int]:
        return frozenset(shard for shard, owner in self.owners.items() if owner == node_id)

    @property
    def all_owned(self) -> bool:
        return bool(self.owners) and all(owner is not None for owner in self.owners.values())

    def owner_of(self, kind: str, key: str) -> str | None:
        return self.owners.get(shard_of(kind, key, len(self.owners)))


class Failover(msgspec.Struct, frozen=True, kw_only=True):
    """One node's loss, timed from its SIGKILL (or SIGSTOP)."""

    node_id: str
    shards: tuple[int, ...]
    """The shards it held when it was stopped."""
    shards_moved_s: float
    """Until ``cluster.status`` showed none of them owned by it, and every shard owned."""
    served_s: float
    """Until a request to an actor on one of them succeeded."""

    @property
    def seconds(self) -> float:
        """The failover time: both of the above."""
        return max(self.shards_moved_s, self.served_s)


class ClusterNode(NodeProcess):
    """A node process that is one member of a cluster (see the module docstring)."""

    def __init__(
        self,
        node_id: str,
        nats_url: str,
        workdir: Path,
        settings: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            nats_url,
            workdir / node_id,
            workdir / f"{node_id}.log",
            readmodel_projector="node",
            extra_settings={**CLUSTER_SETTINGS, **(settings or {}), "node_id": node_id},
        )
        self.node_id = node_id
        self.paused = False

    async def ready(self, client: ShopClient) -> bool:
        """Whether this node answers on its own subject (its last step at start) and
        ``cluster.status`` lists it."""
        try:
            await client.transport.request(
                f"{client.prefix}.nodes.{self.node_id}.status", b"", timeout=0.5
            )
            reply = await client.call("cluster.status", timeout=0.5)
        except TransportError:
            return False
        return reply.get("ok") is True and any(
            node["node_id"] == self.node_id for node in reply["data"]["nodes"]
        )

    def pause(self) -> None:
        """SIGSTOP: the process stops in its tracks, its connections stay open."""
        self._signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        self._signal(signal.SIGCONT)
        self.paused = False

    async def stop(self, within_s: float = 15.0) -> None:
        if self.paused:
            self.resume()  # a stopped process would not see the SIGTERM
        await super().stop(within_s)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text("utf-8", "replace")
        except OSError:
            return ""

    def _signal(self, signum: signal.Signals) -> None:
        if self.process is None or self.process.returncode is not None:
            raise BenchError(f"node {self.node_id} is not running")
        self.process.send_signal(signum)


class ShopCluster:
    """A :class:`NatsCluster` of three servers, the nodes started on it and a client
    connected to every server. ``async with`` starts the servers; :meth:`start_nodes`
    the nodes; leaving stops the nodes (SIGTERM), then the servers. ``settings`` are
    node settings for every node (on top of :data:`CLUSTER_SETTINGS`)."""

    def __init__(
        self, workdir: Path, settings: dict[str, str] | None = None, servers: int = 3
    ) -> None:
        self.workdir = workdir
        self.settings = dict(settings or {})
        self.shards = int(self.settings.get("shards", CLUSTER_SETTINGS["shards"]))
        self.nats = NatsCluster(workdir / "nats", servers)
        self.nodes: dict[str, ClusterNode] = {}
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: ShopClient | None = None
        #: Where the harness reports what it had to work around.
        self.echo: Callable[[str], None] = print

    @property
    def client(self) -> ShopClient:
        if self._client is None:
            raise BenchError("the cluster is not started")
        return self._client

    async def __aenter__(self) -> Self:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(self.nats)
            transport = await stack.enter_async_context(
                NatsTransport(self.nats.urls, name="cluster-bench", reconnect_time_wait=0.05)
            )
            self._client = ShopClient(transport)
            stack.push_async_callback(self.stop_nodes)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            with anyio.CancelScope(shield=True):
                await stack.aclose()

    # -- nodes ------------------------------------------------------------------------

    async def start_nodes(
        self, node_ids: Sequence[str], within_s: float = 60.0
    ) -> dict[str, float]:
        """Start these nodes at once (node ``i`` of the cluster connected to server
        ``i mod 3``); the seconds each took until ``cluster.status`` listed it."""
        started: dict[str, float] = {}
        new = []
        for node_id in node_ids:
            node = self.nodes.get(node_id)
            if node is None:
                url = self.nats.urls[len(self.nodes) % len(self.nats.urls)]
                node = self.nodes[node_id] = ClusterNode(node_id, url, self.workdir, self.settings)
            new.append(node)

        async def start(i: int) -> None:
            node = new[i]
            started[node.node_id] = await node.start(self.client, within_s)

        await fan_out(len(new), len(new), start)
        return started

    async def stop_nodes(self, node_ids: Sequence[str] | None = None) -> None:
        """SIGTERM these nodes (all by default), one after the other: each hands its
        shards over to those still running."""
        for node_id in list(self.nodes) if node_ids is None else node_ids:
            await self.nodes[node_id].stop()

    def running(self) -> list[str]:
        return [n for n, node in self.nodes.items() if node.process is not None]

    async def cpu_seconds(self) -> tuple[dict[str, float], float]:
        """CPU seconds used so far by each running node, and by the NATS servers."""
        nodes = {n: await node.cpu_seconds() for n, node in self.nodes.items()}
        servers = [await cpu_seconds_of(server.pid) for server in self.nats.servers]
        return {n: s for n, s in nodes.items() if s is not None}, sum(s or 0.0 for s in servers)

    async def status(self, timeout: float = 1.0) -> ClusterStatus | None:  # noqa: ASYNC109
        """``cluster.status`` from whichever node answers; None when none does."""
        try:
            reply = await self.client.call("cluster.status", timeout=timeout)
        except TransportError:
            return None
        if reply.get("ok") is not True:
            return None
        return ClusterStatus.parse(reply["data"])

    async def wait_ready(
        self,
        node_ids: Sequence[str] | None = None,
        *,
        balanced: bool = True,
        within_s: float = 45.0,
    ) -> ClusterStatus:
        """Until every shard is owned by one of ``node_ids`` (the running nodes by
        default) and each of them holds shards; ``balanced``: its share (``shards //
        n`` or one more), as after the cluster's rebalancing."""
        expected = set(self.running() if node_ids is None else node_ids)
        share = self.shards // len(expected)
        last: ClusterStatus | None = None
        with anyio.move_on_after(within_s):
            while True:
                last = await self.status()
                if last is not None and last.all_owned:
                    held = {n: len(last.owned_by(n)) for n in expected}
                    if set(last.owners.values()) <= expected and all(
                        (share <= count <= share + 1) if balanced else count > 0
                        for count in held.values()
                    ):
                        return last
                self._check_alive()
                await anyio.sleep(0.05)
        raise BenchError(f"cluster of {sorted(expected)} not ready in {within_s:g}s: {last}")

    def _check_alive(self) -> None:
        for node in self.nodes.values():
            if node.died:
                raise BenchError(f"node {node.node_id} died; log tail:\n{node.tail()}")

    # -- failover ---------------------------------------------------------------------

    async def kill_and_measure(
        self, node_id: str, probe: Probe | None = None, within_s: float = 30.0
    ) -> Failover:
        """SIGKILL ``node_id`` and time the failover (see the module docstring). The
        probe defaults to :func:`register_probe` on the node's shards."""
        status = await self.status()
        if status is None:
            raise BenchError("no node answers cluster.status")
        shards = status.owned_by(node_id)
        if not shards:
            raise BenchError(f"{node_id} holds no shard: nothing would fail over")
        node = self.nodes[node_id]
        if node.process is None:
            raise BenchError(f"node {node_id} is not running")
        killed_at = anyio.current_time()
        node.process.kill()
        try:
            return await self.measure(
                node_id, shards, killed_at, probe or self.register_probe(shards), within_s
            )
        finally:
            await node.kill()  # reap it

    async def measure(
        self,
        node_id: str,
        shards: frozenset[int],
        since: float,
        probe: Probe,
        within_s: float = 30.0,
    ) -> Failover:
        """Time from ``since`` (``anyio.current_time()`` when ``node_id`` stopped) until
        the others own all of ``shards`` and until ``probe`` succeeds, both polled."""
        moved: list[float] = []
        served: list[float] = []

        async def watch_status() -> None:
            while True:
                status = await self.status(timeout=0.5)
                if status is not None and status.all_owned and not status.owned_by(node_id):
                    moved.append(anyio.current_time() - since)
                    return
                await anyio.sleep(0.02)

        async def watch_probe() -> None:
            # A probe every 50 ms, each allowed a second: the first success is timed
            # within 50 ms even though a probe waits while the shard has no owner.
            async with anyio.create_task_group() as tg:

                async def attempt() -> None:
                    if await probe() and not served:
                        served.append(anyio.current_time() - since)
                        tg.cancel_scope.cancel()

                while True:
                    tg.start_soon(attempt)
                    await anyio.sleep(0.05)

        with anyio.move_on_after(within_s):
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch_status)
                tg.start_soon(watch_probe)
        if not moved or not served:
            raise BenchError(
                f"no failover of {node_id} within {within_s:g}s "
                f"(shards moved: {bool(moved)}, request served: {bool(served)})"
            )
        return Failover(
            node_id=node_id,
            shards=tuple(sorted(shards)),
            shards_moved_s=moved[0],
            served_s=served[0],
        )

    def register_probe(self, shards: frozenset[int]) -> Probe:
        return register_probe(self.client, shards, self.shards)


def request_probe(
    client: ShopClient,
    subject: str,
    body: dict[str, Any] | None = None,
    timeout: float = 1.0,
) -> Probe:
    """A probe that sends ``subject`` and succeeds on an ``ok`` reply."""

    async def probe() -> bool:
        try:
            reply = await client.call(subject, body, timeout=timeout)
        except TransportError:
            return False
        return reply.get("ok") is True

    return probe


def register_probe(client: ShopClient, shards: frozenset[int], total: int) -> Probe:
    """A probe that registers a buyer whose actor lives on one of ``shards`` (a write:
    it succeeds only once a live node owns the shard and its journal takes records)."""
    buyer = next(
        f"PROBE{n}" for n in range(100_000) if shard_of("buyer", f"PROBE{n}", total) in shards
    )
    return request_probe(
        client, f"buyers.{buyer}.register", {"name": "Probe", "phone": "+905550000000"}
    )


async def window_events(
    transport: NatsTransport,
    event_type: str,
    prefix: str = "iceshop",
    timeout: float = 10.0,  # noqa: ASYNC109 - bounds the reading
) -> dict[str, list[str]]:
    """The ``event_id`` of every ``<prefix>.events.window.<id>.<event_type>`` message in
    the event stream, by window id, in stream order (a window activated twice, by two
    turns, would have two different ids)."""
    subject = f"{prefix}.events.window.*.{event_type}"
    js = transport.jetstream(timeout=timeout)
    found: dict[str, list[str]] = {}
    with mapped_errors(f"read {subject}"):
        info = await js.stream_info(EVENT_STREAM, subjects_filter=subject)
        total = sum((info.state.subjects or {}).values())
        if total == 0:
            return found
        sub = await js.subscribe(
            subject, stream=EVENT_STREAM, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
        )
        try:
            for _ in range(total):
                msg = await sub.next_msg(timeout=timeout)
                window_id = msg.subject.split(".")[-2]
                event_id = msgspec.json.decode(msg.data)["event_id"]
                found.setdefault(window_id, []).append(event_id)
        finally:
            await sub.unsubscribe()
    return found
