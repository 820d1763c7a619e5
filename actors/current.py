"""The turn being run right now, for log processors: which actor, which message, which
trace.

A log line written by a handler should say which actor wrote it, about which message and
in which trace, without the handler passing any of it. Binding context variables around
every message would cost more than a small turn does, so the dispatcher only keeps what
it is running in two attributes of its system (the actor once per turn, the message
being handled once per message), and :func:`current_turn` reads them when a log call
actually happens. The system is found through a context variable that the dispatcher's
task sets once, when it starts: handlers run in that task, so a log call from a handler
sees its own system, and a log call anywhere else (another task, another system in the
same process) sees ``None``.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import msgspec

from .envelope import Envelope
from .tracing import TRACEPARENT

if TYPE_CHECKING:
    from .system import ActorSystem

__all__ = ["Turn", "current_turn", "enter_dispatcher"]

_dispatching: ContextVar[ActorSystem | None] = ContextVar("actors_dispatching", default=None)


class Turn(msgspec.Struct, frozen=True):
    """What :func:`current_turn` reports."""

    node: str
    kind: str
    key: str
    message_type: str | None
    """Class name of the message being handled (None between messages)."""
    traceparent: str | None
    """The current span's, else the message's own ``traceparent`` header, if any."""


def enter_dispatcher(system: ActorSystem) -> None:
    """Called once by the dispatcher task of ``system``, before its first turn."""
    _dispatching.set(system)


def current_turn() -> Turn | None:
    """The turn this code runs in, or ``None`` outside any handler."""
    system = _dispatching.get()
    if system is None:
        return None
    actor = system._actor
    if actor is None:
        return None
    item: Any = system._current
    message: Any = item
    traceparent: str | None = None
    if type(item) is Envelope:
        message = item.message
        if item.headers:
            traceparent = item.headers.get(TRACEPARENT)
    span = system._span
    if span is not None:
        traceparent = span.traceparent
    kind = actor._a_kind
    return Turn(
        node=system.node_id,
        kind=kind.name,
        key=actor._a_key,
        message_type=None if message is None else type(message).__name__,
        traceparent=traceparent,
    )
