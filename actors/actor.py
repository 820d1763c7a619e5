"""The actor base class: lifecycle hooks, a typed ``receive`` and its runtime slots.

An actor handles one message at a time (a *turn*); ``receive`` is synchronous, so a
turn is atomic and needs no locks. Whatever ``receive`` returns is the reply to an ask
(or to the ``reply_to`` of a tell). Work that must wait (I/O, another actor's answer)
is started with :meth:`Actor.pipe` and comes back later as a message.

Configuration is declared per actor kind, as class attributes::

    class Window(Actor):
        mailbox_capacity = 10_000
        overflow = Overflow.REJECT
        passivate_after = 300.0

An idle actor is just this object (slots, no mailbox, no task): the mailbox is created
when mail arrives and dropped when it is drained.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from .envelope import Envelope, Overflow, Reply
from .tracing import Forwarded, Span

if TYPE_CHECKING:
    from .ref import ActorRef
    from .system import ActorSystem, KindRuntime

__all__ = ["Actor", "ActorState"]


def _no_reply(value: Any) -> None:
    """Reply handle of a message nobody waits for."""


class _TraceScope:
    """See :meth:`Actor.continue_trace`."""

    __slots__ = ("saved", "span", "system")

    def __init__(self, system: ActorSystem, span: Span | None) -> None:
        self.system = system
        self.span = span
        self.saved: Span | None = None

    def __enter__(self) -> None:
        system = self.system
        span = self.span
        self.saved = system._span
        system._span = span
        traced = system._traced
        if span is not None and traced is not None and type(span) is not Forwarded:
            traced.append(span)  # the commit spans are one per trace

    def __exit__(self, *exc: object) -> None:
        self.system._span = self.saved


class ActorState:
    """Where an actor is in its life (small ints; read by the dispatcher)."""

    READY = 0  # may run when it has mail
    RECOVERING = 1  # loading its journal; mail waits
    COMMITTING = 2  # its pipeline of turns waiting for commits is full; mail waits
    BACKOFF = 3  # failed; waiting to restart; mail waits
    STOPPED = 4  # gone; a new message activates a fresh incarnation


class Actor:
    """Base class of every actor. Subclass it and implement :meth:`receive`."""

    __slots__ = (
        "_a_fails",
        "_a_key",
        "_a_kind",
        "_a_last",
        "_a_mail",
        "_a_ref",
        "_a_sched",
        "_a_state",
        "_a_sys",
    )

    #: Queued user messages beyond which the overflow policy applies.
    mailbox_capacity: ClassVar[int] = 1024
    overflow: ClassVar[Overflow] = Overflow.REJECT
    #: Messages handled per turn before other actors get the dispatcher.
    throughput: ClassVar[int] = 64
    #: Seconds without mail after which the actor is passivated (None: never).
    passivate_after: ClassVar[float | None] = None
    #: At most this many active actors of this kind (None: unbounded); the least
    #: recently used idle ones are passivated to make room.
    max_active: ClassVar[int | None] = None
    #: A message that fails this many times goes to the dead letters.
    max_failures: ClassVar[int] = 3
    #: Restart backoff: first delay and cap, in seconds (doubling in between).
    restart_backoff: ClassVar[tuple[float, float]] = (0.01, 1.0)

    _a_kind: KindRuntime
    _a_key: str
    _a_ref: ActorRef | None
    _a_mail: Any  # None, one item, or a deque of items (Envelope or bare message)
    _a_sys: deque[Any] | None
    _a_state: int
    _a_sched: bool
    _a_last: float
    _a_fails: int

    # -- lifecycle hooks -------------------------------------------------------

    def on_start(self) -> None:
        """Called once the actor is active (after recovery, for persistent actors)."""

    def on_stop(self) -> None:
        """Called when the actor stops or is passivated."""

    def on_restart(self, error: BaseException) -> None:
        """Called on the fresh incarnation that replaces one whose handler failed,
        once it is bound (``self.key`` works) and before ``on_start`` (for a persistent
        actor: before its journal is replayed)."""

    def receive(self, message: Any) -> Any:
        """Handle one message; the return value is the reply."""
        raise NotImplementedError(f"{type(self).__name__} handles no messages")

    # -- context ---------------------------------------------------------------

    @property
    def key(self) -> str:
        return self._a_key

    @property
    def kind(self) -> str:
        return self._a_kind.name

    @property
    def system(self) -> ActorSystem:
        return self._a_kind.system

    @property
    def ref(self) -> ActorRef:
        ref = self._a_ref
        if ref is None:
            ref = self._a_ref = self._a_kind.system.ref(self._a_kind.name, self._a_key)
        return ref

    @property
    def headers(self) -> Mapping[str, str]:
        """Headers of the message being handled (empty outside a turn)."""
        env = self._a_kind.system._current
        if type(env) is not Envelope or env.headers is None:
            return {}
        return env.headers

    @property
    def current_span(self) -> Span | None:
        """The span of the traced message being handled (see :mod:`actors.tracing`), or
        ``None``. Keep it with work that waits (a reply taken with :meth:`reply_later`)
        to finish that work in its own trace with :meth:`continue_trace`."""
        return self._a_kind.system._span

    def continue_trace(self, span: Span | None) -> _TraceScope:
        """``with self.continue_trace(span):`` makes ``span`` (from
        :attr:`current_span`, perhaps in an earlier turn) the current span inside the
        block: events emitted and requests sent there carry its context, and in a
        persistent actor this turn's commit gets a ``commit`` span in its trace. With
        ``span=None`` the block runs in no trace."""
        return _TraceScope(self._a_kind.system, span)

    def now(self) -> float:
        """Wall-clock seconds since the epoch, from the system's clock."""
        return self._a_kind.system.clock.time()

    def monotonic(self) -> float:
        return self._a_kind.system.clock.monotonic()

    # -- timers (in memory; lost on passivation or restart) -----------------------

    def start_timer(self, name: str, delay: float, message: Any) -> None:
        """Deliver ``message`` to this actor after ``delay`` seconds (replaces ``name``)."""
        system = self._a_kind.system
        system.timers.arm(
            self._a_kind.name, self._a_key, name, system.clock.monotonic() + delay, message
        )

    def cancel_timer(self, name: str) -> None:
        self._a_kind.system.timers.cancel(self._a_kind.name, self._a_key, name)

    # -- replies and requests to other actors ------------------------------------------

    def reply_later(self) -> Reply:
        """Take over the reply to the message being handled: the handler's return value
        is then not sent. Answer later, from any turn, with :meth:`respond`."""
        env = self._a_kind.system._current
        if type(env) is not Envelope or env.reply is None:
            return _no_reply
        reply = env.reply
        env.reply = None
        return reply

    def respond(self, reply: Reply, value: Any) -> None:
        """Answer a reply handle taken with :meth:`reply_later` (or received in a
        message). In a persistent actor the answer waits for this turn's commit."""
        replies = self._a_kind.system._replies
        if replies is not None:
            replies.append((reply, value))
        else:
            try:
                reply(value)
            except Exception:  # a faulty callback never breaks the turn
                pass

    def request(
        self,
        target: ActorRef,
        message: Any,
        to_message: Callable[[Any], Any],
        *,
        timeout: float = 5.0,
    ) -> None:
        """Ask ``target`` without waiting: its reply (or an
        :class:`~actors.errors.ActorsError`, e.g. ``AskTimeout``) comes back to this
        actor as the message ``to_message(reply)``."""
        self._a_kind.system._request(self.ref, target, message, to_message, timeout)

    # -- async work ---------------------------------------------------------------

    def pipe(
        self,
        work: Callable[[], Awaitable[Any]],
        to_message: Callable[[Any], Any],
        on_error: Callable[[BaseException], Any] | None = None,
    ) -> None:
        """Run ``work()`` outside the turn (owned by the system's task group) and deliver
        ``to_message(result)`` (or ``on_error(exc)``) back to this actor as a message."""
        self._a_kind.system._pipe(self.ref, work, to_message, on_error)

    def stop(self) -> None:
        """Stop this actor after the current turn; queued asks fail with ActorStopped."""
        self._a_kind.system._stop_actor(self)

    def __repr__(self) -> str:
        try:
            return f"<{type(self).__name__} {self._a_kind.name}/{self._a_key}>"
        except AttributeError:
            return f"<{type(self).__name__} (unbound)>"
