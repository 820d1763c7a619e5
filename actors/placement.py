"""Where an actor lives when several nodes share the actors.

On one node every actor is local and an :class:`~actors.system.ActorSystem` has no
placement. In a cluster the system is given one: before it activates an actor it asks
``is_local(kind, key)``; a message for an actor that lives elsewhere goes to
``send(...)``, which carries it to the owning node (see :mod:`actors.cluster`), and the
reply, if one was asked for, comes back through the same ``reply_to`` callback a local
actor would have called. Refs hide the difference: ``tell`` and ``ask`` work the same
for a local and a remote actor.

The check runs only on the activation path (a ref whose actor is not running), so the
cost for messages to active local actors is nothing. When a node loses a shard it stops
that shard's actors at once (:meth:`ActorSystem.relinquish`); the next message to one of
them resolves again and is sent to the new owner.

Kinds registered with ``local=True`` are never placed elsewhere: node-local helpers that
every node runs for itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from .envelope import Reply

__all__ = ["Placement"]


class Placement(Protocol):
    """Decides which node runs an actor, and reaches actors on other nodes."""

    def is_local(self, kind: str, key: str) -> bool:
        """True when this node may run ``(kind, key)`` now (it holds the shard's lease)."""
        ...

    def may_write(self, kind: str, key: str) -> bool:
        """True while this node may still write the actor's journal: it holds the lease
        (even while handing the shard over, so commits already sent can land)."""
        ...

    def send(
        self,
        kind: str,
        key: str,
        message: Any,
        reply_to: Reply | None,
        headers: Mapping[str, str] | None,
        deadline: float | None,
    ) -> None:
        """Carry ``message`` to the node that owns ``(kind, key)``; never blocks. Failures
        reach ``reply_to`` as :class:`~actors.errors.ActorsError` values."""
        ...
