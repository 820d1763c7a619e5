"""Shard leases: which node may run the actors of which shard, decided in a NATS KV bucket.

Several nodes share the actors by shards (:func:`~actors.cluster.shards.shard_of`). A node
may run a shard's actors only while it holds that shard's lease, a key ``shard.<n>`` in a
JetStream key-value bucket (``history=1``, ``replicas`` 3 in a cluster). NATS is the
arbiter: every lease write is a compare-and-set on the key's revision, and the revision
of the write that won is the lease's **fencing token**. Nothing here votes, elects or
trusts another machine's clock.

Rules
-----

*Renewal.* The owner rewrites each of its leases every ``heartbeat`` seconds with
``update(key, value, last=revision)``; the new revision replaces the old. A refused
compare-and-set means somebody else wrote the key: the lease is lost, ``on_lost`` is
called at once.

*Fencing, on the owner's own monotonic clock.* A lease is valid for its owner until
``t_sent + ttl - margin``, ``t_sent`` being when the last successful renewal was *sent*
(read before the request, so the time the request spent in flight counts against the
owner). :meth:`ShardLeases.owns` is true only until then. When that moment passes
without a renewal (the process was paused, NATS was slow or away), the owner considers
the lease lost and calls ``on_lost`` before doing anything else; a renewal whose answer
comes back after that moment does not revive it.

*Lapse, on the other nodes' monotonic clocks.* Another node judges a lease lapsed only
when its revision has stayed the same for ``ttl`` seconds on *its* clock, counted from
when it first saw that revision. It saw the revision after the owner sent it, so the
owner's validity (``ttl - margin`` after sending) always ends first: no clock
synchronisation is needed, only clocks that run at similar rates (``margin`` absorbs the
difference). It then takes the lease over with ``update(key, value, last=seen)`` (or
writes a key that never existed, or was deleted, with ``last`` = its revision or ``0``);
only one taker can win, and the winner's revision is the new fencing token. Members are
judged the same way by their ``node.<node_id>`` heartbeat keys.

*Graceful hand-off.* :meth:`ShardLeases.leave` (and releasing surplus shards while
rebalancing) first awaits ``before_release(shards)`` (the application stops those
actors and finishes their commits), stops owning the shards, then deletes their keys
with ``last=revision``. The others see the deletes through their watch and claim at once,
without waiting for a lapse. ``leave`` also deletes the node's own key.

*Rebalancing.* The alive members are the node keys not lapsed (this node always
counts). Of ``shards`` over ``n`` members each gets ``shards // n`` and the first
``shards % n`` member ids in sorted order one more, so the quotas add up to exactly
``shards``. A node claims free shards (never written, deleted, or lapsed) while it holds
fewer than its quota, preferring those whose rendezvous score
(:func:`~actors.cluster.shards.preference`) is highest for it, so nodes claiming at the
same time rarely collide. A node holding more than its quota releases the surplus
gracefully, but only once the alive set has been stable for one ``ttl`` (nodes starting
one after the other cause no churn) and some member is short of its quota. A node that
joins late gets its share as the others release. A shard left free for a whole ``ttl``
(its would-be owner cannot claim) may be claimed by anyone up to ``ceil(shards / n)``.

*Watching.* Each node watches the whole bucket and keeps its view
``{shard -> (owner, revision, first seen)}`` and ``{node -> (record, revision, first
seen)}``; a deleted lease is free at once. :meth:`ShardLeases.owner_of` answers from that
view, so it lags the bucket by the watch's delay; only :meth:`ShardLeases.owns` is a
guarantee.

Failure cases
-------------

- *The owner is paused or cut off from NATS.* Its leases stop being valid for it
  ``ttl - margin`` after the last renewal it sent, before any other node may take them
  (``ttl`` after it saw that renewal). After a crash, the shards move ``ttl`` to
  ``ttl + heartbeat`` seconds later.
- *A renewal times out but was written.* The owner still holds the old revision; its next
  compare-and-set fails and the lease is declared lost (safe: nobody owns it until it
  lapses for the others, then somebody takes it over).
- *Two nodes claim the same free shard.* One compare-and-set wins; the other is refused
  and simply does not get it.
- *Clocks that lie* (a node's clock runs much faster than the owner's). It may take a
  lease over while the owner still believes it valid, but the owner's next renewal is
  refused, so no write of the old owner's can carry the new fencing token: writes that
  check the token stay exclusive.
- *A restarted node with the same id* finds its old leases in the bucket but does not
  trust them: it waits for them to lapse like any other node would, since an old
  process may still be running.
- ``on_acquired`` and ``before_release`` run inside a round: while they run nothing is
  renewed. Keep them well below ``ttl - margin - heartbeat`` or the leases they delay
  lapse (safe, but the shards move).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping

import anyio
import msgspec
import structlog
from anyio.abc import TaskStatus

from ..clock import Clock
from ..errors import TransportError
from ..nats.transport import NatsTransport
from .bucket import BucketWatch, KvEntry, LeaseBucket
from .records import (
    NODE_PREFIX,
    SHARD_PREFIX,
    ClusterView,
    LeaseRecord,
    NodeRecord,
    build_view,
    decode_lease,
    decode_node,
    encode,
    node_key,
    parse_shard_key,
    shard_key,
)
from .shards import preference

__all__ = ["ShardLeases", "read_view"]

_log = structlog.get_logger(__name__)

#: What a node id may look like: it becomes part of a KV key.
_NODE_ID = re.compile(r"[A-Za-z0-9_=-]+(?:\.[A-Za-z0-9_=-]+)*")
#: A member whose heartbeat has been lapsed this many ttls is removed from the bucket.
_FORGET_AFTER_TTLS = 20
#: The record standing for a lease value that cannot be decoded: an unknown owner,
#: which lapses like any other.
_UNREADABLE = LeaseRecord(owner="", renewed_at=0.0)


class _Seen(msgspec.Struct, frozen=True):
    """A key's latest revision in the local view, and when this node first saw it
    (monotonic). ``record`` ``None``: deleted."""

    revision: int
    first_seen: float
    record: LeaseRecord | None


class _Member(msgspec.Struct, frozen=True):
    revision: int
    first_seen: float
    record: NodeRecord | None


class _Held(msgspec.Struct, frozen=True):
    """A lease this node holds: its revision (the fencing token), until when it is valid
    here (monotonic), and whether ``on_acquired`` has finished for it."""

    revision: int
    valid_until: float
    ready: bool


class _Free(msgspec.Struct, frozen=True):
    shard: int
    last: int
    """The revision to compare against (``0``: never written)."""
    free_since: float


class ShardLeases:
    """One node's leases. ``start()``, then ``run()`` in a task group (or ``tick()`` by
    hand), and ``leave()`` to hand the shards over.

    ``on_acquired(shards)`` is awaited after a claim succeeded and before :meth:`owns`
    turns true for those shards; ``on_lost(shards)`` is called (synchronously) as soon as
    leases are lost without a hand-off; ``before_release(shards)`` is awaited before
    shards are given up on purpose. ``start_timeout`` bounds waiting for JetStream at
    start; ``request_timeout`` (default ``ttl - margin``) each KV request.
    """

    def __init__(
        self,
        transport: NatsTransport,
        *,
        node_id: str,
        shards: int,
        bucket: str,
        clock: Clock,
        replicas: int = 1,
        ttl: float = 3.0,
        heartbeat: float = 1.0,
        margin: float = 0.5,
        on_acquired: Callable[[frozenset[int]], Awaitable[None]] | None = None,
        on_lost: Callable[[frozenset[int]], None] | None = None,
        before_release: Callable[[frozenset[int]], Awaitable[None]] | None = None,
        start_timeout: float = 10.0,
        request_timeout: float | None = None,
    ) -> None:
        if not _NODE_ID.fullmatch(node_id):
            raise ValueError(f"node id {node_id!r} must be letters, digits, '_', '-', '=', '.'")
        if shards < 1:
            raise ValueError(f"shards must be at least 1, not {shards}")
        if not 0 <= margin < ttl:
            raise ValueError(f"margin must be in [0, ttl), not {margin} (ttl {ttl})")
        if not 0 < heartbeat < ttl - margin:
            raise ValueError(
                f"heartbeat must be positive and below ttl - margin ({ttl - margin:g}), "
                f"not {heartbeat}: leases would lapse between renewals"
            )
        self.transport = transport
        self.node_id = node_id
        self.shards = shards
        self.bucket = bucket
        self.replicas = replicas
        self.ttl = ttl
        self.heartbeat = heartbeat
        self.margin = margin
        self.start_timeout = start_timeout
        self.request_timeout = request_timeout if request_timeout is not None else ttl - margin
        self._clock = clock
        self._on_acquired = on_acquired
        self._on_lost = on_lost
        self._before_release = before_release
        self._listeners: list[Callable[[], None]] = []
        self._leases: dict[int, _Seen] = {}
        self._nodes: dict[str, _Member] = {}
        self._held: dict[int, _Held] = {}
        self._lock = anyio.Lock()
        self._kv: LeaseBucket | None = None
        self._watch: BucketWatch | None = None
        self._started_at = 0.0
        self._watching_since = 0.0
        self._alive: frozenset[str] = frozenset()
        self._alive_since = 0.0
        self._owners: tuple[str | None, ...] = ()
        self._freed = False
        self._wakeup: anyio.Event | None = None
        self._closed = False
        self._bad_keys: set[str] = set()
        self.claims = 0
        """Leases won by this node (claims and takeovers)."""
        self.losses = 0
        """Leases lost without a hand-off (lapsed or taken)."""
        self.releases = 0
        """Leases handed off on purpose."""
        self.errors = 0
        """KV requests that failed (and were retried by a later round)."""
        self.rounds = 0
        """Rounds played (:meth:`tick`)."""

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Bind to (or create) the bucket, write this node's key and load the view.
        Claims nothing yet: the first :meth:`tick` does."""
        if self._kv is not None:
            return
        if self._closed:
            raise RuntimeError(f"{self.node_id} left the cluster; make a new ShardLeases")
        kv = await LeaseBucket.open(
            self.transport,
            self.bucket,
            replicas=self.replicas,
            timeout=self.request_timeout,
            start_timeout=self.start_timeout,
        )
        assert kv is not None
        self._started_at = self._clock.time()
        # A new bucket on a cluster can answer "no responders" for a moment after it
        # was created (its stream is still placing replicas): retry within start_timeout.
        delay = 0.05
        with anyio.fail_after(self.start_timeout):
            while True:
                try:
                    await kv.put(node_key(self.node_id), self._node_record())
                    break
                except TransportError as exc:
                    _log.info("lease bucket not ready; retrying", error=repr(exc))
                    await anyio.sleep(delay)
                    delay = min(delay * 2, 1.0)
        watch = BucketWatch(kv, self._apply)
        await watch.start()
        self._watching_since = self._clock.monotonic()
        try:
            await watch.sync(self.start_timeout)
        except BaseException:
            await watch.stop()
            raise
        self._kv, self._watch = kv, watch
        _log.info("shard leases started", node=self.node_id, shards=self.shards)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start, then play a round every ``heartbeat`` until cancelled or :meth:`leave`.
        Between rounds it wakes to drop leases whose validity ends, and to claim at once
        when a lease is released. KV failures are logged and retried by the next round;
        an exception from a callback (``on_acquired``, ...) ends it."""
        await self.start()
        task_status.started()
        next_round = self._clock.monotonic()
        while not self._closed:
            wakeup = self._wakeup = anyio.Event()
            now = self._clock.monotonic()
            if now >= next_round:
                next_round = now + self.heartbeat
                await self.tick()
            elif self._freed:
                self._freed = False
                await self._claim_round()
            elif self.fence():
                self._check_moved()
            if self._closed or self._freed:
                continue
            deadline = min([next_round, *(held.valid_until for held in self._held.values())])
            await self._clock.sleep_until(deadline, wakeup)

    async def tick(self) -> None:
        """One round: drop lapsed leases (``on_lost``), renew the others, write the
        heartbeat, then claim or release towards this node's quota."""
        async with self._lock:
            if self._closed:
                return
            kv = self._bound()
            if self.fence():
                self._check_moved()
            await self._renew(kv)
            await self._write_heartbeat(kv)
            await self._rebalance(kv, claim_only=False)
            await self._forget_dead(kv)
            self._check_moved()
            self.rounds += 1

    async def leave(self, linger: Callable[[], Awaitable[None]] | None = None) -> None:
        """Hand every shard over (``before_release``, then delete the leases), remove this
        node's key and stop watching. ``linger`` is awaited after the leases are deleted
        and before the watch stops, while the view still follows the new owners (the
        caller sends on what it holds for them). Idempotent."""
        async with self._lock:
            if self._closed:
                return
            self._closed = True
            self._wake()
            kv = self._kv
            if kv is None:
                return
            gone = False
            try:
                await self._release(kv, frozenset(self._held))
                self._held.clear()
                # The member key goes with the leases: the others' quotas count this
                # node until it is gone, and they claim its shards only then.
                gone = await self._delete_node_key(kv)
                self._check_moved()
                if linger is not None:
                    await linger()
            finally:
                self._held.clear()
                with anyio.CancelScope(shield=True):
                    if not gone:
                        await self._delete_node_key(kv)
                    await self._stop_watch()
                self._check_moved()
            _log.info("left the cluster", node=self.node_id)

    async def _delete_node_key(self, kv: LeaseBucket) -> bool:
        try:
            await kv.delete(node_key(self.node_id))
        except TransportError as exc:
            self._failed("delete node key", exc)
            return False
        return True

    async def close(self) -> None:
        """Stop without handing over: the leases lapse for the others after ``ttl``
        (``on_lost`` is called for those still held). Idempotent."""
        async with self._lock:
            self._closed = True
            self._wake()
            lost = frozenset(self._held)
            self._held.clear()
            with anyio.CancelScope(shield=True):
                await self._stop_watch()
            if lost:
                self._lose(lost, "closed")
            self._check_moved()

    async def sync(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 - a bound, not a timer
        """Wait until the view includes every write made to the bucket before the call."""
        if self._watch is None:
            raise RuntimeError("ShardLeases not started")
        await self._watch.sync(timeout)

    # -- queries (cheap, no I/O) ------------------------------------------------------

    def owns(self, shard: int) -> bool:
        """Whether this node may act as the shard's owner right now (fenced on the
        monotonic clock: false as soon as the lease's validity ends here)."""
        held = self._held.get(shard)
        return held is not None and held.ready and self._clock.monotonic() < held.valid_until

    def fencing_token(self, shard: int) -> int | None:
        """The revision of this node's lease on ``shard`` while :meth:`owns` is true."""
        held = self._held.get(shard)
        return held.revision if held is not None and self.owns(shard) else None

    def owner_of(self, shard: int) -> str | None:
        """The shard's owner in this node's view; ``None`` when free, lapsed, or being
        acquired. For this node it is :meth:`owns`."""
        if shard in self._held:
            return self.node_id if self.owns(shard) else None
        seen = self._leases.get(shard)
        if seen is None or seen.record is None or self._lapsed(seen.first_seen):
            return None
        owner = seen.record.owner
        return None if owner in (self.node_id, "") else owner

    def owned(self) -> frozenset[int]:
        return frozenset(shard for shard in self._held if self.owns(shard))

    def alive(self) -> frozenset[str]:
        """The members whose heartbeat has not lapsed here (this node included)."""
        return self._alive_nodes(self._clock.monotonic())

    def add_listener(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` whenever shards change owners in the view (it must not block)."""
        self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[], None]) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    def view(self) -> ClusterView:
        """Members and leases as this node sees them (ages from wall clocks)."""
        leases = {shard: (seen.revision, seen.record) for shard, seen in self._leases.items()}
        nodes = {n: m.record for n, m in self._nodes.items() if m.record is not None}
        return build_view(leases, nodes, self._clock.time(), self.shards)

    # -- fencing ----------------------------------------------------------------------

    def fence(self) -> frozenset[int]:
        """Drop the leases whose validity has ended here and call ``on_lost`` for them;
        the shards dropped. :meth:`tick` and :meth:`run` call it first."""
        now = self._clock.monotonic()
        lost = frozenset(s for s, held in self._held.items() if now >= held.valid_until)
        if lost:
            for shard in lost:
                del self._held[shard]
            self._lose(lost, "lapsed")
        return lost

    def _lose(self, shards: frozenset[int], why: str) -> None:
        self.losses += len(shards)
        _log.warning("shard leases lost", node=self.node_id, why=why, shards=sorted(shards))
        if self._on_lost is not None:
            self._on_lost(shards)

    # -- a round ----------------------------------------------------------------------

    async def _renew(self, kv: LeaseBucket) -> None:
        if not self._held:
            return
        value = encode(LeaseRecord(self.node_id, self._clock.time()))
        taken: set[int] = set()
        late: set[int] = set()

        async def renew(shard: int, held: _Held) -> None:
            sent = self._clock.monotonic()
            try:
                revision = await kv.update(shard_key(shard), value, held.revision)
            except TransportError as exc:
                self._failed(f"renew shard {shard}", exc)
                return
            if self._held.get(shard) is not held:
                return  # dropped by the fence meanwhile
            if revision is None or self._clock.monotonic() >= held.valid_until:
                del self._held[shard]
                (taken if revision is None else late).add(shard)
                return
            self._held[shard] = _Held(revision, sent + self.ttl - self.margin, held.ready)

        async with anyio.create_task_group() as tg:
            for shard, held in list(self._held.items()):
                tg.start_soon(renew, shard, held)
        if taken:
            self._lose(frozenset(taken), "taken over")
        if late:
            self._lose(frozenset(late), "renewed too late")

    async def _write_heartbeat(self, kv: LeaseBucket) -> None:
        try:
            await kv.put(node_key(self.node_id), self._node_record())
        except TransportError as exc:
            self._failed("heartbeat", exc)

    async def _claim_round(self) -> None:
        async with self._lock:
            if self._closed:
                return
            kv = self._bound()
            self.fence()
            await self._rebalance(kv, claim_only=True)
            self._check_moved()

    async def _rebalance(self, kv: LeaseBucket, *, claim_only: bool) -> None:
        now = self._clock.monotonic()
        alive = self._alive_nodes(now)
        if alive != self._alive:
            self._alive, self._alive_since = alive, now
        quota = _quota(self.shards, alive, self.node_id)
        held = len(self._held)
        if held > quota:
            if (
                not claim_only
                and now - self._alive_since >= self.ttl
                and self._someone_short(alive, now)
            ):
                await self._release(kv, self._surplus(held - quota, alive))
            return
        cap = math.ceil(self.shards / len(alive))
        if held < cap:
            await self._claim(kv, now, alive, quota - held, cap - held)

    def _someone_short(self, alive: frozenset[str], now: float) -> bool:
        counts = Counter(
            seen.record.owner
            for seen in self._leases.values()
            if seen.record is not None and not self._lapsed(seen.first_seen, now)
        )
        return any(
            counts[node] < _quota(self.shards, alive, node) for node in alive - {self.node_id}
        )

    def _rank(self, shard: int, alive: Iterable[str]) -> tuple[bool, int]:
        """Higher is more wanted: first the shards whose rendezvous winner is this node."""
        mine = preference(self.node_id, shard)
        return all(preference(n, shard) <= mine for n in alive), mine

    def _surplus(self, count: int, alive: frozenset[str]) -> frozenset[int]:
        ranked = sorted(self._held, key=lambda shard: self._rank(shard, alive))
        return frozenset(ranked[:count])

    def _free(self, now: float) -> list[_Free]:
        free: list[_Free] = []
        for shard in range(self.shards):
            if shard in self._held:
                continue
            seen = self._leases.get(shard)
            if seen is None:
                free.append(_Free(shard, 0, self._watching_since))
            elif seen.record is None:
                free.append(_Free(shard, seen.revision, seen.first_seen))
            elif self._lapsed(seen.first_seen, now):
                free.append(_Free(shard, seen.revision, seen.first_seen + self.ttl))
        return free

    async def _claim(
        self, kv: LeaseBucket, now: float, alive: frozenset[str], room: int, cap_room: int
    ) -> None:
        free = self._free(now)
        if not free:
            return
        free.sort(key=lambda f: self._rank(f.shard, alive), reverse=True)
        picks = free[: max(0, room)]
        orphans = [f for f in free[len(picks) :] if now - f.free_since >= self.ttl]
        picks += orphans[: max(0, cap_room - len(picks))]
        if not picks:
            return
        value = encode(LeaseRecord(self.node_id, self._clock.time()))
        won: dict[int, _Held] = {}

        async def claim(free: _Free) -> None:
            sent = self._clock.monotonic()
            try:
                revision = await kv.update(shard_key(free.shard), value, free.last)
            except TransportError as exc:
                self._failed(f"claim shard {free.shard}", exc)
                return
            if revision is None:
                return  # another node was first
            held = _Held(revision, sent + self.ttl - self.margin, ready=False)
            self._held[free.shard] = won[free.shard] = held

        async with anyio.create_task_group() as tg:
            for free_shard in picks:
                tg.start_soon(claim, free_shard)
        if not won:
            return
        acquired = frozenset(won)
        self.claims += len(acquired)
        if self._on_acquired is not None:
            try:
                await self._on_acquired(acquired)
            except BaseException as exc:
                # Not taken after all: give them back so nobody waits for a lapse.
                revisions = {s: h.revision for s, h in won.items() if self._held.get(s) is h}
                for shard in revisions:
                    del self._held[shard]
                with anyio.CancelScope(shield=True):
                    await self._delete_leases(kv, revisions)
                if not isinstance(exc, Exception):
                    raise
                # A failure to prepare the shards (the journal unreachable for a moment)
                # is not a reason to leave the cluster: a later round claims them again.
                self.errors += 1
                _log.error("shards given back", node=self.node_id, error=repr(exc))
                return
        for shard, held in won.items():
            if self._held.get(shard) is held:
                self._held[shard] = _Held(held.revision, held.valid_until, ready=True)
        _log.info("shard leases acquired", node=self.node_id, shards=sorted(acquired))

    async def _release(self, kv: LeaseBucket, shards: frozenset[int]) -> None:
        if not shards:
            return
        if self._before_release is not None:
            await self._before_release(shards)
        revisions = {s: held.revision for s in shards if (held := self._held.pop(s, None))}
        self.releases += len(revisions)
        await self._delete_leases(kv, revisions)
        _log.info("shard leases released", node=self.node_id, shards=sorted(revisions))

    async def _delete_leases(self, kv: LeaseBucket, revisions: Mapping[int, int]) -> None:
        async def delete(shard: int, revision: int) -> None:
            try:
                await kv.delete(shard_key(shard), last=revision)
            except TransportError as exc:
                self._failed(f"release shard {shard}", exc)  # it lapses instead

        async with anyio.create_task_group() as tg:
            for shard, revision in revisions.items():
                tg.start_soon(delete, shard, revision)

    async def _forget_dead(self, kv: LeaseBucket) -> None:
        """Remove the keys of members dead for long, so the bucket does not collect every
        node that ever ran (compare-and-set: a member that came back is kept)."""
        now = self._clock.monotonic()
        for node_id, member in list(self._nodes.items()):
            if member.record is None or node_id == self.node_id:
                continue
            if now - member.first_seen >= _FORGET_AFTER_TTLS * self.ttl:
                try:
                    await kv.delete(node_key(node_id), last=member.revision)
                except TransportError as exc:
                    self._failed(f"forget node {node_id}", exc)

    # -- the view ---------------------------------------------------------------------

    def _apply(self, entry: KvEntry) -> None:
        """The watch's callback: fold one entry into the view."""
        now = self._clock.monotonic()
        if entry.key.startswith(SHARD_PREFIX):
            shard = parse_shard_key(entry.key[len(SHARD_PREFIX) :])
            if shard is None or shard >= self.shards:
                self._bad_key(entry.key)
                return
            prev = self._leases.get(shard)
            if prev is not None and prev.revision >= entry.revision:
                return
            record = None if entry.value is None else _read_lease(entry)
            self._leases[shard] = _Seen(entry.revision, now, record)
            before = prev.record.owner if prev is not None and prev.record is not None else None
            after = record.owner if record is not None else None
            if record is None and before not in (None, self.node_id):
                self._free_up()
            if before != after:
                self._notify()
        elif entry.key.startswith(NODE_PREFIX):
            node_id = entry.key[len(NODE_PREFIX) :]
            member = self._nodes.get(node_id)
            if member is not None and member.revision >= entry.revision:
                return
            node = None if entry.value is None else _read_node(entry)
            self._nodes[node_id] = _Member(entry.revision, now, node)
            if node is None and node_id != self.node_id:
                self._free_up()  # a member left: the quotas of the others grow
        else:
            self._bad_key(entry.key)

    def _free_up(self) -> None:
        self._freed = True
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    def _check_moved(self) -> None:
        owners = tuple(self.owner_of(shard) for shard in range(self.shards))
        if owners != self._owners:
            self._owners = owners
            self._notify()

    def _notify(self) -> None:
        for fn in list(self._listeners):
            try:
                fn()
            except Exception:
                _log.exception("shard listener failed", node=self.node_id)

    def _alive_nodes(self, now: float) -> frozenset[str]:
        alive = {self.node_id}
        for node_id, member in self._nodes.items():
            if member.record is not None and not self._lapsed(member.first_seen, now):
                alive.add(node_id)
        return frozenset(alive)

    def _lapsed(self, first_seen: float, now: float | None = None) -> bool:
        if now is None:
            now = self._clock.monotonic()
        return now - first_seen >= self.ttl

    # -- helpers ----------------------------------------------------------------------

    def _node_record(self) -> bytes:
        return encode(NodeRecord(self.node_id, self._started_at, self._clock.time()))

    def _bound(self) -> LeaseBucket:
        if self._kv is None:
            raise RuntimeError("ShardLeases not started")
        return self._kv

    async def _stop_watch(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            await watch.stop()

    def _failed(self, what: str, exc: TransportError) -> None:
        self.errors += 1
        if self.errors & (self.errors - 1) == 0:  # the 1st, 2nd, 4th, ... failure
            _log.warning("shard lease request failed", node=self.node_id, what=what, error=str(exc))

    def _bad_key(self, key: str) -> None:
        if key not in self._bad_keys and len(self._bad_keys) < 100:
            self._bad_keys.add(key)
            _log.warning(
                "unexpected key in the shard bucket (another shard count?)",
                bucket=self.bucket,
                key=key,
                shards=self.shards,
            )


def _quota(shards: int, alive: frozenset[str], node_id: str) -> int:
    """``node_id``'s share: ``shards // n``, one more for the first ``shards % n`` ids."""
    ranked = sorted(alive)
    base, extra = divmod(shards, len(ranked))
    return base + (1 if ranked.index(node_id) < extra else 0)


def _read_lease(entry: KvEntry) -> LeaseRecord:
    assert entry.value is not None
    try:
        return decode_lease(entry.value)
    except ValueError:
        _log.warning("unreadable shard lease", key=entry.key, revision=entry.revision)
        return _UNREADABLE


def _read_node(entry: KvEntry) -> NodeRecord | None:
    assert entry.value is not None
    try:
        return decode_node(entry.value)
    except ValueError:
        _log.warning("unreadable member record", key=entry.key, revision=entry.revision)
        return None


async def read_view(
    transport: NatsTransport,
    bucket: str,
    clock: Clock,
    *,
    timeout: float = 5.0,  # noqa: ASYNC109 - bounds the reading, passed down
) -> ClusterView:
    """The cluster as the bucket holds it now, read without joining (for a status
    command). Lists the shard keys present; empty when the bucket does not exist."""
    kv = await LeaseBucket.open(
        transport, bucket, create=False, timeout=timeout, start_timeout=timeout
    )
    if kv is None:
        return ClusterView(nodes=(), shards=())
    leases: dict[int, tuple[int, LeaseRecord | None]] = {}
    nodes: dict[str, NodeRecord] = {}

    def collect(entry: KvEntry) -> None:
        if entry.key.startswith(SHARD_PREFIX):
            shard = parse_shard_key(entry.key[len(SHARD_PREFIX) :])
            if shard is not None:
                leases[shard] = (
                    entry.revision,
                    None if entry.value is None else _read_lease(entry),
                )
        elif entry.key.startswith(NODE_PREFIX):
            node_id = entry.key[len(NODE_PREFIX) :]
            record = None if entry.value is None else _read_node(entry)
            if record is None:
                nodes.pop(node_id, None)
            else:
                nodes[node_id] = record

    watch = BucketWatch(kv, collect)
    await watch.start(inactive_threshold=5.0)
    try:
        await watch.sync(timeout)
    finally:
        await watch.stop()
    return build_view(leases, nodes, clock.time())
