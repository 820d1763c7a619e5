"""The dispatcher: runs the turns of actors that have mail, one task for the node.

Actors with mail sit in a run queue; an idle actor is not in it and costs nothing. The
dispatcher pops an actor, runs a *turn* — up to ``throughput`` messages, system lane
first — and puts it back at the tail if mail remains, so a hot actor cannot starve the
others. Handlers are synchronous, so a turn never waits; the dispatcher yields to the
event loop between slices of turns so that I/O (NATS, the journal) keeps flowing.

For a persistent actor, the turn ends by handing its staged changes to the journal
writer; its replies go out after that commit. The actor may take further turns while it
commits, up to a few in flight; then it waits (``COMMITTING``) for the oldest.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from time import perf_counter
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import structlog

from .actor import Actor, ActorState
from .current import enter_dispatcher
from .envelope import Envelope
from .errors import DeadlineExceeded
from .tracing import TRACEPARENT, Forwarded, Span, Tracer, unsampled

if TYPE_CHECKING:
    from .system import ActorSystem

__all__ = ["Dispatcher"]

log = structlog.get_logger("actors.dispatcher")

READY = ActorState.READY


def next_envelope(actor: Actor) -> Any:
    """Pop the next item (an :class:`Envelope`, or a bare message sent with a plain
    ``tell``): system lane first, then the mailbox. ``None`` when there is no mail."""
    lane = actor._a_sys
    if lane is not None:
        item = lane.popleft()
        if not lane:
            actor._a_sys = None
        return item
    mail = actor._a_mail
    if mail is None:
        return None
    if type(mail) is deque:
        item = mail.popleft()
        if not mail:
            actor._a_mail = None
        return item
    actor._a_mail = None
    return mail


def has_mail(actor: Actor) -> bool:
    return actor._a_mail is not None or actor._a_sys is not None


def requeue_front(actor: Actor, items: list[Any]) -> None:
    """Put ``items`` back at the head of the mailbox, in order (no capacity check)."""
    if not items:
        return
    mail = actor._a_mail
    queue: deque[Any]
    if mail is None:
        queue = deque()
    elif type(mail) is deque:
        queue = mail
    else:
        queue = deque((mail,))
    queue.extendleft(reversed(items))
    actor._a_mail = queue


def start_turn_span(tracer: Tracer, actor: Actor, item: Envelope) -> Span | None:
    """The ``turn <kind>`` span of a message, when it carries a trace context."""
    headers = item.headers
    if not headers:
        return None
    parent = headers.get(TRACEPARENT)
    if parent is None:
        return None
    if unsampled(parent):
        return Forwarded(parent)
    kind = actor._a_kind
    return tracer.start(
        kind.span_name,
        headers,
        {
            "actor.kind": kind.name,
            "actor.key": actor._a_key,
            "message.type": type(item.message).__name__,
        },
    )


def deliver(reply: Any, value: Any) -> None:
    """Call a reply callback; a faulty callback is logged, never raised into a turn."""
    try:
        reply(value)
    except Exception as exc:
        log.error("reply callback failed", error=repr(exc))


class Dispatcher:
    """The run queue and its single task."""

    #: Turns run before yielding to the event loop.
    slice_turns = 256

    def __init__(self, system: ActorSystem) -> None:
        self._system = system
        self._runq: deque[Actor] = deque()
        self._wake = anyio.Event()
        self._sleeping = False
        self.turns = 0
        self.handled = 0
        #: Time every turn into its kind's ``turn_seconds`` (a perf_counter pair per turn).
        #: Read at each slice; an owner that exports no metrics sets it False (the shop's
        #: node does when it has no ``/metrics`` endpoint), and the histograms stay empty.
        self.timed = True

    def schedule(self, actor: Actor) -> None:
        """Put an actor with mail in the run queue (once)."""
        if actor._a_sched or actor._a_state != READY:
            return
        actor._a_sched = True
        self._runq.append(actor)
        if self._sleeping:
            self._sleeping = False
            self._wake.set()

    @property
    def busy(self) -> bool:
        return bool(self._runq)

    async def run(self) -> None:
        runq = self._runq
        system = self._system
        enter_dispatcher(system)
        slice_turns = self.slice_turns
        while True:
            if not runq:
                self._wake = anyio.Event()
                self._sleeping = True
                await self._wake.wait()
                continue
            budget = slice_turns
            timed = self.timed
            while runq and budget:
                budget -= 1
                actor = runq.popleft()
                actor._a_sched = False
                if actor._a_state != READY:
                    continue
                self.turns += 1
                kind = actor._a_kind
                start = perf_counter() if timed else 0.0
                if kind.persistent:
                    system._turn_persistent(actor)
                else:
                    self.turn(actor)
                if timed:  # Histogram.observe, inlined: this runs once per turn
                    elapsed = perf_counter() - start
                    hist = kind.turn_seconds
                    hist.counts[bisect_left(hist.bounds, elapsed)] += 1
                    hist.sum += elapsed
            await anyio.lowlevel.checkpoint()

    def turn(self, actor: Actor) -> None:
        """One turn of a plain actor."""
        system = self._system
        kind = actor._a_kind
        if kind.lru:
            kind.touch(actor)
        clock = system.clock
        receive = actor.receive
        tracer = system._tracer
        n = kind.throughput
        handled = 0
        system._actor = actor
        while n:
            if actor._a_sys is None:  # inlined next_envelope: the hot path
                mail = actor._a_mail
                if mail is None:
                    break
                if type(mail) is deque:
                    item = mail.popleft()
                    if not mail:
                        actor._a_mail = None
                else:
                    actor._a_mail = None
                    item = mail
            else:
                item = next_envelope(actor)
            n -= 1
            span = None
            if type(item) is Envelope:
                if item.deadline is not None and item.deadline < clock.monotonic():
                    kind.expired += 1
                    if item.reply is not None:
                        deliver(item.reply, DeadlineExceeded("deadline passed before its turn"))
                    continue
                system._current = item
                message = item.message
                if tracer is not None:
                    span = system._span = start_turn_span(tracer, actor, item)
            else:
                system._current = message = item
            try:
                result = receive(message)
            except Exception as exc:
                system._current = system._actor = None
                if span is not None:
                    system._span = None
                    span.end(exc)
                self.handled += handled
                kind.handled += handled
                system._failed(actor, item, exc, [])
                return
            handled += 1
            if type(item) is Envelope:
                system._current = None
                if span is not None:
                    system._span = None
                    span.end()
                if item.reply is not None:
                    try:
                        item.reply(result)
                    except Exception as exc:
                        log.error("reply callback failed", error=repr(exc))
            if actor._a_state != READY:
                break
        system._current = system._actor = None
        self.handled += handled
        kind.handled += handled
        if handled:
            actor._a_fails = 0
        if actor._a_state == READY and (actor._a_mail is not None or actor._a_sys is not None):
            self.schedule(actor)
