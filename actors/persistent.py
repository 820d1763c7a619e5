"""Event-sourced actors: state is rebuilt from a journal of events.

A persistent actor changes state only through :meth:`PersistentActor.persist`, which
applies the event at once (so the rest of the turn sees it) and stages it for the
turn's commit. Everything else a turn decides is staged the same way and lands in the
*same* atomic write: durable deadlines (:meth:`set_deadline`, :meth:`cancel_deadline`),
idempotency records (:meth:`remember`) and outbox messages (:meth:`emit`).

While that write is in flight the actor takes no mail, and the replies of the turn are
held back: a client hears ``ok`` only for what is durably stored. When the commit fails,
the replies become :class:`~actors.errors.CommitFailed` (retryable) and the actor is
rebuilt from the journal.

Declare the event type (usually a tagged union of frozen msgspec Structs) and, if you
want snapshots, the snapshot type and cadence::

    class Counter(PersistentActor):
        event_type = Added
        snapshot_type = CounterState
        snapshot_every = 500
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import structlog

from .actor import Actor
from .envelope import Envelope

if TYPE_CHECKING:
    from .ref import ActorRef
from .journal.base import OutboxEntry
from .tracing import TRACEPARENT

__all__ = ["DeadlineFired", "PersistentActor"]


class DeadlineFired:
    """Delivered to a persistent actor when one of its durable deadlines is due.

    ``due`` is the wall-clock time it was set for; ``late`` how many seconds after that
    it was delivered (large after a node was down)."""

    __slots__ = ("due", "late", "name")

    def __init__(self, name: str, due: float, late: float = 0.0) -> None:
        self.name = name
        self.due = due
        self.late = late

    def __repr__(self) -> str:
        return f"DeadlineFired({self.name!r}, due={self.due})"


class PersistentActor(Actor):
    """An actor whose state is the fold of its journal."""

    __slots__ = (
        "_p_after",
        "_p_batch",
        "_p_cancel",
        "_p_deadlines",
        "_p_events",
        "_p_fired",
        "_p_flight",
        "_p_idem",
        "_p_idem_new",
        "_p_outbox",
        "_p_seq",
        "_p_since_snapshot",
    )

    #: Type of the events (decoded with msgspec from the journal).
    event_type: ClassVar[Any] = None
    #: Type of the snapshot value (None: no snapshots).
    snapshot_type: ClassVar[Any] = None
    #: Take a snapshot after this many events since the last one (0: never).
    snapshot_every: ClassVar[int] = 0

    _p_seq: int
    _p_since_snapshot: int
    #: This actor's turns whose commit is in flight, oldest first (None when none).
    _p_flight: deque[Any] | None
    _p_events: list[Any] | None
    _p_deadlines: dict[str, float] | None
    _p_cancel: set[str] | None
    _p_fired: list[DeadlineFired] | None
    _p_idem: dict[str, bytes] | None
    _p_idem_new: list[tuple[str, bytes]] | None
    _p_outbox: list[OutboxEntry] | None
    _p_after: list[tuple[ActorRef, Any]] | None
    _p_batch: list[Envelope] | None

    # -- to implement --------------------------------------------------------------

    def apply(self, event: Any) -> None:
        """Fold one event into the state. Must be deterministic and must not fail."""
        raise NotImplementedError

    def snapshot(self) -> Any:
        """Return the state as a ``snapshot_type`` value."""
        raise NotImplementedError

    def restore(self, snapshot: Any) -> None:
        """Set the state from a ``snapshot_type`` value."""
        raise NotImplementedError

    # -- staging, inside a turn ------------------------------------------------------

    @property
    def seq(self) -> int:
        """Sequence number of the last event this actor applied: committed, or in a
        commit still in flight (whose replies wait for it)."""
        return self._p_seq

    def persist(self, event: Any) -> None:
        """Apply ``event`` now and store it with this turn's commit."""
        self.apply(event)
        if self._p_events is None:
            self._p_events = [event]
        else:
            self._p_events.append(event)

    def set_deadline(self, name: str, due: float) -> None:
        """Deliver :class:`DeadlineFired` ``name`` at wall time ``due``, even across a
        restart of the node; stored with this turn's commit (replaces ``name``)."""
        if self._p_deadlines is None:
            self._p_deadlines = {}
        self._p_deadlines[name] = due
        if self._p_cancel is not None:
            self._p_cancel.discard(name)

    def cancel_deadline(self, name: str) -> None:
        if self._p_deadlines is not None:
            self._p_deadlines.pop(name, None)
        if self._p_cancel is None:
            self._p_cancel = set()
        self._p_cancel.add(name)

    def recall(self, request_id: str) -> bytes | None:
        """The reply remembered for ``request_id`` (committed or staged), if any."""
        if self._p_idem is None:
            return None
        return self._p_idem.get(request_id)

    def remember(self, request_id: str, reply: bytes) -> None:
        """Keep ``reply`` as the answer to ``request_id``, in this turn's commit. The
        first reply remembered for an id wins (as in the journal)."""
        if self._p_idem is None:
            self._p_idem = {}
        elif request_id in self._p_idem:
            return
        self._p_idem[request_id] = reply
        if self._p_idem_new is None:
            self._p_idem_new = []
        self._p_idem_new.append((request_id, reply))

    def tell_after_commit(self, target: ActorRef, message: Any) -> None:
        """Tell ``target`` once this turn has committed (never about a change that was
        not stored). Fire and forget: a full mailbox drops it with a warning."""
        if self._p_after is None:
            self._p_after = [(target, message)]
        else:
            self._p_after.append((target, message))

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once this turn has committed, with the turn's replies;
        never if the commit fails. For node-local facts that must not run ahead of the
        journal (e.g. a cache of what is stored). Keep it short: it runs in the loop."""
        self.tell_after_commit(_CALL_AFTER, callback)  # type: ignore[arg-type]

    def emit(
        self,
        subject: str,
        payload: bytes,
        *,
        id: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Publish ``payload`` on ``subject`` once this turn has committed (at least
        once; ``id`` is the de-duplication id downstream). In a traced turn the entry
        carries the current span's ``traceparent`` (see :mod:`actors.tracing`)."""
        span = self._a_kind.system._span
        if span is not None:
            headers = dict(headers) if headers else {}
            headers.setdefault(TRACEPARENT, span.traceparent)
        entry = OutboxEntry(id=id, subject=subject, payload=payload, headers=headers or {})
        if self._p_outbox is None:
            self._p_outbox = [entry]
        else:
            self._p_outbox.append(entry)


class _CallAfter:
    """The target of :meth:`PersistentActor.after_commit`: "telling" it a callable
    calls it (the after-commit tells are sent by ``target.tell(message)``)."""

    __slots__ = ()

    def tell(self, callback: Callable[[], None]) -> None:
        try:
            callback()
        except Exception as exc:  # a faulty callback must not break the commit's bookkeeping
            _log.error("after-commit callback failed", callback=repr(callback), error=repr(exc))


_CALL_AFTER = _CallAfter()
_log = structlog.get_logger("actors.persistent")
