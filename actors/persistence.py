"""Persistence driver: the persistent turn, group commit and batched recovery.

*Group commit.* A persistent actor's turn applies a batch of messages in memory and
stages one :class:`~actors.journal.base.WriteRequest`. The writer task takes every
request staged since its last write — from all actors — and commits them in one journal
transaction. Only then are the turn's replies sent, its deadlines armed and its outbox
entries handed to the relay. A failed commit turns the held replies into
:class:`~actors.errors.CommitFailed` and rebuilds the actor from the journal.

*Pipelining.* The actor does not wait for its commit: it takes its next turns while the
write runs, up to :data:`PIPELINE_DEPTH` turns in flight, each staged with the sequence
the previous one leaves (the journal's check chains them, and a failure dooms the later
ones too). Replies of a turn that staged nothing wait behind the last turn in flight,
so nothing is answered from state that is not committed yet.

*Recovery.* Activating a persistent actor queues it for loading; the loader reads all
queued actors in one journal round trip, replays snapshot + events, re-arms their
durable deadlines and lets them take their mail.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from .actor import ActorState
from .dispatcher import deliver, next_envelope, requeue_front, start_turn_span
from .envelope import Envelope
from .errors import (
    ActorsError,
    CommitFailed,
    DeadlineExceeded,
    JournalUnavailable,
    NotLocal,
)
from .journal.base import Deadline, Journal, Recovery, WriteRequest
from .persistent import DeadlineFired, PersistentActor
from .stats import BATCH_BUCKETS, COMMIT_BUCKETS, Histogram
from .timers import TimerEntry
from .tracing import Forwarded, Span, Tracer

if TYPE_CHECKING:
    from .system import ActorSystem

__all__ = ["DurableFire", "PersistenceDriver"]

log = structlog.get_logger("actors.persistence")

READY = ActorState.READY
STOPPED = ActorState.STOPPED

PIPELINE_DEPTH = 4
"""How many turns of one actor may wait for their commits at once (see the module
docstring); at the limit the actor waits (``COMMITTING``) until the oldest lands."""


class DurableFire:
    """Internal: a durable deadline reached its actor's system lane."""

    __slots__ = ("due", "name")

    def __init__(self, name: str, due: float) -> None:
        self.name = name
        self.due = due


def _send_after(after: list[tuple[Any, Any]]) -> None:
    for target, message in after:
        try:
            target.tell(message)
        except ActorsError as exc:
            log.warning("message after commit not delivered", target=repr(target), error=repr(exc))


def _overtaken(actor: PersistentActor, name: str) -> bool:
    """Whether a turn not yet committed (this one, or one in flight) set or cancelled
    deadline ``name``: a fire of the stored one is then stale. The timers learn of the
    change only at commit; if that commit fails, recovery re-arms what was stored."""
    if (actor._p_deadlines and name in actor._p_deadlines) or (
        actor._p_cancel and name in actor._p_cancel
    ):
        return True
    flight = actor._p_flight
    if flight:
        for staged in flight:
            request = staged.request
            if name in request.deadlines_cancel or any(
                d.name == name for d in request.deadlines_set
            ):
                return True
    return False


def _start_commit_spans(tracer: Tracer, traced: list[Span]) -> list[Span]:
    """A ``commit`` span for each trace the staged turn worked in, a child of the first
    span of that trace in the turn (a message's, or one continued by the handler)."""
    spans: list[Span] = []
    seen: set[str] = set()
    for parent in traced:
        trace_id = parent.traceparent[3:35]
        if trace_id not in seen:
            seen.add(trace_id)
            span = tracer.start("commit", parent)
            if span is not None:
                spans.append(span)
    return spans


def _end_spans(spans: list[Span], batch: int, error: BaseException | None = None) -> None:
    for span in spans:
        span.set_attribute("journal.batch_size", batch)
        span.end(error)


class _Staged:
    """What a committing actor waits for."""

    __slots__ = ("actor", "after", "batch", "fired", "replies", "request", "spans", "void")

    def __init__(
        self,
        actor: PersistentActor,
        request: WriteRequest,
        replies: list[tuple[Any, Any]],
        batch: list[Any],
        fired: list[DurableFire],
        after: list[tuple[Any, Any]] | None,
    ) -> None:
        self.after = after
        self.actor = actor
        self.request = request
        self.replies = replies
        self.batch = batch
        self.fired = fired
        #: ``commit`` spans of the turn's traced messages (see actors.tracing).
        self.spans: list[Span] | None = None
        # Set when an earlier commit of the same actor failed: this one is doomed too
        # (its expected sequence cannot match) and was already answered.
        self.void = False


class PersistenceDriver:
    def __init__(
        self,
        system: ActorSystem,
        journal: Journal,
        *,
        max_batch: int = 1000,
        pipeline: int = PIPELINE_DEPTH,
    ) -> None:
        self._system = system
        self._journal = journal
        self._max_batch = max_batch
        self._pipeline = max(1, pipeline)
        self._pending: list[_Staged] = []
        self._group: list[_Staged] = []  # being written
        self._writing = 0
        self._wake_writer = anyio.Event()
        self._to_recover: list[PersistentActor] = []
        self._recovering = 0
        self._wake_loader = anyio.Event()
        self.commits = 0
        self.committed_requests = 0
        self.committed_events = 0
        self.last_batch = 0
        #: Write requests whose commit failed.
        self.commit_failures = 0
        #: Seconds per journal write, and write requests (turns) per write.
        self.commit_seconds = Histogram(COMMIT_BUCKETS)
        self.commit_batch = Histogram(BATCH_BUCKETS)

    @property
    def busy(self) -> bool:
        return bool(self._pending or self._writing or self._to_recover or self._recovering)

    # -- the persistent turn -------------------------------------------------------

    def turn(self, actor: PersistentActor) -> None:
        system = self._system
        kind = actor._a_kind
        if kind.lru:
            kind.touch(actor)
        clock = system.clock
        tracer = system._tracer
        n = kind.throughput
        batch: list[Any] = []
        replies: list[tuple[Any, Any]] = []
        fired: list[DurableFire] = []
        traced: list[Span] | None = None
        system._actor = actor
        if tracer is not None:
            system._traced = traced = []
        while n:
            item = next_envelope(actor)
            if item is None:
                break
            n -= 1
            reply = None
            span = None
            if type(item) is Envelope:
                if item.deadline is not None and item.deadline < clock.monotonic():
                    kind.expired += 1
                    if item.reply is not None:
                        deliver(item.reply, DeadlineExceeded("deadline passed before its turn"))
                    continue
                system._current = item
                message = item.message
                reply = item.reply
                if tracer is not None:
                    span = system._span = start_turn_span(tracer, actor, item)
            else:
                system._current = message = item
            if type(message) is DurableFire:
                if not system.timers.is_current_fire(
                    kind.name, actor._a_key, message.name, message.due
                ) or _overtaken(actor, message.name):
                    continue  # overtaken: replaced or cancelled since it fired
                fired.append(message)
                if actor._p_cancel is None:
                    actor._p_cancel = set()
                actor._p_cancel.add(message.name)
                message = DeadlineFired(message.name, message.due, clock.time() - message.due)
                system._current = message
            system._replies = replies
            try:
                result = actor.receive(message)
            except Exception as exc:
                system._current = system._actor = None
                system._replies = None
                if tracer is not None:
                    system._span = system._traced = None
                    if span is not None:
                        span.end(exc)
                self._discard_staged(actor)
                system._failed(actor, item, exc, batch)
                return
            if span is not None:
                system._span = None
                span.end()
                if traced is not None and type(span) is not Forwarded:
                    traced.append(span)
            batch.append(item)
            if reply is not None and type(item) is Envelope and item.reply is not None:
                replies.append((reply, result))
            if actor._a_state != READY:
                break
        system._current = system._actor = None
        system._replies = None
        if tracer is not None:
            system._span = system._traced = None
        system.dispatcher.handled += len(batch)
        kind.handled += len(batch)
        request = self._stage(actor)
        flight = actor._p_flight
        if request is None:
            if flight:
                # Earlier turns are still committing: what this turn answered may rest on
                # their changes, so it goes out after them (read your writes).
                tail = flight[-1]
                tail.replies.extend(replies)
                after, actor._p_after = actor._p_after, None
                if after:
                    if tail.after is None:
                        tail.after = after
                    else:
                        tail.after.extend(after)
            else:
                for reply, value in replies:
                    if reply is not None:
                        deliver(reply, value)
                self._tell_after(actor)
            if batch:
                actor._a_fails = 0
            system._reschedule(actor)
            return
        after, actor._p_after = actor._p_after, None
        staged = _Staged(actor, request, replies, batch, fired, after)
        if traced:
            assert tracer is not None
            staged.spans = _start_commit_spans(tracer, traced)
        if flight is None:
            actor._p_flight = flight = deque()
        flight.append(staged)
        self._pending.append(staged)
        self._wake_writer.set()
        if len(flight) >= self._pipeline:
            actor._a_state = ActorState.COMMITTING
        else:
            system._reschedule(actor)  # the next turn runs while this one commits

    def _stage(self, actor: PersistentActor) -> WriteRequest | None:
        events = actor._p_events
        deadlines = actor._p_deadlines
        cancel = actor._p_cancel
        idem = actor._p_idem_new
        outbox = actor._p_outbox
        if not (events or deadlines or cancel or idem or outbox):
            return None
        kind = actor._a_kind
        encode = kind.encoder.encode
        encoded = [encode(e) for e in events] if events else []
        snapshot = None
        if (
            kind.snapshot_every
            and encoded
            and actor._p_since_snapshot + len(encoded) >= kind.snapshot_every
        ):
            snapshot = encode(actor.snapshot())
        expected_seq = actor._p_seq
        actor._p_seq = expected_seq + len(encoded)
        if snapshot is not None:
            actor._p_since_snapshot = 0
        else:
            actor._p_since_snapshot += len(encoded)
        request = WriteRequest(
            kind=kind.name,
            key=actor._a_key,
            expected_seq=expected_seq,
            events=encoded,
            snapshot=snapshot,
            deadlines_set=[
                Deadline(kind.name, actor._a_key, name, due, b"")
                for name, due in (deadlines or {}).items()
            ],
            deadlines_cancel=sorted(cancel) if cancel else [],
            idempotency=idem or [],
            outbox=outbox or [],
        )
        after = actor._p_after
        self._discard_staged(actor)
        actor._p_after = after
        return request

    @staticmethod
    def _tell_after(actor: PersistentActor) -> None:
        after, actor._p_after = actor._p_after, None
        if after:
            _send_after(after)

    @staticmethod
    def _discard_staged(actor: PersistentActor) -> None:
        actor._p_after = None
        actor._p_events = None
        actor._p_deadlines = None
        actor._p_cancel = None
        actor._p_idem_new = None
        actor._p_outbox = None

    # -- group commit --------------------------------------------------------------

    async def run_writer(self) -> None:
        while True:
            if not self._pending:
                self._wake_writer = anyio.Event()
                await self._wake_writer.wait()
                continue
            group = self._group = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            self._writing = len(group)
            started = perf_counter()
            placement = self._system.placement
            if placement is not None:
                # Fencing: a shard whose lease this node no longer holds is not written
                # for, even by a turn staged before the loss (see actors.cluster.leases).
                kept: list[_Staged] = []
                fenced: list[_Staged] = []
                for s in group:
                    held = s.actor._a_kind.local or placement.may_write(
                        s.request.kind, s.request.key
                    )
                    (kept if held else fenced).append(s)
                if fenced:
                    for staged in fenced:
                        self._commit_failed(staged, NotLocal("the shard moved to another node"))
                    group = self._group = kept
                    if not group:
                        self._writing = 0
                        continue
            try:
                results: list[Any] = list(await self._journal.write([s.request for s in group]))
            except ActorsError as exc:
                results = [exc] * len(group)
            except Exception as exc:  # a journal bug must not lose the replies
                log.error("journal write raised", error=repr(exc))
                results = [JournalUnavailable(repr(exc))] * len(group)
            finally:
                self._writing = 0
                self._group = []
            self.commits += 1
            self.last_batch = len(group)
            self.commit_seconds.observe(perf_counter() - started)
            self.commit_batch.observe(len(group))
            for staged, result in zip(group, results, strict=True):
                if staged.spans is not None:
                    _end_spans(staged.spans, len(group), result)
                if result is None:
                    self._committed(staged)
                else:
                    self._commit_failed(staged, result)

    def in_flight(self, pick: Callable[[str, str], bool]) -> bool:
        """Whether a commit of an actor ``pick(kind, key)`` chooses is queued or being
        written."""
        return any(pick(s.request.kind, s.request.key) for s in (*self._pending, *self._group))

    def _committed(self, staged: _Staged) -> None:
        system = self._system
        actor = staged.actor
        request = staged.request
        kind, key = request.kind, request.key
        self.committed_requests += 1
        self.committed_events += len(request.events)
        if staged.void:  # cannot happen with a journal that checks sequences
            log.error("commit landed after an earlier one of its actor failed", kind=kind, key=key)
            return
        flight = actor._p_flight
        if flight and flight[0] is staged:
            flight.popleft()
        timers = system.timers
        fired = {f.name: f.due for f in staged.fired}
        for name in request.deadlines_cancel:
            if name in fired:
                timers.settled(kind, key, name, fired[name])
            else:
                timers.cancel(kind, key, name)
        for d in request.deadlines_set:
            timers.cancel(kind, key, d.name)
            system._arm_deadline(kind, key, d.name, d.due)
        if request.outbox:
            system.outbox.push(request.outbox)
        for reply, value in staged.replies:
            if reply is not None:
                deliver(reply, value)
        if staged.after:
            _send_after(staged.after)
        actor._a_fails = 0
        if actor._a_state == ActorState.COMMITTING:
            actor._a_state = READY
            system._reschedule(actor)
        elif actor._a_state == STOPPED and not flight:
            system._call_on_stop(actor)

    def _commit_failed(self, staged: _Staged, error: BaseException) -> None:
        self.commit_failures += 1
        if staged.void:
            return  # answered when the earlier commit of its actor failed
        system = self._system
        actor = staged.actor
        if type(error) is NotLocal:
            log.info("shard moved; turn not stored", kind=actor._a_kind.name, key=actor._a_key)
        else:
            log.warning(
                "commit failed; rebuilding actor from its journal",
                kind=actor._a_kind.name,
                key=actor._a_key,
                error=repr(error),
            )
        failure = CommitFailed(f"commit failed: {error}")
        failure.__cause__ = error
        # Every later turn of this actor still in flight built on this one: it fails too
        # (its expected sequence no longer matches), so answer them all now, in order.
        doomed = list(actor._p_flight or ())
        if staged not in doomed:
            doomed.insert(0, staged)
        actor._p_flight = None
        again: list[Any] = []
        for each in doomed:
            each.void = True
            for reply, _ in each.replies:
                if reply is not None:
                    deliver(reply, failure)
            # Tells nobody waits for are applied again after recovery; fired deadlines
            # are armed again (their removal was not stored).
            again.extend(
                item
                for item in each.batch
                if type(item) is not DurableFire
                and (type(item) is not Envelope or item.reply is None)
            )
            for fire in each.fired:
                system.timers.unfire(actor._a_kind.name, actor._a_key, fire.name)
        if actor._a_state == STOPPED and system.placement is not None and not actor._a_kind.local:
            # Handed over already: the tells it had not stored follow its other mail.
            for item in again:
                system._forward(actor._a_kind.name, actor._a_key, item)
            again = []
        requeue_front(actor, again)
        if type(error) is NotLocal and actor._a_state != STOPPED:
            actor._a_state = READY  # nothing of it is in flight any more
            # fenced: its mail goes on to the shard's new owner
            system._stop_actor(actor, hand_over=True)
        elif actor._a_state in (ActorState.COMMITTING, READY):
            system._restart_later(actor, error)
        elif actor._a_state == STOPPED:
            system._call_on_stop(actor)

    # -- recovery ---------------------------------------------------------------------

    def recover(self, actor: PersistentActor) -> None:
        actor._a_state = ActorState.RECOVERING
        self._to_recover.append(actor)
        self._wake_loader.set()

    async def run_loader(self) -> None:
        while True:
            if not self._to_recover:
                self._wake_loader = anyio.Event()
                await self._wake_loader.wait()
                continue
            group = self._to_recover[:2000]
            del self._to_recover[:2000]
            self._recovering = len(group)
            try:
                recoveries = await self._journal.recover(
                    [(a._a_kind.name, a._a_key) for a in group]
                )
            except ActorsError as exc:
                log.warning("recovery failed; retrying", error=repr(exc))
                for actor in group:
                    if actor._a_state == ActorState.RECOVERING:
                        self._system._recovery_failed(actor, exc)
                continue
            finally:
                self._recovering = 0
            for actor, rec in zip(group, recoveries, strict=True):
                if actor._a_state == ActorState.RECOVERING:
                    self._recovered(actor, rec)

    def _recovered(self, actor: PersistentActor, rec: Recovery) -> None:
        system = self._system
        kind = actor._a_kind
        try:
            if rec.snapshot is not None:
                actor.restore(kind.snapshot_decoder.decode(rec.snapshot))
            decode = kind.event_decoder.decode
            for data in rec.events:
                actor.apply(decode(data))
        except Exception as exc:
            log.error("replay failed", kind=kind.name, key=actor._a_key, error=repr(exc))
            system._recovery_failed(actor, exc)
            return
        actor._p_seq = rec.seq
        actor._p_since_snapshot = rec.seq - rec.snapshot_seq
        actor._p_idem = dict(rec.idempotency) if rec.idempotency else None
        for d in rec.deadlines:
            system._arm_deadline(kind.name, actor._a_key, d.name, d.due)
        actor._a_state = READY
        system._started(actor)

    # -- node start: every durable deadline --------------------------------------------

    async def load_deadlines(self, here: Callable[[str, str], bool]) -> list[Deadline]:
        """Every stored deadline of the actors ``here(kind, key)`` picks."""
        found: list[Deadline] = []
        after: tuple[float, str, str, str] | None = None
        while True:
            page = await self._journal.deadlines(after, 50_000)
            if not page:
                return found
            found.extend(d for d in page if here(d.kind, d.key))
            last = page[-1]
            after = (last.due, last.kind, last.key, last.name)

    def arm_loaded(self, deadlines: list[Deadline]) -> int:
        clock = self._system.clock
        now_mono = clock.monotonic()
        now_wall = clock.time()
        return self._system.timers.arm_many(
            TimerEntry(d.kind, d.key, d.name, now_mono + (d.due - now_wall), d.due, True)
            for d in deadlines
        )

    async def arm_all_deadlines(self) -> int:
        """Arm every stored deadline, a page at a time (a node may hold millions)."""
        total = 0
        after: tuple[float, str, str, str] | None = None
        while True:
            page = await self._journal.deadlines(after, 50_000)
            if not page:
                break
            total += self.arm_loaded(page)
            last = page[-1]
            after = (last.due, last.kind, last.key, last.name)
        return total
