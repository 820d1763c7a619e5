"""Joins waiting for a buyer check: one queue per buyer, and the join ids they hold.

A join of a buyer the window has not verified waits until the buyer actor answers.
Joins of the same buyer wait in the same queue (one check for all of them), and a join
that reuses a ``join_id`` still waiting somewhere waits in *that* queue, behind the
first one, so every ``join_id`` is decided once and in arrival order. The room is
bounded by its owner (``len`` is the number of waiting joins); it lives in memory only,
as the reply handles do: after a restart, clients retry with the same ids.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from actors.tracing import Span
from iceshop.protocol import Principal
from iceshop.wire import Join

__all__ = ["Reply", "Waiting", "WaitingRoom"]

#: Where a waiting join's reply goes (the handle ``reply_later`` returns).
Reply = Callable[[Any], None]


class Waiting:
    """A join waiting for a buyer check, with the handle to answer it, the wall time
    after which it must not be applied (its ``Iceshop-Deadline``), if any, and the span
    of its trace, if it is traced (the join is decided in that trace)."""

    __slots__ = ("deadline", "join", "principal", "reply", "trace")

    def __init__(
        self,
        join: Join,
        reply: Reply,
        deadline: float | None,
        trace: Span | None = None,
        principal: Principal | None = None,
    ) -> None:
        self.join = join
        self.reply = reply
        self.deadline = deadline
        self.trace = trace
        #: Who asked (the join is checked again if it moves to another incarnation).
        self.principal = principal


class WaitingRoom:
    __slots__ = ("_count", "_ids", "_queues")

    def __init__(self) -> None:
        self._queues: dict[str, list[Waiting]] = {}
        self._ids: dict[str, str] = {}  # join_id -> the queue its first join waits in
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __contains__(self, buyer_id: object) -> bool:
        """Whether a check for ``buyer_id`` is in flight (its queue exists)."""
        return buyer_id in self._queues

    def queue_of(self, join_id: str) -> str | None:
        """The queue where a join with this id waits, if one does."""
        return self._ids.get(join_id)

    def open(self, buyer_id: str) -> None:
        """Start the queue of a buyer whose check was just sent."""
        self._queues.setdefault(buyer_id, [])

    def add(self, buyer_id: str, item: Waiting) -> None:
        """Queue ``item`` behind the (open) check of ``buyer_id``."""
        self._queues[buyer_id].append(item)
        self._ids.setdefault(item.join.join_id, buyer_id)
        self._count += 1

    def take(self, buyer_id: str) -> list[Waiting]:
        """Remove and return the queue of ``buyer_id`` (empty when there is none)."""
        queue = self._queues.pop(buyer_id, None)
        if not queue:
            return []
        self._count -= len(queue)
        ids = self._ids
        for item in queue:
            if ids.get(item.join.join_id) == buyer_id:
                del ids[item.join.join_id]
        return queue

    def take_all(self) -> list[Waiting]:
        queues, self._queues = self._queues, {}
        self._ids.clear()
        self._count = 0
        return [item for queue in queues.values() for item in queue]
