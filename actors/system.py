"""The actor system: one per node. Owns the dispatcher, the timer service, the journal
writer and loader, the outbox relay and every actor of the node.

Actors are *virtual*: ``system.ref(kind, key)`` names one whether or not it is active;
the first message activates it (recovering it from the journal if it is persistent),
and it is passivated again when idle. :meth:`ActorSystem.spawn` makes a one-off actor
whose ref fails with :class:`~actors.errors.ActorStopped` once it stops.

Every background task runs in the system's task group (``async with system:``), so none
outlives it.
"""

from __future__ import annotations

import itertools
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import anyio
import msgspec
import structlog
from anyio.abc import TaskGroup

from .actor import Actor, ActorState
from .clock import Clock, RealClock
from .dispatcher import Dispatcher, deliver, has_mail, next_envelope, requeue_front
from .envelope import Envelope, Overflow
from .errors import ActorFailed, ActorsError, ActorStopped, AskTimeout, NotLocal, Overloaded
from .journal.base import DeadLetter, Deadline, Journal
from .outbox import OutboxRelay, OutboxSink
from .persistence import DurableFire, PersistenceDriver
from .persistent import PersistentActor
from .placement import Placement
from .ref import ActorRef, _AskSlot
from .stats import TURN_BUCKETS, Histogram, KindStats, RuntimeStats
from .supervision import DeadLetters, backoff_delay, encode_payload
from .timers import TimerEntry, TimerService
from .tracing import TRACEPARENT, Span, Tracer

__all__ = ["ActorSystem", "KindRuntime"]

log = structlog.get_logger("actors.system")

READY = ActorState.READY
STOPPED = ActorState.STOPPED

_INTERNAL = "$"  # prefix reserved for the runtime's own kinds (user kinds may not use it)
_ASK = "$ask"  # timer entries answering an ask/request with AskTimeout
_CALL = "$call"  # timer entries calling the runtime back (restart, passivation sweep)


def _answer(item: Any, error: ActorsError) -> None:
    """Tell whoever waits for ``item`` (if anyone) that it was not handled."""
    if type(item) is Envelope and item.reply is not None:
        deliver(item.reply, error)


class _PendingRequest:
    """Reply handle of :meth:`Actor.request`: turns the reply into a message.

    The reply travels on the requester's system lane, not its mailbox: the requester
    asked for it, so a full mailbox must not drop it (a requester that waits for a reply
    that was rejected would wait for ever). The lane stays bounded by the number of
    requests the actor itself has outstanding. With the ask's deadline timer this makes
    the reply certain: the value, or :class:`~actors.errors.AskTimeout`."""

    __slots__ = ("done", "headers", "origin", "timer", "to_message")

    def __init__(
        self,
        origin: ActorRef,
        to_message: Callable[[Any], Any],
        headers: dict[str, str] | None = None,
    ) -> None:
        self.origin = origin
        self.to_message = to_message
        #: The trace context of the request (the requester's span), for the reply.
        self.headers = headers
        self.done = False
        self.timer: TimerEntry | None = None

    def __call__(self, value: Any) -> None:
        if self.done:
            return
        self.done = True
        if self.timer is not None:
            self.timer.cancelled = True
        origin = self.origin
        try:
            actor = origin._target()
            message = self.to_message(value)
            if self.headers is not None:
                # Traced: the reply's turn continues the requester's trace.
                message = Envelope(message, None, self.headers)
            elif message is None or type(message) is deque or type(message) is Envelope:
                message = Envelope(message)
            origin._system._enqueue_system(actor, message)
        except ActorsError as exc:
            log.warning(
                "reply to a request not delivered", target=repr(self.origin), error=repr(exc)
            )


_RESTART_POLL_S = 0.005


def _in_flight(actor: Actor) -> bool:
    """Whether a persistent actor has turns whose commit has not landed yet."""
    return bool(getattr(actor, "_p_flight", None))


def _at_rest(actor: Actor) -> bool:
    """No mail and nothing in flight: the actor may be passivated."""
    return not has_mail(actor) and not _in_flight(actor)


class KindRuntime:
    """Everything the runtime keeps per actor kind: its config, codecs and the active
    actors (a dict in least-recently-used order when passivation is on)."""

    def __init__(
        self, system: ActorSystem, name: str, factory: Callable[[], Actor], cls: type[Actor]
    ) -> None:
        self.system = system
        self.name = name
        self.span_name = f"turn {name}"
        self.factory = factory
        self.cls = cls
        self.active: dict[str, Actor] = {}
        self.capacity = max(1, cls.mailbox_capacity)
        self.overflow = cls.overflow
        self.throughput = max(1, cls.throughput)
        self.passivate_after = cls.passivate_after
        self.max_active = cls.max_active
        self.max_failures = max(1, cls.max_failures)
        self.backoff = cls.restart_backoff
        self.lru = self.passivate_after is not None or self.max_active is not None
        self.persistent = issubclass(cls, PersistentActor)
        self.snapshot_every = 0
        self.encoder = msgspec.msgpack.Encoder()
        if issubclass(cls, PersistentActor):
            if cls.event_type is None:
                raise TypeError(f"{cls.__name__} must declare event_type")
            self.event_decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(
                cls.event_type
            )
            if cls.snapshot_type is not None:
                self.snapshot_decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(
                    cls.snapshot_type
                )
                self.snapshot_every = cls.snapshot_every
        self.activations = 0
        self.passivations = 0
        self.spawned = False
        #: Runs on every node for itself (never placed elsewhere; see actors.placement).
        self.local = False
        #: Messages handled and handler failures (see :mod:`actors.stats`).
        self.handled = 0
        self.failed = 0
        #: Messages refused or dropped by a full mailbox (the overflow policy).
        self.overflows = 0
        #: Messages whose deadline passed before their turn (answered DeadlineExceeded).
        self.expired = 0
        #: Seconds per turn, recorded by the dispatcher.
        self.turn_seconds = Histogram(TURN_BUCKETS)

    def touch(self, actor: Actor) -> None:
        """Mark ``actor`` most recently used."""
        active = self.active
        key = actor._a_key
        if active.get(key) is actor:
            del active[key]
            active[key] = actor
        actor._a_last = self.system.clock.monotonic()

    def mailbox_depth(self) -> tuple[int, int]:
        """Messages waiting in this kind's mailboxes and system lanes: in all, and in
        the fullest actor. A walk over the active actors (for exporters, not hot paths)."""
        total = 0
        most = 0
        for actor in self.active.values():
            mail = actor._a_mail
            lane = actor._a_sys
            if mail is None and lane is None:
                continue
            n = 0 if mail is None else (len(mail) if type(mail) is deque else 1)
            if lane is not None:
                n += len(lane)
            total += n
            if n > most:
                most = n
        return total, most

    def stats(self) -> KindStats:
        total, most = self.mailbox_depth()
        return KindStats(
            kind=self.name,
            handled=self.handled,
            failed=self.failed,
            overflows=self.overflows,
            expired=self.expired,
            activations=self.activations,
            passivations=self.passivations,
            active=len(self.active),
            mailbox_total=total,
            mailbox_max=most,
            turn_seconds=self.turn_seconds.snapshot(),
        )


class ActorSystem:
    """A node's actors and the machinery that runs them.

    ``journal`` is required for persistent actors; ``outbox_sink`` receives committed
    outbox entries (None: they are dropped after commit)."""

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        journal: Journal | None = None,
        outbox_sink: OutboxSink | None = None,
        node_id: str | None = None,
        sweep_interval: float = 1.0,
        shutdown_timeout: float = 5.0,
        tracer: Tracer | None = None,
        placement: Placement | None = None,
    ) -> None:
        #: Where actors live when nodes share them (:mod:`actors.placement`); None: all
        #: here. With a placement no deadline is armed at start: the node loads a shard's
        #: deadlines when it takes the shard and arms them once it serves
        #: (:meth:`load_deadlines`, :meth:`arm_loaded`).
        self.placement = placement
        #: How long leaving ``async with`` waits for pending commits and publishes.
        self.shutdown_timeout = shutdown_timeout
        self.clock: Clock = clock if clock is not None else RealClock()
        self.journal = journal
        self.node_id = node_id or f"node-{uuid.uuid4().hex[:8]}"
        self.timers = TimerService(self.clock, self._on_timer)
        self.dispatcher = Dispatcher(self)
        self.persistence = PersistenceDriver(self, journal) if journal is not None else None
        self.outbox = OutboxRelay(journal, outbox_sink)
        self.dead_letters = DeadLetters(journal)
        self.restarts = 0
        self._kinds: dict[str, KindRuntime] = {}
        self._parked: dict[str, list[TimerEntry]] = {}
        # The item (an Envelope or a bare message) being handled, and the actor whose
        # turn it is: read by handlers (headers, reply_later) and by loggers
        # (actors.current).
        self._current: Any = None
        self._actor: Actor | None = None
        # The span of the traced message being handled (see actors.tracing), and in a
        # persistent turn the spans its commit continues.
        self._span: Span | None = None
        self._traced: list[Span] | None = None
        self.tracer = tracer
        # Replies of the persistent turn in progress (sent after its commit).
        self._replies: list[tuple[Any, Any]] | None = None
        self._tg: TaskGroup | None = None
        self._running = False
        self._pipes = 0
        self._sweep_interval = sweep_interval
        self._anon = itertools.count(1)

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> ActorSystem:
        if self.journal is not None:
            await self.journal.open()
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        self._running = True
        try:
            tg.start_soon(self.dispatcher.run)
            tg.start_soon(self.timers.run)
            tg.start_soon(self.outbox.run)
            if self.persistence is not None:
                tg.start_soon(self.persistence.run_writer)
                tg.start_soon(self.persistence.run_loader)
                tg.start_soon(self.dead_letters.run)
                armed = 0
                if self.placement is None:
                    armed = await self.persistence.arm_all_deadlines()
                if armed:
                    log.info("durable deadlines armed", count=armed)
            self._arm_sweep()
        except BaseException as exc:
            self._running = False
            self._tg = None
            tg.cancel_scope.cancel()
            try:
                await tg.__aexit__(type(exc), exc, exc.__traceback__)
            finally:
                if self.journal is not None:
                    with anyio.CancelScope(shield=True):
                        await self.journal.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        tg = self._tg
        assert tg is not None
        try:
            if exc_type is None:
                with anyio.move_on_after(self.shutdown_timeout):
                    await self.drain()
            self._running = False
            for kind in list(self._kinds.values()):
                for actor in list(kind.active.values()):
                    self._stop_actor(actor)
        finally:
            tg.cancel_scope.cancel()
            self._tg = None
            try:
                suppressed = await tg.__aexit__(exc_type, exc, tb)
            finally:
                if self.journal is not None:
                    with anyio.CancelScope(shield=True):
                        await self.journal.close()
        return suppressed

    @property
    def tracer(self) -> Tracer | None:
        """Where spans go (:mod:`actors.tracing`); ``None``, the default, traces nothing.
        Set it before the system starts."""
        return self._tracer

    @tracer.setter
    def tracer(self, tracer: Tracer | None) -> None:
        self._tracer = tracer
        self.outbox.tracer = tracer

    @property
    def busy(self) -> bool:
        """True while any actor has work or any commit, recovery or publish is pending."""
        return (
            self.dispatcher.busy
            or (self.persistence is not None and self.persistence.busy)
            or self.outbox.busy
            or self.dead_letters.busy
            or self._pipes > 0
        )

    async def drain(self) -> None:
        """Wait until the system is idle (no mail, commits or publishes pending)."""
        # Polled: "idle" is the conjunction of several components' queues, and this runs
        # only at shutdown and in tests.
        while self.busy:  # noqa: ASYNC110
            await anyio.sleep(0.001)

    # -- registration and refs --------------------------------------------------------------

    def register(
        self,
        kind: str,
        factory: type[Actor] | Callable[[], Actor],
        cls: type[Actor] | None = None,
        *,
        local: bool = False,
    ) -> None:
        """Declare actor kind ``kind``: ``factory()`` makes a fresh (unstarted) actor.
        Pass ``cls`` when the factory is not the class itself. ``local`` kinds run on
        every node for itself, whatever the placement says."""
        if kind in self._kinds:
            raise ValueError(f"actor kind {kind!r} is already registered")
        if kind.startswith(_INTERNAL):
            raise ValueError("actor kinds may not start with '$'")
        actor_cls = cls if cls is not None else factory
        if not (isinstance(actor_cls, type) and issubclass(actor_cls, Actor)):
            raise TypeError("register needs an Actor subclass (pass cls= with a factory)")
        if issubclass(actor_cls, PersistentActor) and self.journal is None:
            raise TypeError(f"{kind!r} is persistent but the system has no journal")
        kr = self._kinds[kind] = KindRuntime(self, kind, factory, actor_cls)
        kr.local = local
        for entry in self._parked.pop(kind, ()):
            self._on_timer(entry)

    def kind(self, kind: str) -> KindRuntime:
        try:
            return self._kinds[kind]
        except KeyError:
            raise ActorsError(f"unknown actor kind {kind!r}") from None

    def ref(self, kind: str, key: str) -> ActorRef:
        """A ref to virtual actor ``(kind, key)``; it is activated by its first message."""
        kr = self.kind(kind)
        return ActorRef(self, kind, key, kr.active.get(key))

    def spawn(
        self, factory: type[Actor] | Callable[[], Actor], name: str | None = None
    ) -> ActorRef:
        """Start a one-off actor. Its ref raises ActorStopped once it has stopped.

        Each spawned actor gets a kind of its own, so a restart after a failure uses
        this actor's own factory."""
        actor = factory()
        cls = type(actor)
        key = name or str(next(self._anon))
        kind_name = f"{_INTERNAL}spawn:{cls.__module__}.{cls.__qualname__}#{key}"
        if kind_name in self._kinds:
            raise ValueError(f"an actor named {key!r} is already running")
        kr = self._kinds[kind_name] = KindRuntime(self, kind_name, factory, cls)
        kr.spawned = True
        self._bind(kr, key, actor)
        return ActorRef(self, kind_name, key, actor, virtual=False)

    def active_count(self, kind: str | None = None) -> int:
        if kind is not None:
            return len(self.kind(kind).active)
        return sum(len(k.active) for k in self._kinds.values())

    def is_active(self, kind: str, key: str) -> bool:
        return key in self.kind(kind).active

    def stats(self) -> RuntimeStats:
        """A snapshot of the runtime's counters (:mod:`actors.stats`). Registered kinds
        only: one-off spawned actors are left out (each is a kind of its own)."""
        persistence = self.persistence
        timers = self.timers
        return RuntimeStats(
            node_id=self.node_id,
            kinds=tuple(kr.stats() for kr in list(self._kinds.values()) if not kr.spawned),
            turns=self.dispatcher.turns,
            handled=self.dispatcher.handled,
            restarts=self.restarts,
            dead_letters=self.dead_letters.count,
            timer_lag_seconds=timers.stats.lags.snapshot(),
            timer_lag_max=timers.stats.max,
            timers=len(timers),
            commit_seconds=None if persistence is None else persistence.commit_seconds.snapshot(),
            commit_batch=None if persistence is None else persistence.commit_batch.snapshot(),
            committed_events=0 if persistence is None else persistence.committed_events,
            commit_failures=0 if persistence is None else persistence.commit_failures,
            outbox_published=self.outbox.published,
        )

    # -- activation / passivation ------------------------------------------------------

    def _lookup(self, kind: str, key: str) -> Actor | None:
        kr = self._kinds.get(kind)
        return None if kr is None else kr.active.get(key)

    def _resolve(self, kind: str, key: str, virtual: bool) -> Actor:
        if not virtual:
            spawned = self._lookup(kind, key)
            if spawned is None:
                raise ActorStopped(f"{kind}/{key} is stopped")
            return spawned
        kr = self.kind(kind)
        actor = kr.active.get(key)
        if actor is not None:
            return actor
        if not self._running:
            raise ActorStopped(f"{kind}/{key}: the actor system is not running")
        placement = self.placement
        if placement is not None and not kr.local and not placement.is_local(kind, key):
            raise NotLocal(f"{kind}/{key} lives on another node")
        return self._bind(kr, key, kr.factory())

    def _send_remote(
        self,
        kind: str,
        key: str,
        message: Any,
        reply_to: Callable[[Any], None] | None,
        headers: Any,
        deadline: float | None,
    ) -> None:
        placement = self.placement
        assert placement is not None  # NotLocal comes only from a placement
        placement.send(kind, key, message, reply_to, headers, deadline)

    # -- shards moving between nodes --------------------------------------------------

    def relinquish(self, here: Callable[[str, str], bool]) -> int:
        """This node no longer runs the actors for which ``here(kind, key)`` is true (it
        lost or released their shard): stop them now, send the mail they had not handled
        to wherever the placement now says, and drop their armed deadlines (the new owner
        arms them from the journal). Commits already sent still land or fail; the journal's
        sequence check keeps a late one from forking an actor's history. Returns how many
        actors were stopped."""
        kinds = self._kinds

        def placed(kind: str, key: str) -> bool:
            kr = kinds.get(kind)
            return kr is not None and not kr.local and not kr.spawned and here(kind, key)

        doomed = [
            a for kr in kinds.values() for a in kr.active.values() if placed(kr.name, a._a_key)
        ]
        for actor in doomed:
            self._stop_actor(actor, hand_over=True)
        self.timers.cancel_where(placed)
        return len(doomed)

    def _forward(self, kind: str, key: str, item: Any) -> None:
        """Send a mailbox item (an :class:`Envelope` or a bare message) on through the
        placement, as it was."""
        placement = self.placement
        assert placement is not None
        if type(item) is Envelope:
            placement.send(kind, key, item.message, item.reply, item.headers, item.deadline)
        else:
            placement.send(kind, key, item, None, None, None)

    def commits_in_flight(self, here: Callable[[str, str], bool]) -> bool:
        """Whether commits of actors ``here(kind, key)`` picks are still queued or being
        written (a shard being handed over waits for them)."""
        return self.persistence is not None and self.persistence.in_flight(here)

    async def arm_deadlines(self, here: Callable[[str, str], bool]) -> int:
        """Arm the stored deadlines of the actors for which ``here(kind, key)`` is true.
        Returns how many were armed."""
        return self.arm_loaded(await self.load_deadlines(here))

    async def load_deadlines(self, here: Callable[[str, str], bool]) -> list[Deadline]:
        """The stored deadlines of the actors ``here(kind, key)`` picks (a shard being
        taken: load them first, :meth:`arm_loaded` once the shard serves)."""
        if self.persistence is None:
            return []
        return await self.persistence.load_deadlines(here)

    def arm_loaded(self, deadlines: list[Deadline]) -> int:
        """Arm deadlines read with :meth:`load_deadlines`; overdue ones fire at once."""
        if self.persistence is None:
            return 0
        return self.persistence.arm_loaded(deadlines)

    def _bind(
        self, kr: KindRuntime, key: str, actor: Actor, restarted: BaseException | None = None
    ) -> Actor:
        if kr.max_active is not None and len(kr.active) >= kr.max_active:
            self._evict(kr)
        actor._a_kind = kr
        actor._a_key = key
        actor._a_ref = None
        actor._a_mail = None
        actor._a_sys = None
        actor._a_sched = False
        actor._a_fails = 0
        actor._a_last = self.clock.monotonic()
        kr.active[key] = actor
        kr.activations += 1
        if restarted is not None:
            try:
                actor.on_restart(restarted)
            except Exception as exc:
                log.error("on_restart failed", kind=kr.name, key=key, error=repr(exc))
        if kr.persistent:
            assert isinstance(actor, PersistentActor) and self.persistence is not None
            actor._p_seq = 0
            actor._p_since_snapshot = 0
            actor._p_events = None
            actor._p_deadlines = None
            actor._p_cancel = None
            actor._p_fired = None
            actor._p_idem = None
            actor._p_idem_new = None
            actor._p_outbox = None
            actor._p_after = None
            actor._p_batch = None
            actor._p_flight = None
            self.persistence.recover(actor)
        else:
            actor._a_state = READY
            self._started(actor)
        return actor

    def _started(self, actor: Actor) -> None:
        try:
            actor.on_start()
        except Exception as exc:
            log.error("on_start failed", kind=actor._a_kind.name, key=actor._a_key, error=repr(exc))
            self._restart_later(actor, exc)
            return
        self._reschedule(actor)

    def _evict(self, kr: KindRuntime) -> None:
        """Passivate the least recently used idle actor of ``kr`` (if any)."""
        for actor in kr.active.values():
            if actor._a_state == READY and not actor._a_sched and _at_rest(actor):
                self._passivate(actor)
                return

    def _passivate(self, actor: Actor) -> None:
        kr = actor._a_kind
        actor._a_state = STOPPED
        if kr.active.get(actor._a_key) is actor:
            del kr.active[actor._a_key]
        self.timers.cancel_actor(kr.name, actor._a_key)
        kr.passivations += 1
        self._call_on_stop(actor)

    def _call_on_stop(self, actor: Actor) -> None:
        try:
            actor.on_stop()
        except Exception as exc:
            log.error("on_stop failed", kind=actor._a_kind.name, key=actor._a_key, error=repr(exc))

    def _arm_sweep(self) -> None:
        self.timers.arm(
            _CALL, "sweep", "", self.clock.monotonic() + self._sweep_interval, self._sweep
        )

    def _sweep(self) -> None:
        """Passivate actors idle for longer than their kind's ``passivate_after``."""
        now = self.clock.monotonic()
        for kr in self._kinds.values():
            after = kr.passivate_after
            if after is None:
                continue
            cutoff = now - after
            idle: list[Actor] = []
            for actor in kr.active.values():
                if actor._a_last > cutoff:
                    break  # LRU order: everything after is fresher
                if actor._a_state == READY and not actor._a_sched and _at_rest(actor):
                    idle.append(actor)
            for actor in idle:
                self._passivate(actor)
        if self._running:
            self._arm_sweep()

    # -- messaging ------------------------------------------------------------------

    def _enqueue(self, actor: Actor, item: Any) -> None:
        """Add an :class:`Envelope` or a bare message to the mailbox (bounded)."""
        mail = actor._a_mail
        if mail is None:
            actor._a_mail = item
        elif type(mail) is deque:
            if len(mail) >= actor._a_kind.capacity:
                self._overflow(actor, item)
                return
            mail.append(item)
        else:
            if actor._a_kind.capacity <= 1:
                self._overflow(actor, item)
                return
            actor._a_mail = deque((mail, item))
        if not actor._a_sched and actor._a_state == READY:
            self.dispatcher.schedule(actor)

    def _enqueue_system(self, actor: Actor, item: Any) -> None:
        lane = actor._a_sys
        if lane is None:
            actor._a_sys = deque((item,))
        else:
            lane.append(item)
        if not actor._a_sched and actor._a_state == READY:
            self.dispatcher.schedule(actor)

    def _overflow(self, actor: Actor, item: Any) -> None:
        kr = actor._a_kind
        kr.overflows += 1
        error = Overloaded(f"{kr.name}/{actor._a_key}: mailbox full ({kr.capacity})")
        policy = kr.overflow
        if policy is Overflow.REJECT:
            raise error
        if policy is Overflow.DROP_NEWEST:
            _answer(item, error)
            return
        mail = actor._a_mail
        if type(mail) is deque:
            oldest = mail.popleft()
            mail.append(item)
        else:
            oldest = mail
            actor._a_mail = item
        _answer(oldest, error)

    def _reschedule(self, actor: Actor) -> None:
        if actor._a_state == READY and has_mail(actor):
            self.dispatcher.schedule(actor)

    def _ask_timer(self, slot: _AskSlot, deadline: float) -> TimerEntry:
        entry = TimerEntry(_ASK, "", "", deadline, slot, False)
        self.timers.push(entry)
        return entry

    def _request(
        self,
        origin: ActorRef,
        target: ActorRef,
        message: Any,
        to_message: Callable[[Any], Any],
        timeout: float,
    ) -> None:
        span = self._span
        headers = None if span is None else {TRACEPARENT: span.traceparent}
        pending = _PendingRequest(origin, to_message, headers)
        due = self.clock.monotonic() + timeout
        pending.timer = TimerEntry(_ASK, "", "", due, pending, False)
        try:
            target.tell(message, reply_to=pending, headers=headers, deadline=due)
        except ActorsError as exc:
            pending(exc)
            return
        self.timers.push(pending.timer)

    def _turn_persistent(self, actor: Actor) -> None:
        assert self.persistence is not None and isinstance(actor, PersistentActor)
        self.persistence.turn(actor)

    # -- timers -----------------------------------------------------------------------

    def _arm_deadline(self, kind: str, key: str, name: str, due_wall: float) -> None:
        clock = self.clock
        due = clock.monotonic() + (due_wall - clock.time())
        self.timers.arm(kind, key, name, due, due_wall, durable=True)

    def _on_timer(self, entry: TimerEntry) -> None:
        kind = entry.kind
        if kind == _ASK:
            entry.message(AskTimeout("no reply before the ask's deadline"))
            return
        if kind == _CALL:
            entry.message()
            return
        if kind not in self._kinds:
            # Deadlines can fall due at start, before the node registered their kind:
            # they wait for it (see register) rather than being lost.
            self._parked.setdefault(kind, []).append(entry)
            return
        try:
            actor = self._resolve(kind, entry.key, True)
        except NotLocal:
            # Its shard is not held here (any more, or not yet): forget the entry, so the
            # node that serves the shard (this one too, later) can arm it again.
            self.timers.cancel(kind, entry.key, entry.name)
            return
        except ActorsError:
            return  # stopping: durable deadlines stay in the journal for the next start
        if entry.durable:
            self._enqueue_system(actor, DurableFire(entry.name, entry.message))
        else:
            message = entry.message
            if message is None or type(message) is deque or type(message) is Envelope:
                message = Envelope(message)
            self._enqueue_system(actor, message)

    # -- supervision ------------------------------------------------------------------

    def _failed(self, actor: Actor, item: Any, exc: Exception, batch: list[Any]) -> None:
        kr = actor._a_kind
        kr.failed += 1
        env = item if type(item) is Envelope else Envelope(item)
        env.attempts += 1
        log.warning(
            "handler failed",
            kind=kr.name,
            key=actor._a_key,
            message_type=type(env.message).__name__,
            attempts=env.attempts,
            error=repr(exc),
        )
        again = list(batch)
        if env.attempts >= kr.max_failures:
            letter = DeadLetter(
                kind=kr.name,
                key=actor._a_key,
                message_type=type(env.message).__name__,
                payload=encode_payload(env.message),
                error=repr(exc),
                attempts=env.attempts,
                at=self.clock.time(),
            )
            self.dead_letters.record(letter)
            if env.reply is not None:
                failure = ActorFailed(
                    f"{kr.name}/{actor._a_key} failed {env.attempts} times on "
                    f"{type(env.message).__name__}: {exc!r}"
                )
                failure.__cause__ = exc
                deliver(env.reply, failure)
        else:
            again.append(env)
        requeue_front(actor, again)
        self._restart_later(actor, exc)

    def _restart_later(self, actor: Actor, error: BaseException) -> None:
        """Replace ``actor`` by a fresh incarnation after a backoff delay."""
        kr = actor._a_kind
        actor._a_fails += 1
        actor._a_state = ActorState.BACKOFF
        first, cap = kr.backoff
        delay = backoff_delay(actor._a_fails, first, cap)
        self.timers.push(
            TimerEntry(
                _CALL,
                "restart",
                "",
                self.clock.monotonic() + delay,
                lambda: self._restart(actor, error),
                False,
            )
        )

    def _restart(self, old: Actor, error: BaseException) -> None:
        kr = old._a_kind
        if old._a_state != ActorState.BACKOFF or kr.active.get(old._a_key) is not old:
            return
        if _in_flight(old):
            # Commits of earlier turns are still in flight: recovering now would read a
            # journal without them. Try again once they have landed (or failed).
            self.timers.push(
                TimerEntry(
                    _CALL,
                    "restart",
                    "",
                    self.clock.monotonic() + _RESTART_POLL_S,
                    lambda: self._restart(old, error),
                    False,
                )
            )
            return
        placement = self.placement
        if placement is not None and not kr.local and not placement.is_local(kr.name, old._a_key):
            self._stop_actor(old, hand_over=True)  # its shard left while it was failing
            return
        self.restarts += 1
        self._call_on_stop(old)
        old._a_state = STOPPED
        try:
            new = kr.factory()
        except Exception as exc:
            log.error("factory failed", kind=kr.name, key=old._a_key, error=repr(exc))
            old._a_state = ActorState.BACKOFF
            self._restart_later(old, exc)
            return
        mail, lane, fails = old._a_mail, old._a_sys, old._a_fails
        old._a_mail = old._a_sys = None
        del kr.active[old._a_key]
        # The old incarnation's in-memory timers die with it; durable deadlines stay.
        self.timers.cancel_actor(kr.name, old._a_key)
        self._bind(kr, old._a_key, new, restarted=error)
        new._a_fails = fails
        if mail is not None:
            new._a_mail = mail
        if lane is not None:
            new._a_sys = lane
        self._reschedule(new)

    def _recovery_failed(self, actor: Actor, error: BaseException) -> None:
        """Loading or replaying the journal failed: retry with backoff, and after
        ``max_failures`` attempts give up on this incarnation (its waiting asks get
        ActorFailed; the next message tries again)."""
        kr = actor._a_kind
        if actor._a_fails + 1 < kr.max_failures:
            self._restart_later(actor, error)
            return
        self.dead_letters.record(
            DeadLetter(
                kind=kr.name,
                key=actor._a_key,
                message_type="$recovery",
                payload=None,
                error=repr(error),
                attempts=actor._a_fails + 1,
                at=self.clock.time(),
            )
        )
        failure = ActorFailed(f"{kr.name}/{actor._a_key} could not be recovered: {error!r}")
        failure.__cause__ = error
        while (item := next_envelope(actor)) is not None:
            _answer(item, failure)
        actor._a_state = ActorState.READY  # so that _stop_actor runs its usual path
        self._stop_actor(actor)

    # -- stop ----------------------------------------------------------------------------

    def _stop_actor(self, actor: Actor, *, hand_over: bool = False) -> None:
        """Stop ``actor``; its waiting mail is answered :class:`ActorStopped`, or, with
        ``hand_over`` (its shard left this node), sent on to wherever the placement now
        says, while its system lane (replies to its own requests, fired deadlines) ends
        with it."""
        if actor._a_state == STOPPED:
            return
        kr = actor._a_kind
        key = actor._a_key
        committing = actor._a_state == ActorState.COMMITTING or _in_flight(actor)
        actor._a_state = STOPPED
        if kr.active.get(key) is actor:
            del kr.active[key]
        self.timers.cancel_actor(kr.name, key)
        forward = hand_over and self.placement is not None
        if forward:
            actor._a_sys = None
        error = ActorStopped(f"{kr.name}/{key} stopped")
        while (item := next_envelope(actor)) is not None:
            if forward:
                self._forward(kr.name, key, item)
            else:
                _answer(item, error)
        if kr.spawned and not kr.active:
            self._kinds.pop(kr.name, None)
        if not committing:
            self._call_on_stop(actor)

    # -- async work ------------------------------------------------------------------------

    def _pipe(
        self,
        ref: ActorRef,
        work: Callable[[], Awaitable[Any]],
        to_message: Callable[[Any], Any],
        on_error: Callable[[BaseException], Any] | None,
    ) -> None:
        if self._tg is None:
            raise ActorStopped("the actor system is not running")
        self._pipes += 1
        self._tg.start_soon(self._run_pipe, ref, work, to_message, on_error)

    async def _run_pipe(
        self,
        ref: ActorRef,
        work: Callable[[], Awaitable[Any]],
        to_message: Callable[[Any], Any],
        on_error: Callable[[BaseException], Any] | None,
    ) -> None:
        try:
            try:
                result = await work()
            except Exception as exc:
                if on_error is None:
                    log.error("piped work failed", target=repr(ref), error=repr(exc))
                    return
                message = on_error(exc)
            else:
                message = to_message(result)
            ref.tell(message)
        except ActorsError as exc:
            log.warning("piped result not delivered", target=repr(ref), error=repr(exc))
        except Exception as exc:  # a faulty callback must not take the system down
            log.error("piped result callback failed", target=repr(ref), error=repr(exc))
        finally:
            self._pipes -= 1
