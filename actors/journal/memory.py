"""An in-memory journal with the same semantics as the durable ones.

It exists so the runtime can be tested without a disk: every rule of
:class:`~actors.journal.base.Journal` holds here too (optimistic sequence checks per
request, one request applying in full or not at all, first idempotency reply wins,
deadline replace/cancel and cursor paging, outbox order, dead letters newest first), and
the shared behavioural suite runs against it and the SQLite journal alike.

Closing does not forget anything: opening the same instance again behaves like a node
restarting on the same store, which is what recovery tests need. ``fail_next_write``
injects a :class:`~actors.errors.JournalUnavailable` so tests can exercise the runtime's
commit-failure path deterministically.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import msgspec

from ..errors import JournalUnavailable, SequenceConflict
from ._checks import check_batch
from .base import DeadLetter, Deadline, OutboxEntry, Recovery, WriteRequest

__all__ = ["MemoryJournal"]

_ActorId = tuple[str, str]


class MemoryJournal:
    """A :class:`~actors.journal.base.Journal` held in dictionaries (tests only)."""

    def __init__(self) -> None:
        self._open = False
        self._failures = 0
        self._heads: dict[_ActorId, int] = {}
        self._events: dict[_ActorId, list[bytes]] = {}
        self._snapshots: dict[_ActorId, tuple[int, bytes]] = {}
        self._deadlines: dict[_ActorId, dict[str, Deadline]] = {}
        self._idempotency: dict[_ActorId, dict[str, bytes]] = {}
        self._outbox: dict[str, OutboxEntry] = {}
        self._dead_letters: list[DeadLetter] = []
        self.writes = 0
        """Number of committed ``write`` calls (one per group commit)."""

    # -- test hooks -------------------------------------------------------------------

    def fail_next_write(self, count: int = 1) -> None:
        """Make the next ``count`` calls to :meth:`write` raise
        :class:`~actors.errors.JournalUnavailable` without applying anything."""
        if count < 0:
            raise ValueError("count must be >= 0")
        self._failures = count

    # -- lifecycle --------------------------------------------------------------------

    async def open(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False

    def _ensure_open(self) -> None:
        if not self._open:
            raise JournalUnavailable("journal is not open")

    # -- reads ------------------------------------------------------------------------

    async def recover(self, ids: Sequence[tuple[str, str]]) -> list[Recovery]:
        self._ensure_open()
        return [self._recover_one(kind, key) for kind, key in ids]

    def _recover_one(self, kind: str, key: str) -> Recovery:
        ident = (kind, key)
        snap_seq, snapshot = self._snapshots.get(ident, (0, None))
        events = self._events.get(ident, [])[snap_seq:]
        deadlines = sorted(self._deadlines.get(ident, {}).values(), key=lambda d: (d.due, d.name))
        return Recovery(
            kind=kind,
            key=key,
            seq=self._heads.get(ident, 0),
            snapshot=snapshot,
            snapshot_seq=snap_seq,
            events=list(events),
            idempotency=dict(self._idempotency.get(ident, {})),
            deadlines=deadlines,
        )

    async def deadlines(
        self, after: tuple[float, str, str, str] | None = None, limit: int = 10_000
    ) -> list[Deadline]:
        self._ensure_open()
        every = (d for per_actor in self._deadlines.values() for d in per_actor.values())
        if after is not None:
            every = (d for d in every if (d.due, d.kind, d.key, d.name) > after)
        return heapq.nsmallest(limit, every, key=lambda d: (d.due, d.kind, d.key, d.name))

    async def outbox(self, limit: int = 1000) -> list[OutboxEntry]:
        self._ensure_open()
        pending: list[OutboxEntry] = []
        for entry in self._outbox.values():
            if len(pending) >= limit:
                break
            pending.append(entry)
        return pending

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        self._ensure_open()
        return self._dead_letters[::-1][:limit]

    # -- writes -----------------------------------------------------------------------

    async def write(self, batch: Sequence[WriteRequest]) -> list[SequenceConflict | None]:
        self._ensure_open()
        check_batch(batch)
        if self._failures:
            self._failures -= 1
            raise JournalUnavailable("injected write failure")
        results: list[SequenceConflict | None] = []
        for req in batch:
            ident = (req.kind, req.key)
            current = self._heads.get(ident, 0)
            if current != req.expected_seq:
                results.append(SequenceConflict(req.kind, req.key, req.expected_seq, current))
                continue
            self._apply(ident, current, req)
            results.append(None)
        self.writes += 1
        return results

    def _apply(self, ident: _ActorId, current: int, req: WriteRequest) -> None:
        seq = current + len(req.events)
        if req.events:
            self._events.setdefault(ident, []).extend(req.events)
            self._heads[ident] = seq
        if req.snapshot is not None:
            self._snapshots[ident] = (seq, req.snapshot)
        if req.deadlines_cancel or req.deadlines_set:
            per_actor = self._deadlines.setdefault(ident, {})
            for name in req.deadlines_cancel:
                per_actor.pop(name, None)
            for d in req.deadlines_set:
                per_actor[d.name] = d
            if not per_actor:
                del self._deadlines[ident]
        if req.idempotency:
            records = self._idempotency.setdefault(ident, {})
            for request_id, reply in req.idempotency:
                records.setdefault(request_id, reply)
        for entry in req.outbox:
            self._outbox.setdefault(entry.id, entry)

    async def ack_outbox(self, ids: Sequence[str]) -> None:
        self._ensure_open()
        for entry_id in ids:
            self._outbox.pop(entry_id, None)

    async def add_dead_letter(self, letter: DeadLetter) -> None:
        self._ensure_open()
        stored = msgspec.structs.replace(letter, id=len(self._dead_letters) + 1)
        self._dead_letters.append(stored)
