"""One node's membership in a cluster: its leases, its messenger and its placement.

:class:`ClusterMember` ties the three parts of :mod:`actors.cluster` to one
:class:`~actors.system.ActorSystem`:

* :class:`~actors.cluster.leases.ShardLeases` says which shards this node holds;
* :class:`ShardPlacement` (given to the system as its placement) runs an actor here only
  while its shard is held, fences the journal writer on the lease, and sends everything
  else through the :class:`~actors.cluster.remote.RemoteMessenger`;
* the lease callbacks move actors: a shard taken gets its stored deadlines armed before
  it serves; a shard lost (lapsed, or taken by another node after a pause) has its actors
  stopped at once, their unhandled mail sent on; a shard handed over on purpose (leaving,
  or rebalancing towards a new node) first stops taking work, lets the commits already
  sent land, and only then gives up the lease, so the next owner reads everything.

Messages for a shard in hand-over wait in the messenger (bounded, until their deadline)
and go out when the view names the new owner. Messages that reach this node for a shard
it has won but not finished taking (its deadlines are being read) wait here, bounded,
and are delivered as soon as the shard serves. A leaving node keeps carrying messages
(what it forwarded, and the replies it relays) until the new owners are known and
nothing waits for an answer, bounded by one lease TTL and a heartbeat.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import anyio
import structlog
from anyio.abc import TaskStatus

from ..clock import Clock
from ..envelope import Reply
from ..errors import ActorsError, NotLocal
from ..journal.base import Deadline
from ..nats.transport import NatsTransport
from ..system import ActorSystem
from .codec import MessageCodec
from .leases import ShardLeases
from .remote import RemoteMessenger
from .shards import shard_of

__all__ = ["ClusterMember", "ShardPlacement"]

_log = structlog.get_logger(__name__)

#: Messages held for shards being taken (beyond: answered "moved", the sender retries).
MAX_HELD = 10_000


class ShardPlacement:
    """The system's placement in a cluster (see :mod:`actors.placement`)."""

    def __init__(self, leases: ShardLeases) -> None:
        self.leases = leases
        self.shards = leases.shards
        self.node_id = leases.node_id
        self.messenger: RemoteMessenger | None = None
        #: Shards being handed over: still leased, no longer serving.
        self.releasing: set[int] = set()

    def shard(self, kind: str, key: str) -> int:
        return shard_of(kind, key, self.shards)

    def is_local(self, kind: str, key: str) -> bool:
        shard = shard_of(kind, key, self.shards)
        return self.leases.owns(shard) and shard not in self.releasing

    def may_write(self, kind: str, key: str) -> bool:
        return self.leases.owns(shard_of(kind, key, self.shards))

    def locate(self, kind: str, key: str) -> str | None:
        shard = shard_of(kind, key, self.shards)
        if shard in self.releasing:
            return None
        return self.leases.owner_of(shard)

    def send(
        self,
        kind: str,
        key: str,
        message: Any,
        reply_to: Reply | None,
        headers: Mapping[str, str] | None,
        deadline: float | None,
    ) -> None:
        messenger = self.messenger
        try:
            if messenger is None:
                raise NotLocal(f"{kind}/{key} lives on another node and none is reachable yet")
            messenger.send(
                kind, key, message, reply_to=reply_to, headers=headers, deadline=deadline
            )
        except ActorsError as exc:  # CodecError, or no messenger yet
            if reply_to is not None:
                reply_to(exc)
            else:
                _log.warning(
                    "message to another node not sent", kind=kind, key=key, error=repr(exc)
                )

    def pick(self, shards: frozenset[int]) -> Callable[[str, str], bool]:
        """A predicate for the actors of ``shards``."""
        n = self.shards
        return lambda kind, key: shard_of(kind, key, n) in shards


class ClusterMember:
    """Make ``system`` one member of a cluster. Build it first, pass ``placement`` to the
    :class:`ActorSystem`, then :meth:`attach` the started system and :meth:`run` it in a
    task group; :meth:`leave` hands every shard over."""

    def __init__(
        self,
        transport: NatsTransport,
        *,
        node_id: str,
        shards: int,
        bucket: str,
        subject_prefix: str,
        codec: MessageCodec,
        clock: Clock,
        replicas: int = 1,
        ttl: float = 3.0,
        heartbeat: float = 1.0,
        margin: float = 0.5,
        on_owned: Callable[[frozenset[int]], None] | None = None,
    ) -> None:
        self.transport = transport
        self.clock = clock
        self.codec = codec
        self.subject_prefix = subject_prefix
        self.leases = ShardLeases(
            transport,
            node_id=node_id,
            shards=shards,
            bucket=bucket,
            clock=clock,
            replicas=replicas,
            ttl=ttl,
            heartbeat=heartbeat,
            margin=margin,
            on_acquired=self._acquired,
            on_lost=self._lost,
            before_release=self._releasing,
        )
        self.placement = ShardPlacement(self.leases)
        self.system: ActorSystem | None = None
        self.messenger: RemoteMessenger | None = None
        #: Called (synchronously) with the shards that started serving here.
        self.on_owned = on_owned
        self._serving: frozenset[int] = frozenset()
        #: Shards won but not serving yet: their deadlines, loaded, armed once they serve.
        self._taking: dict[int, list[Deadline]] = {}
        self._held: list[tuple[int, str, str, Any, Reply | None, Any, float | None]] = []
        # A hand-over must end (leases deleted) before the node's other leases lapse.
        self._handover_s = max(0.1, min(2.0, (ttl - margin - heartbeat) / 2))
        self._linger_s = ttl + heartbeat
        self.leases.add_listener(self._changed)

    @property
    def node_id(self) -> str:
        return self.leases.node_id

    def attach(self, system: ActorSystem) -> None:
        if system.placement is not self.placement:
            raise ValueError("the system must be built with this member's placement")
        self.system = system
        self.messenger = self.placement.messenger = RemoteMessenger(
            self.transport,
            node_id=self.node_id,
            subject_prefix=self.subject_prefix,
            codec=self.codec,
            clock=self.clock,
            deliver=self._deliver,
            locate=self.placement.locate,
        )

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Carry messages and hold leases until cancelled; ready once the node has joined
        the lease bucket and can send and receive (shards arrive with the first rounds)."""
        messenger = self.messenger
        if messenger is None:
            raise RuntimeError("attach a system before running the member")
        async with anyio.create_task_group() as tg:
            await tg.start(messenger.run)
            await tg.start(self.leases.run)
            task_status.started()

    async def leave(self) -> None:
        """Hand every shard over (their commits land first), carry what waits for the new
        owners, and leave the bucket."""
        await self.leases.leave(self._linger)

    async def _linger(self) -> None:
        messenger = self.messenger
        if messenger is None:
            return
        with anyio.move_on_after(self._linger_s):
            while messenger.parked or messenger.pending:  # noqa: ASYNC110 - leaving only
                await anyio.sleep(0.01)

    # -- lease callbacks ----------------------------------------------------------------

    async def _acquired(self, shards: frozenset[int]) -> None:
        system = self.system
        if system is None:
            return
        for shard in shards:
            self._taking[shard] = []
        try:
            # Read now, armed when the shards serve (_changed): a deadline that fired
            # before then would find its actor not local yet.
            loaded = await system.load_deadlines(self.placement.pick(shards))
        except BaseException:
            for shard in shards:
                self._taking.pop(shard, None)
            self._flush_held(shards)
            raise
        n = self.placement.shards
        for d in loaded:
            taking = self._taking.get(shard_of(d.kind, d.key, n))
            if taking is not None:
                taking.append(d)
        # Entries a dead owner committed but did not publish are in the shared journal.
        system.outbox.drain_soon()
        _log.info("shards taken", node=self.node_id, shards=len(shards), deadlines=len(loaded))

    def _lost(self, shards: frozenset[int]) -> None:
        for shard in shards:
            self._taking.pop(shard, None)
        self._flush_held(shards)
        system = self.system
        if system is not None:
            stopped = system.relinquish(self.placement.pick(shards))
            _log.warning("shards lost", node=self.node_id, shards=len(shards), actors=stopped)
        self._changed()

    async def _releasing(self, shards: frozenset[int]) -> None:
        placement = self.placement
        placement.releasing |= shards
        system = self.system
        if system is None:
            return
        pick = placement.pick(shards)
        stopped = system.relinquish(pick)
        with anyio.move_on_after(self._handover_s):
            while system.commits_in_flight(pick):  # noqa: ASYNC110 - shutdown path only
                await anyio.sleep(0.005)
        _log.info("shards handed over", node=self.node_id, shards=len(shards), actors=stopped)

    def _changed(self) -> None:
        placement = self.placement
        owned = self.leases.owned()
        if placement.releasing:
            placement.releasing &= owned  # handed over: no longer ours at all
        serving = owned - placement.releasing
        new = serving - self._serving
        self._serving = serving
        system = self.system
        if new and system is not None:
            deadlines = [d for shard in new for d in self._taking.pop(shard, ())]
            if deadlines:
                system.arm_loaded(deadlines)
            self._flush_held(new)
        if self.messenger is not None:
            self.messenger.owners_changed()
        if new and self.on_owned is not None:
            try:
                self.on_owned(new)
            except Exception as exc:
                _log.error("on_owned failed", error=repr(exc))

    def _deliver(
        self,
        kind: str,
        key: str,
        message: Any,
        reply_to: Reply | None,
        headers: Mapping[str, str] | None,
        deadline: float | None,
    ) -> None:
        system = self.system
        if system is None:
            raise NotLocal("this node is not serving yet")
        kr = system.kind(kind)
        if not kr.local and not self.placement.is_local(kind, key):
            shard = self.placement.shard(kind, key)
            if shard in self._taking and len(self._held) < MAX_HELD:
                # Won, not serving yet: the sender's view already names this node.
                self._held.append((shard, kind, key, message, reply_to, headers, deadline))
                return
            raise NotLocal(f"{kind}/{key}: shard {shard} is not here")
        system.ref(kind, key).tell(message, reply_to=reply_to, headers=headers, deadline=deadline)

    def _flush_held(self, shards: frozenset[int]) -> None:
        """What waited here for ``shards`` goes to their actors: here when the shards now
        serve, on to wherever the placement says when they will not serve here after all
        (a ref sends a message for a shard not held here to its owner)."""
        system = self.system
        if not self._held or system is None:
            return
        keep = []
        for item in self._held:
            if item[0] in shards:
                _, kind, key, message, reply_to, headers, deadline = item
                try:
                    system.ref(kind, key).tell(
                        message, reply_to=reply_to, headers=headers, deadline=deadline
                    )
                except ActorsError as exc:
                    if reply_to is not None:
                        reply_to(exc)
            else:
                keep.append(item)
        self._held = keep
