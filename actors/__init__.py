"""A general actor runtime on anyio and NATS. It knows nothing about shops.

The public surface is re-exported here (and checked by a test)::

    from actors import ActorSystem, Actor, PersistentActor, ActorRef

See ``docs/runtime.md`` for the design.
"""

from .actor import Actor, ActorState
from .clock import Clock, RealClock, VirtualClock
from .envelope import Overflow
from .errors import (
    ActorFailed,
    ActorsError,
    ActorStopped,
    AskTimeout,
    CommitFailed,
    ConnectionClosed,
    DeadlineExceeded,
    JournalError,
    JournalUnavailable,
    NoResponders,
    NotLocal,
    NotPermitted,
    Overloaded,
    RequestTimeout,
    SequenceConflict,
    TransportError,
)
from .journal.base import DeadLetter, Deadline, Journal, OutboxEntry, Recovery, WriteRequest
from .outbox import OutboxSink
from .persistent import DeadlineFired, PersistentActor
from .ref import ActorRef
from .system import ActorSystem
from .timers import TimerStats

__all__ = [
    "Actor",
    "ActorFailed",
    "ActorRef",
    "ActorState",
    "ActorStopped",
    "ActorSystem",
    "ActorsError",
    "AskTimeout",
    "Clock",
    "CommitFailed",
    "ConnectionClosed",
    "DeadLetter",
    "Deadline",
    "DeadlineExceeded",
    "DeadlineFired",
    "Journal",
    "JournalError",
    "JournalUnavailable",
    "NoResponders",
    "NotLocal",
    "NotPermitted",
    "OutboxEntry",
    "OutboxSink",
    "Overflow",
    "Overloaded",
    "PersistentActor",
    "RealClock",
    "Recovery",
    "RequestTimeout",
    "SequenceConflict",
    "TimerStats",
    "TransportError",
    "VirtualClock",
    "WriteRequest",
]
