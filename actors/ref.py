"""Actor references: the only way to talk to an actor.

``tell`` is synchronous and never blocks: it enqueues or raises
(:class:`~actors.errors.Overloaded` when the mailbox is full,
:class:`~actors.errors.ActorStopped` for a stopped, non-virtual actor). ``ask`` awaits
the reply with a deadline. A ref to a virtual actor stays valid across passivation:
the next message activates the actor again. In a cluster (see :mod:`actors.placement`)
a ref to an actor that lives on another node sends its messages there; the caller sees
no difference.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import anyio

from .actor import Actor, ActorState
from .envelope import Envelope, Reply
from .errors import ActorsError, NotLocal

if TYPE_CHECKING:
    from .system import ActorSystem

__all__ = ["ActorRef"]

_STOPPED = ActorState.STOPPED
# Messages that would be mistaken for mailbox internals travel in an envelope.
_WRAPPED = (Envelope, deque)


class _AskSlot:
    """Receives one reply; the first answer wins (reply or timeout)."""

    __slots__ = ("done", "event", "value")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.value: Any = None
        self.done = False

    def __call__(self, value: Any) -> None:
        if not self.done:
            self.done = True
            self.value = value
            self.event.set()


class ActorRef:
    """Address of one actor: ``(kind, key)`` on a system."""

    __slots__ = ("_actor", "_system", "_virtual", "key", "kind")

    def __init__(
        self,
        system: ActorSystem,
        kind: str,
        key: str,
        actor: Actor | None = None,
        *,
        virtual: bool = True,
    ) -> None:
        self._system = system
        self.kind = kind
        self.key = key
        self._actor = actor
        self._virtual = virtual

    def _target(self) -> Actor:
        actor = self._actor
        if actor is None or actor._a_state == _STOPPED:
            actor = self._actor = self._system._resolve(self.kind, self.key, self._virtual)
        return actor

    def tell(
        self,
        message: Any,
        *,
        reply_to: Reply | None = None,
        headers: Mapping[str, str] | None = None,
        deadline: float | None = None,
    ) -> None:
        """Enqueue ``message``. ``reply_to`` (if given) is called with the reply value or
        an :class:`~actors.errors.ActorsError`. ``deadline`` is monotonic seconds."""
        actor = self._actor
        if actor is None or actor._a_state == _STOPPED:
            try:
                actor = self._target()
            except NotLocal:
                self._system._send_remote(self.kind, self.key, message, reply_to, headers, deadline)
                return
        if (
            reply_to is None
            and headers is None
            and deadline is None
            and message is not None
            and type(message) not in _WRAPPED
        ):
            # A bare tell travels without an envelope: one object less per message.
            mail = actor._a_mail
            if type(mail) is deque and actor._a_sched and len(mail) < actor._a_kind.capacity:
                mail.append(message)  # fast path: queued behind mail already scheduled
                return
            self._system._enqueue(actor, message)
        else:
            self._system._enqueue(actor, Envelope(message, reply_to, headers, deadline))

    async def ask(
        self,
        message: Any,
        *,
        timeout: float = 5.0,  # noqa: ASYNC109 - the deadline travels with the message
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Send ``message`` and await the reply; raises the runtime's errors."""
        system = self._system
        slot = _AskSlot()
        deadline = system.clock.monotonic() + timeout
        try:
            system._enqueue(self._target(), Envelope(message, slot, headers, deadline))
        except NotLocal:
            system._send_remote(self.kind, self.key, message, slot, headers, deadline)
        if not slot.done:
            timer = system._ask_timer(slot, deadline)
            try:
                await slot.event.wait()
            finally:
                timer.cancelled = True
        value = slot.value
        if isinstance(value, ActorsError):
            raise value
        return value

    def stop(self) -> None:
        """Stop the actor now; its queued asks fail with ActorStopped."""
        actor = self._actor
        if actor is None or actor._a_state == _STOPPED:
            actor = self._system._lookup(self.kind, self.key)
        if actor is not None:
            self._system._stop_actor(actor)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ActorRef)
            and other._system is self._system
            and other.kind == self.kind
            and other.key == self.key
        )

    def __hash__(self) -> int:
        return hash((self.kind, self.key))

    def __repr__(self) -> str:
        return f"ActorRef({self.kind}/{self.key})"
